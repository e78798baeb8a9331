"""Constants (one forward pass): a channel position is *constant* when it holds the same value
at every spatial location for every input, e.g. act(bias) of an all-zero filter, or a filter that
only reads constant channels. Values are pushed through activations, BN, pooling, merges,
element-wise TF ops...
"""
from __future__ import annotations

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.graph import layer_kinds
from shifter_tf.graph import tfops
from shifter_tf.surgery.fold import OUT_SCALE
from shifter_tf.graph.deps import DependencyGraph

L = keras.layers

def dw_sum_and_zero(w: dict):
    """Per output channel of a depthwise kernel: spatial sum and "all zero" (BN scale applied)."""
    dw = w["depthwise_kernel"]
    flat = dw.reshape(-1, dw.shape[-2] * dw.shape[-1])
    dsum, zero = flat.sum(0, dtype=np.float64), ~flat.any(0)
    scale = w.get(OUT_SCALE)
    if scale is not None:
        dsum, zero = dsum * scale, zero | (scale == 0)
    return dsum, zero


def propagate_constants(graph: DependencyGraph, weights: dict, readers: dict, policy: str):
    """Forward pass: per tensor, the constant value of each channel (NaN if not constant) and
    whether that value only holds away from zero-padded borders (policy 'fold' only)."""
    ir = graph.ir
    const: list = [None] * len(ir.tensors)
    approx: list = [None] * len(ir.tensors)
    fold_all = policy == "fold"
    for call in ir.calls:
        kind = graph.kinds[call.index].kind
        if kind in (layer_kinds.INPUT, layer_kinds.FROZEN, layer_kinds.OPAQUE):
            continue
        out_t = call.outputs[0]
        cin = const[call.inputs[0]] if call.inputs else None
        ain = approx[call.inputs[0]] if call.inputs else None
        layer = call.layer
        if kind in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE) and not layer_kinds.elementwise_activation(layer):
            continue  # softmax & co.: no per-channel constant (and the outputs are frozen)
        if kind == layer_kinds.PRODUCER:
            r = readers[call.index]
            shape_in, shape_out = ir.tensors[call.inputs[0]].shape, ir.tensors[out_t].shape
            exact_pad = layer_kinds.padding_exact(layer, shape_in, shape_out)
            if cin is None:
                if r.filter_zero.any():
                    c = np.full(len(r.bias), np.nan)
                    c[r.filter_zero] = layer_kinds.apply_activation(r.act, r.bias[r.filter_zero])
                    const[out_t] = c
                continue
            known = ~np.isnan(cin)
            inexact_in = known & (cin != 0) & (not exact_pad)
            unknown = ~known if fold_all else (~known | inexact_in)
            live = r.pattern.outputs_reading(unknown)
            cand = ~live
            if not cand.any():
                continue
            pre = r.bias.copy()
            if (known & (cin != 0)).any():
                pre += r.fold(np.where(known, cin, 0.0))
            c = np.full(len(r.bias), np.nan)
            c[cand] = layer_kinds.apply_activation(r.act, pre[cand])
            const[out_t] = c
            apx_in = inexact_in if ain is None else (ain | inexact_in)
            if fold_all and apx_in.any():
                approx[out_t] = cand & r.pattern.outputs_reading(apx_in)
        elif kind == layer_kinds.DEPTHWISE:
            w = weights[id(layer)]
            dsum, fz = dw_sum_and_zero(w)
            bias = w["bias"].astype(np.float64) if "bias" in w else np.zeros(len(dsum))
            mult = len(dsum) // ir.tensors[call.inputs[0]].channels
            c = np.full(len(dsum), np.nan)
            c[fz] = bias[fz]
            if cin is not None:
                cr = np.repeat(cin, mult)
                known = ~np.isnan(cr)
                exact_pad = layer_kinds.padding_exact(layer, ir.tensors[call.inputs[0]].shape,
                                            ir.tensors[out_t].shape)
                inexact = known & (cr != 0) & (not exact_pad)
                ok = ~fz & known & (fold_all | ~inexact)
                c[ok] = cr[ok] * dsum[ok] + bias[ok]
                apx = ok & (inexact | (np.repeat(ain, mult) if ain is not None else False))
                if apx.any():
                    approx[out_t] = apx
            if not np.isnan(c).all():
                known = ~np.isnan(c)
                c[known] = layer_kinds.apply_activation(layer.activation, c[known])
                const[out_t] = c
        elif tfops.is_tfop(layer):   # element-wise TF op (CHANNELWISE or MERGE)
            const[out_t], approx[out_t] = _tfop_constants(
                call, [const[t] for t in call.inputs], [approx[t] for t in call.inputs],
                ir.tensors[out_t])
        elif kind in (layer_kinds.CHANNELWISE, layer_kinds.FOLDED):
            if kind == layer_kinds.FOLDED:
                const[out_t], approx[out_t] = cin, ain
                continue
            if cin is None and type(layer) is not L.BatchNormalization:
                continue
            n = ir.tensors[out_t].channels
            cc = cin if cin is not None else np.full(n, np.nan)
            known = ~np.isnan(cc)
            c = np.full(n, np.nan)
            val, exact = layer_kinds.channelwise_constant(layer, cc, weights.get(id(layer), {}))
            if type(layer) is L.BatchNormalization:
                c = val
            else:
                c[known] = val[known] if np.ndim(val) else val
            a = ain.copy() if ain is not None else np.zeros(n, bool)
            if not exact.all():
                if fold_all:
                    a |= ~exact & ~np.isnan(c)
                else:
                    c[~exact] = np.nan
            if not np.isnan(c).all():
                const[out_t] = c
                approx[out_t] = a if a.any() else None
        elif kind == layer_kinds.FLATTEN:
            reps = int(np.prod(ir.tensors[call.inputs[0]].shape[1:-1]))
            const[out_t] = np.tile(cin, reps) if cin is not None else None
            approx[out_t] = np.tile(ain, reps) if ain is not None else None
        elif kind == layer_kinds.MERGE:
            const[out_t], approx[out_t] = _merge_constants(
                layer, [const[t] for t in call.inputs], [approx[t] for t in call.inputs],
                ir.tensors[out_t].channels)
        elif kind == layer_kinds.CONCAT:
            rank = len(ir.tensors[out_t].shape)
            parts = [const[t] if const[t] is not None else np.full(ir.tensors[t].channels, np.nan)
                     for t in call.inputs]
            aparts = [approx[t] if approx[t] is not None else np.zeros(ir.tensors[t].channels, bool)
                      for t in call.inputs]
            if layer_kinds.concat_axis(layer, rank) == rank - 1:
                c, a = np.concatenate(parts), np.concatenate(aparts)
            else:  # along space: constant only where every part has the same constant
                c = parts[0].copy()
                for p in parts[1:]:
                    c[~(p == c)] = np.nan
                a = np.logical_or.reduce(aparts)
            if not np.isnan(c).all():
                const[out_t], approx[out_t] = c, (a if a.any() else None)
    return const, approx


def _approx_union(approxs: list, out: np.ndarray, n: int):
    apx = [np.broadcast_to(a, (n,)) for a in approxs if a is not None]
    a = np.logical_or.reduce(apx) & ~np.isnan(out) if apx else None
    return a if a is not None and a.any() else None


def _tfop_constants(call, consts: list, approxs: list, out_tensor):
    n = out_tensor.channels
    if all(c is None for c in consts):
        return None, None
    out = tfops.constant(call, consts, n, out_tensor.dtype)
    if out is None or np.isnan(out).all():
        return None, None
    return out, _approx_union(approxs, out, n)


def _merge_constants(layer, consts: list, approxs: list, n: int):
    t = type(layer)
    full = [np.broadcast_to(c, (n,)) if c is not None else np.full(n, np.nan) for c in consts]
    if t is L.Multiply:
        out = np.prod(full, axis=0)
        zero = np.logical_or.reduce([c == 0 for c in full])
        out[zero] = 0.0  # 0 times anything finite is 0, constant or not
    elif all(c is None for c in consts):
        return None, None
    elif t is L.Add:
        out = np.sum(full, axis=0)
    elif t is L.Subtract:
        out = full[0] - full[1]
    elif t is L.Average:
        out = np.mean(full, axis=0)
    elif t is L.Maximum:
        out = np.max(full, axis=0)
    else:
        out = np.min(full, axis=0)
    if np.isnan(out).all():
        return None, None
    return out, _approx_union(approxs, out, n)

