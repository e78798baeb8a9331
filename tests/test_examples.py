"""The examples/ scripts run end to end (tiny settings), as a user would run them."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_keras3_training_script(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "keras3_script.py"),
                          "--out", str(tmp_path), "--tiny"], capture_output=True, text=True,
                         timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.rindex("{\n"):])
    levels = summary["levels"]
    assert len(levels) == 3 and levels[0] > 0.6          # it learned the colours
    # the pruned level, reloaded by Keras 3, is as accurate as the sparse level it came from
    assert abs(summary["pruned_keras3_accuracy"] - levels[-1]) <= 1 / 45 + 1e-9
    assert summary["pruned_params"] < summary["dense_params"]
    assert summary["normalization_source"] == "model"       # the model rescales itself
    assert summary["variants"] >= 6                         # dense + pruned, fp32 + int8
    log = (tmp_path / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch") and len(log) >= 2     # the Keras 3 callback ran
