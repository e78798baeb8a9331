"""Lottery-ticket rewinding: every weight of a model by name, θ_k captured after k iterations,
and the rewind point a config asks for. IMP levels restart from what this keeps."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.config.schema import Config
from shifter_tf.data.sets import Dataset
from shifter_tf.models import iter_layers
from shifter_tf.train import engine
from shifter_tf.util.io import atomic_save


def get_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """Every weight of `model` keyed `layer/index`: the same keys in any model of one config."""
    return {f"{l.name}/{i}": w for l in iter_layers(model) for i, w in enumerate(l.get_weights())}


def set_weights(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    for l in iter_layers(model):
        ws = [weights[f"{l.name}/{i}"] for i in range(len(l.weights))]
        if ws:
            l.set_weights(ws)


def save_weights(path: Path, weights: dict[str, np.ndarray]) -> None:
    atomic_save(path, lambda p: np.savez(p, **weights))


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


class CaptureRewind(keras.callbacks.Callback):
    """Copy every weight of the model after `step` iterations (θ_k)."""

    def __init__(self, model: keras.Model, step: int):
        super().__init__()
        self.target, self.step, self.weights = model, step, None

    def on_train_batch_end(self, batch, logs=None):
        self.step -= 1
        if self.step == 0 and self.weights is None:
            self.weights = get_weights(self.target)


def rewind_step(cfg: Config, data: Dataset) -> int:
    """k, the iteration θ_k is taken at: `rewind_iterations`, else `rewind_epochs` of steps."""
    lt = cfg.lottery
    if lt.rewind_iterations is not None:
        return int(lt.rewind_iterations)
    if lt.rewind_epochs is not None:
        return int(round(lt.rewind_epochs * engine.steps_per_epoch(data, cfg.train.batch_size)))
    return 0
