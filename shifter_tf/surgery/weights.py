"""Numpy views of layer weights, read once per rewrite and keyed by the variable's short name
('kernel', 'bias', 'gamma', ...), so no TensorFlow op runs per channel."""
from __future__ import annotations

import numpy as np


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
        for v in layer.weights:
            values[short_name(v)] = np.asarray(v.value() if hasattr(v, "value") else v)
        out[id(layer)] = values
    return out
