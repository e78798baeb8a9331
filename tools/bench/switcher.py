"""Benchmark the edge switcher: switch and decision time, cold loads, memory of the strategies.

    python -m tools.bench.switcher PORTFOLIO --out bench/switcher.json [--repeats 5]

Runs with either environment (.venv-edge: tflite_runtime; .venv: ai_edge_litert). Every
measurement runs in a fresh child process, ``--repeats`` times, and the median is reported, so
resident memory is not polluted by earlier measurements. Compared strategies (DNNShifter §4):

* switcher, all preloaded ("model ensemble"): every variant's interpreter in memory, a switch
  rebinds a reference;
* switcher holding one variant: the memory floor;
* reload per switch: drop the interpreter and load the next variant from disk (read, sha256,
  create, allocate, first invoke) on every switch.

"Cold load" is a new interpreter from a file in the OS page cache (a warm disk), per variant.

Start-up cost of the protection against corrupt files (each file loaded and run once in a child
process before the switcher opens it): ``EdgeSwitcher.from_portfolio``
with every variant preloaded, timed inside a fresh process, (a) unprotected (``safe_load=False``),
(b) first start: every file is loaded and run once in a child process before this process opens
it, (c) later starts: the verdicts come from the sha256-keyed cache. ``--startup-variants N``
measures it on N variants: if the portfolio has fewer, a synthetic portfolio is built from its
files, each copy made distinct (own sha256) by a 16-byte tag after the end of the flatbuffer.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from tools.bench.common import ROOT, child_env, module_cmd, percentiles


# ------------------------------------------------------------------------------------ children
def child(mode: str, portfolio: str, iters: int, threads: int) -> Dict[str, Any]:
    import numpy as np

    from edge_runtime.interpreter import get_backend, load_runner
    from edge_runtime.manifest import load_manifest, read_variant_file
    from edge_runtime.monitor import peak_rss_mb, rss_mb
    from edge_runtime.switcher import EdgeSwitcher

    backend = get_backend()
    m = load_manifest(portfolio)
    rng = np.random.default_rng(0)
    x = (rng.random(m.task.input_shape) * 255).astype(m.task.input_dtype)
    out: Dict[str, Any] = {"backend": f"{backend.name} {backend.version}"}

    if mode == "baseline":
        backend.Interpreter  # noqa: B018 - the runtime imported, nothing loaded
        out["rss_mb"] = rss_mb()

    elif mode == "ensemble":
        sw = EdgeSwitcher.from_portfolio(portfolio, preload="all", num_threads=threads)
        ids = sw.available
        for vid in ids:                      # first invoke packs weights: count it in memory
            sw.switch_to(vid)
            sw.predict(x)
        out["rss_mb"] = rss_mb()
        out["variants"] = len(ids)
        # switch time: rebinding to another preloaded interpreter
        sw_us = []
        for i in range(iters):
            t0 = time.perf_counter()
            sw.switch_to(ids[i % len(ids)])
            sw_us.append((time.perf_counter() - t0) * 1e6)
        out["switch_us"] = percentiles(sw_us)
        # decision time without a switch (steady state), and decision + switch
        sw.resume_policy()
        sw.estimator.learn = False
        lat = sorted((sw.estimator.idle_ms(v) or 0.0, v) for v in ids)
        sw.set_budget(max(lat)[0] * 2 or None)
        sw.decide(force=True)
        dec_us = []
        for _ in range(iters):
            t0 = time.perf_counter()
            sw.decide()
            dec_us.append((time.perf_counter() - t0) * 1e6)
        out["decide_us"] = percentiles(dec_us)
        budgets = [max(lat)[0] * 2, min(lat)[0] * 0.5] if len(lat) > 1 else [None, None]
        ds_us, switched = [], 0
        for i in range(iters):
            before = sw.active
            sw.set_budget(budgets[i % 2])
            t0 = time.perf_counter()
            sw.decide()
            ds_us.append((time.perf_counter() - t0) * 1e6)
            switched += sw.active != before
        out["decide_switch_us"] = percentiles(ds_us)
        out["decide_switch_fraction_switched"] = switched / iters
        # overhead of EdgeSwitcher.predict (checks, normalisation, policy, stats) vs raw invoke
        sw.set_budget(None)
        sw.decide(force=True)
        runner = sw._slots[sw.active].runner
        batch = sw._prepare(x)[0]
        raw, wrapped = [], []
        for _ in range(max(200, iters // 4)):
            t0 = time.perf_counter()
            runner.run(batch)
            t1 = time.perf_counter()
            sw.predict(x)
            t2 = time.perf_counter()
            raw.append((t1 - t0) * 1e6)
            wrapped.append((t2 - t1) * 1e6)
        out["predict_us"] = statistics.median(wrapped)
        out["raw_invoke_us"] = statistics.median(raw)
        # cold load per variant: verify + create + allocate, and the first invoke
        cold = {}
        for v in m.variants:
            if v.id not in ids:
                continue
            loads, first = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                r = load_runner(read_variant_file(m.folder, v), threads, edgetpu=v.edgetpu)
                t1 = time.perf_counter()
                r.run(batch)
                first.append((time.perf_counter() - t1) * 1e3)
                loads.append((t1 - t0) * 1e3)
                del r
            cold[v.id] = {"load_ms": statistics.median(loads),
                          "first_invoke_ms": statistics.median(first), "bytes": v.bytes}
        out["cold"] = cold

    elif mode == "single":
        sw = EdgeSwitcher.from_portfolio(portfolio, preload="lazy", num_threads=threads,
                                         policy="fixed")
        sw.predict(x)
        out["variant"] = sw.active
        out["rss_mb"] = rss_mb()

    elif mode in ("startup_off", "startup_on"):
        gc_t0 = time.perf_counter()
        sw = EdgeSwitcher.from_portfolio(portfolio, preload="all", num_threads=threads,
                                         use_profile=False, safe_load=mode == "startup_on")
        out["startup_ms"] = (time.perf_counter() - gc_t0) * 1e3
        out["probe"] = sw.stats()["probe"]
        out["available"] = len(sw.available)
        out["variants"] = len(sw.variants)

    elif mode == "reload":
        ids = [v.id for v in m.variants if not v.edgetpu]
        by_id = {v.id: v for v in m.variants}
        runner = None
        batch = np.zeros((1,) + m.task.input_shape, np.float32)
        times = []
        n = max(20, iters // 20)
        for i in range(n):
            v = by_id[ids[i % len(ids)]]
            t0 = time.perf_counter()
            runner = None                      # drop the current model, then load the next
            runner = load_runner(read_variant_file(m.folder, v), threads)
            runner.run(batch)
            times.append((time.perf_counter() - t0) * 1e3)
        out["switch_ms"] = percentiles(times)
        out["rss_mb"] = rss_mb()
        out["peak_rss_mb"] = peak_rss_mb()
    else:
        raise SystemExit(f"unknown child mode {mode}")
    return out


def run_child(mode: str, args: argparse.Namespace, portfolio: str = "",
              cache: str = "") -> Dict[str, Any]:
    env = child_env(**({"EDGE_RUNTIME_CACHE": cache} if cache else {}))
    cmd = module_cmd(sys.executable, "tools.bench.switcher", portfolio or args.portfolio,
                     "--child", mode, "--iters", args.iters, "--threads", args.threads)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def replicate_portfolio(src: str, n: int, dst: Path) -> Path:
    """A portfolio of ``n`` variants made of ``src``'s files, each copy with its own sha256."""
    from edge_runtime.manifest import file_entry, load_manifest, write_manifest

    m = load_manifest(src)
    doc = json.loads((m.folder / "manifest.json").read_text())
    base = [v for v in doc["variants"] if not v.get("edgetpu")]
    (dst / "variants").mkdir(parents=True)
    entries = []
    for i in range(n):
        v = dict(base[i % len(base)])
        data = (m.folder / v["file"]).read_bytes()
        v["id"] = f"{v['id']}-r{i:03d}"
        v["file"] = f"variants/{v['id']}.tflite"
        v["parent"] = None
        (dst / v["file"]).write_bytes(data + f"replica{i:09d}".encode())   # after the flatbuffer
        v.update(file_entry(dst, v["file"]))
        entries.append(v)
    doc["variants"] = entries
    write_manifest(dst, doc)
    return dst


def startup_cost(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    """From_portfolio time without and with the isolated file check (first and later starts)."""
    portfolio = args.portfolio
    n_have = len(json.loads((Path(portfolio) / "manifest.json").read_text())["variants"]) \
        if Path(portfolio).is_dir() else 0
    synthetic = bool(args.startup_variants and args.startup_variants > n_have)
    if synthetic:
        portfolio = str(replicate_portfolio(args.portfolio, args.startup_variants,
                                            work / "replicated"))
    off, first, cached = [], [], []
    for r in range(args.repeats):
        cache = str(work / f"cache{r}")
        off.append(run_child("startup_off", args, portfolio, cache))
        first.append(run_child("startup_on", args, portfolio, cache))   # empty cache
        cached.append(run_child("startup_on", args, portfolio, cache))  # verdicts cached
    med = lambda runs: statistics.median(r["startup_ms"] for r in runs)  # noqa: E731
    n = first[0]["variants"]
    return {
        "portfolio": "synthetic" if synthetic else "as given", "variants": n,
        "available": first[0]["available"],
        "unprotected_ms": med(off), "first_start_ms": med(first), "cached_start_ms": med(cached),
        "probe_ms_first": statistics.median(r["probe"]["ms"] for r in first),
        "probe_ms_cached": statistics.median(r["probe"]["ms"] for r in cached),
        "probed_first": first[0]["probe"]["probed"], "probed_cached": cached[0]["probe"]["probed"],
        "probe_ms_per_variant_first": statistics.median(r["probe"]["ms"] for r in first) / n,
    }


def _median_of(runs: List[Dict[str, Any]], *path: str) -> float:
    vals = []
    for r in runs:
        v: Any = r
        for k in path:
            v = v[k]
        vals.append(float(v))
    return statistics.median(vals)


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("portfolio")
    ap.add_argument("--out", default="bench/switcher.json")
    ap.add_argument("--repeats", type=int, default=5, help="child processes per measurement")
    ap.add_argument("--iters", type=int, default=2000, help="switches/decisions per child")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--startup-variants", type=int, default=44,
                    help="variants for the start-up cost measurement (a synthetic portfolio "
                         "of copies if the portfolio has fewer; 0 = the portfolio as is)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.portfolio, args.iters, args.threads)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench_switcher."))
    try:
        cache = str(work / "cache")      # the bench never touches the user's verdict cache
        runs = {mode: [run_child(mode, args, cache=cache) for _ in range(args.repeats)]
                for mode in ("baseline", "ensemble", "single", "reload")}
        startup = startup_cost(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ens = runs["ensemble"]
    cold = {vid: {k: statistics.median(r["cold"][vid][k] for r in ens)
                  for k in ("load_ms", "first_invoke_ms", "bytes")}
            for vid in ens[0]["cold"]}
    med = lambda mode, *p: _median_of(runs[mode], *p)  # noqa: E731
    result = {
        "portfolio": str(Path(args.portfolio).resolve()),
        "backend": ens[0]["backend"], "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}", "cpu_count": os.cpu_count(),
        "threads": args.threads, "repeats": args.repeats, "iters": args.iters,
        "variants": ens[0]["variants"],
        "switch_us": {q: med("ensemble", "switch_us", q) for q in ("p50", "p90", "p99")},
        "decide_us": {q: med("ensemble", "decide_us", q) for q in ("p50", "p90", "p99")},
        "decide_switch_us": {q: med("ensemble", "decide_switch_us", q)
                             for q in ("p50", "p90", "p99")},
        "predict_us": med("ensemble", "predict_us"),
        "raw_invoke_us": med("ensemble", "raw_invoke_us"),
        "reload_switch_ms": {q: med("reload", "switch_ms", q) for q in ("p50", "p90", "p99")},
        "cold_load": cold,
        "startup": startup,
        "rss_mb": {
            "runtime_only": med("baseline", "rss_mb"),
            "switcher_all_preloaded": med("ensemble", "rss_mb"),
            "switcher_one_variant": med("single", "rss_mb"),
            "reload_per_switch": med("reload", "rss_mb"),
            "reload_per_switch_peak": med("reload", "peak_rss_mb"),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    r = result
    print(f"edge switcher benchmark: {r['variants']} variants, {r['backend']}, "
          f"{r['threads']} thread(s), median of {r['repeats']} processes")
    print(f"  switch (preloaded)        p50 {r['switch_us']['p50']:8.1f} us   "
          f"p99 {r['switch_us']['p99']:8.1f} us")
    print(f"  policy decision           p50 {r['decide_us']['p50']:8.1f} us   "
          f"p99 {r['decide_us']['p99']:8.1f} us")
    print(f"  decision + switch         p50 {r['decide_switch_us']['p50']:8.1f} us   "
          f"p99 {r['decide_switch_us']['p99']:8.1f} us")
    print(f"  switch by reload          p50 {r['reload_switch_ms']['p50'] * 1e3:8.1f} us   "
          f"p99 {r['reload_switch_ms']['p99'] * 1e3:8.1f} us")
    print(f"  predict() vs raw invoke   {r['predict_us']:8.1f} us vs {r['raw_invoke_us']:.1f} us")
    st = r["startup"]
    print(f"  start-up, {st['variants']} variants ({st['portfolio']}), all preloaded:")
    print(f"    unprotected (safe_load=False)   {st['unprotected_ms']:8.1f} ms")
    print(f"    first start, files checked      {st['first_start_ms']:8.1f} ms  "
          f"(check {st['probe_ms_first']:.1f} ms, {st['probe_ms_per_variant_first']:.1f} ms "
          "per variant)")
    print(f"    later starts, verdicts cached   {st['cached_start_ms']:8.1f} ms  "
          f"(check {st['probe_ms_cached']:.1f} ms)")
    print("  cold load per variant:")
    for vid, c in cold.items():
        print(f"    {vid:24s} {c['bytes'] / 1024:8.1f} KB  load {c['load_ms']:7.2f} ms  "
              f"first invoke {c['first_invoke_ms']:7.2f} ms")
    rss = r["rss_mb"]
    print("  resident memory (MiB):")
    for k, label in (("runtime_only", "runtime imported, no model"),
                     ("switcher_all_preloaded", "switcher, all variants preloaded"),
                     ("switcher_one_variant", "switcher, one variant"),
                     ("reload_per_switch", "reload from disk per switch"),
                     ("reload_per_switch_peak", "reload per switch, peak")):
        print(f"    {label:34s} {rss[k]:8.1f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
