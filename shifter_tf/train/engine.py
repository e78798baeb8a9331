"""One training run on TensorFlow's own engine: strategy, optimiser, LR schedule, fit.

Used by every level of the lottery, by tuning and by pruning-at-init, so the recipe lives here
once.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.config.schema import TrainConfig
from shifter_tf.data.sets import Dataset, stream_errors
from shifter_tf.errors import TrainingError  # noqa: F401 (raised here)
from shifter_tf.models import iter_layers



def make_strategy(name: str, peer_timeout: float = 300.0) -> tf.distribute.Strategy:
    """`default` | `mirrored` (all local devices) | `multi_worker` (TF_CONFIG cluster; one per
    process, see shifter_tf.distributed.cluster)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        from shifter_tf.distributed import cluster
        return cluster.strategy(peer_timeout)
    raise ValueError(f"train.strategy: unknown strategy {name!r}")


class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `lr`, then ×gamma at each boundary (in steps)."""

    def __init__(self, lr: float, warmup_steps: int, boundaries: list[int], gamma: float):
        self.lr, self.warmup_steps = float(lr), int(warmup_steps)
        self.boundaries, self.gamma = [int(b) for b in boundaries], float(gamma)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        drops = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries] or
                         [tf.constant(0.0)])
        lr = self.lr * tf.pow(self.gamma, drops)
        if self.warmup_steps > 0:
            lr = lr * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return lr

    def get_config(self):
        return {"lr": self.lr, "warmup_steps": self.warmup_steps,
                "boundaries": self.boundaries, "gamma": self.gamma}


def scaled(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The recipe stretched to `epochs`: warm-up and LR milestones scale with it."""
    if epochs == cfg.epochs:
        return cfg
    k = epochs / cfg.epochs
    return replace(cfg, epochs=epochs, warmup_epochs=cfg.warmup_epochs * k,
                   milestones=[m * k for m in cfg.milestones])


def tail(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The last `epochs` epochs of the recipe's schedule, as a recipe of its own: the learning
    rate as it stands at epoch `cfg.epochs - epochs`, the warm-up and milestones still ahead.
    Learning-rate rewinding with a short budget (Renda et al., ICLR 2020: rewind the schedule to
    epoch E - t and retrain for the t epochs left)."""
    if epochs >= cfg.epochs:
        return cfg
    cut = cfg.epochs - epochs
    passed = sum(1 for m in cfg.milestones if m <= cut)
    return replace(cfg, epochs=epochs, lr=cfg.lr * cfg.gamma ** passed,
                   warmup_epochs=max(0.0, cfg.warmup_epochs - cut),
                   milestones=[m - cut for m in cfg.milestones if m > cut])


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    schedule = WarmupPiecewise(cfg.lr, round(cfg.warmup_epochs * steps_per_epoch),
                               [round(m * steps_per_epoch) for m in cfg.milestones], cfg.gamma)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                    weight_decay=wd)
    return keras.optimizers.Adam(schedule, weight_decay=wd)


def compile_model(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Compile with the recipe, or with the user's own compile() when `cfg.compiled` holds it."""
    if cfg.compiled:
        from shifter_tf.models.compiled import build

        optimizer, loss, metrics = build(cfg.compiled)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics or ["accuracy"])
        return
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if cfg.label_smoothing:
        # Keras' sparse loss has no label smoothing; one-hot targets are built in the pipeline.
        loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                    label_smoothing=cfg.label_smoothing)
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss=loss,
                  metrics=["accuracy"])


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss and remember it, so the caller can raise clearly."""

    def __init__(self):
        super().__init__()
        self.bad_at: Optional[tuple[int, float]] = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.bad_at = (self.epoch, loss)
            self.model.stop_training = True


def check_finite_weights(model: keras.Model, what: str) -> None:
    """Raise TrainingError if any weight (BN statistics included) is NaN or Inf.

    The loss alone does not prove a model is sound: on some CPUs NaN activations come out of
    ReLU as zeros, so a run can report a finite loss with NaN kernels or moving statistics.
    """
    for w in model.weights:
        v = w.numpy()
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise TrainingError(f"{what}: weight {w.name} became non-finite "
                                f"({int((~np.isfinite(v)).sum())} of {v.size} values); "
                                "lower train.lr or check the data")


@dataclass
class FitResult:
    seconds: float
    history: dict
    steps: int


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    return data.steps("train", batch_size)


def fit(model: keras.Model, data: Dataset, cfg: TrainConfig, *, seed: int, what: str,
        callbacks: list = (), epochs: Optional[int] = None) -> FitResult:
    """Train `model` (compiled) on the training split; raise TrainingError on a NaN loss."""
    # Across workers, shard by element: a streamed folder reads its files through a map, which
    # Keras' default (by file) cannot shard, so it would only fall back to this with a warning.
    by_element = tf.data.Options()
    by_element.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = data.tf_dataset("train", cfg.batch_size, training=True, seed=seed).with_options(
        by_element)
    val = data.tf_dataset("val", cfg.batch_size).with_options(by_element)
    if cfg.label_smoothing:
        k = data.num_classes
        train = train.map(lambda x, y: (x, tf.one_hot(y, k)))
        val = val.map(lambda x, y: (x, tf.one_hot(y, k)))
    guard = NaNGuard()
    start = time.perf_counter()
    with stream_errors(f"{what}: {data.name}", getattr(data, "bad_file", None)):
        hist = model.fit(train, validation_data=val, epochs=epochs or cfg.epochs,
                         verbose=cfg.verbose, callbacks=[*callbacks, guard])
    if guard.bad_at is not None:
        raise TrainingError(f"{what}: loss became {guard.bad_at[1]} in epoch "
                            f"{guard.bad_at[0] + 1}; lower train.lr or check the data")
    check_finite_weights(model, what)
    return FitResult(time.perf_counter() - start, dict(hist.history),
                     steps_per_epoch(data, cfg.batch_size) * (epochs or cfg.epochs))


def evaluate(model: keras.Model, data: Dataset, split: str, batch_size: int = 256) -> float:
    """Top-1 accuracy of a Keras model on a split (logits or probabilities alike), batch by
    batch in one pass: the split is never held whole, and a user pipeline that reshuffles each
    pass still pairs every prediction with its own label."""
    correct = total = 0
    with stream_errors(f"{data.name} {split}", getattr(data, "bad_file", None)):
        for x, y in data.tf_dataset(split, batch_size):
            logits = model.predict_on_batch(x)
            correct += int(np.sum(np.argmax(logits, -1) == y.numpy().reshape(-1)))
            total += int(np.size(y))
    return correct / max(total, 1)


def recalibrate_bn(model: keras.Model, data: Dataset, cfg: TrainConfig) -> int:
    """Recompute every trainable BatchNormalization's moving mean and variance as the plain
    average of its batch statistics over `cfg.bn_recalibration` training images, drawn as
    training draws them (shuffled, augmented if configured: splits may be sorted by class), in
    training mode like PyTorch's `update_bn`; returns how many layers it set.

    Keras keeps exponential averages (momentum 0.9 in the zoo, 0.99 by default) of batches the
    weights have since moved away from: a 3-epoch MobileNetV2 level was measured at 0.59 test
    accuracy with 0.82 training accuracy, and at 0.81 after this. Frozen BN layers are left alone.
    """
    bns = [layer for layer in iter_layers(model)
           if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not cfg.bn_recalibration or not bns:
        return 0
    saved = [layer.momentum for layer in bns]
    seen = 0
    try:
        with stream_errors(f"BN recalibration: {data.name}", getattr(data, "bad_file", None)):
            batches = data.tf_dataset("train", cfg.batch_size, training=True, seed=0)
            for i, (x, _) in enumerate(batches, start=1):
                for layer in bns:          # moving = ((i-1) moving + batch) / i
                    layer.momentum = 1.0 - 1.0 / i
                model(x, training=True)
                seen += int(x.shape[0])
                if seen >= cfg.bn_recalibration:
                    break
    finally:
        for layer, momentum in zip(bns, saved):
            layer.momentum = momentum
    return len(bns)
