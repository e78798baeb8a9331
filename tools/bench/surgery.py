"""Time the structured-pruning rewrite (`shifter_tf.surgery.prune_structured`, no verification)
on VGG-16 (32x32x3, 10 classes) and ResNet-50 (64x64x3, 200 classes: the paper's TinyImageNet
setting) at 90-99.6 % global-magnitude sparsity of Kaiming-initialised weights.

    python -m tools.bench.surgery --out bench/surgery.json [--runs 5] [--models vgg16 resnet50]
        [--baseline COMMIT | --baseline ''] [--no-export] [--export-workers N]

Each row is also timed with the shifter_tf of --baseline (default: the last commit before the
rewrite was made faster and export parallel) in a subprocess, for a before/after from one run;
--export times a demo-shaped 44-variant portfolio export serially and in parallel (and checks
the files are byte-identical).

Sparsity: the smallest |w| over all Conv/Dense kernels are zeroed, one global threshold (as the
paper's IMP ranks weights). BN keeps its initial statistics (gamma=1, beta=0, mean=0, var=1),
so a dead filter's constant is ReLU(0) = 0. Where magnitude pruning leaves (almost) no whole
filter dead, a second row additionally zeroes the lowest-L1 filters of every conv layer
("magnitude+l1") to emulate what IMP training does; the row says so.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401  (before TensorFlow)
import tensorflow as tf
import tf_keras as keras

from shifter_tf.models import build_model, iter_layers
from shifter_tf.surgery import count_params_and_macs, prune_structured
from tools.bench.common import DEFAULT_CONFIG, ROOT, child_env, module_cmd

SETTINGS = {"vgg16": ((32, 32, 3), 10), "resnet50": ((64, 64, 3), 200)}
SPARSITIES = (0.90, 0.95, 0.98, 0.99, 0.996)


def kernels(model) -> list:
    return [l for l in iter_layers(model)
            if type(l) in (keras.layers.Conv2D, keras.layers.Dense)]


def global_magnitude(model, sparsity: float) -> None:
    """Zero the `sparsity` fraction of smallest-|w| weights over all conv/dense kernels."""
    layers = kernels(model)
    values = [l.kernel.numpy() for l in layers]
    flat = np.concatenate([np.abs(v).ravel() for v in values])
    k = int(sparsity * flat.size)
    threshold = np.partition(flat, k)[k] if k < flat.size else np.inf
    for layer, v in zip(layers, values):
        layer.kernel.assign(np.where(np.abs(v) < threshold, 0, v).astype(v.dtype))


def dead_filter_fraction(model) -> float:
    convs = [l for l in kernels(model) if type(l) is keras.layers.Conv2D]
    dead = sum(int((~l.kernel.numpy().reshape(-1, l.filters).any(0)).sum()) for l in convs)
    return dead / sum(l.filters for l in convs)


def zero_l1_filters(model, fraction: float) -> None:
    """Zero the `fraction` of filters with the smallest L1 norm in every conv layer."""
    for layer in kernels(model):
        if type(layer) is not keras.layers.Conv2D:
            continue
        k = layer.kernel.numpy()
        l1 = np.abs(k).reshape(-1, k.shape[-1]).sum(0)
        n = int(fraction * k.shape[-1])
        k[..., np.argsort(l1)[:n]] = 0
        layer.kernel.assign(k)


def bench_one(name: str, sparsity: float, l1: float | None, runs: int, seed: int) -> dict:
    shape, classes = SETTINGS[name]
    keras.utils.set_random_seed(seed)
    model = build_model(name, shape, classes)
    global_magnitude(model, sparsity)
    dead_magnitude = dead_filter_fraction(model)
    if l1 is not None:
        zero_l1_filters(model, l1)
    total, nonzero, macs = count_params_and_macs(model)
    prune_structured(model)  # warm-up: first use of every TF op
    rewrite, wall, cpu = [], [], []
    pruned = rep = None
    for _ in range(runs):
        # Release the previous run's model first (untimed): its weights, kept alive by
        # reference cycles until a full collection, would otherwise make every run fault in
        # fresh memory for the new weights (a cost of this loop, not of one rewrite).
        pruned = rep = None
        gc.collect()
        start = time.perf_counter()
        pruned, rep = prune_structured(model)
        wall.append((time.perf_counter() - start) * 1e3)
        rewrite.append(rep.rewrite_ms)
        cpu.append(rep.timings_ms["cpu"])
    x = np.random.default_rng(seed).normal(size=(8,) + shape).astype("float32")
    _, checked = prune_structured(model, x, force=True)
    v = checked.verification
    return {
        "model": name, "input_shape": list(shape), "classes": classes,
        "sparsity": sparsity, "filters": "magnitude" if l1 is None else f"magnitude+l1({l1:g})",
        "dead_filters_from_magnitude": round(dead_magnitude, 4),
        "rewrite_ms_median": round(statistics.median(rewrite), 1),
        "rewrite_ms_runs": [round(t, 1) for t in rewrite],
        "rewrite_ms_min": round(min(rewrite), 1),
        "rewrite_cpu_ms_median": round(statistics.median(cpu), 1),
        "call_ms_median": round(statistics.median(wall), 1),
        "timings_ms_last": rep.timings_ms,
        "params_before": total, "params_nonzero_before": nonzero,
        "params_after": rep.params_after, "params_nonzero_after": rep.params_nonzero_after,
        "macs_before": macs, "macs_after": rep.macs_after,
        "channels_before": rep.channels_before, "channels_after": rep.channels_after,
        "exact": rep.exact, "max_abs_dlogit": v.max_abs_dlogit, "logit_scale": v.logit_scale,
        "top1_agreement": v.top1_agreement,
    }


def demo_candidates(shape: tuple, classes: int, levels: int = 8, fraction: float = 0.4,
                    seed: int = 0) -> list:
    """A portfolio shaped like `make demo`'s (dense x4 precisions, `levels` sparse fp32 and
    pruned x4 = 44 variants) from an untrained `vgg_small`: level l keeps (1-fraction)^l of
    the weights by global magnitude, plus l*4 % of every conv's filters zeroed (what IMP
    training kills), then prune_structured. Weights are random; the timing is the point."""
    from shifter_tf.export.portfolio import Candidate

    keras.utils.set_random_seed(seed)
    dense = build_model("vgg_small", shape, classes)
    precisions = ["fp32", "fp16", "int8_dynamic", "int8"]
    out = [Candidate("dense", 0, 1.0, lambda: dense, precisions)]
    for level in range(1, levels + 1):
        sparse = keras.models.clone_model(dense)
        sparse.set_weights(dense.get_weights())
        density = (1 - fraction) ** level
        global_magnitude(sparse, 1 - density)
        zero_l1_filters(sparse, 0.04 * level)
        pruned, _ = prune_structured(sparse)
        out.append(Candidate("sparse", level, density, lambda m=sparse: m, ["fp32"]))
        out.append(Candidate("pruned", level, density, lambda m=pruned: m, precisions,
                             parent_kind="sparse", sparse_encoding=True))
    return out


# the last commit before the faster rewrite and the parallel export: the "before" rows
BASELINE = "d350c24"


def baseline_tree(commit: str, dest: Path) -> Optional[Path]:
    """`git archive` of shifter_tf/ and edge_runtime/ at `commit` into dest (None if git
    cannot: no repository or a shallow clone without that commit)."""
    try:
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "shifter_tf",
                               "edge_runtime"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest)
    return dest


def baseline_rows(tree: Path, model: str, args) -> list:
    """The same rows measured with the shifter_tf of `tree`, in a subprocess started in `tree`
    so that its shifter_tf comes first (the `tools` package from this checkout)."""
    out = tree / f"rows_{model}.json"
    cmd = module_cmd(sys.executable, "tools.bench.surgery", "--rows-only", "--out", out,
                     "--runs", args.runs, "--seed", args.seed, "--min-dead", args.min_dead,
                     "--models", model, "--sparsities", *args.sparsities)
    res = subprocess.run(cmd, env=child_env(tree, ROOT), cwd=tree, capture_output=True,
                         text=True)
    if res.returncode != 0 or not out.exists():
        print(f"baseline {model}: failed ({res.stderr.strip().splitlines()[-1:]})")
        return []
    return json.loads(out.read_text())["rows"]


def bench_export(workers: Optional[int], levels: int = 8, seed: int = 0) -> dict:
    """Export time of a demo-shaped portfolio (8 levels: 44 variants, as `make demo` exports),
    serial and in parallel, and whether every file is byte-identical between the two."""
    from shifter_tf.config.schema import load_config
    from shifter_tf.data.loaders import load_dataset
    from shifter_tf.export.portfolio import build_portfolio

    cfg = load_config(ROOT / DEFAULT_CONFIG)
    data = load_dataset(cfg.data, cfg.seed)
    cands = demo_candidates(data.input_shape, data.num_classes, levels,
                            cfg.lottery.prune_fraction, seed)
    ex = cfg.export
    kw = dict(threads=ex.threads, runs=ex.latency_runs, warmup=ex.latency_warmup,
              representative=ex.representative_samples, progress=False)
    from shifter_tf.export.convert import default_workers
    res: dict = {"variants": sum(len(c.precisions) for c in cands), "cpus": os.cpu_count(),
                 "default_workers_now": default_workers()}
    workers = workers if workers is not None else (os.cpu_count() or 1) - 1
    with tempfile.TemporaryDirectory() as tmp:
        import resource
        for label, w in (("serial", 0), ("parallel", workers)):
            start, cpu = time.perf_counter(), time.process_time()
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            build_portfolio(Path(tmp) / label, cands, data, cfg.name, workers=w, **kw)
            res[f"{label}_s"] = round(time.perf_counter() - start, 2)
            res[f"{label}_cpu_main_s"] = round(time.process_time() - cpu, 2)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            res[f"{label}_cpu_workers_s"] = round(after.ru_utime + after.ru_stime
                                                  - kids.ru_utime - kids.ru_stime, 2)
            print(f"export {label}: {res[f'{label}_s']:.1f} s for {res['variants']} variants")
        files = sorted(p.name for p in (Path(tmp) / "serial" / "variants").iterdir())
        res["byte_identical"] = all(
            (Path(tmp) / "serial" / "variants" / f).read_bytes() ==
            (Path(tmp) / "parallel" / "variants" / f).read_bytes() for f in files)
    res["workers"] = workers
    res["note"] = ("demo-shaped portfolio from an untrained vgg_small (tools.bench.surgery "
                   "demo_candidates); convert + measure every variant, as build_portfolio does; "
                   "serial = workers=0, the code path before the parallel export; "
                   "cpu_main/cpu_workers: CPU seconds of this process and of the converter "
                   "subprocesses (on cores nobody else uses, the parallel wall time is about "
                   "the larger of the two plus the measurement); default_workers_now: what "
                   "build_portfolio would start by default at this moment (one per idle "
                   "further core)")
    res["loadavg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    return res


def _print_row(r: dict) -> None:
    before = r.get("rewrite_ms_median_before")
    print(f"{r['model']:9s} {r['sparsity']:8.3f} {r['filters']:>19s} "
          f"{r['dead_filters_from_magnitude']:6.1%} {r['rewrite_ms_median']:10.1f} "
          f"{before if before is not None else float('nan'):10.1f} "
          f"{r['rewrite_cpu_ms_median']:7.1f} "
          f"{r['params_before']:>12,d} -> {r['params_after']:>10,d} "
          f"{r['macs_before']:>14,d} -> {r['macs_after']:>12,d} "
          f"{r['max_abs_dlogit']:8.1e} {r['logit_scale']:8.1e}")
    sys.stdout.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/surgery.json")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    p.add_argument("--min-dead", type=float, default=0.05,
                   help="add an L1-emulated row when magnitude leaves fewer dead filters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", default=BASELINE,
                   help="git commit whose shifter_tf is timed on the same rows, model by model "
                        "before ours ('' to skip)")
    p.add_argument("--export", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the export of a demo-shaped portfolio, serial and parallel")
    p.add_argument("--export-workers", type=int, default=None,
                   help="converter processes besides the main one (default: cores - 1)")
    p.add_argument("--export-levels", type=int, default=8,
                   help="IMP levels of the demo-shaped portfolio (8: 44 variants)")
    p.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    rows = []
    load_before = os.getloadavg()
    print(f"{'model':9s} {'sparsity':>8s} {'filters':>19s} {'dead':>6s} {'rewrite ms':>10s} "
          f"{'before ms':>10s} {'cpu ms':>7s} "
          f"{'params before -> after':>26s} {'MACs before -> after':>30s} {'max|dl|':>8s} "
          f"{'|logit|':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        tree = (baseline_tree(args.baseline, Path(tmp))
                if args.baseline and not args.rows_only else None)
        if args.baseline and not args.rows_only and tree is None:
            print(f"baseline {args.baseline}: not available (git archive failed); skipped")
        for name in args.models:
            before = {(r["sparsity"], r["filters"]): r for r in baseline_rows(tree, name, args)} \
                if tree is not None else {}
            for s in args.sparsities:
                new = [bench_one(name, s, None, args.runs, args.seed)]
                if new[0]["dead_filters_from_magnitude"] < args.min_dead:
                    new.append(bench_one(name, s, round(s / 2, 3), args.runs, args.seed))
                for r in new:
                    old = before.get((r["sparsity"], r["filters"]))
                    if old is not None:
                        r["rewrite_ms_median_before"] = old["rewrite_ms_median"]
                        r["rewrite_cpu_ms_median_before"] = old["rewrite_cpu_ms_median"]
                        r["rewrite_ms_min_before"] = old.get("rewrite_ms_min")
                        r["params_after_before"] = old["params_after"]
                    _print_row(r)
                rows.extend(new)
    export = None
    if args.export and not args.rows_only:
        export = bench_export(args.export_workers, args.export_levels, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"tool": "tools.bench.surgery", "runs": args.runs, "seed": args.seed,
            "tensorflow": tf.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "loadavg_1_5_15_before": [round(v, 2) for v in load_before],
            "loadavg_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
            "note": "the machine is shared with other jobs; compare medians with the load",
            "verification": "max_abs_dlogit / top1_agreement compare the rewrite with the sparse "
                            "model on 8 random inputs; at Kaiming init with global magnitude "
                            "sparsity the signal shrinks with depth (logit_scale), and from ~99 % "
                            "the network is disconnected and outputs a constant, so there the "
                            "check is trivial: tests/test_surgery.py checks exactness on models "
                            "with live signal",
            "sparsity": "global magnitude over all Conv/Dense kernels of a Kaiming-initialised "
                        "model; BN at its initial statistics",
            "l1_rows": "when magnitude pruning leaves < min_dead of conv filters all-zero, the "
                       "lowest-L1 fraction sparsity/2 of filters of every conv layer is also "
                       "zeroed, to emulate the dead filters IMP training produces",
            "rewrite_ms": "prune_structured's own timer: trace + BN fold + graph + analysis + "
                          "rebuild, no verification; call_ms adds the report's param/MAC counts; "
                          "rewrite_cpu_ms is the process CPU time of the rewrite (all threads); "
                          "before each timed run the previous run's model is released and "
                          "collected (gc.collect, untimed), for the before rows too"}
    if tree_commit := (args.baseline if not args.rows_only else None):
        meta["baseline"] = (f"rewrite_ms_median_before: the same rows timed with shifter_tf at "
                            f"commit {tree_commit} (before the faster rewrite), in a subprocess "
                            "run just before this model's rows")
    doc = {"meta": meta, "rows": rows}
    if export is not None:
        doc["export"] = export
    out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
