"""Structure-inducing sparse training: make whole filters die at moderate sparsity.

Plain global-magnitude IMP kills whole filters only at extreme sparsity, so its sparse levels
are no faster than dense once deployed. `lottery.structure: filters` (ours, not the paper's)
adds one step before each level's global magnitude allocation: the `filter_fraction` of
surviving filters with the lowest layer-relative score lose their whole filter, the input slices
that read them are cleared downstream, and the BatchNormalization after them is held at γ = β = 0
during training, so the channel emits exactly zero and the rewriter removes it losslessly.

The channel graph is the rewriter's own dependency graph (`graph.deps.model_graph`, one code
path for both): a filter may die here when its channel group has no other producer (no residual
`Add` partner, no depthwise conv carrying it), is not frozen, and is read only by pruned kernels;
the readers' input slices are found by group, so they are cleared through BN, activations,
pooling, `Concatenate` offsets and Flatten -> Dense rows alike. Coupled groups (residual stages,
inverted-residual blocks) are what `lottery.structure: groups` (`train.groups`) removes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.train import magnitude
from shifter_tf.models import iter_layers

L = keras.layers


@dataclass
class ChannelGraph:
    """Which kernels read each prunable layer's output channels, and which BN scales them.

    `out_groups` / `in_groups` (layer -> group id per output / input channel of its kernel) come
    from the dependency graph; a reader's input slice of a dead filter is where its group is."""
    readers: dict[str, list[str]] = field(default_factory=dict)   # producer -> consumer kernels
    bn: dict[str, str] = field(default_factory=dict)               # producer -> its own BN
    out_groups: dict = field(default_factory=dict)
    in_groups: dict = field(default_factory=dict)


def channel_graph(model: keras.Model, names: list[str]) -> ChannelGraph:
    """The producers in `names` whose filters may die alone, with their readers and BN."""
    from shifter_tf.graph.members import build_index

    idx = build_index(model)
    graph, ir = idx.graph, idx.graph.ir
    wanted = set(names) & set(idx.filters)
    producers: dict = {}   # group -> producer layers (depthwise layers included)
    readers: dict = {}     # group -> reading kernels
    for n, gs in idx.filters.items():
        for grp in np.unique(gs):
            producers.setdefault(int(grp), set()).add(n)
        for grp in np.unique(idx.inputs[n]):
            readers.setdefault(int(grp), set()).add(n)
    for n, gs in idx.depthwise.items():
        for grp in np.unique(gs):
            producers.setdefault(int(grp), set()).add(n)
    g = ChannelGraph(out_groups=dict(idx.filters), in_groups=dict(idx.inputs))
    order = {c.layer.name: c.index for c in ir.calls}
    for n in sorted(wanted, key=order.get):
        own = np.unique(idx.filters[n])
        if graph.frozen[own].any():
            continue
        reads = set().union(*(readers.get(int(grp), set()) for grp in own))
        if any(producers[int(grp)] != {n} for grp in own) or not reads <= wanted:
            continue   # coupled (Add, depthwise...) or read by a kernel that is not pruned
        g.readers[n] = sorted(reads, key=order.get)
    for call in ir.calls:   # a BN that alone reads a producer's output scales its channels
        if type(call.layer) is L.BatchNormalization and call.inputs:
            t = ir.tensors[call.inputs[0]]
            before = ir.calls[t.producer].layer.name
            if before in g.readers and len(t.consumers) == 1:
                g.bn[before] = call.layer.name
    return g


REACH_MIN = 0.9   # below this share of its conv filters in reach, a model needs the group step


def filter_reach(model: keras.Model, names: list[str]) -> tuple[int, int]:
    """(conv filters the filter step may remove alone, conv filters of all kernels in `names`):
    all of them on a plain chain (VGG); few where residual `Add`s, depthwise convs or
    `Concatenate` couple them (3 of 35 convs of MobileNetV2), which only the group step frees."""
    layers = {l.name: l for l in iter_layers(model)}
    convs = [n for n in names if isinstance(layers[n], L.Conv2D)
             and not isinstance(layers[n], L.DepthwiseConv2D)]
    reach = set(channel_graph(model, names).readers)
    count = {n: int(layers[n].filters) for n in convs}
    return sum(v for n, v in count.items() if n in reach), sum(count.values())


def reach_warning(model: keras.Model, names: list[str]) -> Optional[str]:
    """What to tell a user whose `lottery.structure: filters` can reach few of the model's
    filters (None when it reaches at least REACH_MIN of them)."""
    reach, total = filter_reach(model, names)
    if not total or reach >= REACH_MIN * total:
        return None
    return (f"lottery.structure: filters can remove {reach:,} of the {total:,} conv filters of "
            f"{model.name} (residual Add, depthwise or Concatenate couple the rest), so its "
            "pruned levels will be barely faster than dense; `lottery.recipe: groups` (or "
            "`lottery.structure: groups`) removes whole channel groups")


def filter_alive(mask: np.ndarray) -> np.ndarray:
    """Per output channel: does any weight of its filter survive? (Conv2D / Dense kernels.)"""
    return mask.reshape(-1, mask.shape[-1]).any(axis=0)


def filter_scores(kernel: np.ndarray, mask: np.ndarray, gamma: Optional[np.ndarray] = None
                  ) -> np.ndarray:
    """How much each filter matters, relative to its layer's surviving filters (mean 1).

    With a BatchNormalization right after the layer the filter's norm says nothing (BN divides
    it out) and |γ| is the channel's scale, as in network slimming; otherwise the L2 norm of the
    filter's surviving weights. Dividing by the layer's mean makes scores comparable across
    layers, so one global ranking does not strip a layer whose weights are small by design.
    """
    alive = filter_alive(mask)
    if gamma is not None:
        s = np.abs(np.asarray(gamma, np.float64))
    else:
        cols = np.where(mask, kernel, 0).reshape(-1, kernel.shape[-1]).astype(np.float64)
        s = np.sqrt((cols ** 2).sum(axis=0))
    mean = s[alive].mean() if alive.any() else 1.0
    return np.where(alive, s / (mean if mean > 0 else 1.0), np.inf)


def kill_filters(weights: dict[str, np.ndarray], masks: magnitude.Masks, fraction: float,
                 gammas: Optional[dict[str, np.ndarray]] = None, min_filters: int = 1
                 ) -> tuple[magnitude.Masks, dict[str, int]]:
    """Clear the `fraction` of surviving filters with the lowest layer-relative score.

    One global ranking over the filters of every layer in `weights` (the caller leaves out the
    classifier). A layer keeps at least `min_filters`. Returns new masks for those layers (whole
    columns cleared, subsets of `masks`) and the number of filters killed per layer.
    """
    gammas = gammas or {}
    names = list(weights)
    scores = {n: filter_scores(weights[n], masks[n], gammas.get(n)) for n in names}
    alive = {n: filter_alive(masks[n]) for n in names}
    kill = int(round(fraction * sum(int(a.sum()) for a in alive.values())))
    ranked = sorted((float(scores[n][c]), i, int(c)) for i, n in enumerate(names)
                    for c in np.flatnonzero(alive[n]))
    left = {n: int(alive[n].sum()) for n in names}
    out = {n: masks[n].copy() for n in names}
    killed = {n: 0 for n in names}
    for _, i, c in ranked:
        n = names[i]
        if kill == 0:
            break
        if left[n] <= min_filters:
            continue
        out[n][..., c] = False
        left[n] -= 1
        killed[n] += 1
        kill -= 1
    return out, killed


def clear_dead_inputs(masks: magnitude.Masks, graph: ChannelGraph) -> magnitude.Masks:
    """Clear input slices that read a channel whose whole filter is masked (repeat to a fixpoint:
    a filter whose every input is dead is dead too)."""
    out = {n: m.copy() for n, m in masks.items()}
    n_groups = 1 + max([int(v.max()) for v in graph.out_groups.values() if len(v)] +
                       [int(v.max()) for v in graph.in_groups.values() if len(v)] + [0])
    while True:
        dead = np.zeros(n_groups, bool)
        for prod in graph.readers:
            dead[graph.out_groups[prod][~filter_alive(out[prod])]] = True
        changed = False
        for r in {r for rs in graph.readers.values() for r in rs}:
            rows = dead[graph.in_groups[r]]
            m = out[r]
            if rows.any() and m[..., rows, :].any():
                m[..., rows, :] = False
                changed = True
        if not changed:
            return out


def structured_allowed(cfg_fraction: float, kernels: dict[str, np.ndarray], masks: magnitude.Masks,
                       graph: ChannelGraph, gammas: dict[str, np.ndarray],
                       classifier: Optional[str]) -> tuple[magnitude.Masks, dict[str, int]]:
    """The weights a level may keep: `masks` minus the filters this level kills, minus the input
    slices that read dead channels."""
    eligible = [n for n in kernels if n != classifier and n in graph.readers]
    cut, killed = kill_filters({n: kernels[n] for n in eligible},
                               {n: masks[n] for n in eligible}, cfg_fraction,
                               {n: gammas[n] for n in eligible if n in gammas})
    return clear_dead_inputs({**masks, **cut}, graph), killed


def hold_pairs(model: keras.Model, dead: dict) -> list[tuple[tf.Variable, np.ndarray]]:
    """(variable, keep-vector) for the bias and the directly following BN's gamma/beta of each
    dead output channel; model outputs (the classifier) are left alone."""
    layers = {l.name: l for l in iter_layers(model)}
    outputs = set(getattr(model, "output_names", []))
    pairs = []
    for name, d in dead.items():
        layer = layers[name]
        if not d.any() or name in outputs:
            continue
        keep = (~d).astype(np.float32)
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            pairs.append((layer.bias, keep))
        bns = [n.outbound_layer for n in layer._outbound_nodes
               if isinstance(n.outbound_layer, keras.layers.BatchNormalization)]
        if len(bns) == 1 and bns[0].axis in ([-1], [len(layer.output_shape) - 1]):
            bn = bns[0]
            pairs += [(v, keep) for v in (bn.gamma, bn.beta) if v is not None]
    return pairs


class HoldDeadChannels(keras.callbacks.Callback):
    """Keep bias and BN gamma/beta of dead channels at 0 during training.

    A pruned filter followed by BN otherwise carries the learnt constant act(beta), which the
    rewriter cannot remove exactly in front of a zero-padded conv: held at 0, the channel is
    truly empty and goes (the whole channel is what structured pruning removes, BN included).
    """

    def __init__(self, pairs: list):
        super().__init__()
        self.pairs = [(v, tf.constant(k)) for v, k in pairs]

    def hold(self):
        for v, k in self.pairs:
            v.assign(v * k)

    def on_train_begin(self, logs=None):
        self.hold()

    def on_train_batch_end(self, batch, logs=None):
        self.hold()


def gamma_l1_loss(model: keras.Model, strength: float):
    """An L1 penalty on every BN γ (network slimming), as a zero-argument loss for add_loss."""
    gammas = [l.gamma for l in iter_layers(model)
              if isinstance(l, L.BatchNormalization) and l.gamma is not None]

    def loss():
        return strength * tf.add_n([tf.reduce_sum(tf.abs(g)) for g in gammas])
    return loss
