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
