"""`shifter-tf pai`: prune at initialisation (Reconvene), train once, rewrite, export.

Layout of the run folder (every file written atomically; pai.json last, after each arm):
    RUN/pai.json                    settings, per arm: per-layer decisions, timings, metrics
    RUN/pai/config.yaml             the experiment config
    RUN/pai/model.keras, masks.npz  the trained masked model (tfmot stripped, zeros in place)
    RUN/pai/pruned/                 model.keras + surgery.json: the rewritten, smaller model
    RUN/pai/portfolio/              manifest.json + variants/*.tflite (level 1: one pruning step)
    RUN/pai/baseline/...            the same for plain unstructured PaI (`pai.baseline: true`)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from shifter_tf.train import magnitude
from shifter_tf.train import engine
from shifter_tf.config.schema import Config, save_config
from shifter_tf.data.sets import Dataset
from shifter_tf.data.loaders import load_dataset
from shifter_tf.util.io import atomic_dir, atomic_save, atomic_write_json
from shifter_tf.train.lottery import make_model
from shifter_tf.train.wrappers import FixedMask, assign_masks, wrap, wrappers
from shifter_tf.pai.reconvene import PaiPlan, prune_at_init
from shifter_tf.errors import PaiError
from shifter_tf.pai.settings import PaiConfig, pai_settings, settings_from
from shifter_tf.train.steps import hooked
from shifter_tf.train.structure import HoldDeadChannels, hold_pairs

sparsity = tfmot.sparsity.keras


# ---------------------------------------------------------------- training with fixed masks
def train_masked(cfg: Config, data: Dataset, model: keras.Model, plan: PaiPlan, what: str
                 ) -> tuple[keras.Model, engine.FitResult]:
    """One training run with tfmot holding `plan.masks` fixed; returns the stripped model."""
    schedules = {n: FixedMask(1.0 - float(m.mean())) for n, m in plan.masks.items()}
    hold = HoldDeadChannels(hold_pairs(model, plan.dead))
    wrapped = wrap(model, schedules)
    assign_masks(wrapped, plan.masks)
    hold.hold()                      # then after every step, inside the train step
    fit_model = hooked(wrapped, end=[hold.hold])
    engine.compile_model(fit_model, cfg.train, engine.steps_per_epoch(data, cfg.train.batch_size))
    fit = engine.fit(fit_model, data, cfg.train, seed=cfg.seed, what=what,
                callbacks=[sparsity.UpdatePruningStep()])
    for name, w in wrappers(wrapped).items():
        if not np.array_equal(w.pruning_vars[0][1].numpy().astype(bool), plan.masks[name]):
            raise PaiError(f"{what}: tfmot changed the mask of {name} during training")
    model = sparsity.strip_pruning(wrapped)
    engine.recalibrate_bn(model, data, cfg.train)
    return model, fit


# ---------------------------------------------------------------- one arm
@dataclass
class ArmResult:
    """One pruned-at-init model: how it was pruned, trained, rewritten and exported."""
    label: str                       # reconvene | unstructured
    folder: str
    plan: dict                       # PaiPlan.to_dict(): per-layer decisions, pruning seconds
    train_seconds: float = 0.0
    epochs: int = 0
    val_accuracy: float = 0.0
    test_accuracy: float = 0.0
    surgery: Optional[dict] = None   # params/MACs before and after, verification, per layer
    variants: list = field(default_factory=list)   # exported manifest entries
    history: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def variant(self, kind: str, precision: str = "fp32") -> Optional[dict]:
        return next((v for v in self.variants
                     if v["kind"] == kind and v["precision"] == precision), None)


def _surgery(cfg: Config, data: Dataset, sparse: keras.Model, folder: Path, notes: list):
    try:
        from shifter_tf.surgery import prune_structured
    except ImportError as e:   # the rewriter is optional for the pruning step itself
        notes.append(f"structured rewrite skipped: {e}")
        return None, None
    sample = data.sample("val", cfg.surgery.sample_size)[0]
    pruned, report = prune_structured(sparse, sample=sample,
                                      min_agreement=cfg.surgery.min_agreement,
                                      force=cfg.surgery.force)
    rep = report.to_dict()

    def fill(tmp: Path):
        pruned.save(tmp / "model.keras")
        (tmp / "surgery.json").write_text(json.dumps(rep, indent=2, default=str))
    atomic_dir(folder / "pruned", fill)
    keys = ("params_before", "params_after", "params_nonzero_before", "macs_before",
            "macs_after", "channels_before", "channels_after", "rewrite_ms", "exact")
    summary = {k: rep.get(k) for k in keys}
    summary["verification"] = rep.get("verification")
    summary["channels_out"] = {l["name"]: [l["channels_out_before"], l["channels_out_after"]]
                               for l in rep.get("layers", [])
                               if l.get("channels_out_before") is not None}
    return pruned, summary


def export_hook(cfg: Config, data: Dataset, folder: Path, sparse: keras.Model,
                pruned: Optional[keras.Model], density: float, label: str, method: str,
                progress: bool, notes: list) -> list[dict]:
    """TFLite portfolio of the sparse (fp32 reference) and rewritten model; [] if the exporter
    is not installed."""
    try:
        from shifter_tf.export.portfolio import Candidate, build_portfolio
    except ImportError as e:
        notes.append(f"TFLite export skipped: {e}")
        return []
    kinds, ex = cfg.export.kinds, cfg.export
    extra = {"pai": label, "pai_method": method}
    cands = []
    if "sparse" in kinds:
        cands.append(Candidate("sparse", 1, density, lambda: sparse, ["fp32"], extra=extra))
    if "pruned" in kinds and pruned is not None:
        cands.append(Candidate("pruned", 1, density, lambda: pruned, ex.precisions,
                               parent_kind="sparse", extra=extra))
    if not cands:
        return []
    manifest = build_portfolio(folder / "portfolio", cands, data, f"{cfg.name}-{label}",
                               threads=ex.threads, runs=ex.latency_runs, warmup=ex.latency_warmup,
                               representative=ex.representative_samples,
                               eval_limit=ex.eval_limit, progress=progress,
                               metadata=ex.metadata, android=ex.android)
    return list(manifest["variants"])


def run_arm(cfg: Config, data: Dataset, s: PaiConfig, folder: Path, label: str,
            progress: bool = True) -> ArmResult:
    """Prune at init with `s`, train once, rewrite and export into `folder`."""
    strategy = engine.make_strategy(cfg.train.strategy)
    keras.utils.set_random_seed(cfg.seed)   # every arm starts from the same initial weights
    with strategy.scope():
        model = make_model(cfg, data)
        plan = prune_at_init(model, s, data, seed=cfg.seed)
        sparse, fit = train_masked(cfg, data, model, plan, what=f"pai {label}")
    res = ArmResult(label, str(folder), plan.to_dict(), fit.seconds, cfg.train.epochs,
                    engine.evaluate(sparse, data, "val"), engine.evaluate(sparse, data, "test"),
                    history={k: [float(v) for v in vs] for k, vs in fit.history.items()})
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(folder / "model.keras", sparse.save)
    magnitude.save_masks(folder / "masks.npz", plan.masks)
    pruned, res.surgery = _surgery(cfg, data, sparse, folder, res.notes)
    if s.export:
        res.variants = export_hook(cfg, data, folder, sparse, pruned, plan.density, label,
                                   s.method, progress, res.notes)
    return res


# ---------------------------------------------------------------- the run
@dataclass
class PaiResult:
    """What `run_pai` produced; str() is the comparison and per-layer tables (Markdown)."""
    out: str
    settings: dict
    arms: list[ArmResult]

    def to_dict(self) -> dict:
        return {"settings": self.settings, "arms": [asdict(a) for a in self.arms]}

    def __str__(self) -> str:
        rows = ["| arm | method | density | converted | pruning s | train s | test acc | "
                "params after rewrite | MACs after rewrite | fp32 KB | TFLite acc | ms@1 |",
                "|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for a in self.arms:
            p, sg = a.plan, a.surgery or {}
            v = a.variant("pruned") or {}
            n_conv = sum(1 for d in p["layers"] if d["class_name"] == "Conv2D")
            rows.append(
                f"| {a.label} | {p['method']} | {p['density']:.4f} | "
                f"{len(p['converted'])}/{n_conv} | {p['pruning_seconds']:.2f} | "
                f"{a.train_seconds:.0f} | {a.test_accuracy:.4f} | "
                f"{_n(sg.get('params_after'))} | {_n(sg.get('macs_after'))} | "
                f"{_f(v.get('bytes'), 1 / 1024, '.1f')} | {_f(v.get('accuracy'), 1, '.4f')} | "
                f"{_f((v.get('latency_ms') or {}).get('1'), 1, '.3f')} |")
        out = ["\n".join(rows)]
        for a in self.arms:
            if not a.plan["structured"]:
                continue
            t = [f"\n{a.label}: per conv layer",
                 "| layer | filters | PaI density | sensitivity | converted | filters kept | "
                 "dead filters | repaired | channels after rewrite |",
                 "|:---|---:|---:|---:|:---|---:|---:|---:|---:|"]
            after = (a.surgery or {}).get("channels_out", {})
            for d in a.plan["layers"]:
                sens = "n/a" if d["sensitivity"] is None else f"{d['sensitivity']:.3f}"
                ch = after.get(d["name"], [None, None])[1]
                t.append(f"| {d['name']} | {d['filters']} | {d['density_unstructured']:.4f} | "
                         f"{sens} | {'yes' if d['converted'] else 'no'} | "
                         f"{d['filters_kept'] if d['filters_kept'] is not None else ''} | "
                         f"{d['dead_filters']} | {d['repaired']} | {_n(ch)} |")
            out.append("\n".join(t))
        out.append(f"\nreport: {Path(self.out) / 'pai.json'}")
        return "\n".join(out)


def _n(x) -> str:
    return "n/a" if x is None else f"{int(x):,}"


def _f(x, scale: float, fmt: str) -> str:
    return "n/a" if x is None else format(x * scale, fmt)


def run_pai(cfg: Config, out: str | Path, settings: Optional[PaiConfig | dict] = None,
            data: Optional[Dataset] = None, overwrite: bool = False,
            progress: bool = True) -> PaiResult:
    """Reconvene (or plain PaI) into `out`; with `settings.baseline` also the unstructured arm.

    Settings come from `settings`, else `cfg.pai`, else PaiConfig defaults.
    """
    s = pai_settings(settings) if settings is not None else settings_from(cfg)
    out = Path(out)
    if (out / "pai.json").exists() and not overwrite:
        raise FileExistsError(f"{out}/pai.json exists; choose another --out")
    (out / "pai").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "pai" / "config.yaml")
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    data = data or load_dataset(cfg.data, cfg.seed)
    result = PaiResult(str(out), asdict(s), [])
    arms = [("reconvene" if s.structured else "unstructured", s, out / "pai")]
    if s.baseline and s.structured:
        arms.append(("unstructured", PaiConfig(**{**asdict(s), "structured": False}),
                     out / "pai" / "baseline"))
    for label, arm_settings, folder in arms:
        result.arms.append(run_arm(cfg, data, arm_settings, folder, label, progress))
        atomic_write_json(out / "pai.json", result.to_dict())
    return result
