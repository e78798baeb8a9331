"""``edge-switcher``: inspect, calibrate, run and demo a portfolio on the device.

    edge-switcher info   PORTFOLIO [--metadata] manifest summary, file and signature status,
                                                the files' TFLite Model Metadata
    edge-switcher verify PORTFOLIO              load and run every variant in isolation
    edge-switcher bench PORTFOLIO               measure every variant here, write device_profile.json
    edge-switcher run   PORTFOLIO --input x.npy [--budget-ms N] [--variant ID]
    edge-switcher demo  PORTFOLIO               replay changing budgets and CPU load

Every command takes ``--public-key KEY.pub``: the portfolio must then be signed by that key
(``shifter-tf keygen`` / ``export --private-key``) and match its signed manifest, else it is
refused. Errors (bad portfolio, bad input) print one line to stderr and exit non-zero, no
traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of usage + message + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _fmt(x: Optional[float], spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ------------------------------------------------------------------------------------- commands
def _manifest(args: argparse.Namespace) -> Any:
    """The portfolio's manifest; signed and fully checked against it with --public-key."""
    if args.public_key:
        from edge_runtime.signature import load_signed_manifest
        return load_signed_manifest(args.portfolio, args.public_key)[0]
    from edge_runtime.manifest import load_manifest
    return load_manifest(args.portfolio)


def cmd_info(args: argparse.Namespace) -> int:
    from edge_runtime.manifest import VariantFileError, load_manifest, verify_variant_file
    from edge_runtime.probe import open_cache
    from edge_runtime.profile import load_profile
    from edge_runtime.signature import describe

    m = load_manifest(args.portfolio)
    signature = describe(args.portfolio, args.public_key)
    profile = load_profile(m.folder, m)
    t = m.task
    norm = t.normalization
    print(f"portfolio  {m.folder}")
    print(f"task       {t.name}: input {list(t.input_shape)} {t.input_dtype}, "
          f"{t.num_classes} classes"
          + (f", x*{norm.scale:.6g} - {list(norm.mean)} / {list(norm.std)}" if norm else ""))
    print(f"generator  {m.generator or '-'}  created {m.created or '-'}  "
          f"schema_version {m.schema_version}")
    print(f"profile    {profile.source + ' (' + profile.backend + ')' if profile else 'none'}")
    print(f"signature  {signature}")
    cache = open_cache()
    rows, bad = [], []
    for v in m.variants:
        verdict = cache.get(v.sha256)    # what an earlier start or verify saw; nothing is loaded
        loads = "?" if verdict is None else "yes" if verdict.ok else "NO"
        if verdict is not None and not verdict.ok and verdict.definite:
            bad.append(f"variant {v.id!r}: {verdict.reason}")
        try:
            verify_variant_file(m.folder, v)
            status = "ok"
        except VariantFileError as e:
            status, _ = "BAD", bad.append(str(e))
        vp = profile.variants.get(v.id) if profile else None
        dev = vp.latency_ms.get("1") if vp else None
        rows.append([v.id, v.kind, v.precision, str(v.level), f"{v.density:.3f}",
                     f"{v.bytes / 1024:.1f}", _fmt(v.accuracy, ".4f"),
                     _fmt(v.latency_ms.get("1")), _fmt(dev),
                     "tpu" if v.edgetpu else "cpu", loads, status])
    print()
    print(_table(rows, ["id", "kind", "prec", "lvl", "density", "KB", "acc", "host ms@1",
                        "device ms@1", "dev", "loads", "file"]))
    if any(r[-2] == "?" for r in rows):
        print("loads: ? = not checked on this device yet (edge-switcher verify checks it)")
    _print_metadata(m, every=args.metadata)
    for msg in bad:
        print(f"edge-switcher: {msg}", file=sys.stderr)
    return 1 if bad else 0


def _print_metadata(m: Any, every: bool) -> None:
    """The TFLite Model Metadata of the first variant (of every one with ``every``); one line
    saying why when this environment cannot read it (no ``flatbuffers`` package)."""
    from edge_runtime.manifest import VariantFileError, read_variant_file
    from edge_runtime.tflite_metadata import (MetadataError, MetadataUnavailable, describe,
                                              read_metadata)

    pad = " " * 11
    print()
    for v in m.variants if every else m.variants[:1]:
        try:
            meta = read_metadata(read_variant_file(m.folder, v))
        except VariantFileError:
            continue                      # reported with the table
        except MetadataUnavailable as e:
            said = sum(1 for x in m.variants if x.extra.get("metadata"))
            print(f"metadata   {e}" + (f"; per the manifest {said} of {len(m.variants)} "
                                       "variants carry it" if said else ""))
            return
        except MetadataError as e:
            print(f"metadata   {v.id}: {e}")
            continue
        lines = describe(meta)
        print(f"metadata   {v.id}: {lines[0]}")
        for line in lines[1:]:
            print(pad + line)
    if not every and len(m.variants) > 1:
        print(pad + "(edge-switcher info --metadata shows every variant's)")


def cmd_verify(args: argparse.Namespace) -> int:
    from edge_runtime.verify import verify_portfolio

    rep = verify_portfolio(args.portfolio, args.public_key, timeout_s=args.timeout)
    m = rep.manifest
    print(f"portfolio  {m.folder}: {len(m.variants)} variants, signature {rep.signature}")
    print(_table(rep.rows, ["id", "prec", "input", "output", "status"]))
    for msg in rep.problems:
        print(f"edge-switcher: {' '.join(msg.split())}", file=sys.stderr)
    bad = sum(1 for r in rep.rows if r[-1] != "ok")
    print(f"{len(m.variants) - bad} of {len(m.variants)} variants usable")
    return 1 if rep.problems else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_runtime.profile import bench_portfolio, profile_path

    m = _manifest(args)
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    doc = bench_portfolio(m.folder, m, threads=threads, runs=args.runs, warmup=args.warmup,
                          write=not args.no_write,
                          log_fn=lambda s: print(s, file=sys.stderr) if args.verbose else None)
    keys = [str(t) for t in doc["threads"]]
    rows = []
    for vid, e in doc["variants"].items():
        rows.append([vid, _fmt(e["init_ms"]), *[_fmt(e["latency_ms"].get(k), ".4f") for k in keys],
                     *[_fmt(e["latency_p90_ms"].get(k), ".4f") for k in keys],
                     _fmt(e["memory_mb"])])
    print(f"backend {doc['backend']}, {doc['cpu_count']} CPUs, {args.runs} runs per setting")
    print(_table(rows, ["id", "init ms", *[f"p50 ms@{k}" for k in keys],
                        *[f"p90 ms@{k}" for k in keys], "MiB"]))
    for vid, err in doc["errors"].items():
        print(f"edge-switcher: skipped {vid}: {err}", file=sys.stderr)
    if not args.no_write:
        print(f"wrote {profile_path(m.folder)}")
    return 0 if doc["variants"] else 1


def _load_input(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"input file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} as a .npy array: {e}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.switcher import EdgeSwitcher

    x = _load_input(args.input)
    sw = EdgeSwitcher.from_portfolio(args.portfolio, num_threads=args.threads,
                                     latency_budget_ms=args.budget_ms,
                                     public_key=args.public_key,
                                     allow_nonfinite=args.allow_nonfinite,
                                     min_accuracy=args.min_accuracy)
    if args.variant:
        sw.switch_to(args.variant)
    y, vid = sw.predict(x, return_variant=True)
    batch = y if y.ndim == 2 else y[None]
    labels = sw.task.labels or tuple(str(i) for i in range(sw.task.num_classes))
    top = batch.argmax(axis=1)
    if args.json:
        print(json.dumps({"variant": vid, "labels": [labels[i] for i in top],
                          "scores": batch.tolist()}))
        return 0
    for i, k in enumerate(top):
        print(f"{i:4d}  {labels[k]:>8s}  score {batch[i, k]:.4f}  variant {vid}")
    st = sw.stats()["variants"][vid]
    print(f"served by {vid} ({st['examples']} examples, p50 {_fmt(st['latency_ms']['p50'], '.4f')}"
          f" ms/example, budget {_fmt(args.budget_ms, '.3g')} ms)")
    return 0


def demo_phases(expected: Dict[str, float]) -> List[Dict[str, Any]]:
    """Budgets placed between the variants' expected latencies, so each phase means something."""
    lat = sorted(expected.values())
    hi, lo = lat[-1], lat[0]
    second = lat[1] if len(lat) > 1 else lo
    mid_hi = (lat[-2] + hi) / 2 if len(lat) > 1 else hi
    return [
        {"name": "no budget, idle", "budget": None, "cpu": 0.0},
        {"name": "relaxed budget", "budget": 1.5 * hi, "cpu": 0.0},
        {"name": "budget just below the slowest", "budget": mid_hi, "cpu": 0.0},
        {"name": "tight budget", "budget": (lo + second) / 2, "cpu": 0.0},
        {"name": "budget below every variant", "budget": 0.5 * lo, "cpu": 0.0},
        {"name": "relaxed budget, CPU 85% busy", "budget": 1.5 * hi, "cpu": 0.85},
        {"name": "relaxed budget, CPU idle again", "budget": 1.5 * hi, "cpu": 0.0},
    ]


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_runtime.monitor import StaticMonitor
    from edge_runtime.switcher import EdgeSwitcher

    monitor = None if args.real else StaticMonitor(cpu_busy_other=0.0)
    sw = EdgeSwitcher.from_portfolio(args.portfolio, num_threads=args.threads, monitor=monitor,
                                     learn=args.real, public_key=args.public_key,
                                     min_accuracy=args.min_accuracy)
    shape, dtype = sw.task.input_shape, np.dtype(sw.task.input_dtype)
    if args.input:
        x = _load_input(args.input)
    else:
        rng = np.random.default_rng(0)
        x = (rng.random(shape) * (255 if dtype.kind in "iu" or sw.task.normalization else 1))
        x = x.astype(dtype)
    expected = {v: sw.estimator.idle_ms(v) for v in sw.available}
    expected = {k: e for k, e in expected.items() if e is not None}
    if not expected:
        print("edge-switcher: error: no latency numbers; run `edge-switcher bench` first",
              file=sys.stderr)
        return 1
    src = "device profile" if sw.profile else "manifest (host numbers)"
    mode = "measured CPU load, learning from measured latency" if args.real else \
        "simulated CPU load, expectations from the " + src
    print(f"demo: {len(sw.available)} variants, {sw.num_threads} thread(s), {mode}")
    rows = []
    for ph in demo_phases(expected):
        if monitor is not None:
            monitor.set(cpu_busy_other=ph["cpu"])
        sw.set_budget(ph["budget"])
        served: Dict[str, int] = {}
        before = sw.stats()["switches"]["total"]
        for _ in range(args.calls):
            _, vid = sw.predict(x, return_variant=True)
            served[vid] = served.get(vid, 0) + 1
        st = sw.stats()
        main_vid = max(served, key=served.get)
        rows.append([ph["name"], _fmt(ph["budget"]), f"{ph['cpu']:.0%}" if monitor else "real",
                     ", ".join(f"{k} x{n}" for k, n in served.items()),
                     _fmt(sw.manifest.variant(main_vid).accuracy, ".3f"),
                     _fmt(st["variants"][main_vid]["expected_ms"]),
                     str(st["switches"]["total"] - before)])
    print(_table(rows, ["phase", "budget ms", "cpu", "served by", "acc", "expected ms",
                        "switches"]))
    st = sw.stats()
    print(f"decision time p50 {_fmt(st['decisions']['time_us']['p50'], '.1f')} us, "
          f"switch time p50 {_fmt(st['switches']['time_us']['p50'], '.1f')} us")
    return 0


# ------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edge-switcher", description="Run a shifter-tf portfolio on the device.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("info", help="manifest summary, file and signature status, the files' "
                                    "TFLite Model Metadata")
    s.add_argument("portfolio")
    s.add_argument("--metadata", action="store_true",
                   help="show every variant's TFLite Model Metadata, not only the first's")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("verify", help="load and run every variant in a process of its own; "
                                      "one line per problem, non-zero exit if any")
    s.add_argument("portfolio")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds per variant")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("bench", help="calibrate on this device, write device_profile.json")
    s.add_argument("portfolio")
    s.add_argument("--threads", help="comma-separated thread counts (default: 1 and all CPUs)")
    s.add_argument("--runs", type=int, default=30)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--no-write", action="store_true", help="print only, leave the folder alone")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("run", help="predict on a .npy file (one example or a batch)")
    s.add_argument("portfolio")
    s.add_argument("--input", required=True, help=".npy with one example or a batch")
    s.add_argument("--budget-ms", type=float, help="latency budget per example")
    s.add_argument("--variant", help="serve this variant instead of letting the policy choose")
    s.add_argument("--threads", type=int)
    s.add_argument("--json", action="store_true")
    s.add_argument("--allow-nonfinite", action="store_true",
                   help="serve inputs holding NaN or infinity instead of refusing them")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("demo", help="replay changing budgets and CPU load")
    s.add_argument("portfolio")
    s.add_argument("--calls", type=int, default=20, help="predictions per phase")
    s.add_argument("--input", help=".npy example to use (default: random)")
    s.add_argument("--threads", type=int)
    s.add_argument("--real", action="store_true",
                   help="read the real CPU load and learn from measured latency")
    s.set_defaults(fn=cmd_demo)
    for name in ("run", "demo"):
        sub.choices[name].add_argument(
            "--min-accuracy", type=float, metavar="ACC",
            help="never let the policy pick a variant measured below this accuracy (0..1)")
    for s in sub.choices.values():
        s.add_argument("--public-key", metavar="KEY.pub",
                       help="require a portfolio signed by this Ed25519 key and files matching "
                            "its signed manifest")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``edge-switcher``; returns the exit code."""
    from edge_runtime.interpreter import BackendUnavailable
    from edge_runtime.manifest import ManifestError
    from edge_runtime.switcher import VariantUnavailable

    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "calls", 1) < 1 or getattr(args, "runs", 1) < 1:
            raise _UsageError("--calls and --runs must be at least 1")
        return int(args.fn(args))
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except _UsageError as e:
        print(f"edge-switcher: usage error: {e}", file=sys.stderr)
        return 2
    except (ManifestError, VariantUnavailable, BackendUnavailable, ValueError, OSError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"edge-switcher: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-switcher: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
