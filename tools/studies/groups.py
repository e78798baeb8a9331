"""The group-level structure step on residual and inverted-residual networks: per level density,
MACs after surgery, TFLite test accuracy and 1-thread latency against dense.

Self-contained (uses only shifter_tf): for each ARCH it trains one run with the embedded
default's recipe (configs/mnist5k_vgg.yaml) and `lottery.structure: groups` (or reuses a
finished run), prunes every level, converts dense and every pruned level to fp32 TFLite
itself and times them interleaved at 1 thread (rounds of N invocations per variant, median over
rounds), so the speed-ups of one table come from one interleaved measurement.

    .venv/bin/python -m tools.studies.groups --out runs/bench_groups mobilenet_v2 resnet20 \\
        [--levels 6] [--set train.epochs=6] [--data mnist5k | fashion_mnist]

Writes OUT/<arch>/ (the run) and OUT/groups.json + OUT/groups.md (the tables).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARCHS = {   # zoo model and keywords per ARCH name
    "mobilenet_v2": ("mobilenet_v2", {"width": 0.5}),
    "mobilenet_v3_small": ("mobilenet_v3_small", {}),
    "resnet20": ("resnet20", {}),
    "vgg_small": ("vgg_small", {}),
}


def train(arch: str, run: Path, levels: int, data: str, extra: list[str]) -> None:
    """`shifter-tf run` with the default recipe + groups, unless the run has finished."""
    if (run / "portfolio" / "manifest.json").exists():
        return
    name, kwargs = ARCHS[arch]
    sets = [f"model.name={name}", "lottery.structure=groups", f"lottery.levels={levels}",
            "lottery.target_density=null", f"data.name={data}", "export.precisions=[fp32]",
            "export.kinds=[dense,pruned]", "export.threads=[1]", "train.verbose=2",
            "portfolio.max_accuracy_drop=null"]
    sets += [f"model.kwargs.{k}={v}" for k, v in kwargs.items()] + extra
    if data == "fashion_mnist":
        sets.append("data.limit_train=5000")
    cmd = [sys.executable, "-m", "shifter_tf.cli", "run", "--config", "configs/mnist5k_vgg.yaml",
           "--out", str(run)] + [a for s in sets for a in ("--set", s)]
    if (run / "config.yaml").exists():
        cmd.append("--resume")
    subprocess.run(cmd, check=True)


def interleaved(models: dict, example: np.ndarray, rounds: int = 15, per_round: int = 20,
                stat=np.median) -> dict:
    """`stat` (median; min is the least sensitive to other processes on a shared machine) over
    rounds of the mean ms per invocation, all variants in each round."""
    from edge_runtime.interpreter import load_runner

    runners = {k: load_runner(b, num_threads=1) for k, b in models.items()}
    x = np.asarray(example, np.float32)[None]
    for r in runners.values():
        for _ in range(5):
            r.run(x)
    times: dict = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                r.run(x)
            times[k].append((time.perf_counter() - t0) * 1e3 / per_round)
    return {k: float(stat(v)) for k, v in times.items()}


def measure(run: Path) -> list[dict]:
    import shifter_tf  # noqa: F401
    import tf_keras as keras
    from edge_runtime.interpreter import load_runner
    from shifter_tf.export.convert import convert
    from shifter_tf.pipeline import pruned_dir, run_config
    from shifter_tf.surgery import count_params_and_macs
    from shifter_tf.train.lottery import load_level_model, load_results, run_data

    cfg = run_config(run)
    data = run_data(cfg, run)
    x, y = data.normalized("test")
    rows, models = [], {}
    results = {r.level: r for r in load_results(run)}
    for level, r in sorted(results.items()):
        if level == 0:
            model, kind = load_level_model(run, 0), "dense"
        else:
            path = pruned_dir(run, level) / "model.keras"
            if not path.exists():
                continue
            model, kind = keras.models.load_model(path, compile=False, safe_mode=False), "pruned"
        params, _, macs = count_params_and_macs(model)
        tfl = convert(model, "fp32")
        logits, _ = load_runner(tfl, num_threads=2).run(x)
        acc = float(np.mean(np.argmax(logits, -1) == y))
        models[level] = tfl
        killed = sum(r.killed_filters.values())
        rows.append({"level": level, "kind": kind, "density": r.density, "params": params,
                     "macs": macs, "keras_test": r.test_accuracy, "tflite_test": acc,
                     "killed": killed, "bytes": len(tfl)})
    ms = interleaved(models, x[0])
    best = interleaved(models, x[0], stat=np.min)
    for row in rows:
        row["ms_1thread"] = ms[row["level"]]
        row["speedup"] = ms[0] / ms[row["level"]]
        row["ms_min"] = best[row["level"]]
        row["speedup_min"] = best[0] / best[row["level"]]
        row["macs_x"] = rows[0]["macs"] / row["macs"]
        row["dacc"] = row["tflite_test"] - rows[0]["tflite_test"]
    return rows


def table(arch: str, rows: list[dict]) -> str:
    out = [f"### {arch}", "", "| level | density | params | MACs | MACs × | TFLite test | Δ acc | "
           "ms (1 thread, median) | speed-up | speed-up (min) |",
           "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        out.append(f"| {r['level']} | {r['density']:.3f} | {r['params']:,} | "
                   f"{r['macs'] / 1e6:.2f} M | {r['macs_x']:.2f} | {r['tflite_test']:.4f} | "
                   f"{100 * r['dacc']:+.1f} | {r['ms_1thread']:.3f} | {r['speedup']:.2f}× | "
                   f"{r['speedup_min']:.2f}× |")
    ok = [r for r in rows if r["dacc"] >= -0.01]
    best = max(ok, key=lambda r: r["speedup"])
    out += ["", f"fastest within 1 point of dense: level {best['level']}, "
                f"{best['speedup']:.2f}× at {best['tflite_test']:.4f} "
                f"({100 * best['dacc']:+.1f} points)", ""]
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archs", nargs="+", choices=sorted(ARCHS))
    p.add_argument("--out", default="runs/bench_groups")
    p.add_argument("--levels", type=int, default=6)
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--set", action="append", default=[], help="extra config override")
    p.add_argument("--measure-only", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads((out / "groups.json").read_text()) if (out / "groups.json").exists() \
        else {}
    for arch in a.archs:
        run = out / f"{arch}_{a.data}"
        if not a.measure_only:
            train(arch, run, a.levels, a.data, a.set)
        results[f"{arch}_{a.data}"] = measure(run)
        (out / "groups.json").write_text(json.dumps(results, indent=1))
        md = "\n".join(table(k, v) for k, v in results.items())
        (out / "groups.md").write_text(md)
        print(table(f"{arch}_{a.data}", results[f"{arch}_{a.data}"]), flush=True)


if __name__ == "__main__":
    main()
