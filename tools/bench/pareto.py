"""Pareto benchmark: does the deployed portfolio beat "just train a smaller model"?

    .venv/bin/python -m tools.bench.pareto --run runs/demo --out bench [--config CONFIG]

Every point is an fp32 TFLite file scored on the same test split with the same runner and timed
interleaved in one process (`tools.bench.latency`, 1 thread, median of round-by-round ratios
against the dense model). Points, each cached under OUT/pareto/ so a rerun only redoes what is
missing:
- the deployed portfolio of RUN (dense + pruned fp32 variants in its manifest);
- width-scaled dense baselines of the same architecture trained from scratch with the same
  recipe, at one training's epochs (level 0's) and at the total epochs of each IMP run compared
  (milestones scaled);
- other named recipes, trained and deployed like the demo (`--recipes`; default: the 12x
  `structured` recipe when the config's is `cheap`, else `cheap`), side by side with their cost;
- tfmot's own deployment path: each sparse level, strip_pruning + EXPERIMENTAL_SPARSITY;
- Reconvene (`shifter-tf pai` with the config's pai section);
- Sony's Model Compression Toolkit, when `tools.bench.mct` has written OUT/mct/mct.json;
- ablation arms: the same IMP run with each structure-inducing option switched, deployed the
  same way (`--arms name=KEY=VALUE,...`; default: the paper's plain IMP).
Every point carries its training cost: `epochs` and `train_s` (a portfolio member: its run's
levels 0..ℓ, the epochs and wall time it took to get it; a baseline: its own training).
Writes OUT/raw/pareto.json, then OUT/PARETO.md and OUT/plots/pareto.png (`tools.bench.report`:
the table, coverage and plot).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from shifter_tf.util.io import atomic_write_json  # (no TensorFlow import)
from tools.bench import report
from tools.bench.common import (DEFAULT_CONFIG, DEFAULT_RUN, ROOT, child_env, logger,
                                module_cmd)

# Ablation against the config's recipe: the paper's plain IMP, and each of our switches alone.
DEFAULT_ARMS = ["paper=lottery.structure=none,lottery.rewind=weights",
                "lr_rewind_only=lottery.structure=none,lottery.rewind=lr",
                "filters_only=lottery.structure=filters,lottery.rewind=weights",
                "plus_gamma_l1=lottery.gamma_l1=5e-5"]
WIDTHS = [0.75, 0.5, 0.375, 0.25]

log = logger("pareto")


def shifter(*args) -> list:
    return [str(Path(sys.executable).with_name("shifter-tf")), *map(str, args)]


def run_quiet(cmd: list, logfile: Path) -> None:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "w") as f:
        p = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                           env=child_env())
    if p.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd[:3]))} failed (exit {p.returncode}); "
                         f"see {logfile}")


def run_cost(run: Path) -> dict:
    """Training cost of an IMP run: epochs and wall seconds of every level, cumulative by level
    (`by_level[ℓ]` = levels 0..ℓ) and in total."""
    rows = sorted(json.loads((run / "lottery.json").read_text()), key=lambda r: r["level"])
    by_level, e, t = {}, 0, 0.0
    for r in rows:
        e, t = e + r["epochs"], t + r["train_seconds"]
        by_level[r["level"]] = {"epochs": e, "train_s": round(t, 1)}
    return {"epochs": e, "train_s": round(t, 1), "levels": len(rows) - 1, "by_level": by_level}


def portfolio_points(run: Path, source: str, kinds=("dense", "pruned")) -> list[dict]:
    """fp32 dense/pruned variants of a deployed portfolio, as Pareto points, each with the
    epochs and training seconds its run took up to its level."""
    manifest = json.loads((run / "portfolio" / "manifest.json").read_text())
    cost = run_cost(run)["by_level"]
    pts = []
    for v in manifest["variants"]:
        if v["precision"] == "fp32" and v["kind"] in kinds:
            pts.append({"id": f"{source}/{v['id']}", "source": source, "kind": v["kind"],
                        "level": v.get("level"), "density": v.get("density"),
                        "accuracy": v["accuracy"], "bytes": v["bytes"],
                        "params": v.get("params_total"), "macs": v.get("macs"),
                        "file": str(run / "portfolio" / v["file"]),
                        **cost.get(v.get("level") or 0, {})})
    return pts


def baseline_points(cfg_path: str, out: Path, epochs_list: list[int]) -> list[dict]:
    """Width-scaled dense models trained from scratch (cached per width and epochs)."""
    from tools.bench import baselines
    return [baselines.cached_baseline(cfg_path, out / "baselines", w, epochs)
            for epochs in epochs_list for w in WIDTHS]


def tfmot_points(run: Path, out: Path) -> list[dict]:
    """tfmot's deployment path for each sparse level: the file tfmot's guide tells you to ship."""
    from tools.bench import baselines
    return baselines.tfmot_sparse_points(run, out / "tfmot")


def arm_points(cfg_path: str, out: Path, name: str, sets: list[str], kind: str = "arm"
               ) -> list[dict]:
    """An IMP run with other settings, deployed like the demo (fp32 only); kind `recipe`:
    another named recipe, compared side by side."""
    folder = out / ("arms" if kind == "arm" else "recipes") / name
    if not (folder / "portfolio" / "manifest.json").exists():
        log(f"{kind} {name}: training and deploying ({', '.join(sets)})")
        cmd = shifter("run", "--config", cfg_path, "--out", folder,
                      "--set", "export.precisions=[fp32]", "--set", "export.kinds=[dense,pruned]",
                      "--set", "export.latency_runs=5", "--set", "train.verbose=0")
        for s in sets:
            cmd += ["--set", s]
        if (folder / "levels").exists():
            cmd.append("--resume")
        run_quiet(cmd, out / "logs" / f"{kind}_{name}.log")
        save_spec(folder, kind, name, sets)
    return portfolio_points(folder, f"{kind}:{name}", kinds=("pruned",))


def save_spec(folder: Path, kind: str, name: str, sets: list[str]) -> None:
    """What a recipe or arm folder was trained with, read back by `earlier_specs`."""
    atomic_write_json(folder / "spec.json", {"kind": kind, "name": name, "sets": ",".join(sets)})


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(cfg_path: str, run_config: Path) -> list[str]:
    """The KEY=VALUE settings that turn `cfg_path` into the config a run folder was trained with
    (its export and verbosity left out): an older folder's settings, written before spec.json."""
    import yaml
    from shifter_tf.config.schema import load_config
    base = _flat(load_config(cfg_path).to_dict())
    ran = _flat(yaml.safe_load(run_config.read_text()))
    sets = []
    for k, v in ran.items():
        if k == "name" or k.startswith("export.") or k == "train.verbose" or base.get(k) == v:
            continue
        sets.append(f"{k}={json.dumps(v) if not isinstance(v, str) else v}")
    return sets


def earlier_specs(cfg_path: str, out: Path, kind: str, named: list[str]) -> list[str]:
    """NAME=SETS of every recipe (or arm) already deployed under `out` and not named this time,
    so a run naming only a new one keeps the others in pareto.json (cached, timed again)."""
    folder = out / ("arms" if kind == "arm" else "recipes")
    specs = []
    for manifest in sorted(folder.glob("*/portfolio/manifest.json")):
        run = manifest.parent.parent
        if run.name in named:
            continue
        spec = run / "spec.json"
        sets = (json.loads(spec.read_text())["sets"] if spec.exists()
                else ",".join(config_diff(cfg_path, run / "config.yaml")))
        specs.append(f"{run.name}={sets}")
    return specs


def _with_earlier(args, out: Path, kind: str, named: list[str]) -> list[str]:
    """The specs named on the command line, then (unless --named-only) those trained before."""
    if args.named_only:
        return list(named)
    return [*named, *earlier_specs(args.config, out / "pareto", kind,
                                   [n.partition("=")[0] for n in named])]


# The 12x recipe as the embedded default ran it before `cheap`: `structured` over 11 levels of 30 %.
TWELVE_X = {"levels": 11, "prune_fraction": 0.3, "target_density": 0.02}


def other_recipes(cfg) -> list[str]:
    """The default `--recipes`: the one of `cheap` (<= 3x) and the 12x `structured` the config
    does not run, every key it sets given explicitly (a config's own keys win over a recipe)."""
    from shifter_tf.config.recipes import RECIPES
    if cfg.lottery.recipe == "cheap" or cfg.lottery.budget is not None:
        name, keys = "structured_12x", {**RECIPES["structured"], **TWELVE_X, "budget": None}
    else:
        name, keys = "cheap", {**RECIPES["cheap"], "target_density": None}
    keys = {"recipe": name.split("_")[0], **keys, "level_epochs": None}
    return [name + "=" + ",".join(f"lottery.{k}={'null' if v is None else v}"
                                  for k, v in keys.items())]


def level_rows(run: Path) -> list[dict]:
    """Per level of an IMP run: density, Keras test accuracy, whole filters that are zero."""
    return [{"level": r["level"], "density": r["density"], "test_accuracy": r["test_accuracy"],
             "zero_filters": sum(r["zero_filters"].values())}
            for r in json.loads((run / "lottery.json").read_text())]


def pai_points(cfg_path: str, out: Path) -> list[dict]:
    folder = out / "pai"
    manifest = folder / "pai" / "portfolio" / "manifest.json"
    if not manifest.exists():
        log("Reconvene: pruning at init and one training run")
        run_quiet(shifter("pai", "--config", cfg_path, "--out", folder, "--overwrite",
                          "--set", "export.precisions=[fp32]", "--set", "train.verbose=0"),
                  out / "logs" / "pai.log")
    pts = portfolio_points(folder / "pai", "reconvene", kinds=("pruned",))
    return pts


def mct_points(out: Path) -> list[dict]:
    doc = out / "mct" / "mct.json"
    if not doc.exists():
        log(f"MCT: {doc} missing (run `make bench-mct`: tools.bench.mct in .venv-mct); "
            "skipped")
        return []
    pts = []
    for r in json.loads(doc.read_text()):
        f = Path(r["file"])
        f = f if f.is_absolute() else out / "mct" / f
        pts.append({"id": f"mct/{r['id']}", "source": "mct", "kind": "pruned+finetuned",
                    "accuracy": r["accuracy"], "bytes": f.stat().st_size,
                    "params": r.get("params"), "file": str(f), "target": r.get("target")})
    return pts


def time_points(points: list[dict], reference: str, out: Path, rounds: int) -> dict:
    """Interleaved 1-thread latency of every point against `reference` (one group)."""
    spec = {"threads": [1], "rounds": rounds, "min_rounds": 5, "block_ms": 4.0, "warmup": 3,
            "groups": [{"id": "pareto", "reference": reference,
                        "variants": {p["id"]: p["file"] for p in points}}]}
    spec_path = out / "raw" / "pareto_latency_spec.json"
    atomic_write_json(spec_path, spec)
    res_path = out / "raw" / "pareto_latency.json"
    run_quiet(module_cmd(sys.executable, "tools.bench.latency", spec_path, "--out", res_path),
              out / "logs" / "pareto_latency.log")
    return json.loads(res_path.read_text())


def _latency_rows(lat: dict) -> dict:
    """{variant id: {"ms": median, "speedup": ref/variant median ratio}} of the latency step."""
    res = lat["groups"][0]["by_threads"][0]
    return {vid: {"ms": v["median_ms"], "speedup": res["vs_reference"][vid]["median"]}
            for vid, v in res["variants"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=DEFAULT_RUN)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--out", default="bench")
    ap.add_argument("--arms", nargs="*", default=DEFAULT_ARMS,
                    help="ablation arms: NAME=KEY=VALUE[,KEY=VALUE...]")
    ap.add_argument("--recipes", nargs="*", default=None,
                    help="other recipes, side by side: NAME=KEY=VALUE[,KEY=VALUE...] "
                         "(default: 12x structured or cheap, whichever the config is not)")
    ap.add_argument("--baseline-epochs", type=int, nargs="*", default=None,
                    help="train the width baselines for these epoch counts only (default: one "
                         "training's and each compared run's total)")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--named-only", action="store_true",
                    help="leave out the recipes and arms trained here before but not named now "
                         "(default: they stay in the table, cached and timed again)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["baselines", "long", "tfmot", "pai", "mct", "arms", "recipes"])
    args = ap.parse_args(argv)
    out, run = Path(args.out).resolve(), Path(args.run).resolve()
    (out / "raw").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from shifter_tf.config.schema import load_config
    from shifter_tf.config.schema import lottery_epochs
    cfg = load_config(args.config)
    level_epochs = lottery_epochs(cfg).dense         # one ordinary training
    run_epochs = run_cost(run)["epochs"]
    started = time.perf_counter()

    points = portfolio_points(run, "portfolio")
    dense = next(p for p in points if p["kind"] == "dense")
    recipes = {}
    if "recipes" not in args.skip:
        named = other_recipes(cfg) if args.recipes is None else args.recipes
        for spec in _with_earlier(args, out, "recipe", named):
            name, _, sets = spec.partition("=")
            try:
                pts = arm_points(args.config, out / "pareto", name, sets.split(","), "recipe")
            except SystemExit as e:
                log(f"recipe {name} failed, left out: {e}")
                continue
            folder = out / "pareto" / "recipes" / name
            recipes[name] = {"sets": sets, "levels": level_rows(folder), **run_cost(folder)}
            points += pts
    if "baselines" not in args.skip:
        totals = {run_epochs, *(r["epochs"] for r in recipes.values())}
        epochs = [level_epochs] + ([] if "long" in args.skip else sorted(totals))
        epochs = args.baseline_epochs if args.baseline_epochs is not None else epochs
        log(f"baselines: widths {WIDTHS} at {epochs} epochs")
        points += baseline_points(args.config, out / "pareto", epochs)
    if "tfmot" not in args.skip:
        points += tfmot_points(run, out / "pareto")
    if "pai" not in args.skip:
        points += pai_points(args.config, out / "pareto")
    if "mct" not in args.skip:
        points += mct_points(out)
    arms = {}
    if "arms" not in args.skip:
        for spec in _with_earlier(args, out, "arm", args.arms):
            name, _, sets = spec.partition("=")
            try:
                pts = arm_points(args.config, out / "pareto", name, sets.split(","))
            except SystemExit as e:     # one failed arm must not cost the others; rerun resumes
                log(f"arm {name} failed, left out: {e}")
                continue
            arms[name] = {"sets": sets,
                          "levels": level_rows(out / "pareto" / "arms" / name)}
            points += pts
    log(f"timing {len(points)} files interleaved, 1 thread")
    lat = _latency_rows(time_points(points, dense["id"], out, args.rounds))
    for p in points:
        p.update({"ms": lat[p["id"]]["ms"], "speedup": lat[p["id"]]["speedup"]})
    from shifter_tf.data.loaders import load_dataset
    test_size = len(load_dataset(cfg.data, cfg.seed).y_test)
    doc = {"run": str(run), "config": args.config, "level_epochs": level_epochs,
           "test_size": test_size,
           "run_epochs": run_epochs, "run_cost": run_cost(run), "recipe": cfg.lottery.recipe,
           "recipes": recipes, "dense": dense["id"], "arms": arms,
           "run_levels": level_rows(run),
           "points": points, "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(out / "raw" / "pareto.json", doc)
    log(f"wrote {out / 'raw' / 'pareto.json'} in {doc['seconds']:.0f} s")
    print(report.write_pareto(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
