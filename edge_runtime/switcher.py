"""EdgeSwitcher: serve predictions from a portfolio, switching variants as conditions change.

Concurrency design:

* Each loaded interpreter lives in a ``Runner`` with its own lock; every call into it holds that
  lock, and outputs are copied out before the lock is released.
* The active variant is a single attribute. ``predict`` reads it once, takes a reference to that
  variant's runner and runs it; a switch only rebinds the attribute, so an in-flight call always
  completes on the variant it started on, and reports that variant.
* Evicting a runner (lazy mode, memory budget) drops the switcher's reference; a call still
  holding it finishes first and the interpreter is freed afterwards.
* Loading/evicting is serialised by one lock, decisions by another (a thread that finds a
  decision in progress does not wait for it).

Loading, the isolated file check and the health of each variant live in ``edge_runtime.loading``;
input checks and normalisation in ``edge_runtime.inputs``.
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

import numpy as np

from edge_runtime.inputs import InputAdapter
from edge_runtime.loading import (MiB, VariantPool, VariantUnavailable, _pct,  # noqa: F401
                                  _Slot)
from edge_runtime.manifest import Manifest, PathLike, Task, Variant, load_manifest
from edge_runtime.monitor import SystemMonitor, cpu_count
from edge_runtime.policy import (Candidate, Context, Decision, LatencyEstimator, Policy,
                                 contention, make_policy)
from edge_runtime.profile import DeviceProfile, load_profile

log = logging.getLogger("edge_runtime")


class EdgeSwitcher:
    """Serves ``predict`` from the portfolio variant the policy picks (see module docstring)."""

    def __init__(self, manifest: Manifest, *, policy: Union[str, Policy, None] = "budget",
                 memory_budget_mb: Optional[float] = None, preload: str = "all",
                 num_threads: Optional[int] = None, latency_budget_ms: Optional[float] = None,
                 monitor: Any = None, profile: Optional[DeviceProfile] = None,
                 learn: bool = True, memory_reserve_mb: float = 32.0,
                 decision_interval_s: float = 0.01, safe_load: bool = True,
                 probe_cache: Any = None, allow_nonfinite: bool = False,
                 signature: Optional[str] = None, min_accuracy: Optional[float] = None):
        if preload not in ("all", "lazy"):
            raise ValueError(f"preload must be 'all' or 'lazy', got {preload!r}")
        if manifest.folder is None:
            raise ValueError("the manifest has no folder to load variant files from")
        self.manifest = manifest
        self.folder = Path(manifest.folder)
        self.task: Task = manifest.task
        self.profile = profile
        self.num_threads = int(num_threads or min(4, cpu_count()))
        self.preload = preload
        self.allow_nonfinite = allow_nonfinite
        self.signature = signature
        # the policy never picks a variant whose measured accuracy is below this (or unknown)
        self.min_accuracy = min_accuracy
        self._below = {v.id for v in manifest.variants if min_accuracy is not None and (
            v.accuracy is None or v.accuracy < min_accuracy)}
        self.memory_reserve_mb = memory_reserve_mb
        # predict() re-runs the policy at most this often (a budget change is seen at once):
        # the CPU signal only refreshes every 0.25 s and the EWMA moves slowly anyway.
        self.decision_interval_s = decision_interval_s
        self._last_decide = -math.inf
        self.policy = make_policy(policy)
        self.monitor = monitor if monitor is not None else SystemMonitor()
        self._latency_budget_ms: Optional[float] = None
        self.set_budget(latency_budget_ms)
        self._pool = VariantPool(manifest, num_threads=self.num_threads, profile=profile,
                                 memory_budget_mb=memory_budget_mb, safe_load=safe_load,
                                 probe_cache=probe_cache)
        self._slots: Dict[str, _Slot] = self._pool.slots
        self.estimator = LatencyEstimator({k: s.baseline_ms for k, s in self._slots.items()},
                                          learn=learn)
        self._switch_lock = threading.Lock()
        self._decide_lock = threading.Lock()
        self._tls = threading.local()
        self._active: Optional[str] = None
        self._pinned = not self.policy.automatic
        self._last_switch = -math.inf
        self._factor = 1.0
        self._switches = {"auto": 0, "manual": 0}
        self._switch_us: Deque[float] = deque(maxlen=4096)
        self._decide_us: Deque[float] = deque(maxlen=4096)
        self._decision_ids = itertools.count(1)  # next() is atomic: no lock for the counter
        self._decisions = 0
        self._failovers = 0
        self._last_decision: Optional[Decision] = None
        self._signals = None
        self._inputs = InputAdapter(self.task)
        self._pool.verify_all()
        self._pool.probe_all()
        if preload == "all":
            self._pool.preload()
        if not self.available:
            raise VariantUnavailable(
                f"{manifest.source}: no variant is usable: "
                + "; ".join(f"{k}: {s.error}" for k, s in self._slots.items()))
        if not set(self.available) - self._below:
            raise VariantUnavailable(f"{manifest.source}: no usable variant reaches "
                                     f"min_accuracy {min_accuracy}")
        self._initial_choice()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_portfolio(cls, path: PathLike, policy: Union[str, Policy, None] = "budget",
                       memory_budget_mb: Optional[float] = None, preload: str = "all",
                       use_profile: bool = True, public_key: Any = None,
                       **kwargs: Any) -> "EdgeSwitcher":
        """Load ``path`` (portfolio folder or its manifest.json), verify every file, preload.

        A bad manifest (unknown schema_version, missing key, ...) raises ``ManifestError``
        naming it (an interrupted update's complete copy is put back first). A missing or
        tampered file, a model whose input/output does not fit the task, or an Edge TPU
        variant without the delegate, only disables that variant (``stats()``, its error).
        A file that crashes or breaks the interpreter is found in a child process before this
        process loads it, and disabled the same way (``safe_load=False`` skips that check;
        ``probe_cache`` says where verdicts are remembered, see ``edge_runtime.probe``).

        With ``public_key`` (a key file, PEM or base64 bytes, see ``edge_runtime.signature``) the
        portfolio must be signed by its private key and every file must match the signed
        manifest, else ``SignatureError`` (a ``ManifestError``) refuses the whole portfolio.

        Other keyword arguments: ``num_threads``, ``latency_budget_ms``, ``monitor``,
        ``learn`` (use measured latencies), ``memory_reserve_mb``, ``decision_interval_s``
        (how often ``predict`` re-runs the policy; 0 = every call), ``allow_nonfinite``
        (serve inputs holding NaN or infinity instead of refusing them), ``min_accuracy``
        (the policy never picks a variant measured below it; ``switch_to`` still may).
        """
        if public_key is not None:
            from edge_runtime.signature import load_signed_manifest
            manifest, key_id = load_signed_manifest(path, public_key)
            kwargs.setdefault("signature", f"verified (key {key_id})")
        else:
            manifest = load_manifest(path)
        profile = load_profile(manifest.folder, manifest) if use_profile else None
        return cls(manifest, policy=policy, memory_budget_mb=memory_budget_mb, preload=preload,
                   profile=profile, **kwargs)

    def _initial_choice(self) -> None:
        if self._pinned and isinstance(getattr(self.policy, "variant_id", None), str):
            self.switch_to(self.policy.variant_id)
            return
        d = self.decide(force=True)
        if self._active is None:
            raise VariantUnavailable(f"no variant could be selected: {d.reason}")

    # ----------------------------------------------------------------------------- properties
    @property
    def active(self) -> Optional[str]:
        """Id of the variant that serves the next call."""
        return self._active

    @property
    def variants(self) -> Tuple[Variant, ...]:
        """All variants of the portfolio (usable or not; see ``available``)."""
        return self.manifest.variants

    @property
    def available(self) -> List[str]:
        """Ids of the variants that passed verification and can be loaded."""
        return [k for k, s in self._slots.items() if s.error is None]

    @property
    def loaded(self) -> List[str]:
        return [k for k, s in self._slots.items() if s.runner is not None]

    @property
    def last_variant(self) -> Optional[str]:
        """Variant that served this thread's most recent ``predict`` call."""
        return getattr(self._tls, "variant", None)

    @property
    def latency_budget_ms(self) -> Optional[float]:
        return self._latency_budget_ms

    @property
    def pinned(self) -> bool:
        return self._pinned

    @property
    def memory_budget_mb(self) -> Optional[float]:
        return self._pool.memory_budget_mb

    @memory_budget_mb.setter
    def memory_budget_mb(self, value: Optional[float]) -> None:
        self._pool.memory_budget_mb = value

    def set_budget(self, latency_ms: Optional[float] = None, *,
                   memory_mb: Union[float, None, str] = "keep") -> None:
        """Set the latency budget (per example, ms; ``None`` = no limit), effective next call."""
        if latency_ms is not None and not latency_ms > 0:
            raise ValueError(f"latency budget must be > 0 ms or None, got {latency_ms}")
        self._latency_budget_ms = latency_ms
        if memory_mb != "keep":
            self.memory_budget_mb = memory_mb  # type: ignore[assignment]
        self._budget_changed = True

    # ----------------------------------------------------------------------------- loading
    def _loaded_mb(self) -> float:
        return self._pool.loaded_mb()

    def _ensure_loaded(self, slot: _Slot):
        return self._pool.ensure_loaded(slot)

    def unload(self, variant_id: str) -> None:
        """Drop a variant's interpreter (it is reloaded, and re-verified, when next needed)."""
        self._pool.unload(self._slot(variant_id))

    def close(self) -> None:
        """Release every interpreter."""
        self._pool.close()

    def __enter__(self) -> "EdgeSwitcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------------------- switching
    def _slot(self, variant_id: str) -> _Slot:
        try:
            return self._slots[variant_id]
        except KeyError:
            raise ValueError(f"unknown variant {variant_id!r}; the portfolio has "
                             f"{', '.join(self._slots)}") from None

    def _switch(self, variant_id: str, manual: bool) -> None:
        t0 = time.perf_counter()
        slot = self._slots[variant_id]
        self._ensure_loaded(slot)
        with self._switch_lock:
            if self._active != variant_id:
                self._active = variant_id
                self._switches["manual" if manual else "auto"] += 1
                self._last_switch = time.monotonic()
            self._switch_us.append((time.perf_counter() - t0) * 1e6)

    def switch_to(self, variant_id: str, pin: bool = True) -> str:
        """Serve ``variant_id`` from now on; returns the id actually serving.

        With ``pin`` (default) the policy stops choosing until ``resume_policy()``. An Edge TPU
        variant whose delegate is missing falls back to its CPU ``parent`` if the portfolio has
        it (logged); any other unusable variant raises ``VariantUnavailable`` saying why.
        """
        slot = self._slot(variant_id)
        if slot.error and slot.variant.edgetpu:
            parent = slot.variant.parent
            if parent in self._slots and self._slots[parent].error is None:
                log.warning("variant %s unavailable (%s); falling back to CPU variant %s",
                            variant_id, slot.error, parent)
                variant_id, slot = parent, self._slots[parent]
        if slot.error:
            raise VariantUnavailable(slot.error)
        self._switch(variant_id, manual=True)
        if pin:
            self._pinned = True
        return variant_id

    def resume_policy(self) -> None:
        """Let the policy choose again after ``switch_to``."""
        self._pinned = not self.policy.automatic
        self._budget_changed = True

    def candidates(self) -> List[Candidate]:
        """What the policy sees now (expected latencies include the current CPU contention)."""
        signals = self.monitor.sample()
        self._signals = signals
        self._factor = contention(signals.cpu_busy_other, signals.cpu_count, self.num_threads)
        now = time.monotonic()
        return [Candidate(k, s.variant.accuracy,
                          self.estimator.expected_ms(k, self._factor, now), s.memory_mb,
                          s.runner is not None, s.error is None)
                for k, s in self._slots.items() if k not in self._below]

    def decide(self, force: bool = False) -> Decision:
        """Run the policy once and switch if it says so; returns the decision."""
        t0 = time.perf_counter()
        cands = self.candidates()
        ctx = Context(self._latency_budget_ms, self.memory_budget_mb, self._signals,
                      self.memory_reserve_mb, time.monotonic() - self._last_switch,
                      self._budget_changed or force)
        self._budget_changed = False
        decision = self.policy.choose(cands, self._active, ctx)
        target = decision.variant_id
        if target is not None and target != self._active:
            try:
                self._switch(target, manual=False)
            except VariantUnavailable as e:
                decision = Decision(self._active, f"switch to {target} failed: {e}")
        self._last_decision = decision
        self._last_decide = time.monotonic()
        self._decisions = next(self._decision_ids)
        self._decide_us.append((time.perf_counter() - t0) * 1e6)
        return decision

    def _auto_decide(self) -> None:
        if (not self._budget_changed
                and time.monotonic() - self._last_decide < self.decision_interval_s):
            return
        if self._decide_lock.acquire(blocking=False):  # another thread is already deciding
            try:
                self.decide()
            finally:
                self._decide_lock.release()

    # ----------------------------------------------------------------------------- predicting
    def _prepare(self, x: Any, allow_nonfinite: bool = False) -> Tuple[np.ndarray, bool]:
        return self._inputs.prepare(x, allow_nonfinite)

    def predict(self, x: Any, return_variant: bool = False, *,
                allow_nonfinite: Optional[bool] = None) -> Any:
        """Class scores for one example ``input_shape`` or a batch ``(N, *input_shape)``.

        Applies the manifest's normalisation (and int8 quantisation if the variant needs it);
        returns float32 ``(num_classes,)`` or ``(N, num_classes)``, plus the id of the variant
        that served the call if ``return_variant``. Wrong shape or dtype: ``ValueError``; so is
        an input holding NaN or infinity unless ``allow_nonfinite`` (this call) or the
        switcher's ``allow_nonfinite`` says to serve it.

        A variant that fails to load or whose ``invoke`` fails is disabled (the reason is in
        ``stats()``, the failure counted) and the call is served by the next variant the policy
        picks (``stats()['failovers']``); a variant pinned with ``switch_to`` raises
        ``VariantUnavailable`` instead.
        """
        allow = self.allow_nonfinite if allow_nonfinite is None else allow_nonfinite
        batch, single = self._prepare(x, allow)
        if not self._pinned:
            self._auto_decide()
        failed = False
        for _ in range(len(self._slots) + 1):
            vid = self._active
            slot = self._slots[vid]
            try:
                runner = self._ensure_loaded(slot)
                y, ms = self._run(slot, runner, batch)
            except VariantUnavailable:
                if self._pinned:
                    raise
                self.decide(force=True)
                if self._active == vid:
                    raise
                failed = True
                continue
            if failed:
                self._failovers += 1
            n = batch.shape[0]
            per = ms / n
            with slot.lock:
                slot.calls += 1
                slot.examples += n
                slot.latencies.append(per)
            self.estimator.observe(vid, per, self._factor)
            self._tls.variant = vid
            out = y[0] if single else y
            return (out, vid) if return_variant else out
        raise VariantUnavailable("no variant could serve the call")  # pragma: no cover

    def _run(self, slot: _Slot, runner: Any, batch: np.ndarray) -> Tuple[np.ndarray, float]:
        """One call into a runner; a failing ``invoke`` disables the variant."""
        try:
            return runner.run(batch)
        except Exception as e:  # the runtime's RuntimeError/ValueError, or worse
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            msg = (f"variant {slot.variant.id!r}: invoke failed: {type(e).__name__}: {first}")
            self._pool.mark_broken(slot, msg, failure=True)
            raise VariantUnavailable(msg) from None

    def classify(self, x: Any) -> Union[str, List[str]]:
        """Label(s) of the top class, from the manifest's labels (index as text if none)."""
        y = self.predict(x)
        labels = self.task.labels or tuple(str(i) for i in range(self.task.num_classes))
        idx = np.argmax(y, axis=-1)
        return labels[int(idx)] if np.ndim(idx) == 0 else [labels[int(i)] for i in idx]

    # ----------------------------------------------------------------------------- stats
    def stats(self) -> Dict[str, Any]:
        """Per-variant calls and latency percentiles, switches, decision times, memory."""
        now = time.monotonic()
        variants = {}
        for k, s in self._slots.items():
            variants[k] = {**s.snapshot(), "ewma_ms": self.estimator.ewma(k),
                           "expected_ms": self.estimator.expected_ms(k, self._factor, now)}
        d = self._last_decision
        return {
            "active": self._active, "pinned": self._pinned, "policy": self.policy.name,
            "num_threads": self.num_threads, "preload": self.preload,
            "latency_budget_ms": self._latency_budget_ms,
            "memory_budget_mb": self.memory_budget_mb,
            "contention": round(self._factor, 3),
            "profile": self.profile.source if self.profile else None,
            "switches": {"total": sum(self._switches.values()), **self._switches,
                         "time_us": _pct(list(self._switch_us))},
            "decisions": {"count": self._decisions, "time_us": _pct(list(self._decide_us)),
                          "last": d.reason if d else None},
            "evictions": self._pool.evictions,
            "failovers": self._failovers,
            "probe": dict(self._pool.probe_stats),
            "signature": self.signature,
            "min_accuracy": self.min_accuracy, "below_min_accuracy": sorted(self._below),
            "loaded_mb": round(self._loaded_mb(), 3),
            "variants": variants,
        }
