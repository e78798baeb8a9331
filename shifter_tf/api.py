"""The Python API for training scripts: a model and data in, a portfolio out.

    portfolio = shifter_tf.train_portfolio(model, train_ds, validation_data=val_ds,
                                           levels=5, epochs=3, out="runs/mine")
    shifter_tf.prune(portfolio)
    shifter_tf.export_portfolio(portfolio, precisions=["fp32", "int8"])

The CLI runs the same phases (`shifter_tf.pipeline`) from a config file; these functions build
that config from their arguments and write the same run folder, so `shifter-tf report RUN` and
the device side work on either.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

import shifter_tf  # noqa: F401
from shifter_tf.config.recipes import DEFAULT_RECIPE
from shifter_tf.config.schema import Config, from_dict, load_config
from shifter_tf.data.sets import Dataset, Normalization, model_normalizes
from shifter_tf.errors import DataError

PY_DATA = "python"   # data.name of a run whose data came through this API


@dataclass
class Portfolio:
    """A run folder and the data it was trained on (kept for `prune` / `export_portfolio`)."""
    run: Path
    levels: list = field(default_factory=list)       # lottery.LevelResult per level
    data: Any = None
    manifest: Optional[dict] = None

    def table(self) -> str:
        from shifter_tf.train.lottery import level_table
        return level_table(self.levels)

    def model(self, level: int, kind: str = "sparse", keras3: bool = False):
        """The model of `level`: `sparse` (trained) or `pruned` (after `prune`); tf_keras, or
        Keras 3 with `keras3=True` (converted, outputs checked)."""
        import tf_keras as keras
        from shifter_tf import pipeline
        from shifter_tf.train import lottery

        if kind == "sparse":
            model = lottery.load_level_model(self.run, level)
        elif kind == "pruned":
            model = keras.models.load_model(pipeline.pruned_dir(self.run, level) / "model.keras",
                                            compile=False, safe_mode=False)
        else:
            raise ValueError(f"kind: 'sparse' or 'pruned', got {kind!r}")
        if keras3:
            from shifter_tf.models.keras3 import to_keras3
            return to_keras3(model)
        return model


def _config(config, **sections) -> Config:
    if isinstance(config, Config):
        base = config.to_dict()
    elif isinstance(config, (str, Path)):
        base = load_config(config).to_dict()
    else:
        base = dict(config or {})
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **{k: v for k, v in values.items() if v is not None}}
    return from_dict(base, "<train_portfolio>")


def _as_tf_keras(model, sample: Optional[np.ndarray]):
    """A tf_keras model: Keras 3 models are converted (outputs compared on `sample`)."""
    import tf_keras as keras

    if isinstance(model, keras.Model):
        return model
    from shifter_tf.models.keras3 import is_keras3, to_tf_keras
    if is_keras3(model):
        return to_tf_keras(model, sample=sample)
    raise TypeError(f"model: expected a Keras model, got {type(model).__name__}")


def _is_tf_data(obj) -> bool:
    import tensorflow as tf
    return isinstance(obj, tf.data.Dataset)


def _arrays(obj, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataError(f"{what}: expected a tf.data.Dataset of (x, y) or a tuple (x, y) of "
                        f"arrays, got {type(obj).__name__}")
    x, y = np.asarray(obj[0], np.float32), np.asarray(obj[1]).reshape(-1).astype(np.int64)
    if len(x) != len(y):
        raise DataError(f"{what}: {len(x)} inputs but {len(y)} labels")
    return x, y


def as_data(train_data, validation_data=None, test_data=None, *, input_shape, num_classes: int,
            labels: Optional[Sequence[str]] = None, norm: Optional[Normalization] = None):
    """Our data object from what a training script has: tf.data pipelines, (x, y) arrays, or a
    shifter_tf data set. Inputs are used as they come (`norm` defaults to `caller`)."""
    if hasattr(train_data, "tf_dataset"):
        return train_data
    labels = list(labels) if labels is not None else [str(i) for i in range(num_classes)]
    if len(labels) != num_classes:
        raise DataError(f"labels: {len(labels)} names but the model has {num_classes} outputs")
    norm = norm or Normalization.identity("caller", int(input_shape[-1]))
    if validation_data is None:
        raise DataError("validation_data: required (it picks nothing, but every level reports "
                        "it and surgery verifies on it)")
    if _is_tf_data(train_data) or _is_tf_data(validation_data):
        from shifter_tf.data.streams import from_tf_data
        return from_tf_data(train_data, validation_data, test_data, input_shape=input_shape,
                            labels=labels, norm=norm, name=PY_DATA)
    (xt, yt), (xv, yv) = _arrays(train_data, "train_data"), _arrays(validation_data,
                                                                    "validation_data")
    xs, ys = _arrays(test_data, "test_data") if test_data is not None else (xv, yv)
    return Dataset(PY_DATA, xt, yt, xv, yv, xs, ys, labels, norm)


def train_portfolio(model, train_data, validation_data=None, *, out: Union[str, Path],
                    test_data=None, levels: Optional[int] = None,
                    prune_fraction: Optional[float] = None, epochs: Optional[int] = None,
                    batch_size: Optional[int] = None, labels: Optional[Sequence[str]] = None,
                    callbacks: Sequence = (), config: Union[Config, str, Path, dict, None] = None,
                    resume: bool = False, progress: bool = True, verbose: Optional[int] = None,
                    seed: Optional[int] = None, allow_changed_recipe: bool = False
                    ) -> Portfolio:
    """Train one sparse model per pruning level (IMP with rewinding) into `out`.

    `model`: a tf_keras or Keras 3 functional/Sequential model, or a .keras/.h5 path. When it is
    compiled, its optimizer, loss and metrics are used for every level (fresh each level);
    otherwise the recipe of `config` / the config defaults. `train_data` / `validation_data` /
    `test_data` (defaults to validation): tf.data.Datasets of (x, y), batched as for `fit` or
    not, (x, y) numpy tuples, or a shifter_tf data set (`shifter_tf.image_folder(...)`); they
    are used as they come (normalise in the pipeline or in the model). `train_data=None` loads
    the data set of `config`. `callbacks`: Keras callbacks (tf_keras or Keras 3) passed to
    every level's `fit`.
    Options not named here go in `config` (a Config, a YAML path or a dict of sections).
    `resume=True` continues a run in `out` at its first unfinished level; a config that trains
    differently from the run's is refused (ConfigError naming the keys) unless
    `allow_changed_recipe=True`, which records the change in `out/recipe_changes.json`.
    """
    from shifter_tf.train import lottery
    from shifter_tf.models.compiled import compile_spec, tf_keras_callbacks
    from shifter_tf.util.io import atomic_save
    from shifter_tf.models import load_user_model

    out = Path(out)
    if isinstance(model, (str, Path)):
        model = load_user_model(model)
    spec = compile_spec(model)
    sample = None
    if isinstance(train_data, (tuple, list)):
        sample = _arrays(train_data, "train_data")[0][:32]
    tk = _as_tf_keras(model, sample)
    shape = tuple(int(d) for d in tk.inputs[0].shape[1:])
    classes = int(tk.outputs[0].shape[-1])
    norm = Normalization.identity("model" if model_normalizes(tk) else "caller", shape[-1])
    data = None if train_data is None else as_data(
        train_data, validation_data, test_data, input_shape=shape, num_classes=classes,
        labels=labels, norm=norm)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "input_model.keras"
    if not lottery.finished_levels(out):   # a finished run keeps the model it trained from
        atomic_save(path, lambda p: tk.save(p))
    lot = {} if config is not None else {"recipe": default_recipe(tk)}
    lot.update(levels=levels, prune_fraction=prune_fraction)
    cfg = _config(config, data={"name": None if data is None else PY_DATA},
                  model={"path": str(path.resolve())}, lottery=lot,
                  train={"epochs": epochs, "batch_size": batch_size, "compiled": spec,
                         "verbose": verbose})
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    results = lottery.run_lottery(cfg, out, resume=resume, data=data, progress=progress,
                                  callbacks=tf_keras_callbacks(callbacks),
                                  allow_changed_recipe=allow_changed_recipe)
    return Portfolio(out, results, lottery.run_data(cfg, out, data))


def default_recipe(model) -> str:
    """The recipe `train_portfolio` uses without a config: DEFAULT_RECIPE (the filter step)
    when that step reaches at least 90 % of the model's conv filters, else `groups` (residual,
    inverted-residual and concatenating networks, whose filters only die in groups)."""
    from shifter_tf.train import magnitude, structure

    reach, total = structure.filter_reach(model, magnitude.prunable_layers(model))
    return DEFAULT_RECIPE if reach >= structure.REACH_MIN * total else "groups"


def _run_and_data(portfolio, data):
    if isinstance(portfolio, Portfolio):
        return portfolio.run, data if data is not None else portfolio.data
    return Path(portfolio), data


def prune(target, data=None, *, force: Optional[bool] = None, sample=None,
          keras3: Optional[bool] = None, progress: bool = True):
    """Structured pruning. A Portfolio or run folder: every sparse level is rewritten losslessly
    into RUN/pruned/ (returns the table). A model (tf_keras or Keras 3): the pruned model, of the
    same kind, with its report (`shifter_tf.surgery.prune_structured`)."""
    from shifter_tf import pipeline

    if not isinstance(target, (Portfolio, str, Path)):
        from shifter_tf.surgery import prune_structured
        return prune_structured(target, sample=sample, force=bool(force))
    run, data = _run_and_data(target, data)
    overrides = {"surgery.keras3": keras3} if keras3 is not None else None
    return pipeline.prune_run(run, force=force, data=data, progress=progress,
                              overrides=overrides)


def export_portfolio(target, data=None, *, representative_data=None,
                     precisions: Optional[Sequence[str]] = None, progress: bool = True,
                     android: Optional[bool] = None) -> dict:
    """Convert every variant to TFLite, measure it and write RUN/portfolio/ with its manifest.

    `representative_data` (a tf.data.Dataset of x or (x, y), or an array) feeds full-int8
    calibration; by default it comes from the training stream. `android=True`: Android-ready
    variants (`export.android`). Returns the manifest."""
    import json

    from shifter_tf import pipeline

    from shifter_tf.train import lottery

    run, data = _run_and_data(target, data)
    overrides = {"export.precisions": list(precisions)} if precisions else {}
    if android is not None:
        overrides["export.android"] = bool(android)
    rep = None
    if representative_data is not None:
        rank = len(lottery.load_level_model(run, 0).inputs[0].shape) - 1
        rep = _representative(representative_data, rank)
    pipeline.export_run(run, data=data, progress=progress, overrides=overrides or None,
                        representative=rep)
    manifest = json.loads((run / "portfolio" / "manifest.json").read_text())
    if isinstance(target, Portfolio):
        target.manifest = manifest
    return manifest


def _representative(obj, rank: int, limit: int = 1000) -> np.ndarray:
    """Up to `limit` inputs from a tf.data.Dataset (of x or (x, y), batched or not) or array."""
    if not _is_tf_data(obj):
        return np.asarray(obj, np.float32)[:limit]
    if isinstance(obj.element_spec, tuple):
        obj = obj.map(lambda x, *rest: x)
    if len(obj.element_spec.shape) == rank + 1:
        obj = obj.unbatch()
    return np.stack(list(obj.take(limit).as_numpy_iterator())).astype(np.float32)
