"""Hyper-parameter search over the IMP training recipe with keras-tuner.

DNNShifter's accuracy at high sparsity depends on the recipe (learning rate, weight decay, rewind
point, epochs per level, prune fraction). A trial copies the base config, applies the trial's
values, runs a short IMP (`run_lottery`) down to `tune.target_density` and reports the validation
accuracy of the sparse model there (the objective, maximised) and of the dense level 0.

Search space, in the config's `tune:` section (see configs/mnist5k_vgg_tune.yaml):

    tune:
      algorithm: random        # random | bayesian | hyperband
      max_trials: 6            # `shifter-tf tune --trials N` overrides
      target_density: 0.13     # objective level: the first whose density is <= this
                               # (default: the base config's deepest level)
      num_initial_points: 3    # bayesian only: random trials before the Gaussian process
      hyperband_factor: 3      # hyperband only
      space:                   # dotted key of a scalar `train.*` / `lottery.*` field: a range ...
        train.lr: {min: 0.01, max: 0.2, sampling: log}     # sampling: linear | log | reverse_log
        train.epochs: {min: 2, max: 6, step: 1}            # int field -> integer range
        lottery.rewind_epochs: {values: [0, 0.25, 0.5]}    # ... or a list of values

Rules (each broken one is a ConfigError naming the source and `tune.space.<key>`):
- `lottery.levels` is not tunable: a trial sets it to the fewest levels that reach
  `target_density` with its prune fraction (and sets `lottery.target_density`).
- Setting `lottery.rewind_epochs` clears `lottery.rewind_iterations` and vice versa (they are
  mutually exclusive); both may not be in the space; the largest rewind_epochs must fit in the
  smallest epochs per level.
- When a trial changes `train.epochs`, `train.milestones` are scaled by new/base epochs so the
  learning-rate schedule keeps its shape.
- hyperband: epochs per level are the resource; keras-tuner picks budgets up to the max of
  `space.train.epochs` (a {min, max} range, min acts as a floor) or the base `train.epochs`.
  A promoted trial is retrained from scratch (IMP has no cheap continuation); brackets repeat
  until max_trials.

Output folder:
    DIR/best.yaml            the best trial's recipe on the base config, `lottery.levels` set to
                             reach the base config's own deepest density; `shifter-tf train`
                             reads it as is
    DIR/trials.csv|md|json   one row per trial: values, objective, dense accuracy, status
    DIR/trials/<id>/         each trial's IMP run folder (run_lottery layout)
    DIR/keras_tuner/         keras-tuner's project (overwrite=False): a rerun resumes the search,
                             an interrupted trial is retried and resumes at its last level
    DIR/search.yaml          the config the search started with; a rerun must match it

keras-tuner 1.4 rejects tf_keras models from a `build()` when Keras 3 is installed, so `IMPTuner`
overrides `run_trial` and returns the metrics dict instead of building a model.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional

import yaml

import shifter_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from shifter_tf.config.schema import Config, load_config, save_config
from shifter_tf.errors import ConfigError
from shifter_tf.tune import dist as tune_dist
from shifter_tf.util.io import atomic_write_json, atomic_write_text
from shifter_tf.util.tables import markdown_table
from shifter_tf.tune.space import (TuneSpec, final_density, levels_for,  # noqa: F401 (API)
                                   parse_spec, trial_config, trial_values)

OBJECTIVE = "sparse_val_accuracy"
METRICS = (OBJECTIVE, "dense_val_accuracy", "sparse_test_accuracy", "dense_test_accuracy",
           "density", "levels", "train_seconds")


def short_imp(cfg: Config, run: str | Path, target_density: float, data=None,
              progress: bool = False) -> dict[str, float]:
    """Run IMP on `cfg` down to `target_density` into `run` (resuming) and return the metrics.

    Used by every trial, and to score any config (e.g. the untuned default) the same way.
    """
    from shifter_tf.train.lottery import run_lottery

    cfg = trial_config(cfg, {}, target_density, f"<short IMP of {cfg.name}>")   # idempotent
    results = run_lottery(cfg, run, resume=True, data=data, progress=progress)
    at = next(r for r in results if r.target_density <= target_density + 1e-9)
    dense = results[0]
    return {OBJECTIVE: at.val_accuracy, "dense_val_accuracy": dense.val_accuracy,
            "sparse_test_accuracy": at.test_accuracy, "dense_test_accuracy": dense.test_accuracy,
            "density": at.density, "levels": float(at.level),
            "train_seconds": float(sum(r.train_seconds for r in results))}


# ---------------------------------------------------------------- keras-tuner
def _hyperparameters(spec: TuneSpec):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for key, p in spec.space.items():
        if spec.algorithm == "hyperband" and key == "train.epochs":
            continue                  # the resource, set per trial from tuner/epochs
        if p.values is not None:
            hp.Choice(key, p.values, ordered=p.type in (int, float))
        elif p.type is int:
            hp.Int(key, int(p.min), int(p.max), step=None if p.step is None else int(p.step),
                   sampling=p.sampling)
        else:
            hp.Float(key, p.min, p.max, step=p.step, sampling=p.sampling)
    return hp


def _oracle(spec: TuneSpec, base: Config, max_trials: int):
    import keras_tuner as kt

    objective = kt.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, hyperparameters=_hyperparameters(spec), seed=base.seed)
    if spec.algorithm == "random":
        return kt.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if spec.algorithm == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(
            max_trials=max_trials, num_initial_points=spec.num_initial_points, **common)
    oracle = kt.oracles.HyperbandOracle(max_epochs=spec.epoch_range(base)[1],
                                        factor=spec.hyperband_factor, hyperband_iterations=None,
                                        **common)
    oracle.max_trials = max_trials    # brackets repeat until max_trials (create_trial checks it)
    return oracle


def _tuner_class():
    import keras_tuner as kt

    class IMPTuner(kt.Tuner):
        """A keras-tuner Tuner whose trial is a short IMP run; returns the metrics dict."""

        def __init__(self, oracle, base: Config, spec: TuneSpec, out: Path, data,
                     progress: bool, **kwargs):
            super().__init__(oracle, **kwargs)
            self.base, self.spec, self.out, self.data = base, spec, out, data
            self.progress = progress

        def search(self, *args, **kwargs):
            if tune_dist.role() == "chief":   # keras-tuner's chief would only serve the oracle
                return tune_dist.chief_search(self)
            return super().search(*args, **kwargs)

        def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
            if tune_dist.is_client():
                print(f"shifter-tf tune: {self.tuner_id} runs trial {trial.trial_id}", flush=True)
            values = trial_values(self.spec, self.base, trial.hyperparameters.values)
            cfg = trial_config(self.base, values, self.spec.target_density,
                               f"<tune trial {trial.trial_id}>")
            return short_imp(cfg, self.out / "trials" / trial.trial_id,
                             self.spec.target_density, data=self.data, progress=self.progress)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            if not tune_dist.is_client():     # a worker's oracle is a client: the chief writes
                write_tables(self.out, trial_rows(self.oracle, self.spec, self.base))

    return IMPTuner


# ---------------------------------------------------------------- tables and the best config
def trial_rows(oracle, spec: TuneSpec, base: Config) -> list[dict[str, Any]]:
    """One row per trial, in trial order: id, status, config values, metrics, error."""
    rows = []
    for tid in sorted(oracle.trials, key=lambda i: (int(i) if i.isdigit() else -1, i)):
        t = oracle.trials[tid]
        row: dict[str, Any] = {"trial": tid, "status": t.status}
        row.update(trial_values(spec, base, t.hyperparameters.values))
        for m in METRICS:
            row[m] = t.metrics.get_last_value(m) if t.metrics.exists(m) else None
        lines = (t.message or "").strip().splitlines()
        row["error"] = lines[-1] if lines else ""
        rows.append(row)
    return rows


def write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    """DIR/trials.csv, trials.md and trials.json."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "trials.csv", buf.getvalue())
    atomic_write_text(out / "trials.md", trial_table(rows) + "\n")
    atomic_write_json(out / "trials.json", rows)


def trial_table(rows: list[dict[str, Any]]) -> str:
    """The trial table as Markdown."""
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if c != "error"]

    def cell(v):
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
    return markdown_table(cols, [[cell(r.get(c)) for c in cols] for r in rows])


def best_config(base: Config, values: dict[str, Any]) -> Config:
    """The tuned recipe on `base`, with levels reaching the base config's deepest density."""
    cfg = trial_config(base, values, final_density(base), "<best config>")
    cfg.name = f"{base.name.removesuffix('_tune')}_tuned"
    return cfg


# ---------------------------------------------------------------- the search
def _diff(old: Any, new: Any, prefix: str = "") -> Optional[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(dict.fromkeys([*old, *new])):
            d = _diff(old.get(k), new.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return prefix.rstrip(".") if old != new else None


def _check_resume(cfg: Config, out: Path) -> None:
    """A rerun into the same folder must search the same space on the same base config."""
    saved = out / "search.yaml"
    if not saved.exists():
        save_config(cfg, saved)
        return
    old, new = load_config(saved).to_dict(), cfg.to_dict()
    for d in (old, new):
        d["tune"] = {k: v for k, v in d["tune"].items() if k != "max_trials"}
        d["train"].pop("verbose")
    key = _diff(old, new)
    if key:
        raise ConfigError(f"{saved}: {key}: differs from the config of the search being "
                          "resumed; use a new --out folder")


def run_search(cfg: Config, out: str | Path, max_trials: Optional[int] = None, data=None,
               progress: bool = True, source: Optional[str] = None) -> Optional[Path]:
    """Run (or resume) the keras-tuner search declared in `cfg.tune` into `out`.

    Returns the path of the best config (DIR/best.yaml; None on a worker of a distributed
    search, see shifter_tf.tune.dist). `max_trials` overrides
    `tune.max_trials`; `source` names the config in error messages.
    """
    from shifter_tf.data.loaders import load_dataset
    from shifter_tf.errors import TrainingError

    source = source or f"<config {cfg.name}>"
    spec = parse_spec(cfg, source)
    dist = tune_dist.role()
    if max_trials is not None and max_trials < 1:
        raise ConfigError(f"--trials: must be >= 1, got {max_trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(cfg, out)
    data = data or load_dataset(cfg.data, cfg.seed)
    oracle = _oracle(spec, cfg, max_trials or spec.max_trials)
    tuner = _tuner_class()(oracle, cfg, spec, out, data, progress,
                           directory=str(out), project_name="keras_tuner", overwrite=False)
    try:
        tuner.search(verbose=1 if progress else 0)
    except RuntimeError as e:        # keras-tuner: too many consecutive failed trials
        if isinstance(e, TrainingError):
            raise
        write_tables(out, trial_rows(tuner.oracle, spec, cfg))
        raise TrainingError(f"tune: {str(e).splitlines()[0]}; see {out / 'trials.csv'}") from e
    if dist == "worker":
        return None                  # the chief writes the tables and best.yaml
    rows = trial_rows(tuner.oracle, spec, cfg)
    write_tables(out, rows)
    best = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    if not best:
        raise TrainingError(f"tune: no trial finished; see {out / 'trials.csv'}")
    trial = best[0]
    values = trial_values(spec, cfg, trial.hyperparameters.values)
    best_cfg = best_config(cfg, values)
    path = out / "best.yaml"
    header = (f"# Tuned by `shifter-tf tune` from {source}: trial {trial.trial_id} of "
              f"{len(rows)} ({spec.algorithm}),\n# {OBJECTIVE} {trial.score:.4f} at density "
              f"{spec.target_density}; values: {json.dumps(values)}\n")
    atomic_write_text(path, header + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
    return path
