"""Rebuild a functional or Sequential model in the other Keras library node by node, and
check the copy against the original on a sample, naming the first layer whose outputs differ.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras

from shifter_tf.models.keras3.layers import (convert_layer, copy_weights, first_line, keras3_lib,
                                             where_of)
from shifter_tf.errors import ConversionError

MODEL_CLASSES = ("Functional", "Sequential", "Model")


def _is_model(layer) -> bool:
    return type(layer).__name__ in MODEL_CLASSES


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


def _inputs_of(model):
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

    dst_lib = tf_keras if to_tf else keras3_lib()
    k3 = to_tf   # the source is Keras 3 when converting to tf_keras
    kind = type(model).__name__
    if kind not in MODEL_CLASSES:
        raise ConversionError(f"model {model.name!r}: {kind} is a subclassed model; only "
                              "functional or Sequential models convert")
    inputs = _inputs_of(model)
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
                copy_weights(layer, new, where_of(layer))
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
            raise ConversionError(f"{where_of(layer)}: rebuilt layer fails on its inputs: "
                                  f"{first_line(e)}") from None
        for a, b in zip(tf.nest.flatten(outputs), tf.nest.flatten(result)):
            mapping[id(a)] = b
            trace.append((a, b, layer.name))
    for layer, _, _, _ in _calls(model, k3):
        if id(layer) in made and not _is_model(layer):
            copy_weights(layer, made[id(layer)], where_of(layer))
    missing = [o for o in model.outputs if id(o) not in mapping]
    if missing:
        raise ConversionError(f"model {model.name!r}: output not reachable from its inputs")
    outs = [mapping[id(o)] for o in model.outputs]
    return dst_lib.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                         outs if len(outs) > 1 else outs[0], name=model.name)


def _child(layer, to_tf: bool, trace: list):
    """The converted copy of one layer (a nested model is converted whole)."""
    if _is_model(layer):
        return _rebuild(layer, to_tf, [])
    return convert_layer(layer, tf_keras if to_tf else keras3_lib(), to_tf)


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


def _sample_for(model, sample):
    """`sample` as float32 array(s), or a seeded standard-normal batch of 8 per input (unknown
    sizes taken as 32)."""
    if sample is not None:
        return [np.asarray(s, np.float32) for s in sample] if isinstance(sample, (list, tuple)) \
            else np.asarray(sample, np.float32)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal([8] + [32 if d is None else int(d) for d in tuple(x.shape)[1:]])
          .astype(np.float32) for x in model.inputs]
    return xs[0] if len(xs) == 1 else xs


def _run(model, x) -> list[np.ndarray]:
    out = model(x, training=False)
    return [np.asarray(o, dtype=np.float64) for o in (out if isinstance(out, (list, tuple))
                                                      else [out])]


def _check(src, dst, sample, atol: float, trace: list, to_tf: bool) -> None:
    """Raise ConversionError unless `src` and `dst` agree within atol (times the output scale
    when above 1) on `sample`; name the first layer whose outputs differ."""
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
    src_lib, dst_lib = (keras3_lib(), tf_keras) if to_tf else (tf_keras, keras3_lib())
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
            return where_of(layer) if layer is not None else f"layer {name!r}"
    return None


def convert(model, to_tf: bool, sample, atol: float):
    trace: list = []
    new = _rebuild(model, to_tf, trace)
    _check(model, new, sample, atol, trace, to_tf)
    return new

