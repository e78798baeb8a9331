"""Reconvene's pruning step: unstructured PaI masks, then whole-filter masks where they cost least.

1. Score every prunable weight at initialisation (`scores.score_masks`) and keep `density` of
   them under one global threshold: the unstructured PaI masks.
2. Per Conv2D layer, build the whole-filter mask with about as many weights as its unstructured
   mask (the filters with the most score on live input channels) and measure the layer's
   *sensitivity* to the swap: `mass` = the fraction of score per kept weight it loses;
   `loss` = the relative rise of the loss on a data batch when only that layer is swapped.
3. Convert the least sensitive layers, up to `budget` (a fraction of the conv layers) and
   `max_sensitivity`, in graph order, each sized on the input channels still alive upstream.
4. The rectifier (our reading of the paper's): weights that now read dead channels are moved to
   the best-scoring free live positions of the same layer (density is kept, nothing is wasted),
   and the converted and repaired layers are re-drawn from their own initialiser with the fan-in
   their masks leave (a converted layer gets exactly the init the smaller network would have).

Channel liveness is structural: a float64 copy of the network with |mask|/fan-in kernels is run
on an all-ones input; a channel is dead when it is exactly 0 (no path reaches it).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.train import magnitude
from shifter_tf.models import iter_layers
from shifter_tf.pai.scores import Scores, _keep_state, linearize, score_masks
from shifter_tf.errors import PaiError
from shifter_tf.pai.settings import PaiConfig

L = keras.layers


@dataclass
class LayerDecision:
    """What pruning at initialisation did to one prunable layer (a row of pai.json)."""
    name: str
    class_name: str
    filters: int
    weights: int                    # kernel size
    kept_unstructured: int          # weights the global PaI allocation gave the layer
    density_unstructured: float
    sensitivity: Optional[float] = None   # None: not a conversion candidate
    converted: bool = False
    filters_kept: Optional[int] = None    # converted layers: whole filters kept
    kept: int = 0                   # weights in the final mask
    density: float = 0.0
    dead_inputs: int = 0            # input channels no path reaches
    dead_filters: int = 0           # output channels that carry nothing (held at 0 in training)
    repaired: int = 0               # weights the rectifier moved off dead channels
    added: int = 0                  # weights it added to make up the global density
    reinitialised: bool = False
    reason: str = ""                # why a layer was not converted


@dataclass
class PaiPlan:
    """Masks for one training run, and what pruning at initialisation decided and took."""
    method: str
    structured: bool
    target_density: float
    density: float
    masks: magnitude.Masks
    dead: dict                      # prunable layer -> bool[out channels] that carry nothing
    layers: list[LayerDecision]
    timings: dict                   # seconds: linearize, score, sensitivity, convert, rectify
    seconds: float                  # the whole pruning step, wall time
    notes: list = field(default_factory=list)

    @property
    def converted(self) -> list[str]:
        return [d.name for d in self.layers if d.converted]

    def to_dict(self) -> dict:
        """JSON-ready (masks and dead-channel vectors are saved separately)."""
        return {"method": self.method, "structured": self.structured,
                "target_density": self.target_density, "density": self.density,
                "pruning_seconds": self.seconds, "timings": self.timings,
                "converted": self.converted, "notes": self.notes,
                "layers": [asdict(d) for d in self.layers]}


# ---------------------------------------------------------------- kernel geometry
def _geometry(layer, shape: tuple) -> tuple[np.ndarray, np.ndarray, int]:
    """(input-channel index, output-channel index) per kernel weight, and the output width.

    Both index arrays broadcast to `shape`. Layers we do not understand map every weight to
    channel -1 (treated as always live).
    """
    if isinstance(layer, L.DepthwiseConv2D):
        cin, mult = shape[-2], shape[-1]
        ci = np.arange(cin).reshape(1, 1, cin, 1)
        return ci, ci * mult + np.arange(mult).reshape(1, 1, 1, mult), cin * mult
    if isinstance(layer, L.Conv2D) and not isinstance(layer, L.Conv2DTranspose):
        cin_g, cout = shape[-2], shape[-1]
        per_group = cout // max(layer.groups, 1)
        co = np.arange(cout).reshape(1, 1, 1, cout)
        return (co // per_group) * cin_g + np.arange(cin_g).reshape(1, 1, cin_g, 1), co, cout
    if isinstance(layer, L.Dense):
        return np.arange(shape[0]).reshape(-1, 1), np.arange(shape[1]).reshape(1, -1), shape[1]
    return np.full((1,) * len(shape), -1), np.full((1,) * len(shape), -1), shape[-1]


def _inlive(layer, shape: tuple, live_in: np.ndarray) -> np.ndarray:
    """bool per kernel weight: does it read a live input channel?"""
    ci, _, _ = _geometry(layer, shape)
    return np.broadcast_to(np.where(ci >= 0, np.append(live_in, True)[ci], True), shape)


def _live_out(layer, mask: np.ndarray, live_in: np.ndarray) -> np.ndarray:
    """bool per output channel: does any kept weight carry a live input into it?"""
    _, co, cout = _geometry(layer, mask.shape)
    if co.min() < 0:
        return np.ones(cout, bool)
    alive = mask & _inlive(layer, mask.shape, live_in)
    out = np.zeros(cout, bool)
    out[np.broadcast_to(co, mask.shape)[alive]] = True
    return out


def _fan_in(shape: tuple, layer) -> int:
    return int(np.prod(shape[:-2])) if isinstance(layer, L.DepthwiseConv2D) \
        else int(np.prod(shape[:-1]))


def conversion_blocker(layer) -> str:
    """Why `layer` cannot get a whole-filter mask ('' if it can): plain Conv2D layers only."""
    if not isinstance(layer, L.Conv2D) or isinstance(layer, L.Conv2DTranspose):
        return f"{type(layer).__name__}: only Conv2D filters are converted"
    if layer.groups != 1:
        return "grouped Conv2D: not converted"
    return ""


class Liveness:
    """Which input channels of each prunable layer some path from the input reaches."""

    def __init__(self, lin: keras.Model, layers: dict, names: list[str]):
        self.names, self.layers = names, layers
        self.kvars = [magnitude.kernel_variable(lin.get_layer(n)) for n in names]
        probe = keras.Model(lin.inputs, [lin.get_layer(n).input for n in names])
        ones = [tf.ones((1, *t.shape[1:]), tf.float64) for t in lin.inputs]
        self._run = tf.function(lambda: probe(ones if len(ones) > 1 else ones[0],
                                              training=False))

    def __call__(self, masks: magnitude.Masks) -> dict[str, np.ndarray]:
        for n, v in zip(self.names, self.kvars):
            v.assign(masks[n] / max(_fan_in(masks[n].shape, self.layers[n]), 1))
        acts = self._run()
        acts = acts if isinstance(acts, (list, tuple)) else [acts]
        return {n: np.asarray(a).reshape(-1, a.shape[-1]).max(0) > 0
                for n, a in zip(self.names, acts)}


# ---------------------------------------------------------------- whole-filter masks
def filter_mask(layer, score: np.ndarray, k: int, live_in: np.ndarray
                ) -> tuple[np.ndarray, int]:
    """A whole-filter mask of about `k` weights: the filters with most score on live inputs.

    Each kept filter is dense over the live input channels; returns (mask, filters kept).
    """
    inl = _inlive(layer, score.shape, live_in)
    cout = score.shape[-1]
    per_filter = int(inl.reshape(-1, cout).sum(0).max())
    if per_filter == 0:
        return np.zeros(score.shape, bool), 0
    n = int(np.clip(round(k / per_filter), 1, cout))
    mass = np.where(inl, score, 0.0).reshape(-1, cout).sum(0)
    keep = np.zeros(cout, bool)
    keep[np.argsort(-mass, kind="stable")[:n]] = True
    return inl & keep, n


def mass_sensitivity(score: np.ndarray, mask: np.ndarray, fmask: np.ndarray) -> float:
    """1 - (score per weight under the filter mask) / (score per weight under the PaI mask)."""
    base = float(score[mask].mean()) if mask.any() else 0.0
    if base <= 0.0:
        return 0.0
    return 1.0 - (float(score[fmask].mean()) if fmask.any() else 0.0) / base


class _LossProbe:
    """Loss of the masked network on a fixed batch, BN on batch statistics, state restored."""

    def __init__(self, model: keras.Model, layers: dict, names: list[str], x, y):
        self.kvars = {n: magnitude.kernel_variable(layers[n]) for n in names}
        self.w0 = {n: v.numpy() for n, v in self.kvars.items()}
        self.model, self.x, self.y = model, tf.constant(x, tf.float32), y
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def __call__(self, masks: magnitude.Masks) -> float:
        for n, v in self.kvars.items():
            v.assign(self.w0[n] * masks[n])
        return float(self.loss(self.y, self.model(self.x, training=True)))


# ---------------------------------------------------------------- rectifier
def reinitialise(layer, mask: np.ndarray, live_in: np.ndarray, rng: np.random.Generator
                 ) -> bool:
    """Re-draw `layer`'s kernel from its own VarianceScaling initialiser with the fan-in and
    fan-out its mask leaves (kept weights per live output / per live input channel).

    Returns False (kernel untouched) for other initialisers.
    """
    init = getattr(layer, "depthwise_initializer" if isinstance(layer, L.DepthwiseConv2D)
                   else "kernel_initializer", None)
    if not isinstance(init, keras.initializers.VarianceScaling) or not mask.any():
        return False
    kept = float(mask.sum())
    fan_in = kept / max(int(_live_out(layer, mask, live_in).sum()), 1)
    fan_out = kept / max(int(live_in.sum()), 1)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(init.mode, (fan_in + fan_out) / 2)
    var = init.scale / max(fan, 1.0)
    shape = mask.shape
    if init.distribution == "uniform":
        w = rng.uniform(-math.sqrt(3 * var), math.sqrt(3 * var), shape)
    elif init.distribution == "truncated_normal":
        std = math.sqrt(var) / 0.87962566103423978
        w = rng.normal(0.0, std, shape)
        bad = np.abs(w) > 2 * std
        while bad.any():
            w[bad] = rng.normal(0.0, std, int(bad.sum()))
            bad = np.abs(w) > 2 * std
    else:
        w = rng.normal(0.0, math.sqrt(var), shape)
    magnitude.kernel_variable(layer).assign((w * mask).astype(np.float32))
    return True


def free_positions(layer, mask: np.ndarray, live_in: np.ndarray) -> np.ndarray:
    """Unkept weights that would read a live input into an already live filter."""
    inl = _inlive(layer, mask.shape, live_in)
    _, co, _ = _geometry(layer, mask.shape)
    lo = _live_out(layer, mask, live_in)
    return inl & ~mask & (np.broadcast_to(lo[np.maximum(co, 0)], mask.shape) | (co < 0))


def repair(layer, mask: np.ndarray, score: np.ndarray, live_in: np.ndarray
           ) -> tuple[np.ndarray, int]:
    """Move weights that read dead input channels to the best-scoring free positions that read
    live inputs into live filters; returns (new mask, weights moved off dead channels)."""
    inl = _inlive(layer, mask.shape, live_in)
    useless = mask & ~inl
    n = int(useless.sum())
    if n == 0:
        return mask, 0
    kept = mask & inl
    cand = np.flatnonzero(free_positions(layer, kept, live_in))
    take = cand[np.argsort(-score.ravel()[cand], kind="stable")[:n]]
    out = kept.copy()
    out.flat[take] = True
    return out, n


# ---------------------------------------------------------------- the pruning step
def sample_batch(data, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` normalised training examples, drawn with `seed`."""
    return data.sample("train", n, seed=seed)


def prune_at_init(model: keras.Model, s: PaiConfig, data=None, seed: int = 0) -> PaiPlan:
    """Choose the masks of `model` at initialisation; leaves its kernels = init ⊙ mask.

    Plain unstructured PaI when `s.structured` is false, Reconvene otherwise (see module doc).
    `data` is needed for SNIP and for `loss` sensitivity.
    """
    start = time.perf_counter()
    layers = {l.name: l for l in iter_layers(model)}
    try:
        names = magnitude.prunable_layers(model, s.exclude_classifier, s.exclude_layers)
    except ValueError as e:
        raise PaiError(str(e).replace("lottery.exclude_layers", "pai.exclude_layers")) from None
    x = y = None
    if s.method == "snip" or (s.structured and s.sensitivity == "loss"):
        if data is None:
            raise PaiError(f"pai: {s.method} / {s.sensitivity} sensitivity needs data")
        x, y = sample_batch(data, s.samples, seed)
    timings = {}
    mark = time.perf_counter()
    lin = linearize(model)
    timings["linearize"] = time.perf_counter() - mark

    mark = time.perf_counter()
    masks, scores = score_masks(model, names, s.method, s.density, x=x, y=y, rounds=s.rounds,
                                seed=seed, lin=lin)
    timings["score"] = time.perf_counter() - mark
    liveness = Liveness(lin, layers, names)
    decisions = {n: LayerDecision(
        n, type(layers[n]).__name__, int(masks[n].shape[-1]), int(masks[n].size),
        int(masks[n].sum()), float(masks[n].mean())) for n in names}
    notes: list[str] = []
    if s.structured:
        _reconvene(model, layers, names, masks, scores, s, decisions, liveness, timings, x, y,
                   seed, notes)

    live_in = liveness(masks)
    dead = {}
    for n in names:
        d = decisions[n]
        d.kept, d.density = int(masks[n].sum()), float(masks[n].mean())
        d.dead_inputs = int((~live_in[n]).sum())
        dead[n] = ~_live_out(layers[n], masks[n], live_in[n])
        d.dead_filters = int(dead[n].sum())
        v = magnitude.kernel_variable(layers[n])
        v.assign(v.numpy() * masks[n])
    total = sum(m.size for m in masks.values())
    return PaiPlan(s.method, s.structured, s.density,
                   float(sum(int(m.sum()) for m in masks.values()) / total), masks, dead,
                   [decisions[n] for n in names],
                   {k: round(v, 4) for k, v in timings.items()},
                   round(time.perf_counter() - start, 4), notes)


def _reconvene(model, layers, names, masks, scores: Scores, s: PaiConfig, decisions, liveness,
               timings, x, y, seed, notes) -> None:
    """Steps 2-4 of the module doc, in place on `masks`, `decisions` and the model's kernels."""
    mark = time.perf_counter()
    live_in = liveness(masks)
    cands = []
    for n in names:
        why = conversion_blocker(layers[n])
        if why:
            decisions[n].reason = why
        else:
            cands.append(n)
    probe = _LossProbe(model, layers, names, x, y) if s.sensitivity == "loss" else None
    restore = _keep_state(model) if probe else None
    base = probe(masks) if probe else None
    for n in cands:
        fmask, _ = filter_mask(layers[n], scores[n], int(masks[n].sum()), live_in[n])
        if probe:
            sens = (probe({**masks, n: fmask}) - base) / max(abs(base), 1e-12)
        else:
            sens = mass_sensitivity(scores[n], masks[n], fmask)
        decisions[n].sensitivity = float(sens)
    if restore:
        restore()
    timings["sensitivity"] = time.perf_counter() - mark

    mark = time.perf_counter()
    limit = math.floor(s.budget * len(cands) + 1e-9)
    ranked = sorted(cands, key=lambda n: decisions[n].sensitivity)
    chosen = set()
    for n in ranked:
        if s.max_sensitivity is not None and decisions[n].sensitivity > s.max_sensitivity:
            decisions[n].reason = f"sensitivity above max_sensitivity {s.max_sensitivity}"
        elif len(chosen) >= limit:
            decisions[n].reason = f"budget: {limit} of {len(cands)} conv layers"
        else:
            chosen.add(n)
    for n in names:   # graph order: each conversion sees the channels upstream ones killed
        if n not in chosen:
            continue
        live_in = liveness(masks)
        fmask, nf = filter_mask(layers[n], scores[n], decisions[n].kept_unstructured,
                                live_in[n])
        if nf == 0:
            decisions[n].reason = "no live input channel"
            continue
        masks[n] = fmask
        decisions[n].converted, decisions[n].filters_kept = True, nf
    timings["convert"] = time.perf_counter() - mark

    mark = time.perf_counter()
    if s.rectify:
        live_in = liveness(masks)
        for n in names:
            masks[n], decisions[n].repaired = repair(layers[n], masks[n], scores[n], live_in[n])
        _top_up(layers, [n for n in names if not decisions[n].converted], masks, scores,
                live_in, round(s.density * sum(m.size for m in masks.values())), decisions)
        rng = np.random.default_rng(seed + 7919)
        touched = [n for n in names if decisions[n].converted or decisions[n].repaired
                   or decisions[n].added]
        for n in touched:
            decisions[n].reinitialised = reinitialise(layers[n], masks[n], live_in[n], rng)
        skipped = [n for n in touched if not decisions[n].reinitialised]
        if skipped:
            notes.append(f"not re-initialised (initialiser is not VarianceScaling): {skipped}")
    timings["rectify"] = time.perf_counter() - mark


def _top_up(layers, names: list[str], masks: magnitude.Masks, scores: Scores, live_in: dict,
            target: int, decisions: dict) -> None:
    """Add the best-scoring free live positions of the unconverted layers `names` (one global
    ranking) until `target` weights are kept; what conversion rounding and dead channels took
    from the density goes back where the PaI scores want it."""
    short = target - sum(int(m.sum()) for m in masks.values())
    if short <= 0 or not names:
        return
    free = {n: np.flatnonzero(free_positions(layers[n], masks[n], live_in[n])) for n in names}
    owner = np.concatenate([np.full(len(free[n]), i) for i, n in enumerate(names)])
    pos = np.concatenate([free[n] for n in names])
    val = np.concatenate([scores[n].ravel()[free[n]] for n in names])
    pick = np.argsort(-val, kind="stable")[:short]
    for i, n in enumerate(names):
        chosen = pos[pick[owner[pick] == i]]
        masks[n].flat[chosen] = True
        decisions[n].added = int(len(chosen))
