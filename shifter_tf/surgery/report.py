"""The surgery report: per layer and per model, JSON-serialisable via `to_dict()`."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from shifter_tf.graph import layer_kinds
from shifter_tf.surgery.analysis import Plan
from shifter_tf.surgery.constants import dw_sum_and_zero
from shifter_tf.graph.deps import DependencyGraph
from shifter_tf.graph.metrics import layer_macs
from shifter_tf.surgery.verify import Verification

REASONS = ("zero_filter", "constant", "dead_input")


@dataclass
class LayerReport:
    """One layer of the original model (a folded BN is reported with its producer).

    `removed` counts output channels by why they went: `zero_filter` (all-zero filter; its
    constant act(bias) was folded downstream), `constant` (non-zero filter that only reads
    constant channels), `dead_input` (no kept layer reads it). Pass-through layers lose
    channels with their group and list no reasons.
    """
    name: str
    class_name: str
    kind: str
    channels_in_before: int | None = None
    channels_in_after: int | None = None
    channels_out_before: int | None = None
    channels_out_after: int | None = None
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    removed: dict = field(default_factory=dict)
    removed_channels: dict = field(default_factory=dict)
    kept_for_exactness: int = 0   # removable, but its constant cannot be folded exactly
    forced_keep: int = 0          # kept only so that the layer keeps at least one channel
    folded_bn: str | None = None
    folded_constants: int = 0     # removed input channels whose constant went into the bias
    fold_exact: bool | None = None
    frozen: str = ""
    time_ms: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SurgeryReport:
    """Model-level outcome of `prune_structured`."""
    model: str
    params_before: int = 0
    params_after: int = 0
    params_nonzero_before: int = 0
    params_nonzero_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    channels_before: int = 0      # output channels of all Conv/Dense/Depthwise layers
    channels_after: int = 0
    rewrite_ms: float = 0.0       # trace + fold + analysis + rebuild, without verification
    timings_ms: dict = field(default_factory=dict)   # per stage; "cpu": process CPU time
    inexact_policy: str = "keep"
    exact: bool = True            # every folded constant is exact (no border approximation)
    inexact_layers: list = field(default_factory=list)
    groups: int = 0
    groups_removed: int = 0
    groups_frozen: int = 0
    coupled_groups_removed: int = 0   # removed groups made by several producers (residual ties)
    kept_for_exactness: int = 0
    fixpoint_passes: int = 0
    unsupported: list = field(default_factory=list)   # layers not understood, kept as they are
    frozen_layers: dict = field(default_factory=dict)  # layer -> why its channels are frozen
    inlined_models: list = field(default_factory=list)
    verification: Verification | None = None
    notes: list = field(default_factory=list)
    layers: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["verification"] = self.verification.to_dict() if self.verification else None
        return d

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def layer(self, name: str) -> LayerReport:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    def summary(self) -> str:
        """A short human-readable table of the layers that changed."""
        rows = [f"{'layer':32s} {'out before':>10s} {'after':>6s} {'params after':>13s} "
                f"{'MACs after':>12s}  notes"]
        for r in self.layers:
            if r.channels_out_before is None or r.kind not in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE):
                continue
            notes = ", ".join(f"{k}={v}" for k, v in r.removed.items() if v)
            if r.kept_for_exactness:
                notes += f" kept_for_exactness={r.kept_for_exactness}"
            rows.append(f"{r.name[:32]:32s} {r.channels_out_before:10d} {r.channels_out_after:6d} "
                        f"{r.params_after:13,d} {r.macs_after:12,d}  {notes}")
        v = self.verification
        rows.append(f"params {self.params_before:,} -> {self.params_after:,}; MACs "
                    f"{self.macs_before:,} -> {self.macs_after:,}; rewrite {self.rewrite_ms:.1f} ms"
                    + (f"; max|dlogit| {v.max_abs_dlogit:.3g}, top-1 agreement "
                       f"{v.top1_agreement:.4f}" if v else ""))
        return "\n".join(rows)


def _params(layer) -> int:
    return int(sum(int(np.prod(v.shape)) for v in layer.weights))


def layer_reports(graph: DependencyGraph, plan: Plan, folded: dict, weights: dict,
                  new_layers: dict, times: dict) -> list:
    """One LayerReport per original layer (except inputs and folded BNs)."""
    ir, kinds = graph.ir, graph.kinds
    by_layer: dict = {}
    order: list = []
    forced = np.zeros(graph.n_groups, bool)
    forced[plan.forced] = True
    for call in ir.calls:
        kind = kinds[call.index]
        if kind.kind in (layer_kinds.INPUT, layer_kinds.FOLDED):
            continue
        rec = by_layer.get(id(call.layer))
        first = rec is None
        if first:
            rec = LayerReport(call.name, type(call.layer).__name__, kind.kind,
                              frozen=kind.why if kind.kind in (layer_kinds.FROZEN, layer_kinds.OPAQUE) else "")
            new = new_layers.get(id(call.layer))
            rec.params_before = _params(call.layer)
            rec.params_after = _params(new) if new is not None else 0
            rec.time_ms = round(times.get(call.name, 0.0), 3)
            by_layer[id(call.layer)] = rec
            order.append(rec)
        t_in = ir.tensors[call.inputs[0]] if call.inputs else None
        t_out = ir.tensors[call.outputs[0]]
        keep_in = plan.keep[t_in.index] if t_in is not None else None
        keep_out = plan.keep[t_out.index]
        shape_in_after = _resize(t_in.shape, keep_in) if t_in is not None else ()
        shape_out_after = _resize(t_out.shape, keep_out)
        if t_in is not None:
            rec.macs_before += layer_macs(call.layer, t_in.shape, t_out.shape)
            rec.macs_after += layer_macs(new_layers.get(id(call.layer), call.layer),
                                         shape_in_after, shape_out_after)
        if not first:
            continue
        if t_in is not None:
            rec.channels_in_before, rec.channels_in_after = t_in.channels, shape_in_after[-1] \
                if len(shape_in_after) >= 2 else None
        rec.channels_out_before = t_out.channels
        rec.channels_out_after = shape_out_after[-1] if len(shape_out_after) >= 2 else None
        if call.index in folded:
            bn_name = folded[call.index]
            rec.folded_bn = bn_name
            bn = next(c.layer for c in ir.calls if c.name == bn_name)
            rec.params_before += _params(bn)
        if call.index in plan.folded:
            rec.folded_constants, rec.fold_exact = plan.folded[call.index]
        groups = graph.tensor_groups[t_out.index]
        if kind.kind in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE) and groups is not None:
            gone = plan.removed[groups]
            if kind.kind == layer_kinds.PRODUCER:
                zero = plan.readers[call.index].filter_zero
            else:
                zero = dw_sum_and_zero(weights[id(call.layer)])[1]
            c = plan.const[t_out.index]
            const = ~np.isnan(c) if c is not None else np.zeros(len(gone), bool)
            masks = {"zero_filter": gone & zero, "constant": gone & ~zero & const,
                     "dead_input": gone & ~zero & ~const}
            rec.removed = {k: int(m.sum()) for k, m in masks.items()}
            rec.removed_channels = {k: np.flatnonzero(m).tolist() for k, m in masks.items()}
            rec.kept_for_exactness = int(plan.kept_for_exactness[groups].sum())
            rec.forced_keep = int(forced[groups].sum())
    return order


def _resize(shape: tuple, keep) -> tuple:
    if keep is None or len(shape) < 2:
        return tuple(shape)
    return tuple(shape[:-1]) + (int(keep.sum()),)
