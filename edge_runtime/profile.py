"""On-device calibration: ``device_profile.json`` beside the manifest.

``edge-switcher bench PORTFOLIO`` measures every variant on the device itself (load time,
per-example latency at each thread count, memory) and writes the profile; the switcher then
prefers these numbers to the manifest's host measurements. Entries whose sha256 no longer matches
the manifest are ignored (the variant was re-exported after the calibration).
"""
from __future__ import annotations

import gc
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from edge_runtime.manifest import (Manifest, PathLike, Variant, atomic_write_bytes,
                                   read_variant_file, utc_now)
from edge_runtime.monitor import cpu_count, rss_mb

PROFILE_NAME = "device_profile.json"
PROFILE_VERSION = 1
log = logging.getLogger("edge_runtime")


@dataclass(frozen=True)
class VariantProfile:
    """Device-measured numbers of one variant."""

    sha256: str
    latency_ms: Dict[str, float]
    latency_p90_ms: Dict[str, float] = field(default_factory=dict)
    init_ms: Optional[float] = None
    memory_mb: Optional[float] = None


@dataclass(frozen=True)
class DeviceProfile:
    """A device calibration; ``variants`` only holds entries that match the manifest."""

    created: str
    backend: str
    machine: str
    cpu_count: int
    variants: Dict[str, VariantProfile]
    source: str = PROFILE_NAME


def profile_path(folder: PathLike) -> Path:
    return Path(folder) / PROFILE_NAME


def load_profile(folder: PathLike, manifest: Manifest) -> Optional[DeviceProfile]:
    """The device profile of a portfolio, or ``None`` if there is none or it is unreadable.

    A broken profile is only a warning: the manifest's host numbers are a usable fallback.
    """
    path = profile_path(folder)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("schema_version") != PROFILE_VERSION:
            raise ValueError(f"unknown schema_version {doc.get('schema_version')!r}")
        shas = {v.id: v.sha256 for v in manifest.variants}
        variants: Dict[str, VariantProfile] = {}
        for vid, e in doc["variants"].items():
            if shas.get(vid) != e.get("sha256"):
                log.warning("%s: ignoring stale entry %r (sha256 differs from the manifest)",
                            path, vid)
                continue
            variants[vid] = VariantProfile(
                sha256=e["sha256"],
                latency_ms={str(k): float(v) for k, v in e["latency_ms"].items()},
                latency_p90_ms={str(k): float(v) for k, v in e.get("latency_p90_ms", {}).items()},
                init_ms=e.get("init_ms"), memory_mb=e.get("memory_mb"))
        return DeviceProfile(doc.get("created", ""), doc.get("backend", ""),
                             doc.get("machine", ""), int(doc.get("cpu_count", 0)), variants,
                             str(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: ignoring unreadable device profile (%s)", path, e)
        return None


def percentile(xs: List[float], q: float) -> float:
    """The q-th percentile of latency samples (ms), the one used by profiles and stats()."""
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def measure_variant(folder: PathLike, manifest: Manifest, variant: Variant,
                    threads: Iterable[int], runs: int = 30, warmup: int = 5,
                    loads: int = 3) -> dict:
    """Load time, per-example latency per thread count and memory of one variant."""
    from edge_runtime.interpreter import load_runner

    data = read_variant_file(folder, variant)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1,) + tuple(manifest.task.input_shape)).astype(np.float32)
    init: List[float] = []
    mem: List[float] = []
    estimate_mb = 0.0
    for _ in range(max(1, loads)):
        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        runner = load_runner(data, 1, edgetpu=variant.edgetpu)
        runner.run(x)  # first invoke is part of getting ready (XNNPack packs weights lazily)
        init.append((time.perf_counter() - t0) * 1e3)
        after = rss_mb()
        if before is not None and after is not None:
            mem.append(after - before)
        estimate_mb = runner.memory_bytes / 2**20
        del runner
    lat: Dict[str, float] = {}
    p90: Dict[str, float] = {}
    for t in threads:
        runner = load_runner(data, t, edgetpu=variant.edgetpu)
        for _ in range(warmup):
            runner.run(x)
        samples = [runner.run(x)[1] for _ in range(max(1, runs))]
        lat[str(t)] = round(percentile(samples, 50), 4)
        p90[str(t)] = round(percentile(samples, 90), 4)
        del runner
    # RSS deltas are noisy (the allocator reuses freed memory), so never report less than the
    # model bytes plus the sum of its tensors.
    memory = max(percentile(mem, 50) if mem else 0.0, estimate_mb)
    return {"sha256": variant.sha256, "latency_ms": lat, "latency_p90_ms": p90,
            "init_ms": round(percentile(init, 50), 3), "memory_mb": round(memory, 3)}


def _warm_up_runtime(folder: PathLike, manifest: Manifest, usable: List[Variant]) -> None:
    """Load one CPU variant once so one-time runtime set-up is not billed to the first variant."""
    from edge_runtime.interpreter import load_runner

    for v in sorted(usable, key=lambda v: v.bytes):
        if v.edgetpu:
            continue
        try:
            runner = load_runner(read_variant_file(folder, v), 1)
            runner.run(np.zeros((1,) + tuple(manifest.task.input_shape), np.float32))
            return
        except Exception:
            continue


def bench_portfolio(folder: PathLike, manifest: Manifest, threads: Optional[List[int]] = None,
                    runs: int = 30, warmup: int = 5, write: bool = True,
                    log_fn: Callable[[str], None] = lambda s: None) -> dict:
    """Measure every variant that loads and (optionally) write ``device_profile.json``.

    Variants that fail (missing, tampered, no Edge TPU, or rejected by the isolated check of
    ``edge_runtime.probe``: a file that crashes the interpreter) are reported in ``errors``
    and left out.
    """
    from edge_runtime.interpreter import get_backend
    from edge_runtime.probe import ProbeItem, check_files, open_cache

    backend = get_backend()
    threads = threads or sorted({1, cpu_count()})
    doc: dict = {"schema_version": PROFILE_VERSION, "created": utc_now(),
                 "backend": f"{backend.name} {backend.version}",
                 "machine": f"{platform.machine()} {platform.system()}",
                 "cpu_count": cpu_count(), "threads": threads, "runs": runs,
                 "variants": {}, "errors": {}}
    usable = []
    for v in manifest.variants:
        try:
            read_variant_file(folder, v)
            usable.append(v)
        except Exception as e:
            doc["errors"][v.id] = str(e)
    items = [ProbeItem(Path(folder) / v.file, v.sha256, v.edgetpu) for v in usable]
    verdicts, _ = check_files(items, open_cache())
    for v in list(usable):
        verdict = verdicts[v.sha256]
        if not verdict.ok and verdict.stage != "spawn":
            doc["errors"][v.id] = f"variant {v.id!r}: {verdict.reason}"
            usable.remove(v)
    _warm_up_runtime(folder, manifest, usable)
    for v in usable:
        try:
            doc["variants"][v.id] = measure_variant(folder, manifest, v, threads, runs, warmup)
            log_fn(f"measured {v.id}")
        except Exception as e:  # a broken variant must not stop the calibration of the others
            doc["errors"][v.id] = str(e)
            log_fn(f"skipped {v.id}: {e}")
    if write:
        atomic_write_bytes(profile_path(folder), (json.dumps(doc, indent=2) + "\n").encode())
    return doc
