"""Structure-inducing sparse training: make whole filters die at moderate sparsity.

Plain global-magnitude IMP kills whole filters only at extreme sparsity, so its sparse levels
are no faster than dense once deployed. `lottery.structure: filters` (ours, not the paper's)
adds one step before each level's global magnitude allocation: the `filter_fraction` of
surviving filters with the lowest layer-relative score lose their whole filter, the input slices
that read them are cleared downstream, and the BatchNormalization after them is held at γ = β = 0
during training, so the channel emits exactly zero and the rewriter removes it losslessly.

The channel graph comes from the rewriter's own flattened graph (`surgery.ir.trace`): a channel
is followed through layers that keep channels in place (BN, activations, pooling, dropout) to the
kernels that read it; anything else (Add, Concatenate, Flatten...) stops the walk, which is safe:
the consumer simply keeps its input slice.
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
# layers whose output channel c is a function of input channel c only
_CHANNELWISE = (L.BatchNormalization, L.ReLU, L.Activation, L.LeakyReLU, L.ELU, L.PReLU,
                L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D,
                L.GlobalMaxPooling2D, L.Dropout, L.SpatialDropout2D, L.ZeroPadding2D)


@dataclass
class ChannelGraph:
    """Which kernels read each prunable layer's output channels, and which BN scales them."""
    readers: dict[str, list[str]] = field(default_factory=dict)   # producer -> consumer kernels
    bn: dict[str, str] = field(default_factory=dict)               # producer -> its own BN


def channel_graph(model: keras.Model, names: list[str]) -> ChannelGraph:
    """Walk the model's graph from each layer in `names` through channel-wise layers."""
    from shifter_tf.graph.ir import trace

    ir = trace(model)
    wanted = set(names)
    g = ChannelGraph()
    for call in ir.calls:
        if call.layer.name not in wanted or isinstance(call.layer, L.DepthwiseConv2D):
            continue
        if len(ir.calls_of(call.layer)) != 1 or len(call.outputs) != 1:
            continue   # shared layers: leave them alone
        readers, frontier, first = [], [call.outputs[0]], True
        ok = True
        while frontier:
            t = ir.tensors[frontier.pop()]
            for ci in t.consumers:
                c = ir.calls[ci]
                if first and isinstance(c.layer, L.BatchNormalization) and len(t.consumers) == 1:
                    g.bn[call.layer.name] = c.layer.name
                if c.layer.name in wanted and not isinstance(c.layer, L.DepthwiseConv2D):
                    readers.append(c.layer.name)
                elif isinstance(c.layer, _CHANNELWISE) and len(c.inputs) == 1:
                    frontier.extend(c.outputs)
                else:
                    ok = False     # the channel reaches something we do not model
            first = False
        if ok:
            g.readers[call.layer.name] = readers
    return g


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
    changed = True
    while changed:
        changed = False
        for prod, readers in graph.readers.items():
            dead = ~filter_alive(out[prod])
            if not dead.any():
                continue
            for r in readers:
                m = out[r]
                if m.shape[-2] != dead.size:   # a reader that sees another layout
                    continue
                if m[..., dead, :].any():
                    m[..., dead, :] = False
                    changed = True
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
