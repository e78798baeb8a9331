"""Which variant should serve next: latency expectations and the selection policies.

Latency model. Every variant has a *baseline* per-example latency at the switcher's thread count:
the on-device calibration (``device_profile.json``) if there is one, else the manifest's host
numbers. Measurements (EWMA) correct it; CPU contention from other processes scales it::

    idle(v)     = EWMA(measured / contention) of v          if v has recent samples
                = baseline(v) * speed                       otherwise
    speed       = EWMA over all variants of idle-measured / baseline   (device vs. calibration)
    expected(v) = idle(v) * contention(now)

Measurements are divided by the contention at the time they were taken, so a slowdown that the
CPU signal already explains is not counted twice, and a device that is faster or slower than
its calibration is learned from whichever variant is running.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from edge_runtime.monitor import Signals


def contention(cpu_busy_other: Optional[float], cpu_count: int, num_threads: int) -> float:
    """Slowdown factor >= 1 from other processes' CPU use: our threads share the free cores."""
    if not cpu_busy_other:
        return 1.0
    free = max(cpu_count * (1.0 - min(max(cpu_busy_other, 0.0), 1.0)), 0.25)
    return max(1.0, min(num_threads, cpu_count) / free)


def pick_threads_key(latency: Mapping[str, float], num_threads: int) -> Optional[str]:
    """Key of ``latency`` for ``num_threads``, else the nearest thread count measured."""
    if not latency:
        return None
    key = str(num_threads)
    if key in latency:
        return key
    return min(latency, key=lambda k: (abs(int(k) - num_threads), int(k)))


@dataclass
class _Track:
    ewma: float = 0.0
    n: int = 0
    t: float = 0.0


class LatencyEstimator:
    """Expected per-example latency of each variant (see the module docstring for the model)."""

    def __init__(self, baselines: Mapping[str, Optional[float]], alpha: float = 0.2,
                 min_samples: int = 3, stale_s: float = 30.0, learn: bool = True):
        self.baselines: Dict[str, Optional[float]] = dict(baselines)
        self.alpha, self.min_samples, self.stale_s, self.learn = alpha, min_samples, stale_s, learn
        self._tracks: Dict[str, _Track] = {k: _Track() for k in self.baselines}
        self._speed = _Track(ewma=1.0)
        self._lock = threading.Lock()

    def observe(self, variant_id: str, ms_per_example: float, contention_now: float = 1.0,
                now: Optional[float] = None) -> None:
        """Record one measured call (per-example ms) taken under ``contention_now``."""
        if not self.learn or not (ms_per_example >= 0.0) or math.isinf(ms_per_example):
            return
        now = time.monotonic() if now is None else now
        idle_ms = ms_per_example / max(contention_now, 1.0)
        a = self.alpha
        with self._lock:
            tr = self._tracks.setdefault(variant_id, _Track())
            fresh = tr.n > 0 and now - tr.t <= self.stale_s
            tr.ewma = a * idle_ms + (1 - a) * tr.ewma if fresh else idle_ms
            tr.n, tr.t = (tr.n + 1 if fresh else 1), now
            base = self.baselines.get(variant_id)
            if base:
                ratio = idle_ms / base
                sp = self._speed
                fresh = sp.n > 0 and now - sp.t <= self.stale_s
                sp.ewma = a * ratio + (1 - a) * sp.ewma if fresh else ratio
                sp.n, sp.t = (sp.n + 1 if fresh else 1), now

    def ewma(self, variant_id: str) -> Optional[float]:
        tr = self._tracks.get(variant_id)
        return tr.ewma if tr and tr.n else None

    def idle_ms(self, variant_id: str, now: Optional[float] = None) -> Optional[float]:
        """Expected latency with no contention, or ``None`` if nothing is known."""
        now = time.monotonic() if now is None else now
        tr = self._tracks.get(variant_id)
        if self.learn and tr is not None and tr.n >= self.min_samples and now - tr.t <= self.stale_s:
            return tr.ewma
        base = self.baselines.get(variant_id)
        if base is None:
            return tr.ewma if (self.learn and tr is not None and tr.n) else None
        sp = self._speed
        if self.learn and sp.n >= self.min_samples and now - sp.t <= self.stale_s:
            return base * sp.ewma
        return base

    def expected_ms(self, variant_id: str, factor: float = 1.0,
                    now: Optional[float] = None) -> Optional[float]:
        idle = self.idle_ms(variant_id, now)
        return None if idle is None else idle * factor


@dataclass(frozen=True)
class Candidate:
    """What the policy knows about one variant at decision time."""

    id: str
    accuracy: Optional[float]
    expected_ms: Optional[float]
    memory_mb: float
    loaded: bool = False
    available: bool = True


@dataclass(frozen=True)
class Context:
    """The budgets and signals a decision is made under."""

    latency_budget_ms: Optional[float] = None
    memory_budget_mb: Optional[float] = None
    signals: Optional[Signals] = None
    memory_reserve_mb: float = 32.0
    since_switch_s: float = math.inf
    budget_changed: bool = False


@dataclass(frozen=True)
class Decision:
    variant_id: Optional[str]
    reason: str


def _acc(c: Candidate) -> float:
    return -1.0 if c.accuracy is None else c.accuracy


def memory_fits(c: Candidate, ctx: Context) -> bool:
    """Under the memory budget, and (if it still has to be loaded) within free system memory."""
    if ctx.memory_budget_mb is not None and c.memory_mb > ctx.memory_budget_mb:
        return False
    free = ctx.signals.mem_available_mb if ctx.signals else None
    if not c.loaded and free is not None and c.memory_mb > free - ctx.memory_reserve_mb:
        return False
    return True


class Policy:
    """Interface: ``choose(candidates, current_id, ctx) -> Decision``; must be cheap (µs)."""

    name = "policy"
    automatic = True

    def choose(self, candidates: Sequence[Candidate], current: Optional[str],
               ctx: Context) -> Decision:  # pragma: no cover - interface
        raise NotImplementedError


class BudgetPolicy(Policy):
    """Most accurate variant whose expected latency and memory fit the budget, with hysteresis.

    The active variant is kept while its expected latency is within ``budget * (1 + hysteresis)``;
    another variant is entered only if it is within ``budget * (1 - hysteresis)``. Upgrades to a
    more accurate variant also wait ``min_dwell_s`` after the last switch (unless the application
    just changed the budget); downgrades when the active variant no longer fits are immediate.
    With no latency budget it serves the most accurate variant that fits in memory. When nothing
    fits, it serves the fastest one known.
    """

    name = "budget"

    def __init__(self, hysteresis: float = 0.1, min_dwell_s: float = 0.5):
        if not 0.0 <= hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis}")
        self.hysteresis, self.min_dwell_s = hysteresis, min_dwell_s

    def choose(self, candidates: Sequence[Candidate], current: Optional[str],
               ctx: Context) -> Decision:
        usable = [c for c in candidates if c.available and memory_fits(c, ctx)]
        if not usable:
            usable = [c for c in candidates if c.available]
            if not usable:
                return Decision(current, "no variant is available")
            best = min(usable, key=lambda c: c.memory_mb)
            return Decision(best.id, "nothing fits the memory budget: smallest variant")
        budget = ctx.latency_budget_ms
        by_acc = lambda c: (_acc(c), -(c.expected_ms if c.expected_ms is not None else math.inf))
        if budget is None:
            return Decision(max(usable, key=by_acc).id, "most accurate (no latency budget)")
        h = self.hysteresis
        cur = next((c for c in usable if c.id == current), None)
        enter = [c for c in usable if c.expected_ms is not None
                 and c.expected_ms <= budget * (1.0 - h)]
        best = max(enter, key=by_acc) if enter else None
        cur_ok = (cur is not None and cur.expected_ms is not None
                  and cur.expected_ms <= budget * (1.0 + h))
        if cur_ok:
            if best is not None and _acc(best) > _acc(cur):
                if ctx.budget_changed or ctx.since_switch_s >= self.min_dwell_s:
                    return Decision(best.id, "upgrade: more accurate and fits the budget")
                return Decision(cur.id, "keep: upgrade waits for the dwell time")
            return Decision(cur.id, "keep: fits the budget")
        if best is not None:
            why = "over budget" if cur is not None else "not usable"
            return Decision(best.id, f"most accurate that fits (active {why})")
        known = [c for c in usable if c.expected_ms is not None]
        if known:
            return Decision(min(known, key=lambda c: c.expected_ms).id,
                            "nothing fits the latency budget: fastest")
        return Decision(max(usable, key=by_acc).id, "no latency known: most accurate")


class FixedPolicy(Policy):
    """Never switches by itself: serves ``variant_id`` (or the first usable one) until told."""

    name = "fixed"
    automatic = False

    def __init__(self, variant_id: Optional[str] = None):
        self.variant_id = variant_id

    def choose(self, candidates: Sequence[Candidate], current: Optional[str],
               ctx: Context) -> Decision:
        want = current or self.variant_id
        avail = [c for c in candidates if c.available]
        if any(c.id == want for c in avail):
            return Decision(want, "fixed")
        if not avail:
            return Decision(current, "no variant is available")
        return Decision(max(avail, key=_acc).id, "fixed: most accurate available")


def make_policy(policy: "str | Policy | None", **kwargs) -> Policy:
    """A policy from a name (``"budget"``, ``"fixed"``) or pass an instance through."""
    if policy is None or policy == "budget":
        return BudgetPolicy(**kwargs)
    if policy == "fixed":
        return FixedPolicy(**kwargs)
    if isinstance(policy, Policy):
        return policy
    raise ValueError(f"unknown policy {policy!r}; expected 'budget', 'fixed' or a Policy")


def sorted_by_latency(cands: Iterable[Candidate]) -> List[Candidate]:
    return sorted(cands, key=lambda c: math.inf if c.expected_ms is None else c.expected_ms)
