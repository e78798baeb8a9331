"""Making the new tf_keras layers quickly; the layers and weights are the ones `from_config`,
`build` and `set_weights` would give.

Measured on ResNet-50 (cProfile), most of a rewrite went into tf_keras itself: Layer.__init__'s
attribute tracking (`__setattr__`: ~55 % of a Conv2D's construction), deserialising the
initializer/regularizer dicts of the config, copying misaligned numpy arrays into tensors, and
tracing each layer's call. Here:
- built-in layers without sub-layers are constructed with Keras' own switch for attribute
  tracking off (`_self_setattr_tracking`, what tf_keras' `no_automatic_dependency_tracking`
  does for Layer.__init__), and initializer/regularizer/constraint objects (copies) are passed
  instead of their serialised dicts. The weights are still created by `add_weight`, which
  registers them exactly as tracking would (checkpoint dependency, trainable list).
- weights are sliced into 64-byte-aligned numpy buffers, which TensorFlow adopts through DLPack
  without a copy (tf.constant copies even aligned arrays; a fresh copy of ResNet-50's 30 MB
  also page-faults).
- `Layer.__new__` is replayed without its per-call `getfullargspec` and v1/v2 class swap
  (the swap is cached per class): the instance gets the same `_auto_get_config`/`_auto_config`.
- layers are connected through `compute_output_shape` (no scratch-graph trace), and for a
  plain call (one positional input, no training/mask argument, no masks) by the steps
  Keras' functional `__call__` takes on that path, without its general argument handling;
  rebuild passes the output spec it already knows from the trace (`call_symbolic(output=)`).
"""
from __future__ import annotations

import copy

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras
from tf_keras.src.engine import base_layer as _base_layer
from tf_keras.src.engine import base_layer_utils as _base_layer_utils
from tf_keras.src.engine import base_layer_v1 as _base_layer_v1
from tf_keras.src.engine import keras_tensor as _keras_tensor
from tf_keras.src.engine import node as _node
from tf_keras.src.saving import serialization_lib as _serialization
from tf_keras.src.utils import version_utils as _version_utils

from shifter_tf.errors import SurgeryError

L = keras.layers
ALIGN = 64   # EIGEN_MAX_ALIGN_BYTES: TensorFlow copies numpy buffers aligned less than this

#: Built-in classes whose constructor and build set only plain attributes and weights (no
#: sub-layers, no list or dict attributes that tracking would wrap: BatchNormalization's `axis`,
#: PReLU's `shared_axes`, Dropout's `noise_shape` are), constructed with attribute tracking off.
UNTRACKED_OK = tuple(c for c in (
    L.Conv1D, L.Conv2D, L.Conv3D, L.Dense, L.DepthwiseConv2D, getattr(L, "DepthwiseConv1D", None),
    L.SeparableConv1D, L.SeparableConv2D, L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU,
    L.Activation, L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum,
    L.Concatenate, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
    L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
    L.Cropping3D, L.Flatten, L.Reshape) if c is not None)
#: Built-in classes that never hold sub-layers (their weights are their own two lists).
PLAIN_LAYERS = frozenset(UNTRACKED_OK + (L.BatchNormalization, L.PReLU, L.Normalization,
                                         L.Rescaling))
_OBJECT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised array whose data starts on an ALIGN-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + ALIGN, np.uint8)
    off = (-buf.ctypes.data) % ALIGN
    return buf[off:off + n].view(dtype).reshape(shape)


def take(a: np.ndarray, idx, axis: int) -> np.ndarray:
    """np.take(a, idx, axis) into an aligned buffer (`a` itself for slice(None))."""
    if isinstance(idx, slice):
        return a
    axis = axis % a.ndim
    shape = a.shape[:axis] + (len(idx),) + a.shape[axis + 1:]
    out = aligned_empty(shape, a.dtype)
    if axis == a.ndim - 1 and a.ndim > 1 and _copy_runs(a, idx, out):
        return out
    return np.take(a, idx, axis=axis, out=out, mode="clip")


RUN_COPY_MIN = 16   # indices per run of consecutive ones above which runs are copied as slices


def _copy_runs(a: np.ndarray, idx: np.ndarray, out: np.ndarray) -> bool:
    """out = a[..., idx] by slices when idx is a few long runs (a few filters dropped out of
    many): np.take on the last axis moves one element at a time, a slice copy whole rows of
    the run; 2x faster at 12 runs in 500, 5x slower at 131 runs in 256. False: not done."""
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    if (len(breaks) + 1) * RUN_COPY_MIN > len(idx):
        return False
    starts = [0, *breaks.tolist()]
    ends = [*breaks.tolist(), len(idx)]
    for s, e in zip(starts, ends):
        first = int(idx[s])
        out[..., s:e] = a[..., first:first + e - s]
    return True


def multiply(a: np.ndarray, b) -> np.ndarray:
    """a * b (broadcast) into an aligned buffer."""
    return np.multiply(a, b, out=aligned_empty(a.shape, a.dtype))


def _fast_class(cls) -> bool:
    return cls in UNTRACKED_OK and cls.from_config.__func__ is L.Layer.from_config.__func__


_PLAIN = (str, int, float, bool, type(None))   # Layer.__new__'s auto-config types
_SWAPPED: dict = {}


def _allocate(cls, kwargs: dict):
    """`cls.__new__(cls, **kwargs)` as tf_keras' Layer.__new__ does it for keyword arguments:
    the v1/v2 class swap (cached) and the auto-config attributes."""
    use_v2 = _version_utils.should_use_v2()
    real = _SWAPPED.get((cls, use_v2))
    if real is None:
        real = _SWAPPED[(cls, use_v2)] = _version_utils.swap_class(
            cls, _base_layer.Layer, _base_layer_v1.Layer, use_v2)
    obj = object.__new__(real)
    try:
        auto = all(isinstance(v, _PLAIN) for v in tf.nest.flatten(kwargs))
    except TypeError:
        auto = False
    obj._auto_get_config = auto
    if auto:
        obj._auto_config = _serialization.Config(**kwargs)
    return obj


def new_layer(layer, changes: dict, name: str):
    """A new layer like `layer` (its config with `changes`), not built; tracking stays off
    until `finish` is called."""
    cfg = layer.get_config()
    cfg.update(changes, name=name)
    cls = type(layer)
    if not _fast_class(cls):
        return cls.from_config(cfg)
    for key in cfg:
        if key.endswith(_OBJECT_SUFFIXES) and cfg[key] is not None and hasattr(layer, key):
            cfg[key] = copy.copy(getattr(layer, key))
    if "activation" in cfg and callable(getattr(layer, "activation", None)):
        cfg["activation"] = layer.activation
    obj = _allocate(cls, cfg) if cls.__new__ is _base_layer.Layer.__new__ else \
        cls.__new__(cls, **cfg)
    object.__setattr__(obj, "_self_setattr_tracking", False)
    obj.__init__(**cfg)
    return obj


def finish(layer) -> None:
    """Turn attribute tracking back on (a no-op for layers made by from_config)."""
    object.__setattr__(layer, "_self_setattr_tracking", True)


class _Given:
    """Initializer returning a fixed array, so variables start with the pruned weights."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None, **kwargs):
        v = self.value
        if tuple(shape) != v.shape:
            raise SurgeryError(f"internal: weight shape {tuple(shape)} != {v.shape}")
        if not adoptable(v, dtype) and _float32(v, dtype):   # read-only or misaligned
            copy = aligned_empty(v.shape, v.dtype)   # numpy's copy, cheaper than TensorFlow's
            np.copyto(copy, v)
            v = copy
        if adoptable(v, dtype):  # zero-copy: the variable keeps this buffer
            return tf.experimental.dlpack.from_dlpack(v.__dlpack__())
        return tf.constant(v, dtype=dtype)


def _float32(v: np.ndarray, dtype) -> bool:
    return v.size > 0 and v.dtype == np.float32 and tf.as_dtype(dtype or v.dtype) == tf.float32


def adoptable(v: np.ndarray, dtype) -> bool:
    """True when TensorFlow can take `v` through DLPack without a copy. Its check of the
    alignment is fatal (abort, not an exception), so it is checked here first."""
    return (_float32(v, dtype) and v.ctypes.data % ALIGN == 0 and v.flags.c_contiguous
            and v.flags.writeable)


def build_with_values(layer, inputs, values: dict) -> None:
    """Build `layer` for `inputs`, creating each weight named in `values` with that value."""
    pending = dict(values)
    original = layer.add_weight

    def add_weight(*args, **kwargs):
        name = kwargs.get("name", args[0] if args else None)
        if name in pending:
            kwargs["initializer"] = _Given(pending.pop(name))
        return original(*args, **kwargs)

    object.__setattr__(layer, "add_weight", add_weight)
    try:
        with tf.name_scope(layer._name_scope()):   # weight names as Keras' __call__ gives them
            layer._maybe_build(inputs)
    finally:
        object.__delattr__(layer, "add_weight")
    if pending:  # a layer naming its weights differently: fall back to assigning them
        raise SurgeryError(f"internal: weights {sorted(pending)} of {layer.name} not created")


def call_symbolic(layer, args, kwargs, output: tf.TensorSpec | None = None):
    """Connect `layer` in the new graph using its compute_output_shape instead of tracing;
    `output`: the spec of its single output when the caller knows it already."""
    if len(args) == 1 and not kwargs:
        out = _connect(layer, args[0], output)
        if out is not None:
            return out
    plain = object.__setattr__   # a plain flag: Keras' tracking __setattr__ costs more here
    plain(layer, "_dynamic", True)
    try:
        return layer(*args, **kwargs)
    except Exception:  # layer without a usable compute_output_shape: trace it after all
        plain(layer, "_dynamic", False)
        return layer(*args, **kwargs)
    finally:
        plain(layer, "_dynamic", False)


def _connect(layer, inputs, output: tf.TensorSpec | None = None):
    """What `layer(inputs)` does with `dynamic=True` on KerasTensors (the output signature from
    compute_output_shape, or `output` when given; one Node), for a call Keras would pass no
    training or mask argument to; None when that is not such a call or the layer cannot
    compute its output shape."""
    flat = tf.nest.flatten(inputs)
    if (layer._expects_training_arg or layer._expects_mask_arg or not flat
            or not all(isinstance(x, _keras_tensor.KerasTensor) for x in flat)
            or any(getattr(x, "_keras_mask", None) is not None for x in flat)):
        return None
    layer._called = True
    if output is not None:
        outputs = _keras_tensor.KerasTensor(output)
    else:
        spec = tf.nest.map_structure(lambda x: tf.TensorSpec(shape=x.shape, dtype=x.dtype),
                                     inputs)
        with _base_layer_utils.call_context().enter(layer=layer, inputs=inputs,
                                                     build_graph=True, call_context_args={}):
            try:
                signature = layer.compute_output_signature(spec)
            except Exception:
                return None
        outputs = tf.nest.map_structure(_keras_tensor.KerasTensor, signature)
    _node.Node(layer, call_args=(inputs,), call_kwargs={}, outputs=outputs)
    return outputs
