"""What each tf_keras layer type means for channels: its kind, and how a spatially constant
channel value passes through it. Only exact built-in classes are trusted; a user subclass of
Conv2D may override `call`, so it is treated as opaque."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

L = keras.layers

INPUT = "input"            # model input: channels frozen
PRODUCER = "producer"      # Conv/Dense/SeparableConv: reads input channels, makes new ones
DEPTHWISE = "depthwise"    # DepthwiseConv: output channel c*m+j comes from input channel c
CHANNELWISE = "channelwise"  # per-channel maps (activations, BN, pooling, padding, dropout...)
FLATTEN = "flatten"        # channel-last flatten: channel c becomes rows c, C+c, 2C+c, ...
MERGE = "merge"            # Add/Multiply/...: inputs share channel indices
CONCAT = "concat"          # Concatenate
FOLDED = "folded"          # a BatchNormalization folded into its producer: identity
FROZEN = "frozen"          # known layer without per-channel semantics (Reshape, Softmax, ...)
OPAQUE = "opaque"          # not understood (Lambda, custom, subclassed): kept as is

# Activations that act element-wise (so also per channel).
ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "elu", "selu", "sigmoid", "hard_sigmoid", "tanh", "swish",
    "silu", "gelu", "softplus", "softsign", "exponential", "leaky_relu", "mish", "hard_silu",
    "hard_swish",
}

_CONV = tuple(c for c in (L.Conv1D, L.Conv2D, L.Conv3D))
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_DEPTHWISE = tuple(c for c in (getattr(L, "DepthwiseConv1D", None), L.DepthwiseConv2D) if c)
_IDENTITY_AT_INFERENCE = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
                          L.GaussianNoise, L.GaussianDropout, L.AlphaDropout,
                          L.ActivityRegularization)
_POOL = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
         L.AveragePooling2D, L.AveragePooling3D)
_GLOBAL_POOL = (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
                L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)
_RESHAPE_SPATIAL = (L.Cropping1D, L.Cropping2D, L.Cropping3D, L.UpSampling1D, L.UpSampling2D,
                    L.UpSampling3D)
_ZERO_PAD = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_ACT_LAYERS = (L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU, L.PReLU)
_MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)


@dataclass
class Kind:
    """How the graph treats one layer call; `why` explains a FROZEN/OPAQUE verdict."""
    kind: str
    why: str = ""


def activation_name(fn) -> str:
    """Registered name of an activation callable ('' if it is a custom function)."""
    if fn is None:
        return "linear"
    if isinstance(fn, str):
        return fn
    name = getattr(fn, "__name__", "")
    return name if name in ELEMENTWISE_ACTIVATIONS or name == "softmax" else ""


def ends_with_softmax(model: keras.Model) -> bool:
    """True when the model's output is a softmax (probabilities), not logits."""
    last = model.layers[-1]
    return (isinstance(last, L.Softmax)
            or activation_name(getattr(last, "activation", None)) == "softmax")


def elementwise_activation(layer) -> bool:
    """True when the layer's own `activation` acts per element (not softmax or custom)."""
    return activation_name(getattr(layer, "activation", None)) in ELEMENTWISE_ACTIVATIONS


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _builtin(layer) -> bool:
    return type(layer).__module__.startswith(("tf_keras.", "keras."))


def classify(layer, in_shapes: list, out_shapes: list) -> Kind:
    """The Kind of one call of `layer` with the given input/output shapes (batch dim included)."""
    if isinstance(layer, keras.Model):
        return Kind(OPAQUE, "subclassed or not inlinable model")
    if isinstance(layer, (L.Lambda,)) or type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda"):
        return Kind(OPAQUE, f"{type(layer).__name__} (arbitrary code)")
    if not _builtin(layer):
        return Kind(OPAQUE, f"custom layer class {type(layer).__name__}")
    t = type(layer)
    if t is L.InputLayer:
        return Kind(INPUT)
    rank_ok = all(len(s) >= 2 and s[-1] is not None for s in in_shapes + out_shapes)
    if not rank_ok:
        return Kind(FROZEN, "no static channel axis")
    if not _channels_last(layer):
        return Kind(FROZEN, "channels_first data format")
    if t in _CONV:
        return Kind(PRODUCER)  # groups > 1: whole conv groups go together (graph, rebuild)
    if t is L.Dense or t in _SEPARABLE:
        return Kind(PRODUCER)
    if t in _DEPTHWISE:
        return Kind(DEPTHWISE)
    if t is L.BatchNormalization:
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        rank = len(in_shapes[0])
        if [a % rank for a in axis] != [rank - 1]:
            return Kind(FROZEN, "BatchNormalization over a non-channel axis")
        return Kind(CHANNELWISE)
    if t is L.Activation:
        name = activation_name(layer.activation)
        if name in ELEMENTWISE_ACTIVATIONS:
            return Kind(CHANNELWISE)
        return Kind(FROZEN, f"activation '{name or 'custom'}' mixes or hides channels")
    if t is L.PReLU:
        alpha_shape = tuple(layer.alpha.shape)
        if alpha_shape[-1] != in_shapes[0][-1]:
            return Kind(FROZEN, "PReLU alpha shared over channels")
        return Kind(CHANNELWISE)
    if t in _ACT_LAYERS or t in _IDENTITY_AT_INFERENCE or t in _POOL or t in _GLOBAL_POOL \
            or t in _RESHAPE_SPATIAL or t in _ZERO_PAD:
        return Kind(CHANNELWISE)
    if t is L.Rescaling:
        c = in_shapes[0][-1]
        if all(_per_channel(v, c) for v in (layer.scale, layer.offset)):
            return Kind(CHANNELWISE)
        return Kind(FROZEN, "Rescaling with constants that vary over space")
    if t is L.Normalization:
        rank = len(in_shapes[0])
        axes = sorted(a % rank for a in layer.axis)
        if axes in ([], [rank - 1]):
            return Kind(CHANNELWISE)
        return Kind(FROZEN, "Normalization over a non-channel axis")
    if t is L.Reshape:
        if unit_axes_reshape(in_shapes[0], out_shapes[0]):
            return Kind(CHANNELWISE)
        return Kind(FROZEN, "Reshape that moves channels (only unit axes may change)")
    if t is L.Flatten:
        if any(d is None for d in in_shapes[0][1:]):
            return Kind(FROZEN, "Flatten of a dynamic shape")
        return Kind(FLATTEN)
    if t in _MERGES:
        return broadcast_kind(in_shapes, out_shapes[0])
    if t is L.Concatenate:
        return Kind(CONCAT)
    return Kind(FROZEN, f"{t.__name__} has no per-channel rule")


def unit_axes_reshape(in_shape: tuple, out_shape: tuple) -> bool:
    """True for a Reshape that only adds or drops unit axes and keeps the channel axis last,
    e.g. (B, C) -> (B, 1, 1, C) in a squeeze-excite block."""
    a, b = list(in_shape[1:]), list(out_shape[1:])
    if not a or not b or None in a + b or a[-1] != b[-1]:
        return False
    return [d for d in a if d != 1] == [d for d in b if d != 1]


def _per_channel(value, channels) -> bool:
    """A constant that is a scalar or varies only along the (last) channel axis."""
    shape = np.shape(value)
    return all(d == 1 for d in shape[:-1]) and (not shape or shape[-1] in (1, channels))


def broadcast_kind(in_shapes: list, out_shape: tuple) -> Kind:
    """MERGE when every input has the output's channels or broadcasts a single channel
    (a squeeze-excite gate (B, 1, 1, C) scaling (B, H, W, C) shares the channel index)."""
    n = out_shape[-1]
    chans = [s[-1] for s in in_shapes]
    if any(c not in (n, 1) for c in chans) or n not in chans:
        return Kind(FROZEN, "merge whose inputs do not share the channel axis")
    return Kind(MERGE)


def concat_axis(layer, rank: int) -> int:
    return layer.axis % rank


# ---- constants through layers -------------------------------------------------------------

def _np_act(name: str, x: np.ndarray) -> np.ndarray | None:
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "relu6":
        return np.clip(x, 0.0, 6.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name in ("swish", "silu"):
        return x / (1.0 + np.exp(-x))
    return None


def apply_activation(fn_or_name, x: np.ndarray) -> np.ndarray:
    """act(x) for a constant vector: numpy for common activations, TensorFlow otherwise."""
    name = activation_name(fn_or_name) if not isinstance(fn_or_name, str) else fn_or_name
    y = _np_act(name, x)
    if y is not None:
        return y
    fn = keras.activations.get(fn_or_name) if isinstance(fn_or_name, str) else fn_or_name
    return tf.cast(fn(tf.constant(x, tf.float32)), tf.float64).numpy()


def channelwise_constant(layer, c: np.ndarray, weights: dict) -> tuple[np.ndarray, np.ndarray]:
    """Push a per-channel constant through a CHANNELWISE layer.

    Returns (value, exact): value is NaN where the output is no longer spatially constant;
    `exact` is False where the value only holds away from the borders (zero padding).
    Where the layer ignores its input (BN with zero scale) the output is constant even for NaN c.
    """
    t = type(layer)
    exact = np.ones(c.shape, bool)
    if t is L.BatchNormalization:
        scale, shift = bn_affine(layer, weights)
        out = c * scale + shift
        return np.where(scale == 0, shift, out), exact
    if t is L.Activation:
        return apply_activation(layer.activation, c), exact
    if t is L.ReLU:
        cfg = layer.get_config()
        thr, slope, mx = float(cfg["threshold"]), float(cfg["negative_slope"]), cfg["max_value"]
        y = np.where(c >= thr, c, slope * (c - thr))
        return (np.minimum(y, float(mx)) if mx is not None else y), exact
    if t is L.LeakyReLU:
        return np.where(c >= 0, c, float(layer.alpha) * c), exact
    if t is L.ELU:
        return np.where(c > 0, c, float(layer.alpha) * (np.exp(np.minimum(c, 0)) - 1)), exact
    if t is L.ThresholdedReLU:
        return np.where(c > float(layer.theta), c, 0.0), exact
    if t is L.PReLU:
        alpha = weights["alpha"].reshape(-1, weights["alpha"].shape[-1]).astype(np.float64)
        uniform = np.all(alpha == alpha[:1], axis=0)
        y = np.where(c >= 0, c, alpha[0] * c)
        return np.where(uniform | (c >= 0), y, np.nan), exact
    if t is L.Rescaling:
        scale = np.asarray(layer.scale, np.float64).reshape(-1)
        offset = np.asarray(layer.offset, np.float64).reshape(-1)
        return c * scale + offset, exact
    if t is L.Normalization:
        mean, var = normalization_stats(layer, weights, len(c))
        std = np.maximum(np.sqrt(var), keras.backend.epsilon())
        return (mean + c * std if layer.invert else (c - mean) / std), exact
    if t in _ZERO_PAD:
        # The padded border is 0, the interior c: constant only when c == 0.
        return c, (c == 0) | np.isnan(c)
    # Dropout & co. (identity at inference), pooling (TF's 'same' max/avg pooling ignore the
    # padding), global pooling, cropping, up-sampling: a constant stays the same constant.
    return c, exact


def normalization_stats(layer, weights: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance) of a Normalization layer as float64 vectors of the n channels."""
    if "mean" in weights:
        mean, var = weights["mean"], weights["variance"]
    else:
        mean, var = layer.input_mean, layer.input_variance
    return tuple(np.broadcast_to(np.asarray(v, np.float64).reshape(-1), (n,)) for v in (mean, var))


def bn_affine(layer, weights: dict) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization at inference as y = x*scale + shift (float64)."""
    var = weights["moving_variance"].astype(np.float64)
    mean = weights["moving_mean"].astype(np.float64)
    gamma = weights["gamma"].astype(np.float64) if "gamma" in weights else np.ones_like(var)
    beta = weights["beta"].astype(np.float64) if "beta" in weights else np.zeros_like(var)
    scale = gamma / np.sqrt(var + float(layer.epsilon))
    return scale, beta - mean * scale


def padding_exact(layer, in_shape: tuple, out_shape: tuple) -> bool:
    """True when a conv never reads padding, so a constant input channel is folded exactly.
    (Plain Python on a few ints: this runs several times per conv and rewrite.)"""
    if type(layer) is L.Dense:
        return True
    padding = getattr(layer, "padding", "valid")
    if padding == "valid":
        return True
    eff = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.dilation_rate)]
    if all(e == 1 for e in eff):
        return True
    spatial_in = in_shape[1:-1]
    spatial_out = out_shape[1:-1]
    if any(d is None for d in tuple(spatial_in) + tuple(spatial_out)):
        return False
    if padding == "causal":
        return False
    return all((o - 1) * st + e - i <= 0
               for o, st, e, i in zip(spatial_out, layer.strides, eff, spatial_in))
