"""/proc readers return plausible numbers; the sampler is rate-limited."""
import time

from edge_runtime import monitor


def test_proc_readers():
    mem = monitor.read_meminfo()
    assert 0 < mem["MemAvailable"] <= mem["MemTotal"]
    assert 1 < monitor.rss_mb() <= monitor.peak_rss_mb()
    assert monitor.read_loadavg() >= 0
    assert monitor.cpu_count() >= 1


def test_system_monitor_samples_and_caches():
    m = monitor.SystemMonitor(min_interval_s=0.05)
    a = m.sample()
    assert a is m.sample()                                  # cached within the interval
    assert 0.0 <= a.cpu_busy_other <= 1.0 and a.mem_available_mb > 0 and a.rss_mb > 0
    time.sleep(0.06)
    b = m.sample()
    assert b is not a and b.time > a.time and 0.0 <= b.cpu_busy_other <= 1.0


def test_static_monitor():
    s = monitor.StaticMonitor(cpu_busy_other=0.2, cpu_count_=4)
    assert (s.sample().cpu_busy_other, s.sample().cpu_count) == (0.2, 4)
    s.set(cpu_busy_other=0.9, mem_available_mb=100.0)
    assert (s.sample().cpu_busy_other, s.sample().mem_available_mb) == (0.9, 100.0)
