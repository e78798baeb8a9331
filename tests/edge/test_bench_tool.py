"""tools.bench.switcher runs end to end in this (TensorFlow-free) environment."""
import json
import subprocess
import sys

from conftest import ROOT, TIME_SCALE


def test_bench_switcher_smoke(portfolio, tmp_path, backend):
    out = tmp_path / "bench" / "switcher.json"
    res = subprocess.run([sys.executable, "-m", "tools.bench.switcher",
                          str(portfolio), "--out", str(out), "--repeats", "1", "--iters", "100",
                          "--startup-variants", "6"],
                         capture_output=True, text=True, timeout=120 * TIME_SCALE, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["variants"] == 4 and doc["backend"].startswith(backend + " ")
    assert 0 < doc["switch_us"]["p50"] < doc["reload_switch_ms"]["p50"] * 1e3
    assert 0 < doc["decide_us"]["p50"] and 0 < doc["decide_switch_us"]["p50"]
    assert set(doc["cold_load"]) == {"L00-dense-fp32", "L02-pruned-fp32", "L04-pruned-fp32",
                                     "L04-pruned-int8"}
    rss = doc["rss_mb"]
    assert 0 < rss["runtime_only"] < rss["switcher_all_preloaded"]
    assert "decision + switch" in res.stdout
    st = doc["startup"]           # the cost of checking files in a child process first
    assert st["portfolio"] == "synthetic" and st["variants"] == st["available"] == 6
    assert st["probed_first"] == 6 and st["probed_cached"] == 0
    assert min(st["unprotected_ms"], st["first_start_ms"], st["cached_start_ms"]) > 0
    assert "later starts, verdicts cached" in res.stdout
