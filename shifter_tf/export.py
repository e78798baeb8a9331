"""TFLite conversion with `tf.lite.TFLiteConverter`: fp32, fp16, dynamic-range int8, full int8.

Full int8 has int8 inputs and outputs and only int8 builtin ops: the form Coral's
edgetpu_compiler accepts. `sparse=True` adds the converter's EXPERIMENTAL_SPARSITY optimisation,
which is how tfmot recommends deploying an unstructured-sparse model.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8")


class ExportError(RuntimeError):
    """A conversion that failed; names the model and the precision."""


def _concrete(model: keras.Model):
    """A batch-1 concrete function and a tf.Module holding only it and the model's variables.

    TFLite files with a fixed input shape suit every delegate. Handing the converter this small
    module instead of the Keras model gives byte-identical files about 3x faster: with the model
    its SavedModel step re-traces every layer.
    """
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    holder.fn = tf.function(lambda x: model(x, training=False))
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    return holder.fn.get_concrete_function(spec), holder


def convert(model: keras.Model, precision: str = "fp32",
            representative: Optional[np.ndarray] = None, sparse: bool = False) -> bytes:
    """Convert a tf_keras model to TFLite bytes at `precision`.

    `representative` (normalised float32 examples) is required for full-integer int8.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {PRECISIONS}")
    fn, holder = _concrete(model)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], holder)
    opts = []
    if precision != "fp32":
        opts.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    conv.optimizations = opts
    if precision == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if representative is None or len(representative) == 0:
            raise ExportError(f"{model.name}: full-integer int8 needs representative data")
        rep = np.asarray(representative, np.float32)

        def gen():
            for i in range(len(rep)):
                yield [rep[i:i + 1]]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    try:
        return conv.convert()
    except Exception as e:  # the converter raises many types with MLIR dumps attached
        raise ExportError(f"{model.name}: TFLite conversion to {precision} failed: "
                          f"{str(e).splitlines()[0][:300]}") from None


# ---- parallel conversion ------------------------------------------------------------------
# The converter is single-threaded Python + MLIR: a portfolio converts about cores times faster
# when other processes convert too. Workers are spawned (fork is unsafe once TensorFlow runs
# threads) and rebuild each model from its JSON config and weights; the bytes are the same as
# the parent's (tests/test_export_parallel.py), so which process converted a variant never
# shows in the portfolio.

_WORKER: dict = {}


def _worker_init(representative) -> None:
    _WORKER["rep"] = representative


def _worker_convert(key, payload, precision: str, sparse: bool) -> bytes:
    cached = _WORKER.get("model")
    if cached is None or cached[0] != key:
        model = keras.models.model_from_json(payload[0])
        model.set_weights(payload[1])
        _WORKER["model"] = cached = (key, model)
    return convert(cached[1], precision, _WORKER["rep"], sparse=sparse)


def model_payload(model: keras.Model) -> Optional[tuple]:
    """(JSON config, weights) a worker rebuilds `model` from; None if it cannot be serialised."""
    try:
        return model.to_json(), model.get_weights()
    except Exception:  # subclassed or unserialisable models are converted in this process
        return None


class ConverterPool:
    """Convert many (model, precision) jobs over `workers` extra processes and this one.

    `run(jobs)` takes an iterable of (key, model, precision, sparse) in portfolio order and
    yields (index, bytes) as they finish; this process converts a job itself whenever every
    worker is busy (or still starting), so a pool never makes a small portfolio slower. A job
    a worker fails on is converted here (a real conversion error is raised from here).
    """

    def __init__(self, representative: Optional[np.ndarray], workers: int = 0):
        self.rep = representative
        self.workers = max(0, int(workers))
        self._pool = None
        self.converted = {"here": 0, "workers": 0, "retried_here": 0}

    def __enter__(self) -> "ConverterPool":
        if self.workers:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            self._pool = ProcessPoolExecutor(self.workers, multiprocessing.get_context("spawn"),
                                             initializer=_worker_init, initargs=(self.rep,))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, jobs, lookahead: int = 8):
        """Yield (job index, tflite bytes); at most `lookahead` jobs are held in memory."""
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait

        jobs = iter(enumerate(jobs))
        pending: deque = deque()
        inflight: dict = {}
        payloads: dict = {}
        exhausted = False
        while True:
            while not exhausted and len(pending) < lookahead + self.workers:
                nxt = next(jobs, None)
                if nxt is None:
                    exhausted = True
                else:
                    pending.append(nxt)
            if not pending and not inflight:
                return
            while self._pool is not None and pending and len(inflight) < self.workers:
                i, (key, model, precision, sparse) = pending.popleft()
                if key not in payloads:
                    payloads = {key: model_payload(model)}   # only the current model's
                if payloads[key] is None:
                    pending.appendleft((i, (key, model, precision, sparse)))
                    break
                try:
                    fut = self._pool.submit(_worker_convert, key, payloads[key], precision,
                                            sparse)
                except Exception:  # a broken pool (a worker was killed): carry on here
                    pending.appendleft((i, (key, model, precision, sparse)))
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
                    break
                inflight[fut] = (i, (key, model, precision, sparse))
            if pending:
                i, (_, model, precision, sparse) = pending.popleft()
                self.converted["here"] += 1
                yield i, convert(model, precision, self.rep, sparse=sparse)
            elif inflight:
                wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in [f for f in inflight if f.done()]:
                i, (_, model, precision, sparse) = inflight.pop(fut)
                try:
                    blob = fut.result()
                    self.converted["workers"] += 1
                except Exception:  # a worker that died or could not rebuild the model
                    blob = convert(model, precision, self.rep, sparse=sparse)
                    self.converted["retried_here"] += 1
                yield i, blob
