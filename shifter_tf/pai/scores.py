"""Unstructured pruning-at-initialisation scores: magnitude, random, SNIP, SynFlow.

Every score is finite, >= 0 and has its kernel's shape. Masks keep the best-scoring weights of
all prunable kernels under one global threshold (`masks.global_allocation`), as the PaI papers
do; SynFlow prunes iteratively, re-scoring the survivors each round.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.train import magnitude
from shifter_tf.models import iter_layers
from shifter_tf.errors import PaiError  # noqa: F401 (raised here)

Scores = dict[str, np.ndarray]



def magnitude_scores(model: keras.Model, names: list[str]) -> Scores:
    """|w| at initialisation."""
    return {n: np.abs(k) for n, k in magnitude.kernels(model, names).items()}


def random_scores(model: keras.Model, names: list[str], seed: int = 0) -> Scores:
    """Uniform random scores: the random-pruning baseline (per-layer density follows global
    allocation, i.e. uniform in expectation)."""
    rng = np.random.default_rng(seed)
    return {n: rng.random(k.shape) for n, k in magnitude.kernels(model, names).items()}


def _keep_state(model: keras.Model):
    """Snapshot every weight (BN statistics included) so probing passes leave no trace."""
    saved = model.get_weights()
    return lambda: model.set_weights(saved)


def snip_scores(model: keras.Model, names: list[str], x: np.ndarray, y: np.ndarray,
                batch_size: int = 128) -> Scores:
    """SNIP (Lee et al. 2019): |dL/dm| at m = 1, i.e. |g ⊙ w| for the loss on (x, y).

    BN runs on batch statistics (training mode), as SNIP does in PyTorch; the moving statistics
    that this updates are restored afterwards.
    """
    layers = {l.name: l for l in iter_layers(model)}
    kvars = [magnitude.kernel_variable(layers[n]) for n in names]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    grads = [np.zeros(v.shape, np.float64) for v in kvars]
    restore = _keep_state(model)
    try:
        for i in range(0, len(x), batch_size):
            xb = tf.constant(x[i:i + batch_size], tf.float32)
            with tf.GradientTape() as tape:
                loss = loss_fn(y[i:i + batch_size], model(xb, training=True)) / len(x)
            for acc, g in zip(grads, tape.gradient(loss, kvars)):
                acc += np.asarray(g, np.float64)
    finally:
        restore()
    return {n: np.abs(g * v.numpy()) for n, g, v in zip(names, grads, kvars)}


# ---------------------------------------------------------------- SynFlow
def linearize(model: keras.Model) -> keras.Model:
    """A float64 copy of `model` with |θ| for every weight and BN moving means at 0.

    With an all-ones input its output is a sum over all input-output paths of the product of
    |w| along the path (SynFlow's R); BN in inference mode is then a positive per-channel scale.
    float64 keeps R finite in deep networks (ResNet-20 already reaches 1e25).
    """
    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    try:
        inputs = [keras.Input(t.shape[1:], dtype="float64") for t in model.inputs]
        lin = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    except Exception as e:  # subclassed, nested or custom layers without from_config
        raise PaiError(f"{model.name}: cannot build the linearised copy pruning at "
                       f"initialisation needs ({type(e).__name__}: {str(e)[:200]}); "
                       "use a functional model made of built-in layers") from None
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        twin = lin.get_layer(layer.name)
        twin.set_weights([np.abs(w).astype(np.float64) for w in weights])
        if isinstance(twin, keras.layers.BatchNormalization):
            twin.moving_mean.assign(tf.zeros_like(twin.moving_mean))
    return lin


class _Flow:
    """R = 1ᵀ f(1) of a linearised model and dR/d(kernel) of the prunable layers."""

    def __init__(self, lin: keras.Model, names: list[str]):
        self.lin = lin
        self.kvars = [magnitude.kernel_variable(lin.get_layer(n)) for n in names]
        self.names = names
        self.ones = [tf.ones((1, *t.shape[1:]), tf.float64) for t in lin.inputs]

        @tf.function
        def grad():
            with tf.GradientTape() as tape:
                r = tf.add_n([tf.reduce_sum(o) for o in tf.nest.flatten(
                    lin(self.ones if len(self.ones) > 1 else self.ones[0], training=False))])
            return r, tape.gradient(r, self.kvars)
        self._grad = grad

    def set_kernels(self, abs0: Scores, masks: magnitude.Masks) -> None:
        for n, v in zip(self.names, self.kvars):
            v.assign(abs0[n] * masks[n])

    def scores(self, abs0: Scores) -> tuple[float, Scores]:
        """R and |dR/dw ⊙ |w0|| per weight: survivors' SynFlow scores, and for pruned weights
        the score they would have if restored."""
        r, grads = self._grad()
        out = {n: np.abs(np.asarray(g) * abs0[n]) for n, g in zip(self.names, grads)}
        return float(r), out


def synflow(model: keras.Model, names: list[str], density: float, rounds: int = 100,
            lin: Optional[keras.Model] = None) -> tuple[magnitude.Masks, Scores]:
    """SynFlow (Tanaka et al. 2020): data-free, iterative; round k keeps density**(k/rounds).

    Returns the final masks and the last round's scores (see `_Flow.scores`).
    """
    lin = lin or linearize(model)
    flow = _Flow(lin, names)
    abs0 = {n: np.abs(k).astype(np.float64) for n, k in magnitude.kernels(model, names).items()}
    masks = {n: np.ones(k.shape, bool) for n, k in abs0.items()}
    scores: Scores = {}
    for k in range(1, rounds + 1):
        flow.set_kernels(abs0, masks)
        r, scores = flow.scores(abs0)
        if not np.isfinite(r) or r <= 0:
            raise PaiError(f"{model.name}: SynFlow's R became {r} in round {k}; the network "
                           "has no path left from input to output at this density")
        masks, _ = magnitude.global_allocation(scores, masks, density ** (k / rounds))
    flow.set_kernels(abs0, masks)
    _, scores = flow.scores(abs0)
    return masks, scores


# ---------------------------------------------------------------- one entry point
def score_masks(model: keras.Model, names: list[str], method: str, density: float, *,
                x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None,
                rounds: int = 100, seed: int = 0, lin: Optional[keras.Model] = None
                ) -> tuple[magnitude.Masks, Scores]:
    """Score the prunable kernels `names` with `method` and keep `density` of them globally."""
    if method == "synflow":
        masks, scores = synflow(model, names, density, rounds, lin)
    else:
        if method == "magnitude":
            scores = magnitude_scores(model, names)
        elif method == "random":
            scores = random_scores(model, names, seed)
        elif method == "snip":
            if x is None or y is None:
                raise PaiError("SNIP needs a data batch (x, y)")
            scores = snip_scores(model, names, x, y)
        else:
            raise PaiError(f"unknown pruning-at-init method {method!r}")
        ones = {n: np.ones(s.shape, bool) for n, s in scores.items()}
        masks, _ = magnitude.global_allocation(scores, ones, density)
    for n, s in scores.items():
        if not np.all(np.isfinite(s)):
            raise PaiError(f"{method} scores of layer {n} are not finite")
    return masks, scores
