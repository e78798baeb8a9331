"""Corrupt files, failing invokes and non-finite inputs: no crash, no wrong answer."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import IDS, TIME_SCALE, child_env
from edge_runtime.manifest import load_manifest, sha256_bytes, write_manifest
from edge_runtime.switcher import VariantUnavailable

DENSE = "L00-dense-fp32"


def corrupt(folder, vid, seed, nbytes=200, tail=2048, at=None):
    """Overwrite ``nbytes`` random bytes of a variant and update its sha256 and size in the
    manifest (an attacker or a failing SD card that also rewrote the manifest).

    The bytes land at a random offset within the last ``tail`` bytes, where TF's converter puts
    the model's tables (the weight buffers sit before them: bytes there change answers, which
    only the sha256 or a signature can catch). With tflite-runtime 2.14 every seed used below
    segfaults ``Interpreter.__init__`` when the file is loaded in-process.
    """
    path = folder / "variants" / f"{vid}.tflite"
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    pos = int(rng.integers(len(data) - tail, len(data) - nbytes)) if at is None else at
    data[pos:pos + nbytes] = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    doc = json.loads((folder / "manifest.json").read_text())
    for v in doc["variants"]:
        if v["id"] == vid:
            v["sha256"], v["bytes"] = sha256_bytes(bytes(data)), len(data)
    write_manifest(folder, doc)
    return path


SERVE = """
import json, sys
import numpy as np
from edge_runtime.switcher import EdgeSwitcher
sw = EdgeSwitcher.from_portfolio(sys.argv[1], num_threads=1, use_profile=False)
x = np.load(sys.argv[2])
y, vid = sw.predict(x, return_variant=True)
served = {}
for v in sw.available:
    sw.switch_to(v)
    served[v] = sw.predict(x[0]).shape[0]
st = sw.stats()
print(json.dumps({"served_by": vid, "served": served, "probe": st["probe"],
                  "errors": {k: v["error"] for k, v in st["variants"].items()}}))
"""


def _serve(folder, x_path, cache_dir):
    env = child_env(EDGE_RUNTIME_CACHE=str(cache_dir))
    res = subprocess.run([sys.executable, "-c", SERVE, str(folder), str(x_path)],
                         capture_output=True, text=True, timeout=120 * TIME_SCALE, env=env)
    return res


@pytest.mark.parametrize("seed", range(6))
def test_corrupt_variant_with_updated_hash_does_not_take_the_process_down(
        tmp_portfolio, tmp_path, ref_inputs, seed):
    path = corrupt(tmp_portfolio, DENSE, seed)
    x = tmp_path / "x.npy"
    np.save(x, ref_inputs[:2])
    res = _serve(tmp_portfolio, x, tmp_path / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    err = doc["errors"][DENSE]
    assert err.startswith(f"variant '{DENSE}': {path}") and (
        "crashed the TFLite interpreter (SIG" in err or "failed to" in err), err
    others = [v for v in IDS if v != DENSE]
    assert doc["served_by"] == "L02-pruned-fp32"          # next most accurate
    assert doc["served"] == {v: 10 for v in others}        # every other variant serves
    assert all(doc["errors"][v] is None for v in others)
    assert doc["probe"]["probed"] == 4 and doc["probe"]["rejected"] == 1


def test_the_edge_switcher_cli_serves_around_a_corrupt_variant(tmp_portfolio, tmp_path,
                                                              ref_inputs):
    corrupt(tmp_portfolio, DENSE, seed=0)
    x = tmp_path / "x.npy"
    np.save(x, ref_inputs[0])
    env = child_env(EDGE_RUNTIME_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(tmp_portfolio),
                          "--input", str(x), "--json"], capture_output=True, text=True,
                         timeout=120 * TIME_SCALE, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["variant"] == "L02-pruned-fp32"
    assert f"disabling variant {DENSE}" in res.stderr


def test_a_file_the_runtime_refuses_is_disabled_with_its_words(make_switcher, tmp_portfolio,
                                                              ref_inputs):
    corrupt(tmp_portfolio, DENSE, seed=1, nbytes=8, at=0)      # the flatbuffer's root offset
    sw = make_switcher(tmp_portfolio)
    err = sw.stats()["variants"][DENSE]["error"]
    assert err.startswith(f"variant '{DENSE}': ") and DENSE + ".tflite" in err
    assert sw.active == "L02-pruned-fp32" and DENSE not in sw.available
    assert sw.predict(ref_inputs[0]).shape == (10,)


def test_verdicts_are_cached_by_sha256(make_switcher, tmp_portfolio, tmp_path, backend):
    corrupt(tmp_portfolio, DENSE, seed=2)
    cache = tmp_path / "probe.json"
    first = make_switcher(tmp_portfolio, probe_cache=cache).stats()
    assert first["probe"] == {**first["probe"], "enabled": True, "files": 4, "probed": 4,
                              "cached": 0, "rejected": 1}
    doc = json.loads(cache.read_text())
    (key, verdicts), = doc["verdicts"].items()
    assert key.startswith(backend + " ") and len(verdicts) == 4
    sha = load_manifest(tmp_portfolio).variant(DENSE).sha256
    assert verdicts[sha]["ok"] is False and verdicts[sha]["stage"] in ("crash", "load")
    again = make_switcher(tmp_portfolio, probe_cache=cache).stats()
    assert again["probe"]["probed"] == 0 and again["probe"]["cached"] == 4
    assert again["variants"][DENSE]["error"] == first["variants"][DENSE]["error"]
    assert not list(tmp_path.glob(".probe.json.*"))       # atomic writes leave no temp file


def test_safe_load_can_be_switched_off(make_switcher):
    sw = make_switcher(safe_load=False)
    assert sw.stats()["probe"]["enabled"] is False and sw.available == IDS


# ------------------------------------------------------------------------------ invoke failure
def _break_invoke(sw, vid):
    interp = sw._slots[vid].runner.interp

    def invoke():
        raise RuntimeError("Input tensor 15 lacks data")
    interp.invoke = invoke


def test_invoke_failure_fails_over_and_is_counted(make_switcher, ref_inputs, refs):
    sw = make_switcher()
    assert sw.active == DENSE
    _break_invoke(sw, DENSE)
    y, vid = sw.predict(ref_inputs, return_variant=True)
    assert vid == "L02-pruned-fp32"
    np.testing.assert_allclose(y, refs[vid], rtol=1e-5, atol=1e-6)
    st = sw.stats()
    d = st["variants"][DENSE]
    assert d["error"] == (f"variant '{DENSE}': invoke failed: RuntimeError: Input tensor 15 "
                          "lacks data")
    assert d["failures"] == 1 and d["calls"] == 0 and not d["loaded"]
    assert st["failovers"] == 1 and DENSE not in sw.available
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L02-pruned-fp32"
    assert sw.stats()["failovers"] == 1                    # the next call is not a failover


def test_invoke_failure_of_a_pinned_variant_is_an_error(make_switcher, ref_inputs):
    sw = make_switcher()
    sw.switch_to("L04-pruned-fp32")
    _break_invoke(sw, "L04-pruned-fp32")
    with pytest.raises(VariantUnavailable, match="'L04-pruned-fp32': invoke failed: "
                                                 "RuntimeError: Input tensor 15 lacks data"):
        sw.predict(ref_inputs[0])
    sw.resume_policy()
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == DENSE


# ------------------------------------------------------------------------------ non-finite input
@pytest.mark.parametrize("value,word", [(np.nan, "1 NaN"), (np.inf, "1 infinite"),
                                        (-np.inf, "1 infinite")])
def test_non_finite_input_is_a_value_error_naming_it(make_switcher, ref_inputs, value, word):
    sw = make_switcher()
    x = ref_inputs[:3].copy()
    x[1, 4, 5, 0] = value
    with pytest.raises(ValueError, match=rf"input contains {word} value\(s\), first at index "
                                         r"\(1, 4, 5, 0\); .*allow_nonfinite=True"):
        sw.predict(x)
    assert sw.stats()["variants"][DENSE]["calls"] == 0
    assert sw.predict(x, allow_nonfinite=True).shape == (3, 10)      # explicit switch


def test_non_finite_counts_and_float32_overflow(make_switcher, ref_inputs):
    sw = make_switcher()
    x = ref_inputs[0].astype(np.float64)
    x[0, :3, 0] = [np.nan, np.nan, np.inf]
    with pytest.raises(ValueError, match=r"2 NaN and 1 infinite value\(s\), first at index "
                                         r"\(0, 0, 0\)"):
        sw.predict(x)
    big = ref_inputs[0].astype(np.float64)
    big[3, 3, 0] = 1e300
    with pytest.raises(ValueError, match=r"1 infinite value\(s\) \(beyond float32's range in "
                                         r"the float64 input\), first at index \(3, 3, 0\)"):
        sw.predict(big)


def test_switcher_wide_allow_nonfinite(make_switcher, ref_inputs):
    sw = make_switcher(allow_nonfinite=True)
    x = ref_inputs[0].copy()
    x[0, 0, 0] = np.nan
    assert sw.predict(x).shape == (10,)
    with pytest.raises(ValueError, match="NaN"):
        sw.predict(x, allow_nonfinite=False)
    assert sw.predict(ref_inputs[0].astype(np.uint8)).shape == (10,)   # integers: always finite


# ------------------------------------------------------------------------------ verify
def test_verify_passes_a_good_portfolio(portfolio, capsys):
    from edge_runtime.cli import main
    assert main(["verify", str(portfolio)]) == 0
    cap = capsys.readouterr()
    assert "4 of 4 variants usable" in cap.out and "signature unsigned" in cap.out
    for vid in IDS:
        row = next(line for line in cap.out.splitlines() if line.startswith(vid + " "))
        assert row.split()[-2:] == ["1x10", "ok"]
    assert "L04-pruned-int8  int8  1x28x28x1 int8" in cap.out
    assert [l for l in cap.err.splitlines() if l.startswith("edge-switcher")] == []


def test_verify_reports_one_line_per_problem(tmp_portfolio, capsys):
    from edge_runtime.cli import main
    crashed = corrupt(tmp_portfolio, DENSE, seed=3)
    doc = json.loads((tmp_portfolio / "manifest.json").read_text())
    doc["variants"][2]["precision"] = "int8"          # L04-pruned-fp32 claims int8 input
    write_manifest(tmp_portfolio, doc)
    tampered = tmp_portfolio / "variants" / "L02-pruned-fp32.tflite"
    tampered.write_bytes(tampered.read_bytes()[:-1] + b"\0")
    assert main(["verify", str(tmp_portfolio)]) == 1
    cap = capsys.readouterr()
    lines = [l for l in cap.err.splitlines() if l.startswith("edge-switcher: ")]
    assert len(lines) == 3, cap.err
    assert lines[0].startswith("edge-switcher: variant 'L02-pruned-fp32': ") and \
        "does not match its sha256" in lines[0]
    assert lines[1].startswith(f"edge-switcher: variant '{DENSE}': {crashed}")
    assert lines[2] == ("edge-switcher: variant 'L04-pruned-fp32' (variants/L04-pruned-fp32."
                        "tflite): precision int8 means quantised int8/uint8 input, the model "
                        "takes float32")
    assert "1 of 4 variants usable" in cap.out
    # the verdicts are remembered: info now knows which file does not load, without loading it
    assert main(["info", str(tmp_portfolio)]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(DENSE + " "))
    assert row.split()[-2:] == ["NO", "ok"]


def test_when_no_checking_process_can_start_files_load_unchecked_with_a_warning(
        make_switcher, monkeypatch, tmp_path, caplog, ref_inputs):
    import edge_runtime.probe as probe
    monkeypatch.setattr(probe.sys, "executable", str(tmp_path / "no-python"))
    sw = make_switcher(probe_cache=tmp_path / "probe.json", preload="lazy")
    st = sw.stats()
    assert sw.available == IDS and st["probe"]["rejected"] == 0
    assert "cannot check the file in a child process" in caplog.text
    assert "no-python" in caplog.text
    assert not (tmp_path / "probe.json").exists()          # nothing definite to remember
    assert sw.predict(ref_inputs[0]).shape == (10,)
