"""Keras 3 models in and out: rebuild a Keras 3 model as tf_keras (where tfmot and the surgery
work) and a tf_keras model as Keras 3 (so a Keras 3 user gets a Keras 3 model back).

Layers are mapped generically by class name and config: the source layer's `get_config()` with
the few keys the two libraries spell differently fixed (dtype policies -> dtype names,
`LeakyReLU.negative_slope` <-> `alpha`, options one library lacks dropped only while they hold
their default), then the same-named class of the other library is instantiated, the graph is
rebuilt node by node and the weights are copied. Every conversion ends by running both models
on a sample; if their outputs differ, the first layer whose outputs differ is named.

Keras 3 is imported lazily (`import keras` only inside functions): the rest of shifter_tf runs
with TF_USE_LEGACY_KERAS=1 and `tf_keras`, and `import keras` still gives Keras 3 then.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

from shifter_tf.models.user import ModelError


class ConversionError(ModelError):
    """A model that cannot be converted between Keras 3 and tf_keras; names the layer and why."""


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


def _k3():
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
    default (or None/False, i.e. off), it is a data format both libraries default to, or it is
    an initializer (the weights are copied, so initializers never run)."""
    default = src_params.get(key, inspect.Parameter.empty)
    return (value is None or value is False or _same(value, default)
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
    dst_lib = tf_keras if _module_root(dst_cls) == "tf_keras" else _k3()
    src_lib = _k3() if dst_lib is tf_keras else tf_keras
    dst, src = getattr(getattr(dst_lib, kind), cls_name, None), \
        getattr(getattr(src_lib, kind), cls_name, None)
    if dst is None or src is None:
        raise ConversionError(f"{where}: {key} {cls_name!r} is not a built-in {kind[:-1]} of both "
                              "Keras libraries")
    return {"class_name": cls_name, "config": _translate(src, dst, cfg, f"{where}: {key}", {})}


def _module_root(cls) -> str:
    return cls.__module__.split(".")[0]


def _where(layer) -> str:
    if type(layer).__module__.startswith("keras.src.ops"):
        return f"operation {layer.name!r} (keras.ops {type(layer).__name__})"
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _convert_layer(layer, dst_lib, to_tf: bool):
    """A fresh, unbuilt layer of `dst_lib` configured like `layer`."""
    name = type(layer).__name__
    where = _where(layer)
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
        raise ConversionError(f"{where}: cannot be rebuilt: {_first_line(e)}") from None


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


def _first_line(e: Exception) -> str:
    """The informative line of a (possibly wrapped) Keras error."""
    text = str(e)
    m = re.search(r"Exception encountered: (.+)", text)
    line = m.group(1) if m else (text.strip().splitlines() or [""])[0]
    return (line.strip() or type(e).__name__)[:200]


def _copy_weights(src, dst, where: str) -> None:
    ws = [np.asarray(w) for w in src.get_weights()]
    have = dst.get_weights()
    shapes = [w.shape for w in ws], [w.shape for w in have]
    if shapes[0] != shapes[1]:
        raise ConversionError(f"{where}: weights of shapes {shapes[0]} do not fit the rebuilt "
                              f"layer's {shapes[1]}")
    if ws:
        dst.set_weights(ws)


def _is_model(layer) -> bool:
    return type(layer).__name__ in ("Functional", "Sequential", "Model") or \
        hasattr(layer, "_nodes_by_depth") or type(layer).__name__ == "Sequential"


def _calls(model, k3: bool):
    """(layer, args, kwargs, outputs) of every call in a functional `model`, in an order where
    each call comes after the calls producing its inputs."""
    by_depth = model._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if k3:
                if node.operation is None or node.is_input:
                    continue
                yield node.operation, node.arguments.args, node.arguments.kwargs, node.outputs
            else:
                if node.is_input:
                    continue
                yield node.layer, node.call_args, node.call_kwargs, node.outputs


def _inputs_of(model, where: str):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ConversionError(f"model {model.name!r}: not built (a subclassed model, or a "
                              "Sequential without keras.Input); only built functional or "
                              "Sequential models convert")
    return inputs


def _rebuild(model, to_tf: bool, trace: list):
    """The converted copy of functional/Sequential `model`; appends (src tensor, dst tensor,
    layer name) of every call to `trace` for locating a mismatch."""
    import tensorflow as tf

    dst_lib = tf_keras if to_tf else _k3()
    k3 = to_tf   # the source is Keras 3 when converting to tf_keras
    kind = type(model).__name__
    if kind not in ("Functional", "Sequential", "Model"):
        raise ConversionError(f"model {model.name!r}: {kind} is a subclassed model; only "
                              "functional or Sequential models convert")
    inputs = _inputs_of(model, model.name)
    new_inputs = [dst_lib.Input(batch_shape=tuple(x.shape), dtype=x.dtype.name
                                if hasattr(x.dtype, "name") else x.dtype,
                                name=_tensor_name(x, i)) for i, x in enumerate(inputs)]
    if kind == "Sequential":
        layers = [_child(layer, to_tf, trace) for layer in model.layers]
        if not layers:
            raise ConversionError(f"model {model.name!r}: has no layers")
        out = dst_lib.Sequential(new_inputs[:1] + layers, name=model.name)
        for layer, new in zip(model.layers, layers):
            if not _is_model(layer):
                _copy_weights(layer, new, _where(layer))
            trace.append((_layer_output(layer), _layer_output(new), layer.name))
        return out
    mapping = {id(a): b for a, b in zip(inputs, new_inputs)}
    made: dict[int, Any] = {}

    def swap(t):
        return mapping.get(id(t), t)

    for layer, args, kwargs, outputs in _calls(model, k3):
        if type(layer).__name__ == "InputLayer":
            continue
        if any(id(t) not in mapping for t in tf.nest.flatten((args, kwargs))
               if _is_symbolic(t)):
            continue
        new = made.get(id(layer))
        if new is None:
            new = made[id(layer)] = _child(layer, to_tf, trace)
        try:
            result = new(*tf.nest.map_structure(swap, list(args)),
                         **tf.nest.map_structure(swap, dict(kwargs)))
        except ConversionError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"{_where(layer)}: rebuilt layer fails on its inputs: "
                                  f"{_first_line(e)}") from None
        for a, b in zip(tf.nest.flatten(outputs), tf.nest.flatten(result)):
            mapping[id(a)] = b
            trace.append((a, b, layer.name))
    for layer, _, _, _ in _calls(model, k3):
        if id(layer) in made and not _is_model(layer):
            _copy_weights(layer, made[id(layer)], _where(layer))
    missing = [o for o in model.outputs if id(o) not in mapping]
    if missing:
        raise ConversionError(f"model {model.name!r}: output not reachable from its inputs")
    outs = [mapping[id(o)] for o in model.outputs]
    return dst_lib.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                         outs if len(outs) > 1 else outs[0], name=model.name)


def _child(layer, to_tf: bool, trace: list):
    """The converted copy of one layer (a nested model is converted whole)."""
    if type(layer).__name__ in ("Functional", "Sequential", "Model"):
        return _rebuild(layer, to_tf, [])
    return _convert_layer(layer, tf_keras if to_tf else _k3(), to_tf)


def _layer_output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError):
        return None


def _is_symbolic(t) -> bool:
    return type(t).__name__ == "KerasTensor"


def _tensor_name(x, i: int) -> str:
    hist = getattr(x, "_keras_history", None)
    layer = getattr(hist, "operation", None) or getattr(hist, "layer", None)
    return getattr(layer, "name", None) or f"input_{i}"


def _sample_for(model, sample: Optional[np.ndarray]) -> np.ndarray:
    if sample is not None:
        return np.asarray(sample, dtype=np.float32)
    shape = [8] + [32 if d is None else int(d) for d in tuple(model.inputs[0].shape)[1:]]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _run(model, x) -> list[np.ndarray]:
    out = model(x, training=False)
    return [np.asarray(o, dtype=np.float64) for o in (out if isinstance(out, (list, tuple))
                                                      else [out])]


def _check(src, dst, sample, atol: float, trace: list, to_tf: bool) -> None:
    """Raise ConversionError unless `src` and `dst` agree within atol (times the output scale
    when above 1) on `sample`; name the first layer whose outputs differ."""
    if len(src.inputs) != 1:
        x = sample
    else:
        x = _sample_for(src, sample)
    a, b = _run(src, x), _run(dst, x)
    scale = max(1.0, *(float(np.max(np.abs(o))) if o.size else 0.0 for o in a))
    worst = max(float(np.max(np.abs(p - q))) if p.size else 0.0 for p, q in zip(a, b)) \
        if all(p.shape == q.shape for p, q in zip(a, b)) else float("inf")
    if worst <= atol * scale:
        return
    culprit = _first_mismatch(src, dst, x, atol, trace, to_tf)
    raise ConversionError(f"{culprit or 'model ' + repr(src.name)}: converted model differs "
                          f"from the original by {worst:.3g} (allowed {atol * scale:.3g})")


def _first_mismatch(src, dst, x, atol: float, trace: list, to_tf: bool) -> Optional[str]:
    """The first traced layer whose outputs differ between the two models."""
    pairs = [(a, b, n) for a, b, n in trace if a is not None and b is not None]
    if not pairs:
        return None
    src_lib, dst_lib = (_k3(), tf_keras) if to_tf else (tf_keras, _k3())
    try:
        one = len(src.inputs) == 1
        ra = src_lib.Model(src.inputs[0] if one else src.inputs,
                           [p[0] for p in pairs])(x, training=False)
        rb = dst_lib.Model(dst.inputs[0] if one else dst.inputs,
                           [p[1] for p in pairs])(x, training=False)
    except Exception:  # noqa: BLE001 - locating is best effort; the caller still raises
        return None
    for (_, _, name), p, q in zip(pairs, ra, rb):
        p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
        tol = atol * max(1.0, float(np.max(np.abs(p))) if p.size else 0.0)
        if p.shape != q.shape or (p.size and float(np.max(np.abs(p - q))) > tol):
            layer = src.get_layer(name) if name in [l.name for l in src.layers] else None
            return _where(layer) if layer is not None else f"layer {name!r}"
    return None


def _convert(model, to_tf: bool, sample, atol: float):
    trace: list = []
    new = _rebuild(model, to_tf, trace)
    _check(model, new, sample, atol, trace, to_tf)
    return new


def to_tf_keras(model, sample: Optional[np.ndarray] = None,
                atol: float = 1e-5) -> tf_keras.Model:
    """A tf_keras copy of Keras 3 functional/Sequential `model` with its weights, checked to
    give the same outputs on `sample` (default: a seeded random batch of the input shape).
    A tf_keras model is returned as it is. Raises ConversionError naming the first layer at
    fault."""
    if not is_keras3(model):
        return model
    return _convert(model, True, sample, atol)


def to_keras3(model: tf_keras.Model, sample: Optional[np.ndarray] = None, atol: float = 1e-5):
    """A Keras 3 copy of tf_keras functional/Sequential `model` (same check as `to_tf_keras`).
    A Keras 3 model is returned as it is."""
    if is_keras3(model):
        return model
    return _convert(model, False, sample, atol)


def load_any(path: str | Path, unsafe: bool = False) -> tf_keras.Model:
    """A model file saved by Keras 3 (.keras, or .h5 with Keras 3 configs), loaded with Keras 3
    and converted to tf_keras; ModelError/ConversionError on failure."""
    path = Path(path)
    k3 = _k3()
    try:
        if path.suffix == ".keras":
            model = k3.saving.load_model(path, compile=False, safe_mode=not unsafe)
        else:
            model = k3.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras 3 raises many kinds; one line for the user
        raise ModelError(f"{path}: saved by Keras 3, which cannot load it: "
                         f"{_first_line(e)}") from None
    try:
        return to_tf_keras(model)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None


def save_keras3(model: tf_keras.Model, path: str | Path, sample: Optional[np.ndarray] = None,
                atol: float = 1e-5) -> None:
    """Write tf_keras `model` as a Keras 3 `.keras` file (converted and checked first)."""
    to_keras3(model, sample, atol).save(str(path))


def is_keras3_file(path: str | Path) -> bool:
    """True if `path` (.keras zip or .h5) was written by Keras 3."""
    import json
    import zipfile
    path = Path(path)
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                if "metadata.json" not in z.namelist():
                    return False
                meta = json.loads(z.read("metadata.json"))
            return str(meta.get("keras_version", "")).startswith("3.")
        import h5py
        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version")
            config = f.attrs.get("model_config")
        version = version.decode() if isinstance(version, bytes) else str(version or "")
        if version.startswith("3."):
            return True
        text = config.decode() if isinstance(config, bytes) else str(config or "")
        return '"batch_shape"' in text and '"batch_input_shape"' not in text
    except (OSError, ValueError, KeyError):
        return False
