"""edge-switcher CLI: info, bench, run, demo; bad input is one readable line, non-zero, no trace."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import IDS, ROOT, TIME_SCALE, child_env, product_lines
from edge_runtime.cli import main


def test_info_lists_variants_and_verification(portfolio, capsys):
    assert main(["info", str(portfolio)]) == 0
    out = capsys.readouterr().out
    assert "mnist-fixture: input [28, 28, 1] float32, 10 classes" in out
    for vid in IDS:
        line = next(l for l in out.splitlines() if l.startswith(vid + " "))
        assert line.rstrip().endswith("ok")


def test_info_flags_a_tampered_file(tmp_portfolio, capsys):
    p = tmp_portfolio / "variants" / "L02-pruned-fp32.tflite"
    p.write_bytes(p.read_bytes()[:-1] + b"\0")
    assert main(["info", str(tmp_portfolio)]) == 1
    cap = capsys.readouterr()
    assert "L02-pruned-fp32" in next(l for l in cap.out.splitlines() if l.endswith("BAD"))
    assert cap.err.strip().splitlines() == [
        f"edge-switcher: variant 'L02-pruned-fp32': {p} does not match its sha256 " +
        cap.err.split("does not match its sha256 ", 1)[1].strip()]


def test_bench_writes_a_device_profile_the_switcher_uses(tmp_portfolio, capsys, backend):
    assert main(["bench", str(tmp_portfolio), "--threads", "1", "--runs", "3",
                 "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "p50 ms@1" in out and "wrote" in out
    doc = json.loads((tmp_portfolio / "device_profile.json").read_text())
    assert set(doc["variants"]) == set(IDS) and doc["backend"].startswith(backend + " ")
    for e in doc["variants"].values():
        assert e["latency_ms"]["1"] > 0 and e["init_ms"] > 0 and e["memory_mb"] > 0
    assert main(["info", str(tmp_portfolio)]) == 0
    assert f"device_profile.json ({backend} " in capsys.readouterr().out


def test_run_predicts_a_batch_and_a_single_example(portfolio, tmp_path, ref_inputs, refs,
                                                   capsys):
    x = tmp_path / "x.npy"
    np.save(x, ref_inputs)
    assert main(["run", str(portfolio), "--input", str(x), "--variant", "L02-pruned-fp32",
                 "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["variant"] == "L02-pruned-fp32"
    np.testing.assert_allclose(np.array(doc["scores"]), refs["L02-pruned-fp32"], rtol=1e-5,
                               atol=1e-6)
    np.save(x, ref_inputs[0])
    assert main(["run", str(portfolio), "--input", str(x), "--budget-ms", "50"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[0] == "0" and "served by" in out


def test_demo_prints_which_variant_served_each_phase(portfolio, capsys):
    assert main(["demo", str(portfolio), "--calls", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = {l.split("  ")[0]: l for l in out.splitlines()}
    assert "L00-dense-fp32 x3" in rows["no budget, idle"]
    assert "L02-pruned-fp32 x3" in rows["budget just below the slowest"]
    assert "L04-pruned-int8 x3" in rows["budget below every variant"]
    assert "L00-dense-fp32" not in rows["relaxed budget, CPU 85% busy"]
    assert "L00-dense-fp32 x3" in rows["relaxed budget, CPU idle again"]
    assert "decision time p50" in out


@pytest.mark.parametrize("argv,pattern", [
    (["info", "/no/such/dir"], "edge-switcher: error: /no/such/dir: no such portfolio folder or manifest file"),
    (["run", "{P}", "--input", "/no/x.npy"], "edge-switcher: error: input file /no/x.npy does not exist"),
    (["run", "{P}", "--input", "{BAD}"], "edge-switcher: error: input has shape (3, 3); expected (28, 28, 1)"),
    (["run", "{P}", "--input", "{TXT}"], "edge-switcher: error: cannot read"),
    (["run", "{P}", "--input", "{GOOD}", "--variant", "nope"], "edge-switcher: error: unknown variant 'nope'"),
    (["run", "{P}", "--input", "{GOOD}", "--budget-ms", "-3"], "edge-switcher: error: latency budget must be > 0"),
    (["run", "{P}"], "edge-switcher: usage error: the following arguments are required: --input"),
    (["frobnicate"], "edge-switcher: usage error: argument COMMAND: invalid choice"),
    (["demo", "{P}", "--calls", "0"], "edge-switcher: usage error: --calls and --runs"),
])
def test_bad_input_is_one_line_nonzero_exit(portfolio, tmp_path, ref_inputs, capsys, argv,
                                            pattern):
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), np.float32))
    np.save(tmp_path / "good.npy", ref_inputs[0])
    (tmp_path / "t.npy").write_text("not numpy")
    subst = {"{P}": str(portfolio), "{BAD}": str(tmp_path / "bad.npy"),
             "{TXT}": str(tmp_path / "t.npy"), "{GOOD}": str(tmp_path / "good.npy")}
    code = main([subst.get(a, a) for a in argv])
    err = capsys.readouterr().err
    lines = product_lines(err)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith(pattern), err
    assert "Traceback" not in err


def test_console_entry_bad_schema_version_no_traceback(tmp_portfolio):
    doc = json.loads((tmp_portfolio / "manifest.json").read_text())
    doc["schema_version"] = 3
    (tmp_portfolio / "manifest.json").write_text(json.dumps(doc))
    out = subprocess.run([sys.executable, "-m", "edge_runtime", "info", str(tmp_portfolio)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60 * TIME_SCALE,
                         env=child_env())
    assert out.returncode == 1
    assert out.stderr.strip() == (f"edge-switcher: error: {tmp_portfolio}/manifest.json: "
                                  "schema_version: unknown schema_version 3 (this edge_runtime "
                                  "reads version 1); re-export the portfolio or upgrade "
                                  "edge_runtime")
