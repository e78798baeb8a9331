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
"""
from __future__ import annotations

from typing import Callable, Sequence

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

Hook = Callable[[], None]


class HookedModel(keras.Model):
    """A functional model over another model's inputs, outputs and layers (shared, not copied)
    whose train step runs `begin` hooks before the forward pass and `end` hooks after the
    optimizer's update, all inside the traced step. Strip, save and evaluate the model it was
    made from; this one only trains."""

    def __init__(self, inputs, outputs, begin: Sequence[Hook] = (), end: Sequence[Hook] = (),
                 **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._begin_hooks, self._end_hooks = tuple(begin), tuple(end)

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
        logs = super().train_step(data)
        self._run(self._end_hooks)
        return logs


def hooked(model: keras.Model, begin: Sequence[Hook] = (), end: Sequence[Hook] = ()
           ) -> keras.Model:
    """`model` to train with `begin`/`end` run inside each step (`model` itself if no hooks)."""
    if not begin and not end:
        return model
    return HookedModel(model.inputs, model.outputs, begin, end, name=model.name)
