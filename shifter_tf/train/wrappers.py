"""tfmot plumbing: `prune_low_magnitude` wrappers, their schedules and the masks they hold.

Every sparse training of the project (IMP levels, pruning at initialisation) goes through these:
tfmot does the masking, we only choose the schedule per layer and, where needed, assign masks
or hold weights a level may not keep at zero.
"""
from __future__ import annotations

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from shifter_tf.train import magnitude
from shifter_tf.config.schema import Config

sparsity = tfmot.sparsity.keras


class FixedMask(sparsity.PruningSchedule):
    """A schedule that never re-picks masks: the masks we assign are the masks trained with."""

    def __init__(self, target: float):
        self.target = float(target)

    def __call__(self, step):
        return tf.constant(False), tf.constant(self.target, tf.float32)

    def get_config(self):
        return {"class_name": self.__class__.__name__, "config": {"target": self.target}}


def schedule(cfg: Config, start: float, end: float, steps: int) -> sparsity.PruningSchedule:
    """tfmot's PolynomialDecay from `start` to `end` over the first `ramp_fraction` of the level.

    tfmot reaches `final_sparsity` only on a step that is a multiple of `frequency`, so the ramp
    length is rounded to one; a level too short to ramp is finished by `magnitude.finish_mask`.
    """
    if cfg.lottery.schedule == "oneshot" or end <= start:
        return FixedMask(end)
    ramp, freq = ramp_steps(cfg, steps)
    return sparsity.PolynomialDecay(initial_sparsity=start, final_sparsity=end,
                                    begin_step=0, end_step=ramp, frequency=freq)


def ramp_steps(cfg: Config, steps: int) -> tuple[int, int]:
    """(ramp length, update frequency) of a level of `steps` steps."""
    freq = max(1, min(cfg.lottery.ramp_frequency, steps // 4))
    ramp = int(np.ceil(cfg.lottery.ramp_fraction * steps / freq)) * freq
    return max(freq, min(ramp, (steps - 1) // freq * freq)), freq


def wrap(model: keras.Model, schedules: dict[str, sparsity.PruningSchedule]) -> keras.Model:
    """tfmot wrappers on the layers in `schedules`; weights stay shared with `model`."""
    def clone(layer):
        if layer.name in schedules:
            w = sparsity.prune_low_magnitude(layer, pruning_schedule=schedules[layer.name])
            # tf_keras runs a non-Keras layer's `call` through AutoGraph, and AutoGraph
            # re-converts tfmot's mask update (nested closures around tf.cond) from source for
            # every wrapper at every trace: most of a sparse level's start-up (vgg_small, load
            # ~10: the first fit 40 s against 10 s dense). tfmot's code is graph code
            # (smart_cond/tf.cond), so it runs unconverted: the same graph, traced in a blink.
            w.call = tf.autograph.experimental.do_not_convert(w.call)
            return w
        return layer
    return keras.models.clone_model(model, clone_function=clone)


def wrappers(model: keras.Model) -> dict:
    """tfmot's PruneLowMagnitude wrappers by inner layer name (the class is not public API)."""
    return {l.layer.name: l for l in model.layers
            if isinstance(l, keras.layers.Wrapper) and hasattr(l, "pruning_vars")}


def assign_masks(wrapped: keras.Model, masks: magnitude.Masks) -> None:
    for name, w in wrappers(wrapped).items():
        weight, mask, _ = w.pruning_vars[0]
        mask.assign(masks[name].astype(np.float32))
        weight.assign(weight * mask)


class KeepPruned(keras.callbacks.Callback):
    """Hold the weights a level may not keep at zero, so tfmot never re-picks them.

    tfmot re-ranks raw |w| of the whole layer at each mask update, and a pruned weight's gradient
    and momentum move it off zero after every step. Left there, such a weight can outrank a kept
    one; ANDing tfmot's mask with the allowed set afterwards then leaves the layer *below* its
    allocation (the cause of the last-block collapses seen at deep levels). So before each batch
    the disallowed weights are zeroed (they rank last) and after it tfmot's mask is ANDed with
    the allowed set (so a pruned weight never serves even for one step).
    """

    def __init__(self, wrapped: keras.Model, allowed: magnitude.Masks):
        super().__init__()
        # variables, not constants: a reused trained step takes the next level's set
        self.allowed = {n: tf.Variable(allowed[n].astype(np.float32), trainable=False)
                        for n in wrappers(wrapped)}
        triples = [(w.pruning_vars[0][0], w.pruning_vars[0][1], self.allowed[n])
                   for n, w in wrappers(wrapped).items()]

        # One traced function per hook instead of eager ops per layer per batch: both hooks
        # 0.93 -> 0.46 ms per batch on vgg_small (small beside a training step; more layers,
        # more saved). Same ops, so the same numbers: the demo's levels are identical.
        @tf.function
        def zero_disallowed():
            for weight, _, keep in triples:
                weight.assign(weight * keep)

        @tf.function
        def and_masks():
            for _, mask, keep in triples:
                mask.assign(mask * keep)
        # As hooks of the train step itself (`steps.HookedModel`): no Python between batches.
        self.zero_disallowed, self.and_masks = zero_disallowed, and_masks

    def set_allowed(self, allowed: magnitude.Masks) -> None:
        for n, v in self.allowed.items():
            v.assign(allowed[n].astype(np.float32))

    def on_train_batch_begin(self, batch, logs=None):
        self.zero_disallowed()

    def on_train_batch_end(self, batch, logs=None):
        self.and_masks()
