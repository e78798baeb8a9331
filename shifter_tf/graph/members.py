"""Which weights of a tf_keras model belong to which channel group of its dependency graph
(`GroupIndex`): producer filters, reader input slices (Flatten -> Dense rows included), depthwise
channels and BatchNormalization channels, with the MACs each position costs. Training's group
step (`train.groups`) scores, kills and holds groups through it; the rewriter removes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.graph import layer_kinds as kinds_of
from shifter_tf.graph.deps import DependencyGraph, model_graph
from shifter_tf.models import iter_layers

L = keras.layers
KERNEL_PRODUCERS = (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense)   # exact types, kernel [..., in, out]
DEPTHWISE = tuple(c for c in (getattr(L, "DepthwiseConv1D", None), L.DepthwiseConv2D) if c)


def _prod(dims) -> int:
    return int(np.prod([d for d in dims if d is not None], dtype=np.int64))


@dataclass
class GroupIndex:
    """Which weights of which layer belong to which channel group, and what a group costs.

    Every map is layer name -> group id per position: `filters` per output channel of a
    Conv/Dense kernel (last axis), `inputs` per input channel of the same kernels (axis -2,
    Flatten -> Dense rows included), `depthwise` per input channel of a depthwise kernel
    (axis -2; its output channel c*m+j belongs to input channel c's group), `bns` per channel.
    """
    graph: DependencyGraph
    filters: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    depthwise: dict = field(default_factory=dict)
    bns: dict = field(default_factory=dict)
    scaled: set = field(default_factory=set)        # producers whose output only a BN reads
    eligible: np.ndarray = None                      # (groups,) bool
    mult: dict = field(default_factory=dict)         # depthwise multiplier per layer
    cost_out: dict = field(default_factory=dict)     # MACs per output channel per input channel
    cost_in: dict = field(default_factory=dict)      # MACs per input channel per output channel
    cost_dw: dict = field(default_factory=dict)      # MACs per depthwise input channel

    @property
    def n_groups(self) -> int:
        return self.graph.n_groups

    def widths(self) -> dict:
        """Layer name -> group id per output channel, for every producer and depthwise layer."""
        out = dict(self.filters)
        for n, g in self.depthwise.items():
            out[n] = np.repeat(g, self.mult[n])
        return out

    def members(self, group: int) -> dict:
        """{role: {layer: positions}} of one group (for inspection and tests)."""
        out = {}
        for role in ("filters", "inputs", "depthwise", "bns"):
            got = {n: np.flatnonzero(g == group) for n, g in getattr(self, role).items()}
            out[role] = {n: p for n, p in got.items() if len(p)}
        return out

    def params(self, model: keras.Model, group: int) -> int:
        """Parameters of `model` that belong to `group` (each weight once)."""
        layers = {l.name: l for l in iter_layers(model)}
        m = self.members(group)
        total = 0
        for n, pos in m["filters"].items():
            layer = layers[n]
            kernel = layer.kernel.shape
            total += len(pos) * _prod(kernel[:-1])
            total += len(pos) if getattr(layer, "bias", None) is not None else 0
        for n, pos in m["inputs"].items():
            kernel = layers[n].kernel.shape
            cols = kernel[-1] - len(m["filters"].get(n, ()))
            total += len(pos) * _prod(kernel[:-2]) * cols
        for n, pos in m["depthwise"].items():
            layer = layers[n]
            k = layer.depthwise_kernel.shape
            per = _prod(k[:-2]) * k[-1] + (k[-1] if getattr(layer, "bias", None) is not None else 0)
            total += len(pos) * per
        for n, pos in m["bns"].items():
            total += len(pos) * len(layers[n].weights)
        return total


def build_index(model: keras.Model, exclude: Iterable[str] = ()) -> GroupIndex:
    """The group index of `model`; producers named in `exclude` make their groups ineligible."""
    graph = model_graph(model)
    ir, kinds, tg = graph.ir, graph.kinds, graph.tensor_groups
    excluded = set(exclude)
    bad = graph.frozen.copy()
    made = np.zeros(graph.n_groups, bool)
    idx = GroupIndex(graph)

    def spoil(*ids):
        for g in ids:
            if g is not None:
                bad[g] = True

    for call in ir.calls:
        kind = kinds[call.index].kind
        if (kind not in (kinds_of.PRODUCER, kinds_of.DEPTHWISE, kinds_of.CHANNELWISE)
                or not call.inputs):
            continue
        layer, name = call.layer, call.layer.name
        gin = tg[call.inputs[0]]
        gout = tg[call.outputs[0]] if call.outputs else None
        if len(ir.calls_of(layer)) > 1:
            if kind != kinds_of.CHANNELWISE or layer.weights:
                spoil(gin, gout)
            continue
        t_in, t_out = ir.tensors[call.inputs[0]], ir.tensors[call.outputs[0]]
        positions = _prod(t_out.shape[1:-1])
        if kind == kinds_of.PRODUCER:
            ok = (type(layer) in KERNEL_PRODUCERS and getattr(layer, "groups", 1) == 1
                  and gin is not None and gout is not None
                  and len(gin) == layer.kernel.shape[-2] and len(gout) == layer.kernel.shape[-1])
            if not ok:
                spoil(gin, gout)
                continue
            idx.filters[name], idx.inputs[name] = gout, gin
            ks = _prod(layer.kernel.shape[:-2])
            idx.cost_out[name] = idx.cost_in[name] = positions * ks
            made[gout] = True
            if name in excluded:
                spoil(gout)
        elif kind == kinds_of.DEPTHWISE:
            if type(layer) not in DEPTHWISE or gin is None:
                spoil(gin, gout)
                continue
            idx.depthwise[name] = gin
            idx.mult[name] = int(layer.depth_multiplier)
            idx.cost_dw[name] = positions * _prod(layer.kernel_size) * int(layer.depth_multiplier)
        elif type(layer) is L.BatchNormalization and gin is not None:
            idx.bns[name] = gin
            if len(t_in.consumers) == 1:
                before = ir.calls[t_in.producer]
                if kinds[before.index].kind in (kinds_of.PRODUCER, kinds_of.DEPTHWISE):
                    idx.scaled.add(before.layer.name)
    idx.eligible = ~bad & made
    return idx



def layers_by_name(model) -> dict:
    return {l.name: l for l in iter_layers(model)}


def dead_groups(idx: GroupIndex, masks: dict, weights: Optional[dict] = None) -> np.ndarray:
    """(groups,) bool: eligible groups none of whose Conv/Dense filters survives.

    A filter survives when its mask column (`masks`, the wrapped layers) has a weight left, or,
    for a layer without a mask, when its kernel column in `weights` (name -> kernel) is non-zero.
    """
    alive = np.zeros(idx.n_groups, bool)
    for n, g in idx.filters.items():
        if n in masks:
            col = masks[n].reshape(-1, masks[n].shape[-1]).any(axis=0)
        elif weights is not None and n in weights:
            col = np.asarray(weights[n]).reshape(-1, len(g)).any(axis=0)
        else:
            col = np.ones(len(g), bool)
        alive[g[col]] = True
    return idx.eligible & ~alive


def group_macs(idx: GroupIndex, dead: np.ndarray) -> np.ndarray:
    """MACs each group would free now (with the channels already dead left out)."""
    macs = np.zeros(idx.n_groups)
    for n, gout in idx.filters.items():
        gin = idx.inputs[n]
        alive_in, alive_out = int((~dead[gin]).sum()), int((~dead[gout]).sum())
        np.add.at(macs, gout, idx.cost_out[n] * alive_in)
        np.add.at(macs, gin, idx.cost_in[n] * alive_out)
    for n, g in idx.depthwise.items():
        np.add.at(macs, g, idx.cost_dw[n])
    return macs
