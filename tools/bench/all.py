"""The benchmark suite: `make bench` -> bench/results.json, bench/RESULTS.md, PARETO.md, plots.

    .venv/bin/python -m tools.bench.all --out bench [--run runs/demo] [--budget-min 30]
    .venv/bin/python -m tools.bench.all --out bench --render-only     # re-render the reports

Phases (each heavy step in its own process, results of every step kept in OUT/raw/):

1. embedded default portfolio: reuse RUN (default runs/demo) when it is complete (all IMP
   levels, pruned levels and portfolio/manifest.json), else train it with
   `shifter-tf run --config configs/mnist5k_vgg.yaml --out RUN` (resuming a partial RUN), timing
   each phase. Which of the two happened is written in results.json and RESULTS.md.
2. structured vs unstructured deployment (`tools.bench.deploy`): VGG-16 and ResNet-56
   (CIFAR shape) with synthetic sparsity at 2x...256x, and the trained levels of RUN; each
   checkpoint as (a) our pruned TFLite, (a+) pruned + sparse encoding, (b) tfmot's path
   (strip_pruning + EXPERIMENTAL_SPARSITY), (c) plain sparse fp32, (d) dense.
3. latency (`tools.bench.latency`), interleaved round by round: 1 and 2 threads in the host
   environment (ai_edge_litert), 1 thread in the TensorFlow-free device environment (.venv-edge,
   tflite_runtime 2.14; its 2-thread runs stall for tens of ms whenever the shared machine is
   busy) — different XNNPACK builds, both reported; resident memory per variant in the latter.
4. micro-benchmarks: `tools.bench.switcher` (switch, decision, memory; device environment) and
   `tools.bench.surgery` (rewrite time).
5. the Pareto benchmark (`tools.bench.pareto`): the deployed portfolio against width-scaled
   dense baselines, tfmot's path, Reconvene, Sony MCT (`tools.bench.mct` in .venv-mct, when
   that environment exists) and the ablation arms -> OUT/PARETO.md.
6. seconds per training step, dense vs sparse level (`tools.bench.step_time`; STEP_TIME.md),
   for the embedded default and for MobileNetV2 with the group step (steps_groups/).
7. the Pareto benchmark per architecture (`tools.bench.archs`): VGG, ResNet-20 and MobileNetV2
   on mnist5k and Fashion-MNIST, one recipe, against their own width baselines (ARCHS.md).
8. `tools.bench.report`: results.json, RESULTS.md (with PARETO.md, ARCHS.md, STEP_TIME.md) and
   plots.

The machine is shared: latency is measured after all building is done, never concurrently with
our own jobs, and ratios are taken pair by pair; the 1-minute load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from shifter_tf.util.io import atomic_write_json  # (no TensorFlow import)
from tools.bench.common import (DEFAULT_CONFIG, DEFAULT_RUN, ROOT, VARIANTS, child_env,
                                edge_python, host_python, level_tag, logger, mct_python,
                                module_cmd)

log = logger("bench")


def bench_cmd(python, name: str, *args) -> list:
    """argv of the benchmark module tools.bench.<name> under `python`."""
    return module_cmd(python, f"tools.bench.{name}", *args)


class Step:
    """One child process with its log file; `wait()` raises with the log tail if it failed."""

    def __init__(self, name: str, cmd: list, logdir: Path):
        self.name, self.cmd = name, [str(c) for c in cmd]
        self.log = logdir / f"{name}.log"
        self.start = time.perf_counter()
        log(f"{name}: {' '.join(shlex.quote(c) for c in self.cmd)}")
        self._f = open(self.log, "w")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=child_env(), stdout=self._f,
                                     stderr=subprocess.STDOUT)

    def wait(self, check: bool = True) -> float:
        rc = self.proc.wait()
        self._f.close()
        self.seconds = time.perf_counter() - self.start
        log(f"{self.name}: exit {rc} after {self.seconds:.0f} s (log {self.log})")
        if rc != 0 and check:
            tail = self.log.read_text(errors="replace").splitlines()[-25:]
            raise RuntimeError(f"step {self.name} failed (exit {rc}):\n" + "\n".join(tail))
        return self.seconds


def run_step(name: str, cmd: list, logdir: Path, check: bool = True) -> float:
    return Step(name, cmd, logdir).wait(check)


# ------------------------------------------------------------------------------ phase 1
def run_state(run: Path) -> dict:
    """What RUN holds: finished levels vs the config's, pruned levels, portfolio."""
    cfg_path = run / "config.yaml"
    if not cfg_path.exists():
        return {"complete": False, "exists": run.exists() and any(run.iterdir()),
                "reason": "no config.yaml"}
    import yaml
    cfg = yaml.safe_load(cfg_path.read_text())
    want = int(cfg.get("lottery", {}).get("levels", 8))
    levels = sorted(int(p.name.split("_")[1]) for p in (run / "levels").glob("level_*")
                    if (p / "metrics.json").exists()) if (run / "levels").exists() else []
    pruned = [l for l in range(1, want + 1)
              if (run / "pruned" / f"level_{l:02d}" / "model.keras").exists()]
    manifest = run / "portfolio" / "manifest.json"
    complete = (levels == list(range(want + 1)) and len(pruned) == want and manifest.exists())
    reason = ("complete" if complete else
              f"levels {levels} of 0..{want}, pruned {pruned}, "
              f"manifest {'present' if manifest.exists() else 'missing'}")
    return {"complete": complete, "exists": True, "reason": reason, "levels_expected": want,
            "levels_finished": levels}


def ensure_demo(run: Path, config: str, logdir: Path, allow_train: bool) -> dict:
    state = run_state(run)
    if state["complete"]:
        log(f"reusing {run}: {state['reason']}")
        return {"source": "reused", "run": str(run), "state": state,
                "note": f"reused the complete run folder {run} (not retrained by this bench run)"}
    if not allow_train:
        raise SystemExit(f"{run} is not a complete run ({state['reason']}) and --no-train was "
                         "given")
    cmd = [host_python(), "-m", "shifter_tf.cli", "run", "--config", config, "--out", str(run)]
    resumed = bool(state.get("levels_finished"))
    if resumed:
        cmd.append("--resume")
    log(f"training the embedded default into {run} ({state['reason']})")
    wall = run_step("demo", cmd, logdir)
    if not run_state(run)["complete"]:
        raise RuntimeError(f"{run}: still incomplete after training: {run_state(run)['reason']}")
    return {"source": "resumed" if resumed else "trained", "run": str(run), "state": state,
            "wall_s": round(wall, 1), "command": " ".join(shlex.quote(c) for c in cmd),
            "note": (f"{'resumed' if resumed else 'trained'} by this bench run with "
                     f"`shifter-tf run --config {config} --out {run}`")}


# ------------------------------------------------------------------------------ phase 3 spec
def memory_files(deploys: dict) -> dict:
    """Files whose resident memory is measured: dense, and every variant at the first, middle
    and last synthetic level (the last trained level: its model is too small to matter)."""
    files = {}
    for family, d in deploys.items():
        base, doc = Path(d["dir"]), d["doc"]
        files[f"{family}/dense"] = str(base / doc["dense"]["file"])
        levels = doc["levels"]
        picks = [levels[-1]] if doc["kind"] == "trained" else \
            [levels[0], levels[len(levels) // 2], levels[-1]]
        for lv in {id(x): x for x in picks}.values():
            tag = level_tag(doc["kind"], lv["level"], lv["compression"])
            for key in VARIANTS[1:]:
                if key in lv["variants"]:
                    files[f"{family}/{tag}/{key}"] = str(base / lv["variants"][key]["file"])
    return files


def latency_spec(deploys: dict, out: Path, rounds: int, threads: list, deadline: float,
                 cap_s: float, memory: bool = False) -> Path:
    groups = []
    for family, d in deploys.items():
        base = Path(d["dir"])
        for lv in d["doc"]["levels"]:
            tag = level_tag(d["doc"]["kind"], lv["level"], lv["compression"])
            variants = {"dense": str(base / d["doc"]["dense"]["file"])}
            for key in VARIANTS[1:]:
                if key in lv["variants"]:
                    variants[key] = str(base / lv["variants"][key]["file"])
            groups.append({"id": f"{family}/{tag}", "reference": "dense", "variants": variants,
                           "pairs": [["tfmot_sparse", "pruned"], ["sparse", "pruned"],
                                     ["tfmot_sparse", "pruned_sparse"]]})
    spec = {"threads": threads, "rounds": rounds, "min_rounds": 5, "block_ms": 4.0,
            "warmup": 3, "deadline": deadline, "cap_s": cap_s, "base": "/", "groups": groups}
    if memory:
        spec["memory"] = memory_files(deploys)
        spec["memory_threads"] = 1
    atomic_write_json(out, spec)
    return out


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench")
    ap.add_argument("--run", default=DEFAULT_RUN, help="embedded default run folder")
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--no-train", action="store_true",
                    help="fail instead of training when RUN is incomplete")
    ap.add_argument("--models", nargs="+", default=["vgg16", "resnet56"])
    ap.add_argument("--ratios", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64, 128, 256])
    ap.add_argument("--alpha", type=float, default=0.25,
                    help="synthetic structure: keep ceil(F * d_l^alpha) filters per layer")
    ap.add_argument("--rounds", type=int, default=21, help="interleaved rounds per measurement")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--runtimes", nargs="+", default=["host", "edge"], choices=["host", "edge"])
    ap.add_argument("--edge-threads", nargs="+", type=int, default=[1],
                    help="thread counts in the device environment (tflite_runtime 2.14's "
                         "2-thread latency stalls for tens of ms on a loaded 2-core machine)")
    ap.add_argument("--switcher-repeats", type=int, default=5)
    ap.add_argument("--surgery-runs", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["switcher", "surgery", "synthetic", "trained", "pareto", "mct",
                             "steps", "archs"])
    ap.add_argument("--budget-min", type=float, default=30.0,
                    help="wall budget; latency rounds shrink when it runs out")
    ap.add_argument("--jobs", type=int, default=2, help="parallel model builders")
    ap.add_argument("--render-only", action="store_true",
                    help="only re-render RESULTS.md, PARETO.md and the plots from "
                         "OUT/results.json and OUT/raw/pareto.json")
    args = ap.parse_args(argv)

    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    if args.render_only:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        run_step("report", bench_cmd(host_python(), "report", "--out", out, "--render-only"),
                 out / "logs", check=True)
        return 0
    start_wall = time.time()
    start = time.perf_counter()
    deadline = start_wall + args.budget_min * 60 - 150       # leave time for the edge + report
    raw, logs, models = out / "raw", out / "logs", out / "models"
    for d in (raw, logs, models):
        d.mkdir(parents=True, exist_ok=True)
    run = (ROOT / args.run).resolve() if not Path(args.run).is_absolute() else Path(args.run)
    meta = {"command": "make bench  (= .venv/bin/python -m tools.bench.all --out bench)",
            "argv": " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv)),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start_wall)),
            "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()],
            "settings": {k: getattr(args, k) for k in (
                "models", "ratios", "alpha", "rounds", "threads", "edge_threads", "runtimes",
                "switcher_repeats", "surgery_runs", "budget_min")}}
    phases = {}

    # 1. the embedded default portfolio (trained or reused)
    t = time.perf_counter()
    demo = ensure_demo(run, args.config, logs, not args.no_train)
    phases["demo"] = time.perf_counter() - t
    atomic_write_json(raw / "demo.json", demo)

    # 2. build variants (host env, up to --jobs at a time)
    t = time.perf_counter()
    jobs = []
    if "synthetic" not in args.skip:
        for m in args.models:
            jobs.append((m, bench_cmd(host_python(), "deploy", "synthetic", "--model", m,
                                      "--ratios", *args.ratios, "--alpha", args.alpha,
                                      "--out", models / m)))
    if "trained" not in args.skip:
        jobs.append(("demo", bench_cmd(host_python(), "deploy", "trained",
                                       "--run", run, "--out", models / "demo")))
    running: list = []
    for name, cmd in jobs:
        while len(running) >= max(1, args.jobs):
            running.pop(0).wait()
        running.append(Step(f"deploy_{name}", cmd, logs))
    for s in running:
        s.wait()
    deploys = {name: {"dir": str(models / name),
                      "doc": json.loads((models / name / "deploy.json").read_text())}
               for name, _ in jobs}
    phases["build"] = time.perf_counter() - t

    # 3. surgery and switcher micro-benchmarks (quick, before the long latency runs)
    t = time.perf_counter()
    if "surgery" not in args.skip:
        run_step("surgery", bench_cmd(host_python(), "surgery", "--out", raw / "surgery.json",
                                      "--runs", args.surgery_runs), logs, check=False)
    if "switcher" not in args.skip:
        py = edge_python() or host_python()
        run_step("switcher", bench_cmd(py, "switcher", run / "portfolio", "--out",
                                       raw / "switcher.json", "--repeats", args.switcher_repeats),
                 logs, check=False)
    phases["micro"] = time.perf_counter() - t

    # 4. latency, interleaved; host first, then the device environment
    t = time.perf_counter()
    runtimes = {"host": host_python(), "edge": edge_python()}
    for rt in args.runtimes:
        py = runtimes[rt]
        if py is None:
            log(f"latency {rt}: no interpreter environment, skipped")
            continue
        remaining = max(60.0, deadline - time.time())
        # a per-measurement cap keeps a stalled machine from eating the budget
        threads = args.threads if rt == "host" else args.edge_threads
        groups = sum(len(d["doc"]["levels"]) for d in deploys.values()) * len(threads)
        share = 0.55 if rt == "host" and "edge" in args.runtimes else 1.0
        cap = max(5.0, remaining * share / max(groups, 1))
        # resident memory is a device question: measured in the last runtime of the list
        spec = latency_spec(deploys, raw / f"latency_{rt}_spec.json", args.rounds,
                            threads, deadline if rt == "host" else deadline + 90, cap,
                            memory=(rt == args.runtimes[-1]))
        run_step(f"latency_{rt}", bench_cmd(py, "latency", spec, "--out",
                                            raw / f"latency_{rt}.json"), logs,
                 check=(rt == "host"))
    phases["latency"] = time.perf_counter() - t

    # 5. the Pareto benchmark: MCT (own environment), baselines, tfmot, Reconvene, ablation
    #    arms; all timed interleaved in one process (cached, so reruns are quick)
    t = time.perf_counter()
    if "pareto" not in args.skip:
        mct_py = mct_python()
        if "mct" not in args.skip and mct_py:
            data = out / "mct_data.npz"
            run_step("mct_data", bench_cmd(host_python(), "export_data", "--run", run,
                                           "--config", args.config, "--out", data), logs)
            # the MCT step redoes a target whose dense model or settings changed, keeps the others
            run_step("mct", bench_cmd(mct_py, "mct", "--data", data, "--out", out), logs,
                     check=False)
        run_step("pareto", bench_cmd(host_python(), "pareto", "--run", run,
                                     "--config", args.config, "--out", out), logs)
    phases["pareto"] = time.perf_counter() - t

    # 6. seconds per training step, dense vs sparse level (the embedded default's recipe and
    #    the group step's), interleaved
    t = time.perf_counter()
    if "steps" not in args.skip:
        run_step("step_time", bench_cmd(host_python(), "step_time", "--config", args.config,
                                        "--out", out), logs, check=False)
        run_step("step_time_groups", bench_cmd(host_python(), "step_time", "--config",
                                               "configs/mnist5k_mobilenet.yaml", "--out",
                                               out / "steps_groups"), logs, check=False)
    phases["steps"] = time.perf_counter() - t

    # 7. the Pareto benchmark per architecture and data set (tools.bench.archs; cached)
    t = time.perf_counter()
    if "archs" not in args.skip:
        run_step("archs", bench_cmd(host_python(), "archs", "--out", out), logs, check=False)
    phases["archs"] = time.perf_counter() - t

    meta["phases_s"] = {k: round(v, 1) for k, v in phases.items()}
    meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    meta["bench_wall_s"] = round(time.perf_counter() - start, 1)
    meta["deploy_dirs"] = {k: v["dir"] for k, v in deploys.items()}
    atomic_write_json(raw / "meta.json", meta)

    # 8. results.json, RESULTS.md (with PARETO.md, ARCHS.md and STEP_TIME.md), plots
    run_step("report", bench_cmd(host_python(), "report", "--out", out), logs)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min: {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
