"""TFLite conversion with `tf.lite.TFLiteConverter`: fp32, fp16, dynamic-range int8, full int8.

Full int8 has int8 inputs and outputs and only int8 builtin ops: the form Coral's
edgetpu_compiler accepts. With `android=True` (`export.android`) it has uint8 inputs and outputs
instead, the input quantised as raw pixels (`shifter_tf.export.android`): what the Task Library
accepts. `sparse=True` adds the converter's EXPERIMENTAL_SPARSITY optimisation,
which is how tfmot recommends deploying an unstructured-sparse model.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras
from shifter_tf.errors import ExportError  # noqa: F401 (raised here)

PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8")



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
            representative: Optional[np.ndarray] = None, sparse: bool = False,
            android: bool = False) -> bytes:
    """Convert a tf_keras model to TFLite bytes at `precision`.

    `representative` (float32 examples as the model takes them) is required for full-integer
    int8. `android`: uint8 instead of int8 at the boundary of a full-integer model whose input
    is raw pixels (`shifter_tf.export.android.android_model`).
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
        conv.inference_input_type = tf.uint8 if android else tf.int8
        conv.inference_output_type = tf.uint8 if android else tf.int8
    try:
        blob = conv.convert()
    except Exception as e:  # the converter raises many types with MLIR dumps attached
        raise ExportError(f"{model.name}: TFLite conversion to {precision} failed: "
                          f"{str(e).splitlines()[0][:300]}") from None
    if android and precision == "int8":
        from shifter_tf.export.android import pixel_input
        blob = pixel_input(blob)
    return blob


# ---- parallel conversion ------------------------------------------------------------------
# The converter is single-threaded Python + MLIR: a portfolio converts about cores times faster
# when other processes convert too. Workers are plain subprocesses (`python -c ...`, not
# multiprocessing: spawn would re-run an unguarded __main__ script in every worker, fork is
# unsafe once TensorFlow runs threads) fed pickled (JSON config, weights, precision) jobs over a
# pipe; they rebuild each model and convert it. The bytes are the same as this process's
# (tests/test_export_parallel.py), so which process converted a variant never shows.

# fd 1 is pointed at stderr before anything is imported, so nothing a library prints can mix
# with the pickled results, which go to a private copy of the original stdout.
_WORKER_CMD = ("import os; fd = os.dup(1); os.dup2(2, 1); "
               "from shifter_tf.export.convert import _serve; _serve(fd)")


def _serve(fd: int) -> None:
    """Worker loop: read pickled jobs on stdin, write pickled results to file descriptor fd."""
    import os
    import pickle
    import sys
    out = os.fdopen(fd, "wb")
    inp = sys.stdin.buffer
    rep, options = pickle.load(inp)
    cached = (None, None)
    pickle.dump("ready", out)
    out.flush()
    while True:
        try:
            key, payload, precision, sparse = pickle.load(inp)
        except EOFError:
            return
        try:
            if cached[0] != key:
                model = keras.models.model_from_json(payload[0])
                model.set_weights(payload[1])
                cached = (key, model)
            result = convert(cached[1], precision, rep, sparse=sparse, **options)
        except Exception as e:  # reported to the parent, which converts the job itself
            result = RuntimeError(f"{type(e).__name__}: {str(e)[:300]}")
        pickle.dump(result, out)
        out.flush()


def idle_cores(window: float = 0.25) -> float:
    """Cores nobody used during the last `window` seconds (from /proc/stat; all cores where it
    cannot be read). A converter worker only pays when it gets a core of its own: on a machine
    other jobs keep busy, its TensorFlow start-up and the competition make an export slower."""
    import os
    import time

    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values[:8])   # idle + iowait, total

    n = os.cpu_count() or 1
    try:
        idle0, total0 = sample()
        time.sleep(window)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return float(n)
    return n * (idle1 - idle0) / max(total1 - total0, 1)


def default_workers() -> int:
    """Converter subprocesses for an export: one per further core that is idle right now."""
    import os
    n = os.cpu_count() or 1
    return max(0, min(n - 1, int(idle_cores() + 0.25)))


def model_payload(model: keras.Model) -> Optional[tuple]:
    """(JSON config, weights) a worker rebuilds `model` from; None if it cannot be serialised."""
    try:
        return model.to_json(), model.get_weights()
    except Exception:  # subclassed or unserialisable models are converted in this process
        return None


class ConverterPool:
    """Convert many (model, precision) jobs in this process and `workers` subprocesses.

    `run(jobs)` takes an iterable of (key, model, precision, sparse) in portfolio order (key:
    the same for jobs of one model) and yields (index, bytes) as they finish. Every converter
    takes the next job from one queue; a worker only starts taking jobs once TensorFlow is
    loaded in it, so a pool never makes a small portfolio slower. A job a worker fails on (or
    a model it cannot rebuild) is converted here, where a real conversion error is raised.
    `options` are further keywords of every `convert` call (`android`).
    """

    def __init__(self, representative: Optional[np.ndarray], workers: int = 0,
                 local: bool = True, convert_fn=None, options: Optional[dict] = None):
        self.rep = representative
        self.options = dict(options or {})
        self.convert = convert_fn or convert   # conversions in this process
        self.workers = max(0, int(workers))
        self.local = local    # False: this process converts only what no worker can
        self.converted = {"here": 0, "workers": 0, "retried_here": 0}
        self._procs: list = []
        self._stop = None   # threading.Event of the current run

    def __enter__(self) -> "ConverterPool":
        import subprocess
        import sys
        for _ in range(self.workers):
            try:
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-c", _WORKER_CMD], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            except OSError:
                break
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()
        self._procs = []

    def _work(self, proc, take, results) -> None:
        """Thread body feeding one worker process."""
        import pickle
        try:
            pickle.dump((self.rep, self.options), proc.stdin)
            proc.stdin.flush()
            if pickle.load(proc.stdout) != "ready":
                return
        except Exception:  # the worker did not start: this process does its share
            return
        while True:
            job = take()
            if job is None:
                return
            i, (key, model, precision, sparse), payload = job
            try:
                pickle.dump((key, payload, precision, sparse), proc.stdin)
                proc.stdin.flush()
                result = pickle.load(proc.stdout)
            except Exception as e:  # a dead worker: hand the job back, stop feeding it
                results.put((i, e, job))
                return
            results.put((i, result, job))

    def run(self, jobs, lookahead: int = 8):
        """Yield (job index, tflite bytes); at most lookahead + workers jobs are held."""
        import queue
        import threading
        from collections import deque

        source = iter(enumerate(jobs))
        pending: deque = deque()
        lock = threading.Lock()
        results: queue.Queue = queue.Queue()
        state = {"exhausted": False, "payload": (None, None), "outstanding": 0}

        def refill() -> None:   # main thread only: loads models and builds payloads
            while not state["exhausted"] and len(pending) < lookahead + self.workers:
                nxt = next(source, None)
                if nxt is None:
                    state["exhausted"] = True
                    return
                i, job = nxt
                key, model = job[0], job[1]
                if state["payload"][0] != key and self._procs:
                    state["payload"] = (key, model_payload(model))
                payload = state["payload"][1] if self._procs else None
                with lock:
                    pending.append((i, job, payload))
                    state["outstanding"] += 1

        def take(for_worker: bool = True):
            with lock:
                if for_worker:   # skip jobs a worker cannot rebuild (converted here)
                    for k, item in enumerate(pending):
                        if item[2] is not None:
                            del pending[k]
                            return item
                    return None if state["exhausted"] else _WAIT
                if not self.local and any(t.is_alive() for t in threads):
                    for k, item in enumerate(pending):
                        if item[2] is None:
                            del pending[k]
                            return item
                    return None
                return pending.popleft() if pending else None

        stop = self._stop = threading.Event()

        def take_blocking():
            while not stop.is_set():
                item = take()
                if item is not _WAIT:
                    return item
                stop.wait(0.02)
            return None

        threads = [threading.Thread(target=self._work, args=(p, take_blocking, results),
                                    daemon=True) for p in self._procs]
        for t in threads:
            t.start()
        try:
            yield from self._collect(threads, pending, results, state, refill, take)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=1)

    def _collect(self, threads, pending, results, state, refill, take):
        import queue
        while True:
            refill()
            while not results.empty() or (state["outstanding"] and any(
                    t.is_alive() for t in threads) and (not pending or not self.local)):
                try:
                    i, result, job = results.get(timeout=0.05)
                except queue.Empty:
                    continue
                state["outstanding"] -= 1
                if isinstance(result, bytes):
                    self.converted["workers"] += 1
                    yield i, result
                else:   # failed in the worker: convert here (raises a real error)
                    _, (_, model, precision, sparse), _ = job
                    self.converted["retried_here"] += 1
                    yield i, self.convert(model, precision, self.rep, sparse=sparse,
                                      **self.options)
                refill()
            item = take(for_worker=False)
            if item is None:
                if state["exhausted"] and state["outstanding"] == 0:
                    break
                if not any(t.is_alive() for t in threads) and state["outstanding"]:
                    raise ExportError("internal: converter workers stopped with jobs left")
                continue
            i, (_, model, precision, sparse), _ = item
            state["outstanding"] -= 1
            self.converted["here"] += 1
            yield i, self.convert(model, precision, self.rep, sparse=sparse,
                                      **self.options)


_WAIT = object()
