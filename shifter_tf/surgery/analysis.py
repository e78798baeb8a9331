"""Decide which channel groups go.

1. Constants (`constants.propagate_constants`, one forward pass): which channel positions hold
   the same value everywhere (act(bias) of an all-zero filter, ...).
2. Removal (fixpoint): a group can go when nothing that stays reads it, except reads of
   constant positions whose effect can be folded into the reader's bias. Reads are recomputed
   until no more groups die (a removed filter may leave its inputs unread).

Everything is vectorised per layer ("does filter o read input i" as a dense matrix or as index
pairs when sparse, `readers.ReadPattern`); there is no Python loop over channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.graph import layer_kinds
from shifter_tf.surgery.constants import propagate_constants
from shifter_tf.graph.deps import DependencyGraph
from shifter_tf.surgery.readers import ReadPattern, make_reader

L = keras.layers
POLICIES = ("keep", "fold")


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



@dataclass
class _Sink:
    call: int
    in_groups: np.ndarray
    out_groups: np.ndarray
    pattern: ReadPattern
    bad: np.ndarray            # input positions that must not be read if removed
    inexact: np.ndarray        # bad positions that are constant but not exactly foldable
    blocked: np.ndarray | None = None   # groups it blocked in the last pass
    read: np.ndarray | None = None      # inputs its kept filters read in the last pass
    read_for: np.ndarray | None = None  # the removal of its output groups `read` was made for

    def reads(self, removed: np.ndarray) -> np.ndarray:
        """Input positions read by the filters that stay (kept from the last call when the
        removal of the output groups is the same)."""
        out = removed[self.out_groups]
        if self.read is None or not np.array_equal(out, self.read_for):
            self.read, self.read_for = self.pattern.inputs_read_by(~out), out
        return self.read


def _sinks(graph: DependencyGraph, readers: dict, const: list, approx: list, policy: str):
    ir = graph.ir
    sinks = []
    for call in ir.calls:
        if graph.kinds[call.index].kind != layer_kinds.PRODUCER:
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
            exact_pad = layer_kinds.padding_exact(call.layer, ir.tensors[t_in].shape, ir.tensors[t_out].shape)
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
        mask = {"inexact": s.inexact, "other": s.bad & ~s.inexact}.get(rows, s.bad)
        groups = s.in_groups[s.reads(removed) & mask]
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
        if graph.kinds[call.index].kind == layer_kinds.PRODUCER:
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
        read = gone & s.reads(removed)
        if not read.any():
            continue
        bias_delta[s.call] = r.fold(np.where(gone, c, 0.0))
        exact_pad = layer_kinds.padding_exact(call.layer, ir.tensors[t_in].shape,
                                    ir.tensors[call.outputs[0]].shape)
        a = approx[t_in] if approx[t_in] is not None else np.zeros(len(c), bool)
        exact = bool(exact_pad and not a[read].any())
        folded[s.call] = (int(read.sum()), exact)
    inexact_block = _blocked(sinks, removed, graph.n_groups, rows="inexact")  # reads are kept
    other_block = _blocked(sinks, removed, graph.n_groups, rows="other")
    kept_exact = inexact_block & ~other_block & ~frozen & ~removed
    return Plan(removed, keep, const, approx, bias_delta, folded, kept_exact, forced, readers,
                total_passes)
