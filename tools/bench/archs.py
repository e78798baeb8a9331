"""The Pareto benchmark per architecture and data set: does the portfolio beat "train a smaller
model" on the edge families (residual, inverted-residual), not only on the plain VGG?

    .venv/bin/python -m tools.bench.archs --out bench [--only NAME ...] [--no-ablation]

For each entry of ARCHS (one config each, all with the same recipe): `shifter-tf run` deploys
the portfolio (fp32 dense + pruned) into OUT/archs/NAME/run (resumed if it was cut short), then
`tools.bench.pareto` trains the width-scaled baselines of the same architecture (one training's
epochs and the whole run's), the ablation arm (the group step replaced by the filter step) and
times every file interleaved at 1 thread: OUT/archs/NAME/PARETO.md and plots/pareto.png.
Finally OUT/ARCHS.md: one summary table (the issue's bar: a variant within 1 point of dense and
>= 2x faster; every baseline covered), then per architecture its plot and table. Every step is
cached, so a rerun redoes only what is missing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from shifter_tf.util.io import atomic_write_text  # (no TensorFlow import)
from tools.bench import pareto, report
from tools.bench.common import ROOT, logger, module_cmd
from tools.bench.numbers import LAT_SLACK, coverage

# name -> config; every config uses the `cheap_groups` recipe (the configs say so).
ARCHS = {
    "vgg_small-mnist5k": "configs/mnist5k_vgg_cheap.yaml",
    "vgg_small-fashion": "configs/fashion_vgg.yaml",
    "resnet20-mnist5k": "configs/mnist5k_resnet20.yaml",
    "resnet20-fashion": "configs/fashion_resnet20.yaml",
    "mobilenet_v2-mnist5k": "configs/mnist5k_mobilenet.yaml",
    "mobilenet_v2-fashion": "configs/fashion_mobilenet.yaml",
}
ABLATION = "filters_only=lottery.structure=filters"
# The embedded default's row also trains the 12x `structured` recipe side by side (and baselines
# at its 72 epochs): is the cheap recipe good enough for `make demo`?
WITH_RECIPES = {"vgg_small-mnist5k"}
SPEEDUP, WITHIN = 2.0, 0.01

log = logger("archs")


def deploy(name: str, config: str, folder: Path, logs: Path) -> Path:
    """The portfolio of `config` in folder/run (fp32 dense + pruned, as the Pareto compares)."""
    run = folder / "run"
    if (run / "portfolio" / "manifest.json").exists():
        return run
    log(f"{name}: training and deploying the portfolio ({config})")
    cmd = pareto.shifter("run", "--config", config, "--out", run,
                         "--set", "export.precisions=[fp32]", "--set", "export.kinds=[dense,pruned]",
                         "--set", "export.latency_runs=5", "--set", "export.threads=[1]",
                         "--set", "train.verbose=0")
    if (run / "levels").exists():
        cmd.append("--resume")
    pareto.run_quiet(cmd, logs / f"{name}_run.log")
    return run


def compare(name: str, config: str, folder: Path, logs: Path, rounds: int, ablation: bool
            ) -> None:
    """tools.bench.pareto on the run: baselines, the ablation arm (and for WITH_RECIPES the 12x
    recipe), interleaved timing."""
    if (folder / "raw" / "pareto.json").exists():
        return
    log(f"{name}: baselines{', ablation' if ablation else ''} and timing")
    skip = ["tfmot", "pai", "mct", *([] if name in WITH_RECIPES else ["recipes"]),
            *([] if ablation else ["arms"])]
    cmd = module_cmd(sys.executable, "tools.bench.pareto", "--run", folder / "run",
                     "--config", config, "--out", folder, "--rounds", rounds, "--skip", *skip,
                     *(["--arms", ABLATION] if ablation else []))
    pareto.run_quiet(cmd, logs / f"{name}_pareto.log")


def _epochs(point: dict) -> int:
    """A baseline's training epochs (its source is `baseline_e<epochs>`)."""
    return int(point.get("epochs") or point["source"].rpartition("_e")[2])


def verdict(doc: dict, recipe: str | None = None) -> dict:
    """The issue's bar for one architecture, from its raw/pareto.json: for the run's own recipe,
    or for `recipe` (one of the recipes trained side by side, with the run's dense model).
    The baselines it must cover are those trained for one training's epochs and for that
    recipe's total epochs (another recipe's longer baselines are not its peers)."""
    pts = doc["points"]
    dense = next(p for p in pts if p["source"] == "portfolio" and p["kind"] == "dense")
    source = "portfolio" if recipe is None else f"recipe:{recipe}"
    epochs = doc["run_epochs"] if recipe is None else doc["recipes"][recipe]["epochs"]
    deployed = [dense, *(p for p in pts if p["source"] == source and p["kind"] == "pruned")]
    ok = [v for v in deployed if v["kind"] == "pruned"
          and v["accuracy"] >= dense["accuracy"] - WITHIN]
    best = max(ok, key=lambda v: v["speedup"], default=None)
    base = [b for b in pts if b["source"].startswith("baseline")
            and _epochs(b) in (doc["level_epochs"], epochs)]
    missed = [b for b in base if coverage(deployed, b) is None]
    arm = [p for p in pts if p["source"].startswith("arm:")
           and p["accuracy"] >= dense["accuracy"] - WITHIN]
    arm_best = max(arm, key=lambda v: v["speedup"], default=None) if recipe is None else None
    return {"dense": dense, "best": best, "baselines": len(base), "missed": missed,
            "deployed": deployed,
            "arm_best": arm_best, "epochs": epochs, "dense_epochs": doc["level_epochs"],
            "passed": bool(best and best["speedup"] >= SPEEDUP and not missed)}


def missed_lines(doc: dict, recipe: str | None = None) -> list[str]:
    """One line per baseline the recipe does not cover: the most accurate deployed variant at
    most 1.1x its latency, how far below it is, and one standard error of the difference of
    two accuracies on this many test images (a miss inside it is a coin flip at one seed)."""
    v = verdict(doc, recipe)
    n = doc.get("test_size") or 0
    out = []
    for b in v["missed"]:
        fast = [d for d in v["deployed"] if d["ms"] <= LAT_SLACK * b["ms"]]
        near = max(fast, key=lambda d: d["accuracy"], default=None)
        se = (2 * b["accuracy"] * (1 - b["accuracy"]) / n) ** 0.5 if n else None
        gap = (f"; nearest at ≤ {LAT_SLACK:g}× its latency: {report._label(near)} "
               f"{near['accuracy']:.3f} ({(near['accuracy'] - b['accuracy']) * 100:+.1f} points)"
               if near else f"; no deployed variant is within {LAT_SLACK:g}× its latency")
        noise = f"; 1 SE of a difference at {n:,} test images: {se * 100:.1f} points" if se else ""
        out.append(f"- {'' if recipe is None else f'recipe {recipe}: '}not covered: "
                   f"{report._label(b)} ({b['accuracy']:.3f} at {b['ms']:.3f} ms){gap}{noise}.")
    return out


def _pt(p) -> str:
    return f"{report._label(p)} {p['accuracy']:.3f} at {p['speedup']:.2f}×" if p else "none"


def render(out: Path, names: list[str]) -> str:
    """OUT/ARCHS.md: the summary table, then each architecture's plot and Pareto table."""
    docs = {n: json.loads((out / "archs" / n / "raw" / "pareto.json").read_text())
            for n in names if (out / "archs" / n / "raw" / "pareto.json").exists()}
    lines = ["## The Pareto benchmark per architecture", "",
             "Each row: one config (`configs/`), the same recipe for all; the portfolio's dense "
             "and pruned fp32 variants against the same architecture width-scaled "
             f"({', '.join(f'×{w:g}' for w in pareto.WIDTHS)}) and trained from scratch with "
             "the same recipe at one training's epochs and at the whole run's; 1 thread, timed "
             "interleaved (speed-up = median of round-by-round ratios to dense). Bar: a pruned "
             f"variant within {WITHIN * 100:.0f} point of dense and ≥ {SPEEDUP:g}× faster, and "
             "every baseline covered (≤ 0.5 point less accurate at ≤ 1.1× its latency). "
             "Ablation: the same run with the filter step instead of the group step. A row "
             "`NAME, recipe R (settings)` is another recipe trained side by side on the same "
             "config, judged with the run's dense model against the baselines of one training "
             "and of its own total epochs.", "",
             "| architecture / data | dense acc | run epochs (× dense) | fastest within 1 point "
             "| baselines covered | ablation: fastest within 1 point | bar |",
             "|:--|--:|--:|:--|--:|:--|:--|"]
    for n, doc in docs.items():
        for recipe in [None, *(doc.get("recipes") or {})]:
            v = verdict(doc, recipe)
            row = n if recipe is None else f"{n}, recipe {recipe} " \
                f"(`{doc['recipes'][recipe]['sets']}`)"
            lines.append(f"| {row} | {v['dense']['accuracy']:.3f} | {v['epochs']} "
                         f"({v['epochs'] / v['dense_epochs']:.1f}×) | {_pt(v['best'])} | "
                         f"{v['baselines'] - len(v['missed'])} of {v['baselines']} | "
                         f"{_pt(v['arm_best']) if doc.get('arms') and recipe is None else '—'}"
                         f" | {'met' if v['passed'] else '**not met**'} |")
    for n, doc in docs.items():
        lines += ["", f"### {n}", "", f"![{n}](archs/{n}/plots/pareto.png)", "",
                  *report.pareto_table(doc["points"]), ""]
        for recipe in [None, *(doc.get("recipes") or {})]:
            lines += missed_lines(doc, recipe)
        lines += report.ablation(doc, doc["points"])
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench")
    ap.add_argument("--only", nargs="*", choices=sorted(ARCHS), default=None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-ablation", action="store_true",
                    help="skip the filter-step arm (one more run per architecture)")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    names = args.only or list(ARCHS)
    started = time.perf_counter()
    for n in names if not args.render_only else []:
        folder, config = out / "archs" / n, str(ROOT / ARCHS[n])
        try:
            deploy(n, config, folder, out / "logs")
            compare(n, config, folder, out / "logs", args.rounds, not args.no_ablation)
        except SystemExit as e:      # one failed architecture must not cost the others
            log(f"{n} failed, left out: {e}")
    text = render(out, names)
    atomic_write_text(out / "ARCHS.md", text)
    log(f"wrote {out / 'ARCHS.md'} in {(time.perf_counter() - started) / 60:.1f} min")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
