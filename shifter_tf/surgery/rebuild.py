"""Rebuild a smaller tf_keras functional model from the flattened graph and the plan.

Each layer is re-created from its config (filters/units changed), built with its sliced numpy
weights as initial values (no random init, no second assign), and connected with a shape-only
symbolic call; Keras' default functional call traces every layer in a scratch graph, which
costs milliseconds per layer. Layers we do not understand are reused as they are.
"""
from __future__ import annotations

import time

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.graph import layer_kinds
from shifter_tf.surgery import construct
from shifter_tf.graph import tfops
from shifter_tf.surgery.fold import OUT_SCALE, kernel_names, scaled_kernel
from shifter_tf.graph.ir import ModelIR, replay_arguments
from shifter_tf.errors import SurgeryError

L = keras.layers


def _index(mask) -> np.ndarray | slice:
    return slice(None) if mask is None or mask.all() else np.flatnonzero(mask)


_take = construct.take


def _take2(a: np.ndarray, rows, cols) -> np.ndarray:
    """a[..., rows, cols] as a C-contiguous array (TensorFlow would copy a strided one again);
    two np.take calls beat one broadcast fancy index 3x on conv kernels."""
    return _take(_take(a, rows, -2), cols, -1)


def sliced_weights(call, kind: str, keep: list, bias_delta: dict, weights: dict):
    """(config changes, {weight name: array}) of the rebuilt layer for one call."""
    layer = call.layer
    w = weights.get(id(layer), {})
    if kind == layer_kinds.PRODUCER:
        in_idx = _index(keep[call.inputs[0]])
        out_mask = keep[call.outputs[0]]
        out_idx = _index(out_mask)
        kname, bname = kernel_names(layer)
        scale = w.get(OUT_SCALE)
        scale = _take(scale, out_idx, 0) if scale is not None else None
        values, changes = {}, {}
        if kname == "pointwise_kernel":
            dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
            mult = dw.shape[-1]
            values["depthwise_kernel"] = _take(dw, in_idx, -2)
            if not isinstance(in_idx, slice):
                rows = (in_idx[:, None] * mult + np.arange(mult)).ravel()
                pw = np.take(pw, rows, axis=-2)
            values["pointwise_kernel"] = scaled_kernel(_take(pw, out_idx, -1), scale)
        else:
            kernel = w["kernel"]
            groups = getattr(layer, "groups", 1)
            if groups > 1:  # whole conv groups: the per-group input axis is not sliced
                changes["groups"] = _kept_groups(call, keep, groups)
                in_idx = slice(None)
            sliced = _take2(kernel, in_idx, out_idx)
            values["kernel"] = scaled_kernel(sliced, scale, inplace=sliced is not kernel)
        delta = bias_delta.get(call.index)
        use_bias = bname in w or delta is not None
        if use_bias:
            bias = w[bname].astype(np.float64) if bname in w else np.zeros(
                w[kname].shape[-1])
            if delta is not None:
                bias = bias + delta
            values[bname] = _take(bias, out_idx, 0).astype(values.get("kernel", values.get(
                "pointwise_kernel")).dtype)
        key = "units" if type(layer) is L.Dense else "filters"
        changes.update({key: int(values[kname].shape[-1]), "use_bias": bool(use_bias)})
        return changes, values
    if kind == layer_kinds.DEPTHWISE:
        in_idx = _index(keep[call.inputs[0]])
        out_idx = _index(keep[call.outputs[0]])
        scale = w.get(OUT_SCALE)
        values = {"depthwise_kernel": scaled_kernel(
            _take(w["depthwise_kernel"], in_idx, -2),
            _take(scale, out_idx, 0) if scale is not None else None, depthwise=True)}
        if "bias" in w:
            values["bias"] = _take(w["bias"], out_idx, 0)
        return {"use_bias": "bias" in w}, values
    if kind == layer_kinds.CHANNELWISE:
        mask = keep[call.inputs[0]]
        idx = _index(mask)
        n = len(mask) if mask is not None else None
        values = {name: _take(a, idx, -1) if np.ndim(a) and a.shape[-1] == n else a
                  for name, a in w.items()}
        return channel_config(layer, idx, n), values
    return {}, {k: v for k, v in w.items() if k != OUT_SCALE}


def _kept_groups(call, keep: list, groups: int) -> int:
    """Conv groups left; the graph ties a group's inputs and filters, so the counts agree."""
    kin, kout = keep[call.inputs[0]], keep[call.outputs[0]]
    n_out = groups if kout is None else int(kout.sum()) * groups // len(kout)
    n_in = groups if kin is None else int(kin.sum()) * groups // len(kin)
    if n_in != n_out:
        raise SurgeryError(f"internal: {call.name} keeps {n_in} input and {n_out} output groups")
    return n_out


def channel_config(layer, idx, n) -> dict:
    """Config changes of a per-channel layer that keeps channels `idx` of n."""
    if isinstance(idx, slice):
        return {}
    t = type(layer)
    if t is L.Reshape:
        shape = list(layer.target_shape)
        return {} if shape[-1] == -1 else {"target_shape": tuple(shape[:-1]) + (len(idx),)}
    names = {L.Rescaling: ("scale", "offset"), L.Normalization: ("mean", "variance")}.get(t, ())
    cfg = layer.get_config() if names else {}
    changes = {}
    for name in names:
        v = cfg.get(name)
        if v is not None and np.ndim(v) and np.shape(v)[-1] == n and n > 1:
            changes[name] = np.take(np.asarray(v), idx, axis=-1).tolist()
    return changes


def _new_input(call):
    cfg = call.layer.get_config()
    return keras.Input(batch_shape=cfg["batch_input_shape"], dtype=cfg.get("dtype"),
                       name=call.name, sparse=cfg.get("sparse", False),
                       ragged=cfg.get("ragged", False))


def _clone_frozen(call, args, kwargs):
    """A copy of a known layer we do not prune, with its weights (the layer itself if it
    cannot be re-created from its config)."""
    try:
        layer = type(call.layer).from_config({**call.layer.get_config(), "name": call.name})
        out = layer(*args, **kwargs)
        layer.set_weights(call.layer.get_weights())
        return layer, out
    except Exception:
        return call.layer, call.layer(*args, **kwargs)


def _slice_all(ir: ModelIR, kinds: list, keep: list, bias_delta: dict, weights: dict) -> dict:
    """{call index: sliced_weights} of every layer with weights, made before any layer is
    built: copying tens of MB evicts the CPU caches, and Keras' many small objects are built
    faster when that does not happen between every two of them."""
    out, seen = {}, set()
    for call in ir.calls:
        kind = kinds[call.index].kind
        if kind in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE, layer_kinds.CHANNELWISE) and id(call.layer) not in seen \
                and weights.get(id(call.layer)):
            seen.add(id(call.layer))
            out[call.index] = sliced_weights(call, kind, keep, bias_delta, weights)
    return out


def _known_output(call, ir: ModelIR, keep: list, layer) -> tf.TensorSpec | None:
    """The output of a built-in layer with one output: the traced shape with the kept
    channels and the traced dtype (the layer has the same config and dtype policy, so it
    would compute the same), instead of asking compute_output_shape again."""
    if len(call.outputs) != 1 or type(layer) not in construct.PLAIN_LAYERS:
        return None
    t = ir.tensors[call.outputs[0]]
    shape = list(t.shape)
    if keep[t.index] is not None:
        shape[-1] = int(keep[t.index].sum())
    return tf.TensorSpec(shape, t.dtype)


def rebuild(ir: ModelIR, kinds: list, keep: list, bias_delta: dict, weights: dict,
            name: str | None = None):
    """(new model, {layer name: build ms}, {id(original layer): new layer}).

    Channels of tensor t stay where `keep[t]` is True (None: all stay); producer biases get
    `bias_delta[call index]` added before slicing."""
    new_t: dict = {}
    new_layers: dict = {}
    times: dict = {}
    inputs = []
    sliced = _slice_all(ir, kinds, keep, bias_delta, weights)
    for call in ir.calls:
        start = time.perf_counter()
        kind = kinds[call.index].kind
        if kind == layer_kinds.INPUT:
            new_t[call.outputs[0]] = _new_input(call)
            inputs.append(new_t[call.outputs[0]])
            continue
        if kind == layer_kinds.FOLDED:
            new_t[call.outputs[0]] = new_t[call.inputs[0]]
            continue
        args, kwargs = replay_arguments(call, new_t)
        layer = new_layers.get(id(call.layer))
        if kind == layer_kinds.OPAQUE:
            out = call.layer(*args, **kwargs)
        elif kind == layer_kinds.FROZEN and layer is None and call.layer.weights:
            layer, out = _clone_frozen(call, args, kwargs)
            new_layers[id(call.layer)] = layer
        else:
            if layer is None:
                changes, values = sliced.pop(call.index, None) or \
                    sliced_weights(call, kind, keep, bias_delta, weights)
                layer = construct.new_layer(call.layer, changes, call.name)
                if values:
                    construct.build_with_values(layer, args[0] if args else kwargs.get("inputs"), values)
                construct.finish(layer)
                new_layers[id(call.layer)] = layer
            if tfops.is_tfop(layer):   # per-channel constants among the arguments
                args, kwargs = tfops.sliced_arguments(
                    args, kwargs, ir.tensors[call.outputs[0]].channels, keep[call.outputs[0]])
                out = layer(*args, **kwargs)
            else:
                out = construct.call_symbolic(layer, args, kwargs, _known_output(call, ir, keep, layer))
        for t, kt in zip(call.outputs, tf.nest.flatten(out)):
            expect = list(ir.tensors[t].shape)
            if keep[t] is not None:
                expect[-1] = int(keep[t].sum())
            if list(kt.shape) != expect:
                raise SurgeryError(f"internal: {call.name} gives shape {kt.shape}, expected {expect}")
            new_t[t] = kt
        times[call.name] = times.get(call.name, 0.0) + (time.perf_counter() - start) * 1e3
    model = ir.model
    ins = tf.nest.pack_sequence_as(model._nested_inputs, inputs)
    outs = tf.nest.pack_sequence_as(model._nested_outputs, [new_t[t] for t in ir.outputs])
    new_layers.update({id(c.layer): c.layer for c in ir.calls if kinds[c.index].kind == layer_kinds.OPAQUE})
    return keras.Model(ins, outs, name=name or model.name), times, new_layers
