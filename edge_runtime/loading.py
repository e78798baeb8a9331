"""The variants behind an ``EdgeSwitcher``: verification, isolated check, loading, health.

Health rules: a variant is disabled (``_Slot.error`` says why, ``stats()`` shows it) when its file
is missing, truncated or does not match the manifest's sha256; when its input or output shape or
dtype does not fit the manifest's task and its precision (``edge_runtime.iocheck``, checked on
the isolated check's report and again on the loaded interpreter); when the isolated check of
``edge_runtime.probe`` says the file crashes, refuses to load or fails to run the interpreter;
when it fails to load in this process; or when an ``invoke`` fails while serving (the switcher
then fails over). Disabled variants stay disabled for the life of the switcher.

Only bytes whose sha256 passed the isolated check are handed to an interpreter here: the check is
keyed by the manifest's sha256 and every load verifies the bytes it loads against that sha256.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

import numpy as np

from edge_runtime.interpreter import DelegateUnavailable, Runner, load_runner
from edge_runtime.iocheck import io_problems, runner_problems
from edge_runtime.manifest import Manifest, Variant, VariantFileError, read_variant_file
from edge_runtime.policy import pick_threads_key
from edge_runtime.probe import ProbeItem, check_files, open_cache, probe_files
from edge_runtime.profile import DeviceProfile, percentile

log = logging.getLogger("edge_runtime")
MiB = float(2 ** 20)


class VariantUnavailable(RuntimeError):
    """The requested variant cannot serve (failed verification, no Edge TPU, over budget)."""


def _pct(xs, qs=(50, 90, 99)) -> Dict[str, Optional[float]]:
    if not xs:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": round(percentile(xs, q), 4) for q in qs}


@dataclass
class _Slot:
    """One variant: its metadata, its runner when loaded, and its serving statistics."""

    variant: Variant
    memory_mb: float
    baseline_ms: Optional[float]
    runner: Optional[Runner] = None
    error: Optional[str] = None
    failures: int = 0                 # loads and invokes that failed in this process
    last_used: float = 0.0
    calls: int = 0
    examples: int = 0
    loads: int = 0
    load_ms: List[float] = field(default_factory=list)
    latencies: Deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards the stats only

    def snapshot(self) -> Dict[str, Any]:
        """Serving statistics and health of this variant (for ``EdgeSwitcher.stats``)."""
        with self.lock:
            lat = list(self.latencies)
            calls, examples = self.calls, self.examples
        return {
            "calls": calls, "examples": examples, "latency_ms": _pct(lat),
            "baseline_ms": self.baseline_ms, "accuracy": self.variant.accuracy,
            "loaded": self.runner is not None, "loads": self.loads,
            "load_ms": round(float(np.median(self.load_ms)), 3) if self.load_ms else None,
            "memory_mb": round(self.memory_mb, 3),
            "error": self.error, "failures": self.failures,
        }


class VariantPool:
    """Slots of every variant, and the one lock that serialises loading and eviction.

    ``safe_load`` (default) checks each file not yet known good in a child process before any
    interpreter of this process sees it (see ``edge_runtime.probe``); ``probe_cache`` is where
    verdicts are remembered (``None``: the user cache, a path, or ``False``: this process only).
    """

    def __init__(self, manifest: Manifest, *, num_threads: int,
                 profile: Optional[DeviceProfile], memory_budget_mb: Optional[float],
                 safe_load: bool = True, probe_cache: Any = None,
                 probe_timeout_s: float = 30.0):
        self.folder = Path(manifest.folder)  # type: ignore[arg-type]
        self.shape = tuple(manifest.task.input_shape)
        self.num_classes = int(manifest.task.num_classes)
        self.num_threads = num_threads
        self.profile = profile
        self.memory_budget_mb = memory_budget_mb
        self.safe_load = safe_load
        self.probe_timeout_s = probe_timeout_s
        self.lock = threading.RLock()
        self.evictions = 0
        self.slots: Dict[str, _Slot] = {
            v.id: _Slot(v, self._memory_guess(v), self._baseline(v)) for v in manifest.variants}
        self._cache = open_cache(probe_cache) if safe_load else None
        self.probe_stats: Dict[str, Any] = {"enabled": safe_load, "files": 0, "cached": 0,
                                            "probed": 0, "rejected": 0, "ms": 0.0}

    # ----------------------------------------------------------------------------- estimates
    def _baseline(self, v: Variant) -> Optional[float]:
        """Expected idle per-example ms: device profile first, then the manifest's host number."""
        vp = self.profile.variants.get(v.id) if self.profile else None
        for table in ((vp.latency_ms if vp else {}), v.latency_ms):
            key = pick_threads_key(table, self.num_threads)
            if key is not None:
                return float(table[key])
        return None

    def _memory_guess(self, v: Variant) -> float:
        """Memory before loading: the profile's, else twice the file + 0.25 MiB."""
        vp = self.profile.variants.get(v.id) if self.profile else None
        if vp and vp.memory_mb:
            return float(vp.memory_mb)
        return 2.0 * v.bytes / MiB + 0.25

    # ----------------------------------------------------------------------------- health
    def mark_broken(self, slot: _Slot, message: str, failure: bool = False) -> None:
        """Disable a variant for good; ``failure`` counts a failed load or invoke."""
        if slot.error is None:
            log.warning("disabling variant %s: %s", slot.variant.id, message)
            slot.error = message
        if failure:
            slot.failures += 1
        slot.runner = None

    def verify_all(self) -> None:
        """Size and sha256 of every file; a bad file disables its variant."""
        for slot in self.slots.values():
            try:
                read_variant_file(self.folder, slot.variant)
            except VariantFileError as e:
                self.mark_broken(slot, str(e))

    def _item(self, slot: _Slot) -> ProbeItem:
        v = slot.variant
        return ProbeItem(self.folder / v.file, v.sha256, v.edgetpu)

    def probe_all(self) -> None:
        """Check every verified file not yet known, in one child process (restarted on a crash)."""
        if self._cache is None:
            return
        t0 = time.perf_counter()
        slots = [s for s in self.slots.values() if s.error is None]
        verdicts, probed = check_files([self._item(s) for s in slots], self._cache,
                                       self.probe_timeout_s)
        for s in slots:
            v = verdicts.get(s.variant.sha256)
            if v is not None and not v.ok and v.stage != "spawn":
                self.mark_broken(s, f"variant {s.variant.id!r}: {v.reason}")
                self.probe_stats["rejected"] += 1
            elif v is not None and v.ok and v.input is not None:
                bad = io_problems(s.variant, self.shape, self.num_classes, v.input, v.output,
                                  check_finite=False)
                if bad:
                    self.mark_broken(s, "; ".join(bad) + " (it does not fit the manifest's task)")
                    self.probe_stats["rejected"] += 1
        self.probe_stats.update(files=len(slots), probed=probed, cached=len(slots) - probed,
                                ms=round((time.perf_counter() - t0) * 1e3, 3))

    def _check_before_load(self, slot: _Slot) -> None:
        """Probe this one file now if no verdict is known (lazy load after a failed probe)."""
        if self._cache is None:
            return
        v = self._cache.get(slot.variant.sha256)
        if v is None:
            v = probe_files([self._item(slot)], timeout_s=self.probe_timeout_s)[0]
            self._cache.put({slot.variant.sha256: v})
        if v.ok:
            return
        if v.stage == "spawn":
            log.warning("variant %s: cannot check the file in a child process (%s); loading it "
                        "unchecked", slot.variant.id, v.reason)
            return
        msg = f"variant {slot.variant.id!r}: {v.reason}"
        self.mark_broken(slot, msg)
        raise VariantUnavailable(msg)

    # ----------------------------------------------------------------------------- loading
    def loaded_mb(self, exclude: Optional[_Slot] = None) -> float:
        return sum(s.memory_mb for s in self.slots.values()
                   if s.runner is not None and s is not exclude)

    def preload(self) -> None:
        """Load every usable variant, most accurate first, as far as the memory budget allows."""
        order = sorted(self.slots.values(), key=lambda s: -(s.variant.accuracy or -1.0))
        for slot in order:
            if slot.error:
                continue
            if self.memory_budget_mb is not None and (
                    self.loaded_mb() + slot.memory_mb > self.memory_budget_mb):
                continue  # stays lazily loadable
            try:
                self.ensure_loaded(slot)
            except VariantUnavailable:
                pass

    def ensure_loaded(self, slot: _Slot) -> Runner:
        """The slot's runner, loading (and verifying, evicting LRU) if needed."""
        runner = slot.runner
        if runner is not None:
            slot.last_used = time.monotonic()
            return runner
        with self.lock:
            if slot.runner is not None:
                return slot.runner
            v = slot.variant
            if slot.error:
                raise VariantUnavailable(slot.error)
            self._make_room(slot)
            try:
                data = read_variant_file(self.folder, v)  # verify the very bytes we load
                self._check_before_load(slot)
                runner = load_runner(data, self.num_threads, edgetpu=v.edgetpu)
            except (VariantFileError, DelegateUnavailable) as e:
                self.mark_broken(slot, str(e))
                raise VariantUnavailable(str(e)) from None
            except (ValueError, RuntimeError) as e:
                if isinstance(e, VariantUnavailable):
                    raise
                msg = f"variant {v.id!r}: {self.folder / v.file} failed to load: {e}"
                self.mark_broken(slot, msg, failure=True)
                raise VariantUnavailable(msg) from None
            bad = runner_problems(v, self.shape, self.num_classes, runner)
            if bad:   # e.g. a 5-class file in place of a 10-class variant: never served
                msg = "; ".join(bad) + " (it does not fit the manifest's task)"
                self.mark_broken(slot, msg)
                raise VariantUnavailable(msg)
            if not (self.profile and v.id in self.profile.variants
                    and self.profile.variants[v.id].memory_mb):
                slot.memory_mb = runner.memory_bytes / MiB
            slot.loads += 1
            slot.load_ms.append(runner.load_ms)
            slot.last_used = time.monotonic()
            slot.runner = runner
            # The estimate made room before loading; the measurement may be larger.
            self._evict_lru(keep=slot)
            return runner

    def _make_room(self, slot: _Slot) -> None:
        """Evict least-recently-used runners until ``slot`` fits in the memory budget."""
        budget = self.memory_budget_mb
        if budget is None:
            return
        if slot.memory_mb > budget:
            raise VariantUnavailable(
                f"variant {slot.variant.id!r} needs ~{slot.memory_mb:.2f} MiB, more than the "
                f"memory budget of {budget:.2f} MiB")
        self._evict_lru(keep=slot)

    def _evict_lru(self, keep: _Slot) -> None:
        """Evict least-recently-used runners other than ``keep`` until they and ``keep``'s
        memory (estimated before its load, measured after) fit in the memory budget."""
        budget = self.memory_budget_mb
        if budget is None:
            return
        while self.loaded_mb(exclude=keep) + keep.memory_mb > budget:
            loaded = [s for s in self.slots.values() if s.runner is not None and s is not keep]
            if not loaded:
                break
            victim = min(loaded, key=lambda s: s.last_used)
            victim.runner = None  # an in-flight call keeps its own reference and finishes
            self.evictions += 1

    def unload(self, slot: _Slot) -> None:
        with self.lock:
            slot.runner = None

    def close(self) -> None:
        with self.lock:
            for s in self.slots.values():
                s.runner = None
