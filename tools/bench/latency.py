"""Interleaved TFLite latency: variants of one checkpoint run A B C D, A B C D, ... and every
speedup is the median of the round-by-round ratios, so load from other processes on a shared
machine hits both sides of each ratio alike.

    python -m tools.bench.latency SPEC.json --out OUT.json

SPEC (JSON):
    {"threads": [1, 2], "rounds": 21, "min_rounds": 5, "block_ms": 4.0, "warmup": 3,
     "deadline": <epoch s>, "cap_s": <s per measurement>,
     "memory": {"<key>": "file.tflite"}, "memory_threads": 1,
     "groups": [{"id": "vgg16/cr002", "reference": "dense",
                 "variants": {"dense": "dense.tflite", "pruned": "cr002_pruned.tflite", ...},
                 "pairs": [["tfmot_sparse", "pruned"]]}]}

Per group and thread count: one interpreter per variant (created with that many threads,
allocated, warmed up), then `rounds` rounds; each round visits every variant once, in an order
rotated by one each round, and times a block of invocations (enough for ~block_ms, at least 3),
keeping the block's median. Output per variant: median, p10, p90 over rounds and load time; per
variant vs the reference: the median and quartiles of reference/variant over rounds; per pair
[a, b]: the median of a/b. Past `deadline` (if given) groups run `min_rounds` rounds and say so;
a measurement that takes longer than `cap_s` stops after the round in progress (at least
`min_rounds`), and reports the rounds it ran.

`memory`: each file is loaded in a fresh child process, which reports its resident memory
before, after loading and after the first invoke.

Imports only numpy, `edge_runtime` (a TFLite interpreter: tflite_runtime, ai_edge_litert or
tensorflow.lite, in that order), `tools.bench.common` and shifter_tf's numpy-only file writer,
so it runs in the TensorFlow-free device environment too.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from edge_runtime.interpreter import get_backend, load_runner
from edge_runtime.profile import percentile
from shifter_tf.util.io import atomic_write_json  # (numpy only: no TensorFlow import)
from tools.bench.common import ROOT, child_env, module_cmd


def _ratios(num: List[float], den: List[float]) -> dict:
    """Median and quartiles of the round-by-round ratios num/den."""
    ratios = [p / q for p, q in zip(num, den)]
    return {"median": percentile(ratios, 50), "q25": percentile(ratios, 25),
            "q75": percentile(ratios, 75)}


def _block_size(runner, x, block_ms: float) -> int:
    probe = [runner.run(x)[1] for _ in range(3)]
    return int(min(200, max(3, np.ceil(block_ms / max(np.median(probe), 1e-3)))))


def measure_group(group: dict, threads: int, rounds: int, block_ms: float, warmup: int,
                  base: Path, cap_s: float = 0.0, min_rounds: int = 5) -> dict:
    names = list(group["variants"])
    ref = group.get("reference", names[0])
    runners, load_ms = {}, {}
    for name in names:
        blob = (base / group["variants"][name]).read_bytes()
        t0 = time.perf_counter()
        runners[name] = load_runner(blob, threads)
        load_ms[name] = (time.perf_counter() - t0) * 1e3
    x = np.random.default_rng(0).standard_normal(
        (1, *runners[names[0]].example_shape)).astype(np.float32)
    for name in names:
        for _ in range(warmup):
            runners[name].run(x)
    block = max(_block_size(runners[n], x, block_ms) for n in names)
    times: Dict[str, List[float]] = {n: [] for n in names}
    started = time.perf_counter()
    for r in range(rounds):
        if cap_s and r >= min_rounds and time.perf_counter() - started > cap_s:
            break                       # a stalled machine: keep the rounds done so far
        k = r % len(names)
        for name in names[k:] + names[:k]:
            run = runners[name].run
            times[name].append(float(np.median([run(x)[1] for _ in range(block)])))
    out = {"threads": threads, "rounds": len(times[ref]), "block": block,
           "seconds": round(time.perf_counter() - started, 2), "variants": {}, "vs_reference": {},
           "pairs": {}}
    for name in names:
        ts = times[name]
        out["variants"][name] = {"median_ms": percentile(ts, 50), "p10_ms": percentile(ts, 10),
                                 "p90_ms": percentile(ts, 90), "load_ms": load_ms[name]}
    for name in names:
        out["vs_reference"][name] = _ratios(times[ref], times[name])
    for a, b in group.get("pairs", []):
        if a in times and b in times:
            out["pairs"][f"{a}/{b}"] = _ratios(times[a], times[b])
    del runners
    gc.collect()
    return out


def memory_child(path: str, threads: int) -> dict:
    """RSS of this process before reading `path`, after loading it the way the edge runtime
    does (bytes in memory, interpreter allocated) and after the first invoke (XNNPACK packs
    weights and DENSIFY expands sparse tensors there)."""
    from edge_runtime.monitor import peak_rss_mb, rss_mb
    get_backend()
    base = rss_mb()
    blob = Path(path).read_bytes()
    runner = load_runner(blob, threads)
    loaded = rss_mb()
    runner.run(np.zeros((1, *runner.example_shape), np.float32))
    return {"rss_base_mb": base, "rss_loaded_mb": loaded, "rss_invoked_mb": rss_mb(),
            "peak_mb": peak_rss_mb(), "delta_mb": rss_mb() - base, "bytes": len(blob)}


def measure_memory(files: Dict[str, str], threads: int) -> Dict[str, dict]:
    """memory_child of each file, each in a fresh process of this interpreter."""
    out = {}
    for key, path in files.items():
        res = subprocess.run(module_cmd(sys.executable, "tools.bench.latency", "--memory-child",
                                        path, "--threads", threads),
                             capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env=child_env())
        if res.returncode == 0:
            out[key] = json.loads(res.stdout.strip().splitlines()[-1])
        else:
            out[key] = {"error": res.stderr.strip().splitlines()[-1][:300] if res.stderr else
                        f"exit {res.returncode}"}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?")
    ap.add_argument("--out")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.threads)))
        return 0
    if not args.spec or not args.out:
        ap.error("SPEC and --out are required")
    spec = json.loads(Path(args.spec).read_text())
    base = Path(spec.get("base", Path(args.spec).parent))
    backend = get_backend()
    deadline = spec.get("deadline")
    start = time.perf_counter()
    results, degraded = [], []
    for group in spec["groups"]:
        rounds = spec.get("rounds", 21)
        if deadline and time.time() > deadline:
            rounds = spec.get("min_rounds", 5)
            degraded.append(group["id"])
        load = os.getloadavg()[0]
        per_thread = [measure_group(group, int(t), rounds, spec.get("block_ms", 4.0),
                                    spec.get("warmup", 3), base, spec.get("cap_s", 0.0),
                                    spec.get("min_rounds", 5))
                      for t in spec.get("threads", [1, 2])]
        results.append({"id": group["id"], "reference": group.get("reference"),
                        "loadavg_1min_before": round(load, 2), "by_threads": per_thread})
        summary = "  ".join(
            f"t{m['threads']}: " + " ".join(f"{n} {v['median_ms']:.2f}"
                                            for n, v in m["variants"].items())
            for m in per_thread)
        print(f"[{backend.name}] {group['id']}: {summary} ms", flush=True)
    memory = {}
    if spec.get("memory"):
        t0 = time.perf_counter()
        memory = measure_memory(spec["memory"], int(spec.get("memory_threads", 1)))
        print(f"[{backend.name}] memory of {len(memory)} variants in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    doc = {"backend": backend.name, "backend_version": backend.version,
           "python": platform.python_version(), "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "wall_s": round(time.perf_counter() - start, 1),
           "degraded_groups": degraded, "groups": results, "memory": memory}
    atomic_write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
