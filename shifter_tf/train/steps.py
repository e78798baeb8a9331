"""Sparse training's per-step work inside the compiled train step, not in per-batch callbacks.

A sparse level does a little work around every step besides tfmot's own (which runs inside the
wrappers): before the step, the weights the level may not keep are zeroed so tfmot ranks them
last (`wrappers.KeepPruned`); after it, tfmot's masks are ANDed with the allowed set and the bias
and BN γ/β of dead channels are put back to zero (`structure.HoldDeadChannels`). Done as Keras
callbacks, that is Python and eager ops between steps, every batch: on vgg_small the six eager
assigns of `HoldDeadChannels` alone cost about as much as a quarter of a training step on a
loaded 2-core machine (`python -m tools.bench.step_time`). `HookedModel` runs the same ops at the
start and end of the traced train step instead: one graph per level, no Python between batches,
the same ops in the same order. Both paths keep the masks and dead channels at every step
(tests/test_steps.py); their weights agree closely but not bit for bit (about 1e-3 after a few
steps: the ops fuse into one graph differently).

On a `tf.distribute` strategy the hooks run in cross-replica context (`merge_call`), as the
callbacks did, so a mirrored variable is assigned on every replica at once.

With a `Teacher` the step also distils (Hinton et al. 2015): the teacher's outputs on the same
batch, softened at temperature T, pull the student's (`lottery.distill`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

Hook = Callable[[], None]


@dataclass
class Teacher:
    """A frozen model whose outputs the student learns to match: weight `alpha` of the loss,
    temperature `temperature`; `probabilities` when the models end in a softmax."""
    model: keras.Model
    alpha: float
    temperature: float = 4.0
    probabilities: bool = False

    def loss(self, x, student_out) -> tf.Tensor:
        """T² · KL(teacher_T || student_T), averaged as Keras averages a loss across replicas."""
        t_out = tf.stop_gradient(self.model(x, training=False))
        if self.probabilities:      # log p = logits - logsumexp: the same softened distribution
            t_out, student_out = (tf.math.log(tf.clip_by_value(o, 1e-7, 1.0))
                                  for o in (t_out, student_out))
        temp = self.temperature
        p_t = tf.nn.softmax(t_out / temp)
        log_s = tf.nn.log_softmax(student_out / temp)
        kl = tf.reduce_sum(p_t * (tf.math.log(tf.clip_by_value(p_t, 1e-12, 1.0)) - log_s), -1)
        return tf.nn.compute_average_loss(kl) * temp * temp


class HookedModel(keras.Model):
    """A functional model over another model's inputs, outputs and layers (shared, not copied)
    whose train step runs `begin` hooks before the forward pass and `end` hooks after the
    optimizer's update, all inside the traced step. Strip, save and evaluate the model it was
    made from; this one only trains."""

    def __init__(self, inputs, outputs, begin: Sequence[Hook] = (), end: Sequence[Hook] = (),
                 teacher: Optional[Teacher] = None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._begin_hooks, self._end_hooks = tuple(begin), tuple(end)
        self._teacher = teacher

    def _should_use_autograph(self):
        # tf_keras converts a subclassed model's `call` with AutoGraph (not a plain functional
        # model's); this one's call *is* Functional.call, so trace it as Keras traces that:
        # the same graph, without converting Keras' graph walk on every trace.
        return False

    @staticmethod
    def _run(hooks: Sequence[Hook]) -> None:
        if not hooks:
            return

        def run_all(_strategy=None):
            for h in hooks:
                h()
        ctx = tf.distribute.get_replica_context()
        if ctx is None:            # already cross-replica
            run_all()
        else:
            ctx.merge_call(run_all)

    def train_step(self, data):
        self._run(self._begin_hooks)
        logs = super().train_step(data) if self._teacher is None else self._distil_step(data)
        self._run(self._end_hooks)
        return logs

    def _distil_step(self, data):
        """Keras' train step with the loss (1 - α) · compiled loss + α · distillation; the
        regularisation losses (`add_loss`) are added unscaled."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        alpha = self._teacher.alpha
        with tf.GradientTape() as tape:
            out = self(x, training=True)
            task = self.compiled_loss(y, out, sample_weight)
            loss = (1.0 - alpha) * task + alpha * self._teacher.loss(x, out)
            if self.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self.compute_metrics(x, y, out, sample_weight)


def hooked(model: keras.Model, begin: Sequence[Hook] = (), end: Sequence[Hook] = (),
           teacher: Optional[Teacher] = None) -> keras.Model:
    """`model` to train with `begin`/`end` run inside each step, distilling from `teacher` if
    given (`model` itself if neither)."""
    if not begin and not end and teacher is None:
        return model
    return HookedModel(model.inputs, model.outputs, begin, end, teacher, name=model.name)
