"""The phases over a run folder: train (lottery) -> prune (surgery) -> export (portfolio).

    RUN/levels/level_XX/   sparse models (phase 1)
    RUN/pruned/level_XX/   model.keras + report.json (phase 2) [+ model_keras3.keras]
    RUN/portfolio/         manifest.json + variants/*.tflite (phase 3)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras
from tqdm.auto import tqdm

from shifter_tf.train import lottery, sanity
from shifter_tf.config.schema import Config, load_config
from shifter_tf.data.sets import Dataset
from shifter_tf.data.loaders import load_dataset
from shifter_tf.errors import ExportError
from shifter_tf.train.finetune import finetune_run, finetuned_dir, finetuned_levels
from shifter_tf.util.io import atomic_dir, atomic_write_json
from shifter_tf.models import import_custom_objects
from shifter_tf.export.portfolio import Candidate, build_portfolio, variant_table
from shifter_tf.surgery import prune_structured


def run_config(run: Path, overrides: Optional[dict] = None) -> Config:
    """The run's config.yaml (with `overrides`); its custom objects are registered with Keras so
    the run's models load."""
    path = Path(run) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run}: not a run folder (no config.yaml); "
                                "create one with `shifter-tf train`")
    cfg = load_config(path, overrides)
    import_custom_objects(cfg.model.custom_objects, cfg.model.unsafe)
    return cfg


KERAS3_FILE = "model_keras3.keras"   # pruned/level_XX/, written when surgery.keras3 is true


def pruned_dir(run: Path, level: int) -> Path:
    return Path(run) / "pruned" / f"level_{level:02d}"


def prune_run(run: Path, force: Optional[bool] = None, data: Optional[Dataset] = None,
              progress: bool = True, overrides: Optional[dict] = None) -> str:
    """Structurally prune every finished sparse level of `run`; returns a summary table."""
    cfg = run_config(run, overrides)
    density = {r.level: r.density for r in lottery.load_results(run) if r.level > 0}
    levels = sorted(density)
    if not levels:
        raise FileNotFoundError(f"{run}/levels: no finished sparse level to prune")
    data = lottery.run_data(cfg, run, data)
    sample = data.sample("val", cfg.surgery.sample_size)[0]
    rows = ["| level | density | params before | params after | MACs before | MACs after | "
            "rewrite ms | max abs dlogit | top-1 agreement |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary = []
    for level in tqdm(levels, desc="prune", unit="level", disable=not progress):
        sparse = lottery.load_level_model(run, level)
        pruned, report = prune_structured(
            sparse, sample=sample, min_agreement=cfg.surgery.min_agreement,
            force=cfg.surgery.force if force is None else force)
        rep = report.to_dict()

        def fill(tmp: Path, pruned=pruned, rep=rep):
            pruned.save(tmp / "model.keras")
            if cfg.surgery.keras3:   # for Keras 3 users; checked equal to the tf_keras model
                from shifter_tf.models.keras3 import save_keras3
                save_keras3(pruned, tmp / KERAS3_FILE, sample[:64])
            (tmp / "report.json").write_text(json.dumps(rep, indent=2, default=str))
        atomic_dir(pruned_dir(run, level), fill,
                   what=f"the pruned model of level {level} (model.keras, report.json)")
        ver = rep.get("verification") or {}
        summary.append({"level": level, "density": density[level], **{
            k: rep[k] for k in ("params_before", "params_after", "macs_before", "macs_after",
                                "rewrite_ms")}, "verification": ver})
        rows.append(f"| {level} | {density[level]:.4f} | {rep['params_before']:,} | "
                    f"{rep['params_after']:,} | {rep['macs_before']:,} | {rep['macs_after']:,} | "
                    f"{rep['rewrite_ms']:.1f} | {ver.get('max_abs_dlogit', float('nan')):.2e} | "
                    f"{ver.get('top1_agreement', float('nan')):.4f} |")
    atomic_write_json(Path(run) / "pruned" / "summary.json", summary)
    return "\n".join(rows)


def below_floor(results: list, drop: Optional[float],
                chance: Optional[float] = None) -> dict[int, float]:
    """Levels more than `drop` (`portfolio.max_accuracy_drop`) below dense test accuracy, and
    levels at or below `chance` (the highest accuracy still within noise of chance,
    `shifter_tf.train.sanity`): {level: acc}. They stay in the run (levels/, pruned/) and the
    report lists them, but the portfolio never offers the device a model that has collapsed.
    `drop` None switches the floor off: every level is deployed, even one at chance.
    """
    dense = next((r.test_accuracy for r in results if r.level == 0), None)
    if drop is None or dense is None:
        return {}
    chance = -1.0 if chance is None else chance
    return {r.level: r.test_accuracy for r in results if r.level > 0 and (
        r.test_accuracy < dense - drop - 1e-9 or r.test_accuracy <= chance)}


def _chance_floor(run: Path, cfg: Config, levels: list, data) -> Optional[float]:
    """The highest accuracy within noise of chance on `data`; ExportError when level 0 is
    there (or below `portfolio.min_dense_accuracy`): nothing of such a run is deployed."""
    if data is None:
        return None
    dense = next((r for r in levels if r.level == 0), None)
    problem = dense and sanity.dense_problem(cfg, data, dense.test_accuracy)
    if problem:
        raise ExportError(f"{run}: {problem}; nothing was exported (a previous portfolio, if "
                          "any, is unchanged)")
    return sanity.chance_ceiling(*sanity.chance(data))


def _counts(run: Path, level: int) -> tuple[Optional[int], Optional[int]]:
    """(prunable weights, non-zero ones) of a finished level, from its masks (no model load):
    what `expected_bytes` needs to check the free space before converting."""
    path = lottery.level_dir(run, level) / "masks.npz"
    if not path.exists():
        return None, None
    with np.load(path) as z:
        return (int(sum(z[k].size for k in z.files)),
                int(sum(np.count_nonzero(z[k]) for k in z.files)))


def _params_after(folder: Path) -> Optional[int]:
    path = folder / "report.json"
    return json.loads(path.read_text()).get("params_after") if path.exists() else None


def candidates(run: Path, cfg: Config, data=None) -> list[Candidate]:
    """What goes into the portfolio: dense (level 0), each sparse level, each pruned level.

    Sparse variants are exported in fp32 only: they are the reference the pruned twins are
    compared against (TFLite gains nothing from unstructured zeros), not deployment targets.
    With the run's `data`, a level within noise of chance is never a candidate.
    """
    kinds, precisions = cfg.export.kinds, cfg.export.precisions
    out = []
    levels = lottery.load_results(run)
    below = below_floor(levels, cfg.portfolio.max_accuracy_drop,
                        _chance_floor(run, cfg, levels, data))
    results = {r.level: r for r in levels if r.level not in below}
    dense_params = _counts(run, 0)[0]
    if "dense" in kinds and 0 in results:
        out.append(Candidate("dense", 0, 1.0, lambda: lottery.load_level_model(run, 0),
                             precisions, params=dense_params))
    for level, r in sorted(results.items()):
        if level == 0:
            continue
        nonzero = _counts(run, level)[1]
        if "sparse" in kinds:
            out.append(Candidate("sparse", level, r.density,
                                 lambda l=level: lottery.load_level_model(run, l), ["fp32"],
                                 params=dense_params))
        if "pruned" in kinds:
            path = pruned_dir(run, level) / "model.keras"
            if not path.exists():
                raise FileNotFoundError(f"{path}: level {level} is not pruned yet; "
                                        "run `shifter-tf prune` first")
            out.append(Candidate("pruned", level, r.density,
                                 lambda p=path: keras.models.load_model(p, compile=False,
                                                                        safe_mode=False),
                                 precisions, parent_kind="sparse",
                                 sparse_encoding=cfg.export.sparse_encoding,
                                 params=_params_after(pruned_dir(run, level)), nonzero=nonzero))
        if cfg.surgery.finetune_epochs and level in finetuned_levels(run):
            path = finetuned_dir(run, level) / "model.keras"
            out.append(Candidate("finetuned", level, r.density,
                                 lambda p=path: keras.models.load_model(p, compile=False,
                                                                        safe_mode=False),
                                 precisions, parent_kind="pruned",
                                 sparse_encoding=cfg.export.sparse_encoding,
                                 params=_params_after(pruned_dir(run, level)), nonzero=nonzero))
    return out


def export_run(run: Path, data: Optional[Dataset] = None, progress: bool = True,
               overrides: Optional[dict] = None, representative=None) -> str:
    """Write RUN/portfolio from the levels and pruned levels; returns the portfolio table.
    `overrides` ({"export.latency_runs": 10}) change the run's config for this export only;
    `representative` (normalised inputs) replaces the training-split sample for int8."""
    cfg = run_config(run, overrides)
    data = lottery.run_data(cfg, run, data)
    ex = cfg.export
    cands = candidates(run, cfg, data)
    manifest = build_portfolio(Path(run) / "portfolio", cands, data, cfg.name, threads=ex.threads,
                               runs=ex.latency_runs, warmup=ex.latency_warmup,
                               representative=ex.representative_samples,
                               eval_limit=ex.eval_limit, progress=progress,
                               metadata=ex.metadata, android=ex.android,
                               representative_data=representative)
    return variant_table(manifest)


def run_all(cfg: Config, out: Path, resume: bool = False,
            data: Optional[Dataset] = None, allow_changed_recipe: bool = False) -> str:
    """Phases 1-3 and the report; returns the table of pruned variants."""
    from shifter_tf.export import report

    timings = {}
    t = time.perf_counter()
    data = data or load_dataset(cfg.data, cfg.seed)
    lottery.run_lottery(cfg, out, resume=resume, data=data,
                        allow_changed_recipe=allow_changed_recipe)
    timings["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    prune_run(out, data=data)
    timings["prune_s"] = time.perf_counter() - t
    if cfg.surgery.finetune_epochs:
        t = time.perf_counter()
        finetune_run(out, cfg, data, pruned_dir)
        timings["finetune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    export_run(out, data=data)
    timings["export_s"] = time.perf_counter() - t
    atomic_write_json(Path(out) / "timings.json", timings)
    report.write_report(out)
    manifest = json.loads((Path(out) / "portfolio" / "manifest.json").read_text())
    return (variant_table(manifest, kinds=("dense", "pruned")) +
            f"\n\nportfolio: {Path(out) / 'portfolio'}   report: {Path(out) / 'report.md'}"
            f"\ntimings: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
