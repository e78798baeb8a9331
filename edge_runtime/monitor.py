"""System signals for the policy, read from /proc (Linux); ``None`` where /proc is unavailable.

``SystemMonitor.sample()`` is rate-limited (default every 0.25 s) so calling it on every
prediction costs a clock read, not file I/O. ``StaticMonitor`` returns fixed values: for the demo,
tests, or platforms without /proc.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Signals:
    """One snapshot of the machine as the policy sees it."""

    cpu_count: int
    cpu_busy_other: Optional[float]   # fraction of all cores used by *other* processes, 0..1
    loadavg1: Optional[float]
    mem_available_mb: Optional[float]
    rss_mb: Optional[float]           # this process
    time: float = 0.0


def cpu_count() -> int:
    """CPUs this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "r") as fh:
            return fh.read()
    except OSError:
        return None


def read_meminfo() -> Dict[str, float]:
    """/proc/meminfo in MiB (``MemAvailable``, ``MemTotal``, ...); empty without /proc."""
    text = _read("/proc/meminfo") or ""
    out: Dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name] = int(parts[0]) / 1024.0  # kB -> MiB
    return out


def mem_available_mb() -> Optional[float]:
    return read_meminfo().get("MemAvailable")


def read_loadavg() -> Optional[float]:
    text = _read("/proc/loadavg")
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


def _status_kb(field: str, pid: str = "self") -> Optional[float]:
    text = _read(f"/proc/{pid}/status") or ""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return None


def rss_mb(pid: str = "self") -> Optional[float]:
    """Resident set size of a process in MiB (VmRSS)."""
    return _status_kb("VmRSS", pid)


def peak_rss_mb(pid: str = "self") -> Optional[float]:
    """Peak resident set size of a process in MiB (VmHWM)."""
    return _status_kb("VmHWM", pid)


def _cpu_times() -> Optional[Tuple[float, float, float]]:
    """(total, busy, own) jiffies: all CPUs from /proc/stat, this process from /proc/self/stat."""
    stat = _read("/proc/stat")
    own = _read("/proc/self/stat")
    if not stat or not own:
        return None
    vals = [float(x) for x in stat.splitlines()[0].split()[1:]]
    total = sum(vals[:8])                       # guest time is already inside user/nice
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    fields = own.rsplit(")", 1)[1].split()      # after the command name, field 3 is index 0
    mine = float(fields[11]) + float(fields[12])  # utime + stime
    return total, total - idle, mine


class SystemMonitor:
    """Reads CPU load, free memory and RSS from /proc, at most once per ``min_interval_s``."""

    def __init__(self, min_interval_s: float = 0.25):
        self.min_interval_s = min_interval_s
        self._ncpu = cpu_count()
        self._lock = threading.Lock()
        self._prev = _cpu_times()
        self._last: Optional[Signals] = None

    def _measure(self, now: float) -> Signals:
        cur = _cpu_times()
        other: Optional[float] = None
        load = read_loadavg()
        if cur and self._prev and cur[0] > self._prev[0]:
            d_total = cur[0] - self._prev[0]
            d_busy = cur[1] - self._prev[1]
            d_own = cur[2] - self._prev[2]
            other = min(1.0, max(0.0, (d_busy - d_own) / d_total))
        elif load is not None:
            other = min(1.0, load / self._ncpu)  # first sample: no interval to diff yet
        if cur:
            self._prev = cur
        return Signals(self._ncpu, other, load, mem_available_mb(), rss_mb(), now)

    def sample(self) -> Signals:
        """Latest signals, re-read from /proc only if the last read is older than the interval."""
        now = time.monotonic()
        last = self._last
        if last is not None and now - last.time < self.min_interval_s:
            return last
        with self._lock:
            last = self._last
            if last is None or now - last.time >= self.min_interval_s:
                # Too short an interval gives a meaningless CPU fraction: wait for the next one.
                self._last = self._measure(now)
            return self._last


class StaticMonitor:
    """Fixed signals (simulated load in the demo and tests); change them with ``set``."""

    def __init__(self, cpu_busy_other: float = 0.0, mem_available_mb: Optional[float] = None,
                 cpu_count_: Optional[int] = None):
        self._signals = Signals(cpu_count_ or cpu_count(), cpu_busy_other, None,
                                mem_available_mb, None, 0.0)

    def set(self, **fields) -> None:
        """Replace some fields, e.g. ``set(cpu_busy_other=0.9)``."""
        self._signals = replace(self._signals, **fields)

    def sample(self) -> Signals:
        return self._signals
