"""Optional short fine-tuning of the pruned (rewritten) models, `surgery.finetune_epochs`.

The rewrite itself is lossless; fine-tuning is not: the smaller model is trained further (BN is
already folded, so at the recipe's final learning rate, no warm-up, no milestones) and the zeros
left inside kept filters may grow back. Fine-tuned models are written apart, to
RUN/finetuned/level_XX/, and deployed as kind `finetuned`, next to their lossless parents.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.train import lottery
from shifter_tf.train import engine
from shifter_tf.config.schema import Config
from shifter_tf.data.sets import Dataset
from shifter_tf.util.io import atomic_dir


def finetune_lr(cfg: Config) -> float:
    """`surgery.finetune_lr`, else the recipe's final learning rate (train.lr × gamma per
    milestone, or train.lr × 0.1 without milestones): BN is folded, a large step diverges."""
    if cfg.surgery.finetune_lr is not None:
        return cfg.surgery.finetune_lr
    return cfg.train.lr * cfg.train.gamma ** max(1, len(cfg.train.milestones))


def finetuned_dir(run: Path, level: int) -> Path:
    return Path(run) / "finetuned" / f"level_{level:02d}"


def finetuned_levels(run: Path) -> list[int]:
    root = Path(run) / "finetuned"
    return sorted(int(p.name.split("_")[1]) for p in root.glob("level_*")
                  if (p / "metrics.json").exists()) if root.exists() else []


def load_metrics(run: Path, level: int) -> dict:
    return json.loads((finetuned_dir(run, level) / "metrics.json").read_text())


def finetune_run(run: Path, cfg: Config, data: Dataset, pruned_path, progress: bool = True,
                 levels: Optional[list[int]] = None) -> list[dict]:
    """Fine-tune the pruned model of every sparse level (or `levels`) that has none yet."""
    epochs = cfg.surgery.finetune_epochs
    recipe = replace(cfg.train, epochs=epochs, warmup_epochs=0.0, milestones=[],
                     lr=finetune_lr(cfg), verbose=0)
    todo = levels if levels is not None else [
        r.level for r in lottery.load_results(run) if r.level > 0]
    done = set(finetuned_levels(run))
    out = []
    for level in tqdm([l for l in todo if l not in done], desc="fine-tune", unit="level",
                      disable=not progress):
        keras.utils.set_random_seed(cfg.seed + 1000 + level)
        model = keras.models.load_model(pruned_path(run, level) / "model.keras", compile=False,
                                        safe_mode=False)
        engine.compile_model(model, recipe, engine.steps_per_epoch(data, recipe.batch_size))
        fit = engine.fit(model, data, recipe, seed=cfg.seed + 1000 + level,
                    what=f"fine-tuning level {level}")
        engine.recalibrate_bn(model, data, recipe)
        metrics = {"level": level, "epochs": epochs, "lr": recipe.lr,
                   "train_seconds": fit.seconds,
                   "val_accuracy": engine.evaluate(model, data, "val"),
                   "test_accuracy": engine.evaluate(model, data, "test")}

        def fill(tmp: Path, model=model, metrics=metrics):
            model.save(tmp / "model.keras")
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        atomic_dir(finetuned_dir(run, level), fill)
        out.append(metrics)
    return out
