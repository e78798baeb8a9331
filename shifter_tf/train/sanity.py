"""Did the dense model learn? Level 0 at chance is a recipe problem to report, never to deploy.

"Chance" is the accuracy of always answering the test split's most frequent class (1/classes
for balanced data), and "within noise of it" is up to three binomial standard deviations above
it on the test split's size: a model that learned nothing scores there by luck about once in
700 runs, one that learned anything useful is far above it. `portfolio.min_dense_accuracy`
raises the bar to a number of the user's choosing; `portfolio.stop_at_chance: false` lets
a smoke run (a few batches, to test the plumbing) carry on.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from shifter_tf.config.schema import Config
from shifter_tf.errors import TrainingError

Z = 3.0   # binomial standard deviations above chance that still count as chance


def chance(data) -> tuple[float, int]:
    """(accuracy of the majority-class guess, test examples) of `data`'s test split."""
    k = max(int(data.num_classes), 1)
    n = int(data.count("test"))
    p = 1.0 / k
    y = getattr(data, "y_test", None)          # in memory: the real class balance
    if y is not None and len(y):
        p = max(p, float(np.bincount(np.asarray(y, np.int64).reshape(-1)).max()) / len(y))
    return p, n


def chance_ceiling(p: float, n: int, z: float = Z) -> float:
    """The highest accuracy still within noise of chance `p` on `n` examples."""
    return p + z * math.sqrt(p * (1.0 - p) / max(n, 1))


def recipe_keys(cfg: Config) -> str:
    """The training recipe of level 0, as the keys to check."""
    t = cfg.train
    epochs = cfg.lottery.dense_epochs or t.epochs
    if t.compiled:
        opt = (t.compiled.get("optimizer") or {})
        name = opt.get("class_name", "?") if isinstance(opt, dict) else str(opt)
        lr = (opt.get("config") or {}).get("learning_rate") if isinstance(opt, dict) else None
        what = f"the compiled optimizer {name}" + (f" (learning rate {lr})" if lr is not None
                                                    else "")
    else:
        what = f"train.optimizer {t.optimizer}, train.lr {t.lr}"
    return f"{what}, {epochs} epoch(s) (lottery.dense_epochs / train.epochs), " \
           f"train.batch_size {t.batch_size}"


def dense_problem(cfg: Config, data, accuracy: float) -> Optional[str]:
    """Why a dense (level 0) test accuracy is not good enough to build a portfolio on, or None."""
    p, n = chance(data)
    ceiling = chance_ceiling(p, n)
    floor = cfg.portfolio.min_dense_accuracy
    if accuracy <= ceiling and cfg.portfolio.stop_at_chance:
        why = (f"within noise of chance (always guessing the most frequent of "
               f"{data.num_classes} classes scores {p:.3f}; up to {ceiling:.3f} on {n:,} test "
               "examples is luck)")
    elif floor is not None and accuracy < floor:
        why = f"below portfolio.min_dense_accuracy {floor}"
    else:
        return None
    return (f"level 0 (dense) reached test accuracy {accuracy:.4f}, {why}: the model did not "
            f"learn, so no level of this run is worth deploying; check the recipe: "
            f"{recipe_keys(cfg)}")


def check_dense(cfg: Config, data, accuracy: float, run) -> None:
    """Stop a run whose level 0 did not learn (before it is saved or a level built on it)."""
    problem = dense_problem(cfg, data, accuracy)
    if problem:
        raise TrainingError(f"{run}: {problem}; nothing was saved to levels/")


def at_chance(data, accuracy: float) -> bool:
    p, n = chance(data)
    return accuracy <= chance_ceiling(p, n)
