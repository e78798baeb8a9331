import subprocess
import sys

from shifter_tf.cli import COMMANDS, main


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "shifter_tf.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("train", "prune", "export", "report", "run", "pai", "tune"):
        assert name in out and name in COMMANDS


def test_bad_config_is_one_readable_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lottery:\n  levels: -1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lottery.levels" in err[0] and "bad.yaml" in err[0]


def test_missing_config_and_bad_override(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "x.yaml"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
