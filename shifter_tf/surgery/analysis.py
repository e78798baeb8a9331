"""Decide which channel groups go.

1. Constants (one forward pass): a channel position is *constant* when it holds the same value
   at every spatial location for every input, e.g. act(bias) of an all-zero filter, or a filter
   that only reads constant channels. Values are pushed through activations, BN, pooling, Add...
2. Removal (fixpoint): a group can go when nothing that stays reads it, except reads of
   constant positions whose effect can be folded into the reader's bias. Reads are recomputed
   until no more groups die (a removed filter may leave its inputs unread).

Everything is vectorised per layer ("does filter o read input i" as a dense matrix or as index
pairs when sparse); there is no Python loop over channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.surgery import layers as K
from shifter_tf.surgery.fold import OUT_SCALE, kernel_names
from shifter_tf.surgery.graph import DependencyGraph

L = keras.layers
POLICIES = ("keep", "fold")


class ReadPattern:
    """Which filter o reads (has a non-zero weight on) which input channel i.

    Dense float32 matrix-vector products when many pairs are non-zero, index pairs when few:
    at 99 % sparsity the pairs are ~100x cheaper than scanning the (in x out) matrix."""

    SPARSE_BELOW = 0.1  # fraction of non-zero (i, o) pairs under which pairs are used

    def __init__(self, nz: np.ndarray):
        self.shape = nz.shape
        if np.count_nonzero(nz) < self.SPARSE_BELOW * nz.size:
            self.rows, self.cols = np.divmod(np.flatnonzero(nz), nz.shape[1])  # 10x np.nonzero
            self.dense = None
        else:
            self.dense = nz.astype(np.float32)

    def inputs_read_by(self, outputs: np.ndarray) -> np.ndarray:
        """bool (in,): input channels read by at least one of the selected filters."""
        if self.dense is not None:
            return (self.dense @ outputs.astype(np.float32)) > 0
        read = np.zeros(self.shape[0], bool)
        read[self.rows[outputs[self.cols]]] = True
        return read

    def outputs_reading(self, inputs: np.ndarray) -> np.ndarray:
        """bool (out,): filters reading at least one of the selected input channels."""
        if self.dense is not None:
            return (inputs.astype(np.float32) @ self.dense) > 0
        hit = np.zeros(self.shape[1], bool)
        hit[self.cols[inputs[self.rows]]] = True
        return hit


@dataclass
class Reader:
    """A producer layer seen as a reader of its input channels."""
    pattern: ReadPattern      # which filter reads which input
    bias: np.ndarray          # (out,) float64 (zeros when the layer has none)
    filter_zero: np.ndarray   # (out,) bool, the filter is all zero
    act: object
    _w: dict
    _layer: object
    _ksum: np.ndarray | None = None

    def ksum(self) -> np.ndarray:
        """(in, out) kernel summed over space: the bias change per unit of constant input."""
        if self._ksum is None:
            self._ksum = _kernel_sum(self._layer, self._w)
        return self._ksum

    def fold(self, c: np.ndarray) -> np.ndarray:
        """Bias change (out,) caused by constant inputs c (0 where not constant)."""
        k = self.ksum()
        return (c.astype(k.dtype) @ k).astype(np.float64)


def _kernel_sum(layer, w: dict) -> np.ndarray:
    t = type(layer)
    if t in (L.SeparableConv1D, L.SeparableConv2D):
        dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
        cin, mult = dw.shape[-2], dw.shape[-1]
        dws = dw.reshape(-1, cin, mult).sum(0)
        ksum = np.einsum("im,imo->io", dws, pw.reshape(cin, mult, -1))
    else:
        kernel = w["kernel"]
        ksum = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(0)
    scale = w.get(OUT_SCALE)
    return ksum * scale.astype(ksum.dtype) if scale is not None else ksum


def make_reader(layer, w: dict) -> Reader:
    """Zero pattern and bias of a PRODUCER layer's (possibly BN-folded) weights."""
    t = type(layer)
    if t in (L.SeparableConv1D, L.SeparableConv2D):
        dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
        cin, mult = dw.shape[-2], dw.shape[-1]
        dwnz = dw.reshape(-1, cin, mult).any(0)
        nz = (dwnz[:, :, None] & (pw.reshape(cin, mult, -1) != 0)).any(1)
    else:
        kernel = w["kernel"]
        nz = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).any(0)
    scale = w.get(OUT_SCALE)
    if scale is not None:
        nz = nz & (scale != 0)
    _, bname = kernel_names(layer)
    out = nz.shape[1]
    bias = w[bname].astype(np.float64) if bname in w else np.zeros(out)
    return Reader(ReadPattern(nz), bias, ~nz.any(0), layer.activation, w, layer)


@dataclass
class Plan:
    """What the analysis decided; enough to rebuild the model and write the report."""
    removed: np.ndarray                 # (groups,) bool
    keep: list                          # per tensor: bool mask over channels, or None
    const: list                         # per tensor: float64 constants (NaN = not constant) or None
    approx: list                        # per tensor: bool, constant holds only off the borders
    bias_delta: dict                    # producer call index -> (out,) float64 to add to the bias
    folded: dict                        # producer call index -> (count folded, exact)
    kept_for_exactness: np.ndarray      # (groups,) bool: removable but folding would be inexact
    forced: list                        # groups kept so that no tensor loses every channel
    readers: dict                       # producer call index -> Reader
    passes: int = 0


def _dw_sum_and_zero(w: dict):
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
        if kind in (K.INPUT, K.FROZEN, K.OPAQUE):
            continue
        out_t = call.outputs[0]
        cin = const[call.inputs[0]] if call.inputs else None
        ain = approx[call.inputs[0]] if call.inputs else None
        layer = call.layer
        if kind in (K.PRODUCER, K.DEPTHWISE) and not K.elementwise_activation(layer):
            continue  # softmax & co.: no per-channel constant (and the outputs are frozen)
        if kind == K.PRODUCER:
            r = readers[call.index]
            shape_in, shape_out = ir.tensors[call.inputs[0]].shape, ir.tensors[out_t].shape
            exact_pad = K.padding_exact(layer, shape_in, shape_out)
            if cin is None:
                if r.filter_zero.any():
                    c = np.full(len(r.bias), np.nan)
                    c[r.filter_zero] = K.apply_activation(r.act, r.bias[r.filter_zero])
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
            c[cand] = K.apply_activation(r.act, pre[cand])
            const[out_t] = c
            apx_in = inexact_in if ain is None else (ain | inexact_in)
            if fold_all and apx_in.any():
                approx[out_t] = cand & r.pattern.outputs_reading(apx_in)
        elif kind == K.DEPTHWISE:
            w = weights[id(layer)]
            dsum, fz = _dw_sum_and_zero(w)
            bias = w["bias"].astype(np.float64) if "bias" in w else np.zeros(len(dsum))
            mult = len(dsum) // ir.tensors[call.inputs[0]].channels
            c = np.full(len(dsum), np.nan)
            c[fz] = bias[fz]
            if cin is not None:
                cr = np.repeat(cin, mult)
                known = ~np.isnan(cr)
                exact_pad = K.padding_exact(layer, ir.tensors[call.inputs[0]].shape,
                                            ir.tensors[out_t].shape)
                inexact = known & (cr != 0) & (not exact_pad)
                ok = ~fz & known & (fold_all | ~inexact)
                c[ok] = cr[ok] * dsum[ok] + bias[ok]
                apx = ok & (inexact | (np.repeat(ain, mult) if ain is not None else False))
                if apx.any():
                    approx[out_t] = apx
            if not np.isnan(c).all():
                known = ~np.isnan(c)
                c[known] = K.apply_activation(layer.activation, c[known])
                const[out_t] = c
        elif kind in (K.CHANNELWISE, K.FOLDED):
            if kind == K.FOLDED:
                const[out_t], approx[out_t] = cin, ain
                continue
            if cin is None and type(layer) is not L.BatchNormalization:
                continue
            n = ir.tensors[out_t].channels
            cc = cin if cin is not None else np.full(n, np.nan)
            known = ~np.isnan(cc)
            c = np.full(n, np.nan)
            val, exact = K.channelwise_constant(layer, cc, weights.get(id(layer), {}))
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
        elif kind == K.FLATTEN:
            reps = int(np.prod(ir.tensors[call.inputs[0]].shape[1:-1]))
            const[out_t] = np.tile(cin, reps) if cin is not None else None
            approx[out_t] = np.tile(ain, reps) if ain is not None else None
        elif kind == K.MERGE:
            const[out_t], approx[out_t] = _merge_constants(
                layer, [const[t] for t in call.inputs], [approx[t] for t in call.inputs],
                ir.tensors[out_t].channels)
        elif kind == K.CONCAT:
            rank = len(ir.tensors[out_t].shape)
            parts = [const[t] if const[t] is not None else np.full(ir.tensors[t].channels, np.nan)
                     for t in call.inputs]
            aparts = [approx[t] if approx[t] is not None else np.zeros(ir.tensors[t].channels, bool)
                      for t in call.inputs]
            if K.concat_axis(layer, rank) == rank - 1:
                c, a = np.concatenate(parts), np.concatenate(aparts)
            else:  # along space: constant only where every part has the same constant
                c = parts[0].copy()
                for p in parts[1:]:
                    c[~(p == c)] = np.nan
                a = np.logical_or.reduce(aparts)
            if not np.isnan(c).all():
                const[out_t], approx[out_t] = c, (a if a.any() else None)
    return const, approx


def _merge_constants(layer, consts: list, approxs: list, n: int):
    t = type(layer)
    full = [c if c is not None else np.full(n, np.nan) for c in consts]
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
    apx = [a for a in approxs if a is not None]
    a = np.logical_or.reduce(apx) & ~np.isnan(out) if apx else None
    return out, (a if a is not None and a.any() else None)


@dataclass
class _Sink:
    call: int
    in_groups: np.ndarray
    out_groups: np.ndarray
    pattern: ReadPattern
    bad: np.ndarray            # input positions that must not be read if removed
    inexact: np.ndarray        # bad positions that are constant but not exactly foldable
    blocked: np.ndarray | None = None   # groups it blocked in the last pass


def _sinks(graph: DependencyGraph, readers: dict, const: list, approx: list, policy: str):
    ir = graph.ir
    sinks = []
    for call in ir.calls:
        if graph.kinds[call.index].kind != K.PRODUCER:
            continue
        r = readers[call.index]
        t_in, t_out = call.inputs[0], call.outputs[0]
        c = const[t_in]
        shared = len(ir.calls_of(call.layer)) > 1  # one bias cannot fold two different inputs
        if c is None or shared:
            ok = np.zeros(r.pattern.shape[0], bool)
            inexact = np.zeros(r.pattern.shape[0], bool)
        else:
            known = ~np.isnan(c)
            exact_pad = K.padding_exact(call.layer, ir.tensors[t_in].shape, ir.tensors[t_out].shape)
            a = approx[t_in] if approx[t_in] is not None else np.zeros(len(c), bool)
            exact = known & ~a & (exact_pad | (c == 0))
            ok = exact | (known if policy == "fold" else False)
            inexact = known & ~exact & ~ok
        sinks.append(_Sink(call.index, graph.tensor_groups[t_in], graph.tensor_groups[t_out],
                           r.pattern, ~ok, inexact))
    return sinks


def _blocked(sinks: list, removed: np.ndarray, n_groups: int, rows: str = "all",
             changed: np.ndarray | None = None):
    """Groups read (by a filter that stays) at a position that cannot be folded.

    rows='inexact' / 'other' restricts to constant-but-inexact positions / to the rest. With
    `changed` (groups whose removal flipped since the last call), sinks whose outputs did not
    change reuse their previous answer."""
    blocked = np.zeros(n_groups, bool)
    for s in sinks:
        if changed is not None and s.blocked is not None and not changed[s.out_groups].any():
            blocked[s.blocked] = True
            continue
        read = s.pattern.inputs_read_by(~removed[s.out_groups])
        if rows == "inexact":
            read &= s.inexact
        elif rows == "other":
            read &= s.bad & ~s.inexact
        else:
            read &= s.bad
        groups = s.in_groups[read]
        if rows == "all":
            s.blocked = groups
        blocked[groups] = True
    return blocked


def _fixpoint(graph: DependencyGraph, sinks: list, frozen: np.ndarray, max_passes: int = 500):
    removed = np.zeros(graph.n_groups, bool)
    changed = None
    for s in sinks:
        s.blocked = None
    for passes in range(1, max_passes + 1):
        new = ~_blocked(sinks, removed, graph.n_groups, changed=changed) & ~frozen
        changed = new != removed
        if not changed.any():
            return removed, passes
        removed = new
    return removed, max_passes


def analyse(graph: DependencyGraph, weights: dict, policy: str = "keep") -> Plan:
    """Run the constant pass and the removal fixpoint; guarantee every tensor keeps a channel."""
    if policy not in POLICIES:
        raise ValueError(f"inexact must be one of {POLICIES}, got {policy!r}")
    with _single_blas_thread():
        return _analyse(graph, weights, policy)


_BLAS = []


def _single_blas_thread():
    """The matrix-vector products here are small; on a busy machine OpenBLAS threads spinning
    for a core cost 10-50x more than they save. (threadpoolctl is optional; the controller is
    made once because scanning the loaded libraries takes milliseconds.)"""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS.append(ThreadpoolController())
        except Exception:  # not installed or no BLAS found
            _BLAS.append(None)
    if _BLAS[0] is None:
        import contextlib
        return contextlib.nullcontext()
    return _BLAS[0].limit(limits=1, user_api="blas")


def _analyse(graph: DependencyGraph, weights: dict, policy: str) -> Plan:
    ir = graph.ir
    readers = {}
    by_layer = {}
    for call in ir.calls:
        if graph.kinds[call.index].kind == K.PRODUCER:
            if id(call.layer) not in by_layer:
                by_layer[id(call.layer)] = make_reader(call.layer, weights[id(call.layer)])
            readers[call.index] = by_layer[id(call.layer)]
    const, approx = propagate_constants(graph, weights, readers, policy)
    sinks = _sinks(graph, readers, const, approx, policy)
    frozen = graph.frozen.copy()
    forced: list = []
    total_passes = 0
    while True:
        removed, passes = _fixpoint(graph, sinks, frozen)
        total_passes += passes
        empty = [ids for ids in graph.tensor_groups
                 if ids is not None and len(ids) and removed[ids].all()]
        if not empty:
            break
        for ids in empty:  # keep one channel; a rerun is needed as its inputs are read again
            if removed[ids].all():
                g = int(ids[0])
                forced.append(g)
                frozen[g] = True
                removed[g] = False
    keep = [~removed[ids] if ids is not None else None for ids in graph.tensor_groups]

    bias_delta, folded = {}, {}
    for s in sinks:
        call = ir.calls[s.call]
        t_in = call.inputs[0]
        c = const[t_in]
        if c is None:
            continue
        gone = removed[s.in_groups] & ~np.isnan(c) & (c != 0)
        if not gone.any():
            continue
        r = readers[s.call]
        read = gone & r.pattern.inputs_read_by(~removed[s.out_groups])
        if not read.any():
            continue
        bias_delta[s.call] = r.fold(np.where(gone, c, 0.0))
        exact_pad = K.padding_exact(call.layer, ir.tensors[t_in].shape,
                                    ir.tensors[call.outputs[0]].shape)
        a = approx[t_in] if approx[t_in] is not None else np.zeros(len(c), bool)
        exact = bool(exact_pad and not a[read].any())
        folded[s.call] = (int(read.sum()), exact)
    inexact_block = _blocked(sinks, removed, graph.n_groups, rows="inexact")
    other_block = _blocked(sinks, removed, graph.n_groups, rows="other")
    kept_exact = inexact_block & ~other_block & ~frozen & ~removed
    return Plan(removed, keep, const, approx, bias_delta, folded, kept_exact, forced, readers,
                total_passes)
