"""One compiled sparse model for every sparse level of a run: the train step is traced once.

Building a level from scratch (a new model, tfmot's wrappers, compile) makes Keras trace the
train step again, and a wrapped model's step is a large graph (tfmot's per-layer schedule, mask
update and assigns): on vgg_small under load that start-up cost about as much as one epoch of
training, per level (`python -m tools.bench.step_time`). A short level pays it in full, so the
cheap recipe's levels reuse one `SparseTrainer`: every value a level changes is a variable the
traced step reads, assigned between levels:
- each layer's ramp is tfmot's `PolynomialDecay` with its start/end sparsity and steps in
  variables (`LevelSchedule`; a level without a ramp never re-picks, like `FixedMask`);
- the allowed set of `wrappers.KeepPruned` and what the structure step holds at zero (dead
  channels, or every member of a dead group) are variables too (`KeepPruned.set_allowed`,
  `VariableHold`, `groups.VariableGroupHold`);
- the optimizer is reset (iterations and slots to zero: a fresh optimizer's state), so the LR
  schedule restarts as learning-rate rewinding wants and a level trains as a rebuilt one would.
A level built this way reaches the same densities and killed filters as a rebuilt level
(tests/test_steps.py; weights agree closely, not bit for bit), so `--resume` (which rebuilds)
continues the same recipe.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from shifter_tf.train import engine, groups, magnitude, steps, structure, wrappers

sparsity = tfmot.sparsity.keras
_NEVER = 2 ** 62            # a begin step no run reaches: the mask is never re-picked


class LevelSchedule(sparsity.PolynomialDecay):
    """tfmot's PolynomialDecay (power 3) whose sparsities and steps are variables.

    `set(start, end, begin, ramp, frequency)` ramps from `start` to `end` over `ramp` steps
    after step `begin` (the wrapper's step count when the level starts), updating every
    `frequency` steps; `end <= start` holds the assigned mask (no update), like `FixedMask`.
    The arithmetic is tfmot's: (start - end) is formed in Python as its constant is.
    """

    def __init__(self):
        super().__init__(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=1,
                         frequency=1)
        self.v_delta = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self.v_final = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self.v_begin = tf.Variable(_NEVER, trainable=False, dtype=tf.int64)
        self.v_end = tf.Variable(_NEVER + 1, trainable=False, dtype=tf.int64)
        self.v_freq = tf.Variable(1, trainable=False, dtype=tf.int64)

    def set(self, start: float, end: float, begin: int, ramp: int, frequency: int) -> None:
        self.v_delta.assign(float(start) - float(end))
        self.v_final.assign(float(end))
        on = end > start
        self.v_begin.assign(begin if on else _NEVER)
        self.v_end.assign(begin + ramp if on else _NEVER + 1)
        self.v_freq.assign(frequency if on else 1)

    def __call__(self, step):
        with tf.name_scope("polynomial_decay_pruning_schedule"):
            p = tf.math.minimum(1.0, tf.math.maximum(0.0, tf.math.divide(
                tf.dtypes.cast(step - self.v_begin, tf.float32),
                tf.dtypes.cast(self.v_end - self.v_begin, tf.float32))))
            sparsity_ = tf.math.add(tf.math.multiply(self.v_delta, tf.math.pow(1 - p, 3.0)),
                                    self.v_final, name="sparsity")
        return (self._should_prune_in_step(step, self.v_begin, self.v_end, self.v_freq),
                sparsity_)


class VariableHold:
    """`structure.HoldDeadChannels` with its keep-vectors in variables: every bias and BN γ/β
    the filter step could ever hold gets one (all ones until its channel dies). The variables of
    each layer are found once, on the model as built (`hold_pairs` follows the conv's outbound
    nodes, and every level's stripped copy adds some)."""

    def __init__(self, model: keras.Model, names: list[str]):
        self.by_layer: dict[str, list] = {}
        for n in names:
            dead = {n: np.ones(magnitude.kernel_variable(model.get_layer(n)).shape[-1], bool)}
            self.by_layer[n] = [(v, tf.Variable(tf.ones(v.shape, tf.float32), trainable=False))
                                for v, _ in structure.hold_pairs(model, dead)]
        self.pairs = [p for ps in self.by_layer.values() for p in ps]

    def set_allowed(self, allowed: magnitude.Masks) -> None:
        """Hold the channels of the filters `allowed` leaves empty (all others: ones)."""
        dead = {n: ~structure.filter_alive(m) for n, m in allowed.items()}
        for n, ps in self.by_layer.items():
            keep = (~dead[n]).astype(np.float32) if n in dead else None
            for _, k in ps:
                k.assign(keep if keep is not None else np.ones(k.shape, np.float32))

    def hold(self) -> None:
        for v, k in self.pairs:
            v.assign(v * k)


# lottery.structure -> the variable-backed hold of what that structure step kills
HOLDS = {"filters": VariableHold, "groups": groups.VariableGroupHold}


class SparseTrainer:
    """The wrapped model, its in-step holding and its compiled step, reused level after level."""

    def __init__(self, cfg, model: keras.Model, names: list[str], recipe, steps_per_epoch: int,
                 strategy: tf.distribute.Strategy, teacher: Optional[steps.Teacher] = None):
        self.cfg, self.model, self.names, self.recipe = cfg, model, names, recipe
        self.steps_per_epoch = steps_per_epoch
        with strategy.scope():
            self.schedules = {n: LevelSchedule() for n in names}
            self.wrapped = wrappers.wrap(model, self.schedules)
            self.keep = wrappers.KeepPruned(self.wrapped, {
                n: np.ones(k.shape, bool) for n, k in magnitude.kernels(model, names).items()})
            hold = HOLDS.get(cfg.lottery.structure)
            self.hold = hold(model, names) if hold else None
            end = [self.keep.and_masks] + ([self.hold.hold] if self.hold else [])
            self.fit_model = steps.hooked(self.wrapped, begin=[self.keep.zero_disallowed],
                                          end=end, teacher=teacher)
            if cfg.lottery.gamma_l1:
                self.fit_model.add_loss(structure.gamma_l1_loss(model, cfg.lottery.gamma_l1))
            engine.compile_model(self.fit_model, recipe, steps_per_epoch)

    @staticmethod
    def supports(cfg) -> bool:
        """Structures whose holding this trainer keeps in variables (others rebuild)."""
        return (cfg.lottery.structure in ("none", *HOLDS)
                and cfg.train.compiled is None)

    def start_level(self, allowed: magnitude.Masks, new_masks: magnitude.Masks,
                    steps_: int) -> None:
        """Assign what level `allowed`/`new_masks` trains with; the weights are set already."""
        lt = self.cfg.lottery
        step0 = int(next(iter(wrappers.wrappers(self.wrapped).values())).pruning_step.numpy())
        ramp, freq = wrappers.ramp_steps(self.cfg, steps_)
        for n, sch in self.schedules.items():
            start, end = 1.0 - float(allowed[n].mean()), 1.0 - float(new_masks[n].mean())
            if lt.schedule == "oneshot":
                start = end
            sch.set(start, end, max(step0, 0), ramp, freq)
        self.keep.set_allowed(allowed)
        if self.hold is not None:
            self.hold.set_allowed(allowed)
            self.hold.hold()
        wrappers.assign_masks(self.wrapped, new_masks if lt.schedule == "oneshot" else allowed)
        for v in self.fit_model.optimizer.variables:
            v.assign(tf.zeros(v.shape, v.dtype))

    def stripped(self) -> keras.Model:
        """The trained model without tfmot, as a copy of its own: `strip_pruning` returns a
        model sharing the wrapped layers, which the next level would go on training."""
        shared = sparsity.strip_pruning(self.wrapped)
        model = keras.models.clone_model(shared)
        model.set_weights(shared.get_weights())
        return model

    def matches(self, recipe, steps_per_epoch: int) -> Optional[bool]:
        return recipe == self.recipe and steps_per_epoch == self.steps_per_epoch
