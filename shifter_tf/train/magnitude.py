"""Prunable kernels, masks and the global magnitude allocation.

Global ranking (one threshold across all prunable kernels) is what makes whole filters die in
the deep, over-wide layers; per-layer uniform sparsity rarely does.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.models import iter_layers

PRUNABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)

Masks = dict[str, np.ndarray]


def kernel_variable(layer):
    """The weight tensor pruning acts on (depthwise kernels for DepthwiseConv2D)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.depthwise_kernel
    return layer.kernel


def classifier_name(model: keras.Model) -> Optional[str]:
    """Name of the last Dense layer (the classifier), if any."""
    dense = [l.name for l in iter_layers(model) if isinstance(l, keras.layers.Dense)]
    return dense[-1] if dense else None


def prunable_layers(model: keras.Model, exclude_classifier: bool = False,
                    exclude: Iterable[str] = ()) -> list[str]:
    """Names of Conv2D / Dense layers to prune, in graph order.

    DepthwiseConv2D stays dense: tfmot 0.8 registers it with no prunable weights, so its
    wrapper would hold no mask (and assigning one failed with an IndexError).
    """
    excluded = set(exclude)
    if exclude_classifier:
        excluded.add(classifier_name(model))
    names = [l.name for l in iter_layers(model) if isinstance(l, PRUNABLE)
             and not isinstance(l, keras.layers.DepthwiseConv2D)]
    unknown = excluded - set(names) - {None}
    if unknown:
        raise ValueError(f"lottery.exclude_layers: no prunable layer named {sorted(unknown)}; "
                         f"prunable: {names}")
    return [n for n in names if n not in excluded]


def kernels(model: keras.Model, names: Iterable[str]) -> dict[str, np.ndarray]:
    layers = {l.name: l for l in iter_layers(model)}
    return {n: kernel_variable(layers[n]).numpy() for n in names}


def density(masks: Masks) -> float:
    total = sum(m.size for m in masks.values())
    return float(sum(int(m.sum()) for m in masks.values()) / max(total, 1))


def global_allocation(weights: dict[str, np.ndarray], masks: Masks, target: float,
                      clip: bool = False) -> tuple[Masks, float]:
    """Keep the `target` fraction of all weights with the largest |w| among the surviving ones.

    Returns the new masks (a subset of `masks`) and the global magnitude threshold. Exactly
    round(target * total) weights survive (ties broken by position); every layer keeps at least
    one weight, as tfmot does, so no layer is cut off entirely by the ranking. With `clip`, a
    target above what `masks` still allows keeps every allowed weight instead of failing (the
    structure step can remove more than one level's share).
    """
    names = list(weights)
    total = sum(weights[n].size for n in names)
    keep = max(int(round(target * total)), len(names))
    scores = np.concatenate([np.where(masks[n], np.abs(weights[n]), -1.0).ravel() for n in names])
    alive = int((scores >= 0).sum())
    if keep > alive and clip:
        keep = alive
    if keep > alive:
        raise ValueError(f"cannot keep {keep} weights: only {alive} survive")
    order = np.argpartition(-scores, keep - 1)[:keep]
    flat = np.zeros(total, bool)
    flat[order] = True
    threshold = float(scores[order].min())
    new, start = {}, 0
    for n in names:
        size = weights[n].size
        m = flat[start:start + size].reshape(weights[n].shape)
        if not m.any():   # keep this layer's largest survivor
            local = np.where(masks[n], np.abs(weights[n]), -1.0)
            m = np.zeros_like(m)
            m.flat[int(np.argmax(local))] = True
        new[n] = m
        start += size
    return new, threshold


def finish_mask(mask: np.ndarray, magnitude: np.ndarray, allowed: np.ndarray, keep: int
                ) -> np.ndarray:
    """Exactly `keep` weights of `allowed`, preferring tfmot's choice, then the largest |w|.

    Where a level had too few steps for tfmot's ramp to reach its final sparsity this finishes
    the ramp as its last update would have; where tfmot's rounding kept one weight fewer it
    adds the largest allowed one back, so every layer ends at exactly its allocation.
    """
    mask = mask & allowed
    if mask.sum() == keep:
        return mask
    # tfmot's picks first, then the other allowed weights, each by magnitude
    score = np.where(mask, magnitude + 1e30, np.where(allowed, magnitude, -1.0)).ravel()
    out = np.zeros(score.size, bool)
    out[np.argpartition(-score, keep - 1)[:keep]] = True
    return out.reshape(mask.shape)


def zero_filters(kernel: np.ndarray, depthwise: bool = False) -> int:
    """Output channels whose whole filter is zero (depthwise: per input channel x multiplier)."""
    cols = kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1]) if depthwise \
        else kernel.reshape(-1, kernel.shape[-1])
    return int((~cols.any(axis=0)).sum())


def layer_stats(model: keras.Model, names: list[str], masks: Masks) -> dict:
    """Per layer: whole filters that are zero, filters, density of the mask."""
    layers = {l.name: l for l in iter_layers(model)}
    zf, nf, ld = {}, {}, {}
    for n in names:
        k = kernel_variable(layers[n]).numpy()
        dw = isinstance(layers[n], keras.layers.DepthwiseConv2D)
        zf[n] = zero_filters(k, dw)
        nf[n] = int(k.shape[-2] * k.shape[-1]) if dw else int(k.shape[-1])
        ld[n] = float(masks[n].mean())
    return {"zero_filters": zf, "filters": nf, "layer_density": ld}


def save_masks(path, masks: Masks) -> None:
    from shifter_tf.util.io import atomic_save
    atomic_save(path, lambda p: np.savez_compressed(p, **{k: v for k, v in masks.items()}))


def load_masks(path) -> Masks:
    with np.load(path) as z:
        return {k: z[k].astype(bool) for k in z.files}
