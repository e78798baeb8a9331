"""Group-level structure step (`lottery.structure: groups`): kill whole channel groups.

A *channel group* is what the rewriter's `DependencyGraph` says must be removed together: every
producer filter whose output lands on one channel index (residual `Add` chains across a stage,
`Concatenate` offsets, element-wise gates), every depthwise channel and BatchNormalization channel
that carries it, and every kernel slice that reads it (through pooling, Flatten -> Dense rows...).
The plain filter step (`train.structure`) can only kill a filter whose channel reaches nothing but
channel-wise layers, so on residual, inverted-residual and concatenating networks it has almost
nothing to remove; this step ranks and kills groups instead.

Before each IMP level's global magnitude allocation:

1. **Score** each surviving eligible group: the sum of its members' layer-relative scores
   (DepGraph's group importance, Fang et al. CVPR 2023, with a sum reduction): |γ| of every BN
   channel in the group (network slimming), the L2 norm of a producer filter or depthwise channel
   that no BN follows directly, the L2 norm of every consumer's input slice. Each layer's scores
   are divided by that layer's mean over surviving channels, so layers are comparable.
2. **Weigh by cost**: the importance is divided by (MACs the group frees / mean over groups) **
   `group_cost`, so the budget goes where the time is (0 = importance only).
3. **Kill** groups in ascending weighted score until they free `filter_fraction` of the
   surviving groups' MACs (a MAC budget, not a count: a count quota with cost weighting emptied
   whole residual streams in one level), skipping a group whenever it would take a layer below
   its minimum width (max(`min_channels`, ceil(`min_width` x original width))) or cut more than
   half of a layer's surviving channels in one level.
4. **Hold at zero**: the producers' filters and the readers' input slices are cleared in the
   masks tfmot holds (`allowed`), and during training a callback (one traced function per batch)
   keeps at zero what tfmot does not mask: producer biases, depthwise channels (tfmot 0.8 gives
   DepthwiseConv2D no mask), the γ/β of every BN channel in the group and kernel slices of
   layers left out of pruning. A killed group's channel is exactly zero everywhere, so the
   rewriter removes the whole group losslessly.

A group is eligible when it is not frozen in the graph (model input/output, layers the rewriter
keeps), has at least one Conv/Dense producer, and all its producers are plain Conv1D/2D/3D or
Dense (groups = 1) that are pruned, or DepthwiseConv; shared layers are left alone.

A group counts as dead (and is held) when every Conv/Dense filter that makes it is fully masked:
depthwise convolutions only pass their input channel on, so they neither keep a group alive nor
need to be checked. Killed groups therefore survive resume and later levels through the masks.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.graph.members import (KERNEL_PRODUCERS, GroupIndex,  # noqa: F401
                                      build_index, dead_groups, group_macs, layers_by_name)

L = keras.layers
_layers = layers_by_name


# ---------------------------------------------------------------- state of a model's groups
def clear_groups(idx: GroupIndex, masks: dict, dead: np.ndarray) -> tuple[dict, np.ndarray]:
    """`masks` with every filter column and input slice of a dead group cleared, repeated to a
    fixpoint (a filter whose every input is dead is dead too). Returns (masks, dead)."""
    out = {n: m.copy() for n, m in masks.items()}
    dead = dead.copy()
    while True:
        for n, m in out.items():
            if n in idx.filters:
                m[..., dead[idx.filters[n]]] = False
                m[..., dead[idx.inputs[n]], :] = False
        now = dead | dead_groups(idx, out)
        if np.array_equal(now, dead):
            return out, dead
        dead = now


def _rel(s: np.ndarray, alive: np.ndarray) -> Optional[np.ndarray]:
    s = np.asarray(s, np.float64)
    mean = s[alive].mean() if alive.any() else 0.0
    return s / mean if mean > 0 else None


def group_scores(idx: GroupIndex, model: keras.Model, masks: dict, dead: np.ndarray
                 ) -> np.ndarray:
    """Importance of every group: the sum of its members' layer-relative scores (NaN for a
    group without any scored member). A sum, not a mean: a group that many layers use (a
    residual stream) matters in all of them, and divided by the MACs it frees (`choose_groups`,
    cost 1) it becomes importance per MAC, comparable across groups of any size."""
    layers = _layers(model)
    total = np.zeros(idx.n_groups)
    count = np.zeros(idx.n_groups)

    def add(groups, s):
        rel = _rel(s, ~dead[groups])
        if rel is not None:
            np.add.at(total, groups, rel)
            np.add.at(count, groups, 1)

    def masked(n, k):
        return np.where(masks[n], k, 0.0) if n in masks else k

    for n, g in idx.filters.items():
        k = masked(n, layers[n].kernel.numpy())
        if n not in idx.scaled:
            add(g, np.sqrt((k.reshape(-1, k.shape[-1]) ** 2).sum(axis=0)))
        rows = np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1)
        add(idx.inputs[n], np.sqrt((rows ** 2).sum(axis=1)))
    for n, g in idx.depthwise.items():
        if n not in idx.scaled:
            k = layers[n].depthwise_kernel.numpy()
            add(g, np.sqrt((np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1) ** 2).sum(axis=1)))
    for n, g in idx.bns.items():
        gamma = getattr(layers[n], "gamma", None)
        if gamma is not None:
            add(g, np.abs(gamma.numpy()))
    return np.where(count > 0, total, np.nan)


def min_keep(width: int, min_width: float, min_channels: int) -> int:
    """The fewest channels a layer of `width` channels may keep."""
    return min(width, max(int(min_channels), int(math.ceil(min_width * width))))


#: In one level no layer loses more than this share of the channels it still has: the budget
#: spreads over several levels instead of emptying one narrow layer (a residual stream) at once.
MAX_CUT = 0.5


def choose_groups(idx: GroupIndex, scores: np.ndarray, macs: np.ndarray, dead: np.ndarray,
                  fraction: float, cost: float = 1.0, min_width: float = 0.0,
                  min_channels: int = 1) -> np.ndarray:
    """(groups,) bool: surviving eligible groups in ascending order of importance / (MACs /
    mean) ** `cost`, until they free `fraction` of the MACs the surviving groups hold; a group is
    skipped when it would take a layer below its minimum width or cut more than `MAX_CUT` of a
    layer's surviving channels in this level."""
    cand = idx.eligible & ~dead & np.isfinite(scores)
    killed = np.zeros(idx.n_groups, bool)
    budget = fraction * float(macs[idx.eligible & ~dead].sum())
    if budget <= 0 or not cand.any():
        return killed
    weighted = scores.copy()
    if cost:
        m = macs[cand].mean()
        if m > 0:
            weighted = scores / np.maximum(macs / m, 1e-9) ** cost
    widths = idx.widths()
    names = list(widths)
    left = np.array([int((~dead[widths[n]]).sum()) for n in names])
    floor = np.array([max(min_keep(len(widths[n]), min_width, min_channels),
                          int(math.ceil((1 - MAX_CUT) * k))) for n, k in zip(names, left)])
    # per group: which layers it thins and by how many channels
    touch: dict = {}
    for i, n in enumerate(names):
        g, c = np.unique(widths[n], return_counts=True)
        for gg, cc in zip(g[cand[g]], c[cand[g]]):
            touch.setdefault(int(gg), []).append((i, int(cc)))
    order = np.flatnonzero(cand)
    order = order[np.argsort(weighted[order], kind="stable")]
    freed = 0.0
    for g in order:
        hits = touch.get(int(g), [])
        if all(left[i] - c >= floor[i] for i, c in hits):
            for i, c in hits:
                left[i] -= c
            killed[g] = True
            freed += macs[g]
            if freed >= budget:
                break
    return killed


def structured_allowed(model: keras.Model, prev_model: keras.Model, names: list,
                       masks: dict, fraction: float, cost: float = 1.0,
                       min_width: float = 0.0, min_channels: int = 1
                       ) -> tuple[dict, dict]:
    """The weights a level may keep (`masks` minus the groups this level kills and everything
    that reads them) and the filters killed per layer (producers and depthwise layers).

    `model` is the level's fresh model (the graph), `prev_model` the previous level's trained
    one (the weights scored), `names` the pruned layers (their masks in `masks`).
    """
    exclude = [n for n, l in _layers(model).items()
               if type(l) in KERNEL_PRODUCERS and n not in names]
    idx = build_index(model, exclude)
    dead = dead_groups(idx, masks)
    scores = group_scores(idx, prev_model, masks, dead)
    kill = choose_groups(idx, scores, group_macs(idx, dead), dead, fraction, cost,
                         min_width, min_channels)
    allowed, now = clear_groups(idx, {n: masks[n] for n in names}, dead | kill)
    new = now & ~dead
    killed = {n: int(new[g].sum()) for n, g in idx.widths().items() if new[g].any()}
    return allowed, killed


# ---------------------------------------------------------------- holding dead groups at zero
def hold_pairs(idx: GroupIndex, model: keras.Model, dead: np.ndarray, masked: Iterable[str]
               ) -> list:
    """(variable, keep array) for what tfmot's masks do not cover: biases of dead filters, the
    depthwise channels and BN γ/β of dead groups, and the kernel slices of layers in the groups
    that have no mask (`masked` are the wrapped layers)."""
    layers = _layers(model)
    masked = set(masked)
    pairs = []

    def keep(groups):
        d = dead[groups]
        return None if not d.any() else (~d).astype(np.float32)

    for n, g in idx.filters.items():
        layer, k = layers[n], keep(g)
        if k is not None:
            if getattr(layer, "bias", None) is not None:
                pairs.append((layer.bias, k))
            if n not in masked:
                pairs.append((layer.kernel, np.broadcast_to(k, layer.kernel.shape).copy()))
        k = keep(idx.inputs[n])
        if k is not None and n not in masked:
            shape = layer.kernel.shape
            pairs.append((layer.kernel, np.broadcast_to(k[:, None], shape).copy()))
    for n, g in idx.depthwise.items():
        layer, k = layers[n], keep(g)
        if k is not None:
            pairs.append((layer.depthwise_kernel,
                          np.broadcast_to(k[:, None], layer.depthwise_kernel.shape).copy()))
            if getattr(layer, "bias", None) is not None:
                pairs.append((layer.bias, np.repeat(k, idx.mult[n])))
    for n, g in idx.bns.items():
        layer, k = layers[n], keep(g)
        if k is not None:
            pairs += [(v, k) for v in (layer.gamma, layer.beta) if v is not None]
    merged: dict = {}
    for v, k in pairs:   # one assign per variable
        key = id(v)
        merged[key] = (v, k if key not in merged else merged[key][1] * k)
    return list(merged.values())


def pruned_index(model: keras.Model, pruned: Iterable[str]) -> GroupIndex:
    """The group index of a run whose pruned (masked) layers are `pruned`; the other kernel
    producers are left out of pruning."""
    pruned = set(pruned)
    exclude = [n for n, l in _layers(model).items()
               if type(l) in KERNEL_PRODUCERS and n not in pruned]
    return build_index(model, exclude)


class VariableGroupHold:
    """`HoldDeadGroups` with its keep-arrays in variables, for a train step traced once: every
    variable any group could hold gets one (all ones until a group it belongs to dies), and
    `set_allowed` assigns a level's."""

    def __init__(self, model: keras.Model, pruned: list[str]):
        self.model, self.pruned = model, list(pruned)
        self.idx = pruned_index(model, pruned)
        every = hold_pairs(self.idx, model, np.ones(self.idx.n_groups, bool), self.pruned)
        self.keep = {id(v): (v, tf.Variable(tf.ones(v.shape, v.dtype), trainable=False))
                     for v, _ in every}

    def set_allowed(self, allowed: dict) -> None:
        """Hold every member of the groups `allowed` leaves empty (all others: ones)."""
        now = {id(v): k for v, k in hold_pairs(self.idx, self.model,
                                               dead_groups(self.idx, allowed), self.pruned)}
        for key, (_, k) in self.keep.items():
            k.assign(now[key] if key in now else np.ones(k.shape, k.dtype.as_numpy_dtype))

    def hold(self) -> None:
        for v, k in self.keep.values():
            v.assign(v * k)


class HoldDeadGroups(keras.callbacks.Callback):
    """Keep every member of a dead group that tfmot does not mask at zero during training.

    One traced function per batch (the assigns of all held variables), run at train begin and
    after every batch, so an optimizer step never leaves a dead channel off zero when the
    model is evaluated or saved.
    """

    def __init__(self, pairs: list):
        super().__init__()
        held = [(v, tf.constant(k)) for v, k in pairs]
        self.count = len(held)

        @tf.function
        def hold():
            for v, k in held:
                v.assign(v * k)
        self._hold = hold if held else (lambda: None)

    @classmethod
    def for_level(cls, model: keras.Model, allowed: dict) -> "HoldDeadGroups":
        """The callback of a level whose pruned layers may keep `allowed`."""
        idx = pruned_index(model, allowed)
        return cls(hold_pairs(idx, model, dead_groups(idx, allowed), allowed))

    def hold(self) -> None:
        """Zero every held member now (also called inside the train step, see `steps`)."""
        self._hold()

    def on_train_begin(self, logs=None):
        self._hold()

    def on_train_batch_end(self, batch, logs=None):
        self._hold()


def kill_now(model: keras.Model, groups: Iterable[int], idx: Optional[GroupIndex] = None
             ) -> GroupIndex:
    """Zero every member of `groups` in `model` in place (filters, input slices, depthwise
    channels, biases, BN γ/β): what a level's masks and hold produce, for tests and tools."""
    idx = idx or build_index(model)
    dead = np.zeros(idx.n_groups, bool)
    dead[list(groups)] = True
    for v, k in hold_pairs(idx, model, dead, masked=()):
        v.assign(v * k)
    return idx
