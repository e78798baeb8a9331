"""Keras 3 <-> tf_keras, one layer at a time: the source layer's config translated for the
other library (dtype policies as names, renamed keys, options the other lacks dropped while they
are neutral), the same-named class instantiated, the weights copied.
"""
from __future__ import annotations

import inspect
import re
from typing import Any

import numpy as np

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

from shifter_tf.errors import ConversionError  # noqa: F401 (raised here)



#: Layers that are not built-in layer classes of both libraries, or that need more than a
#: config to move (their own Python code, or state kept outside weights).
UNSUPPORTED = {
    "Lambda": "runs its own Python function, which cannot be carried between the libraries",
    "TFSMLayer": "wraps a SavedModel, not a Keras layer",
    "TorchModuleWrapper": "wraps a PyTorch module",
    "JaxLayer": "wraps a JAX function",
    "FlaxLayer": "wraps a Flax module",
}
#: Keys spelled differently: {class: {keras3 key: tf_keras key}}.
RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
#: Keyword arguments every layer's base class takes besides its own __init__ parameters.
_BASE_KWARGS = {"name", "trainable", "dtype", "dynamic", "input_shape", "input_dim",
                "batch_input_shape", "batch_size", "activity_regularizer", "autocast"}
_NESTED = {"_initializer": "initializers", "_regularizer": "regularizers",
           "_constraint": "constraints"}
_POLICIES = ("DTypePolicy", "FloatDTypePolicy", "Policy")


def keras3_lib():
    import keras
    if not keras.__version__.startswith("3."):
        raise ConversionError(f"`import keras` gives Keras {keras.__version__}, not Keras 3")
    return keras


def is_keras3(obj: Any) -> bool:
    """True for a Keras 3 model or layer (its class derives from `keras`, not `tf_keras`)."""
    return any(c.__module__.split(".")[0] == "keras" for c in type(obj).__mro__)


def _params(cls) -> dict[str, Any]:
    """Every named __init__ parameter of `cls` and its bases, with its default."""
    out: dict[str, Any] = {}
    for c in reversed(cls.__mro__):
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            continue
        for p in sig.parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self":
                out[p.name] = p.default
    return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


def _translate(src_cls, dst_cls, config: dict, where: str, renames: dict) -> dict:
    """`config` of a `src_cls` object made acceptable to `dst_cls`: renamed keys, nested
    initializers & co. translated, dtype policies as names, options `dst_cls` lacks dropped if
    they hold `src_cls`'s default (else ConversionError)."""
    src_params, dst_params = _params(src_cls), _params(dst_cls)
    accepted = set(dst_params) | (_BASE_KWARGS if _is_layer(dst_cls) else set())
    out = {}
    for key, value in config.items():
        key2 = renames.get(key, key)
        if key2 not in accepted:
            if _neutral(key, value, src_params):
                continue
            raise ConversionError(f"{where}: option {key}={value!r} of {src_cls.__name__} has no "
                                  f"equivalent in the other Keras")
        out[key2] = _value(key2, value, dst_cls, where)
    return out


def _neutral(key: str, value, src_params: dict) -> bool:
    """Whether dropping option `key` leaves the layer's outputs as they are: it holds its
    default (or None, or False for a key with no default, i.e. off), it is a data format both
    libraries default to, or it is an initializer (the weights are copied, so initializers
    never run)."""
    default = src_params.get(key, inspect.Parameter.empty)
    return (value is None or _same(value, default)
            or (value is False and default is inspect.Parameter.empty)
            or (key == "data_format" and value == "channels_last")
            or key.endswith("_initializer"))


def _is_layer(cls) -> bool:
    return any(c.__name__ == "Layer" for c in cls.__mro__)


def _value(key: str, value, dst_cls, where: str):
    """A config value for the destination library."""
    if not (isinstance(value, dict) and "class_name" in value):
        return value
    cls_name, cfg = value["class_name"], value.get("config") or {}
    if cls_name in _POLICIES:
        return cfg.get("name", "float32")
    kind = next((m for suffix, m in _NESTED.items() if key.endswith(suffix)), None)
    if kind is None:
        raise ConversionError(f"{where}: option {key!r} holds a {cls_name} object, which is not "
                              "converted between the libraries")
    dst_lib = tf_keras if _module_root(dst_cls) == "tf_keras" else keras3_lib()
    src_lib = keras3_lib() if dst_lib is tf_keras else tf_keras
    dst, src = getattr(getattr(dst_lib, kind), cls_name, None), \
        getattr(getattr(src_lib, kind), cls_name, None)
    if dst is None or src is None:
        raise ConversionError(f"{where}: {key} {cls_name!r} is not a built-in {kind[:-1]} of both "
                              "Keras libraries")
    return {"class_name": cls_name, "config": _translate(src, dst, cfg, f"{where}: {key}", {})}


def _module_root(cls) -> str:
    return cls.__module__.split(".")[0]


def where_of(layer) -> str:
    if type(layer).__module__.startswith("keras.src.ops"):
        return f"operation {layer.name!r} (keras.ops {type(layer).__name__})"
    return f"layer {layer.name!r} ({type(layer).__name__})"


def convert_layer(layer, dst_lib, to_tf: bool):
    """A fresh, unbuilt layer of `dst_lib` configured like `layer`."""
    name = type(layer).__name__
    where = where_of(layer)
    if name in UNSUPPORTED:
        raise ConversionError(f"{where}: not convertible: {UNSUPPORTED[name]}")
    dst_cls = getattr(dst_lib.layers, name, None)
    if dst_cls is None or _module_root(type(layer)) not in ("keras", "tf_keras") \
            or type(layer).__module__.startswith("keras.src.ops"):
        kind = "a Keras 3 operation (keras.ops / tensor arithmetic), not a layer" \
            if type(layer).__module__.startswith("keras.src.ops") else \
            "a custom class" if _module_root(type(layer)) not in ("keras", "tf_keras") else \
            "a layer the other Keras does not have"
        raise ConversionError(f"{where}: not convertible: {kind}; use built-in layers "
                              "(e.g. keras.layers.Add instead of x + y)")
    renames = RENAMED.get(name, {})
    if not to_tf:
        renames = {v: k for k, v in renames.items()}
    try:
        config = _translate(type(layer), dst_cls, _plain(layer.get_config()), where, renames)
        if name == "BatchNormalization" and isinstance(config.get("axis"), list) \
                and len(config["axis"]) == 1:
            config["axis"] = config["axis"][0]   # tf_keras keeps [3], Keras 3 wants 3 or -1
        return _instantiate(dst_cls, config, type(layer), where)
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the other library: one line
        raise ConversionError(f"{where}: cannot be rebuilt: {first_line(e)}") from None


def _instantiate(dst_cls, config: dict, src_cls, where: str):
    """`dst_cls.from_config(config)`, dropping keys the class turns down as unexpected (a
    keyword its parent takes but it does not pass on) while they are neutral (see _neutral)."""
    src_params = _params(src_cls)
    for _ in range(len(config) + 1):
        try:
            return dst_cls.from_config(config)
        except (TypeError, ValueError) as e:
            text = " ".join(str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
            m = re.search(r"(?:unexpected keyword argument|Unrecognized keyword arguments?:?)"
                          r"\s*\[?'(\w+)'", text)
            key = m.group(1) if m else None
            if key is None or key not in config or not _neutral(key, config[key], src_params):
                if key in config:
                    raise ConversionError(f"{where}: option {key}={config[key]!r} has no "
                                          "equivalent in the other Keras") from None
                raise
            config = {k: v for k, v in config.items() if k != key}
    return dst_cls.from_config(config)


def _plain(value):
    """Config values as plain Python (tf_keras keeps lists in tracking ListWrappers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListWrapper":
        return [_plain(v) for v in value] if not isinstance(value, tuple) else \
            tuple(_plain(v) for v in value)
    return value


def first_line(e: Exception) -> str:
    """The informative line of a (possibly wrapped) Keras error."""
    text = str(e)
    m = re.search(r"Exception encountered: (.+)", text)
    line = m.group(1) if m else (text.strip().splitlines() or [""])[0]
    return (line.strip() or type(e).__name__)[:200]


def copy_weights(src, dst, where: str) -> None:
    ws = [np.asarray(w) for w in src.get_weights()]
    have = dst.get_weights()
    shapes = [w.shape for w in ws], [w.shape for w in have]
    if shapes[0] != shapes[1]:
        raise ConversionError(f"{where}: weights of shapes {shapes[0]} do not fit the rebuilt "
                              f"layer's {shapes[1]}")
    if ws:
        dst.set_weights(ws)

