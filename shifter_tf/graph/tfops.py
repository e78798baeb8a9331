"""TFOpLambda layers: TensorFlow functions called on Keras tensors (`x + 3.0`, `tf.nn.relu6(x)`,
`x * (1 / 6)`: MobileNetV3's hard-swish is built this way). The element-wise ones act per
channel, so they are pruned like an activation (one Keras input) or a merge (several), and
per-channel constants among their arguments are sliced with the channels they scale.

Only a fixed list of element-wise symbols is trusted; any other op, a list-valued argument or a
constant that varies over space keeps its channels frozen, as before.
"""
from __future__ import annotations

import numbers

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.graph import layer_kinds

UNARY = {
    "nn.relu", "nn.relu6", "math.sigmoid", "nn.sigmoid", "math.tanh", "nn.tanh", "nn.silu",
    "nn.swish", "math.abs", "math.negative", "math.square", "math.exp", "nn.elu", "nn.selu",
    "nn.gelu", "math.softplus", "nn.softplus", "math.softsign", "nn.softsign", "nn.leaky_relu",
    "math.sqrt", "math.rsqrt", "math.reciprocal", "clip_by_value", "identity", "math.sign",
    "math.floor", "math.ceil", "math.round",
}
BINARY = {
    "__operators__.add", "math.add", "math.multiply", "math.subtract", "math.truediv",
    "math.divide", "math.maximum", "math.minimum", "math.pow", "math.squared_difference",
    "math.multiply_no_nan", "math.divide_no_nan",
}
ELEMENTWISE = UNARY | BINARY
MULTIPLY = {"math.multiply", "math.multiply_no_nan"}


def is_tfop(layer) -> bool:
    """True for the layer tf_keras inserts when a TF function is called on a Keras tensor."""
    return type(layer).__name__ == "TFOpLambda"


def getattr_symbol(layer) -> str:
    """'math.multiply' for tf.math.multiply ('' when unknown)."""
    return getattr(layer, "symbol", None) or ""


def _arguments(node) -> list:
    """Top-level call arguments (positional and keyword) of a node."""
    return list(node.call_args) + list(node.call_kwargs.values())


def _is_kt(v) -> bool:
    return tf.is_tensor(v) and keras.backend.is_keras_tensor(v)


def _is_constant(v) -> bool:
    return isinstance(v, (numbers.Number, np.ndarray, np.generic)) or (
        isinstance(v, tf.Tensor) and not _is_kt(v))


def classify(call, in_shapes: list, out_shapes: list) -> layer_kinds.Kind:
    """CHANNELWISE (one Keras input), MERGE (several) or FROZEN/OPAQUE with the reason."""
    symbol = getattr_symbol(call.layer)
    if symbol not in ELEMENTWISE:
        return layer_kinds.Kind(layer_kinds.OPAQUE, f"TFOpLambda tf.{symbol or '?'} (not a known element-wise op)")
    if len(out_shapes) != 1 or not in_shapes:
        return layer_kinds.Kind(layer_kinds.FROZEN, f"tf.{symbol} with several outputs")
    out = out_shapes[0]
    if len(out) < 2 or out[-1] is None or any(len(s) < 2 or s[-1] is None for s in in_shapes):
        return layer_kinds.Kind(layer_kinds.FROZEN, "no static channel axis")
    for v in _arguments(call.node):
        if _is_kt(v) or v is None or isinstance(v, (str, bool)):
            continue
        if not _is_constant(v):
            return layer_kinds.Kind(layer_kinds.FROZEN, f"tf.{symbol} with a {type(v).__name__} argument")
        if not layer_kinds._per_channel(v, out[-1]) or np.ndim(v) > len(out):
            return layer_kinds.Kind(layer_kinds.FROZEN, f"tf.{symbol} with a constant that varies over space")
    kind = layer_kinds.broadcast_kind(in_shapes, out)
    if kind.kind == layer_kinds.MERGE and len(in_shapes) == 1:
        return layer_kinds.Kind(layer_kinds.CHANNELWISE)
    return kind


def _slice_leaf(v, channels: int, idx):
    if _is_kt(v) or not _is_constant(v) or np.ndim(v) == 0:
        return v
    if np.shape(v)[-1] != channels or channels == 1:
        return v
    if isinstance(v, tf.Tensor):
        return tf.gather(v, idx, axis=-1)
    return np.take(v, idx, axis=-1)


def sliced_arguments(args: tuple, kwargs: dict, channels: int, keep) -> tuple:
    """(args, kwargs) with every per-channel constant cut to the kept channels."""
    if keep is None or keep.all():
        return args, kwargs
    idx = np.flatnonzero(keep)
    args = tuple(_slice_leaf(a, channels, idx) for a in args)
    kwargs = {k: _slice_leaf(v, channels, idx) for k, v in kwargs.items()}
    return args, kwargs


def constant(call, consts: list, n: int, dtype: str) -> np.ndarray | None:
    """The op applied to per-channel constants of its Keras inputs (NaN = not constant)."""
    node = call.node
    flat = list(node._flat_arguments)
    known = np.ones(n, bool)
    zero = np.zeros(n, bool)
    for (_, pos), c, t in zip(node._keras_inputs_ids_and_indices, consts, call.inputs):
        chans = len(c) if c is not None else None
        if c is None:
            known[:] = False
            c = np.zeros(1)
        else:
            c = np.broadcast_to(c, (n,)) if chans == 1 else c
            known &= ~np.isnan(c)
            zero |= c == 0
            c = np.where(np.isnan(c), 0.0, c)
        flat[pos] = tf.constant(np.asarray(c).reshape(1, -1), dtype=dtype)
    if getattr_symbol(call.layer) in MULTIPLY:
        known |= zero     # 0 times anything finite is 0
    if not known.any():
        return None
    args, kwargs = tf.nest.pack_sequence_as(
        (node.call_args, list(node.call_kwargs.values())), flat)
    kwargs = dict(zip(node.call_kwargs.keys(), kwargs))
    kwargs.pop("name", None)
    try:
        out = np.asarray(call.layer.function(*args, **kwargs), np.float64).reshape(-1)
    except Exception:  # an op that refuses these shapes or dtypes: not constant
        return None
    if out.size == 1:
        out = np.full(n, out[0])
    if out.size != n:
        return None
    out[~known] = np.nan
    return out
