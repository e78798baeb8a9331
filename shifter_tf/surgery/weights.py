"""Numpy views of layer weights, read once per rewrite and keyed by the variable's short name
('kernel', 'bias', 'gamma', ...), so no TensorFlow op runs per channel."""
from __future__ import annotations

import numpy as np

import shifter_tf  # noqa: F401  (before TensorFlow)
from tensorflow.python.ops.gen_resource_variable_ops import read_variable_op
from tensorflow.python.ops.resource_variable_ops import ResourceVariable

from shifter_tf.surgery.construct import PLAIN_LAYERS


def short_name(variable) -> str:
    """'block1/conv/kernel:0' -> 'kernel'."""
    return variable.name.rsplit("/", 1)[-1].split(":")[0]


def read_weights(layers) -> dict:
    """{id(layer): {short name: ndarray}} for the given layers.

    The arrays are zero-copy snapshots of the variables (TensorFlow keeps the old buffer alive
    if a variable is later assigned); treat them as read-only and build new arrays to change them.
    """
    out = {}
    for layer in layers:
        if id(layer) in out:
            continue
        values = {}
        for v in _own_weights(layer):
            if type(v) is ResourceVariable:   # a plain variable: read without tape/strategy hooks
                t = read_variable_op(v.handle, v.dtype)
            else:
                t = v.value() if hasattr(v, "value") else v
            values[short_name(v)] = np.asarray(t)
        out[id(layer)] = values
    return out



def _own_weights(layer) -> list:
    """layer.weights; for built-in layers without sub-layers their two lists directly
    (`weights` walks the module tree, which costs more than reading the variables)."""
    if type(layer) in PLAIN_LAYERS:
        return layer._trainable_weights + layer._non_trainable_weights
    return layer.weights
