"""A variant that does not fit the manifest's task is never served; a device that starts in the
middle of an interrupted portfolio swap finds the complete copy (or is told which one to use).

CLI cases run `python -m edge_runtime` in a subprocess: the documented exit code (0 when another
variant serves, 1 for an error), one line naming the culprit, no traceback, every file intact.
"""
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, IDS, ROOT, product_lines
from edge_runtime.manifest import ManifestError, sha256_bytes, write_manifest
from edge_runtime.switcher import VariantUnavailable

FIVE = FIXTURES / "odd" / "five-class.tflite"   # valid, same input, 5 classes (make_edge_fixtures)
DENSE = "L00-dense-fp32"


def replace_variant(folder: Path, vid: str, data: bytes, **fields) -> None:
    """Put `data` in place of a variant's file and update its sha256 and size (and `fields`) in
    the manifest, as someone with write access to an unsigned portfolio could."""
    path = folder / "variants" / f"{vid}.tflite"
    path.write_bytes(data)
    doc = json.loads((folder / "manifest.json").read_text())
    for v in doc["variants"]:
        if v["id"] == vid:
            v.update(sha256=sha256_bytes(data), bytes=len(data), **fields)
    write_manifest(folder, doc)


def tree_hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def edge_cli(*args, cwd=ROOT, cache=None):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    if cache:
        env["EDGE_RUNTIME_CACHE"] = str(cache)
    r = subprocess.run([sys.executable, "-m", "edge_runtime", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=120, env=env)
    return r.returncode, product_lines(r.stderr), r.stdout, r.stderr


# ------------------------------------------------------------------ a variant that does not fit
@pytest.mark.parametrize("safe_load", [True, False])
def test_wrong_shape_variant_is_disabled_and_another_serves(tmp_portfolio, make_switcher,
                                                            ref_inputs, safe_load):
    """A valid 5-class file in place of the 10-class dense variant (sha256 updated): found by
    the isolated check's report, or (safe_load=False) when the interpreter loads it."""
    replace_variant(tmp_portfolio, DENSE, FIVE.read_bytes())
    sw = make_switcher(tmp_portfolio, safe_load=safe_load)
    y, vid = sw.predict(ref_inputs, return_variant=True)
    assert vid != DENSE and y.shape == (len(ref_inputs), 10)
    err = sw.stats()["variants"][DENSE]["error"]
    assert "output shape [1, 5], expected [1, 10]" in err and "task" in err, err
    assert DENSE not in sw.available and set(sw.available) == set(IDS) - {DENSE}
    with pytest.raises(VariantUnavailable, match=r"output shape \[1, 5\]"):
        sw.switch_to(DENSE)


def test_precision_that_does_not_match_the_file_is_disabled(tmp_portfolio, make_switcher,
                                                            ref_inputs):
    """A full-int8 file (int8 input) listed as an fp32 variant would be fed unquantised floats."""
    int8 = (tmp_portfolio / "variants" / "L04-pruned-int8.tflite").read_bytes()
    replace_variant(tmp_portfolio, "L04-pruned-fp32", int8)
    sw = make_switcher(tmp_portfolio)
    err = sw.stats()["variants"]["L04-pruned-fp32"]["error"]
    assert "input dtype int8, expected float32 for a fp32 variant" in err, err
    assert sw.predict(ref_inputs[0]).shape == (10,)


def test_every_variant_wrong_is_one_error(tmp_portfolio, make_switcher):
    for vid in IDS:
        replace_variant(tmp_portfolio, vid, FIVE.read_bytes(), precision="fp32")
    with pytest.raises(VariantUnavailable, match="no variant is usable.*output shape"):
        make_switcher(tmp_portfolio)


def test_cli_run_serves_another_variant_and_refuses_the_wrong_one(tmp_portfolio, tmp_path,
                                                                  ref_inputs):
    replace_variant(tmp_portfolio, DENSE, FIVE.read_bytes())
    before = tree_hashes(tmp_portfolio)
    x = tmp_path / "x.npy"
    np.save(x, ref_inputs[:2])
    rc, lines, out, raw = edge_cli("run", tmp_portfolio, "--input", x, "--json",
                                   cache=tmp_path / "cache")
    assert rc == 0 and "Traceback" not in raw, raw
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["variant"] != DENSE and np.array(doc["scores"]).shape == (2, 10)
    assert len(lines) == 1 and DENSE in lines[0] and "output shape [1, 5]" in lines[0], lines
    rc, lines, out, raw = edge_cli("run", tmp_portfolio, "--input", x, "--variant", DENSE,
                                   cache=tmp_path / "cache")
    assert rc == 1 and "Traceback" not in raw, raw
    assert lines[-1].startswith("edge-switcher: error: ") and DENSE in lines[-1]
    assert "output shape [1, 5], expected [1, 10]" in lines[-1]
    assert tree_hashes(tmp_portfolio) == before


# ------------------------------------------------------------------ an interrupted swap
def interrupted(folder: Path, leftover: str) -> Path:
    """What a power cut mid-swap leaves: only the complete `.NAME.new` (or `.NAME.old`)."""
    copy = folder.with_name(f".{folder.name}.{leftover}")
    os.replace(folder, copy)
    return copy


@pytest.mark.parametrize("leftover", ["new", "old"])
def test_from_portfolio_restores_an_interrupted_swap(tmp_portfolio, make_switcher, ref_inputs,
                                                     leftover):
    before = tree_hashes(tmp_portfolio)
    copy = interrupted(tmp_portfolio, leftover)
    (tmp_portfolio.with_name(f".{tmp_portfolio.name}.tmp")).mkdir()   # a writer's: left alone
    sw = make_switcher(tmp_portfolio)
    assert sw.predict(ref_inputs[0]).shape == (10,)
    assert not copy.exists() and tree_hashes(tmp_portfolio) == before
    assert tmp_portfolio.with_name(f".{tmp_portfolio.name}.tmp").is_dir()


@pytest.mark.parametrize("command", ["info", "verify", "bench", "run", "demo"])
def test_every_command_restores_an_interrupted_swap(tmp_portfolio, tmp_path, ref_inputs,
                                                    command):
    before = tree_hashes(tmp_portfolio)
    interrupted(tmp_portfolio, "new")
    np.save(tmp_path / "x.npy", ref_inputs[0])
    extra = {"bench": ["--no-write", "--threads", "1", "--runs", "2", "--warmup", "1"],
             "run": ["--input", tmp_path / "x.npy"], "demo": ["--calls", "2"],
             "verify": [], "info": []}[command]
    rc, lines, out, raw = edge_cli(command, tmp_portfolio, *extra, cache=tmp_path / "cache")
    assert rc == 0 and "Traceback" not in raw, raw
    assert any("restored from" in l for l in lines), lines
    assert tree_hashes(tmp_portfolio) == before
    assert not tmp_portfolio.with_name(f".{tmp_portfolio.name}.new").exists()


@contextlib.contextmanager
def read_only_folder(path: Path):
    """`path` on a read-only file system (a tmpfs remounted ro, as root) or None."""
    path.mkdir(parents=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        yield None
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_where_it_may_not_write_it_names_the_complete_copy(tmp_path, portfolio, monkeypatch):
    from edge_runtime.cli import main

    with read_only_folder(tmp_path / "ro") as ro:
        if ro is not None:
            shutil.copytree(portfolio, ro / ".portfolio.new")
            r = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True)
            if r.returncode != 0:
                ro = None
        if ro is None:    # no mount here: the rename is refused by an injected EROFS instead
            ro = tmp_path / "inj"
            shutil.copytree(portfolio, ro / ".portfolio.new")

            def refuse(*a, **k):
                raise OSError(30, "Read-only file system")
            monkeypatch.setattr("edge_runtime.manifest.restore_dir", refuse)
            rcs = [main(["info", str(ro / "portfolio")])]
            copy = ro / ".portfolio.new"
            assert rcs == [1] and copy.is_dir()
            with pytest.raises(ManifestError, match=r"\.portfolio\.new"):
                from edge_runtime.switcher import EdgeSwitcher
                EdgeSwitcher.from_portfolio(ro / "portfolio")
            return
        before = tree_hashes(ro / ".portfolio.new")
        rc, lines, out, raw = edge_cli("info", ro / "portfolio", cache=tmp_path / "cache")
        assert rc == 1 and "Traceback" not in raw, raw
        assert len(lines) == 1, lines
        assert f"use {ro / '.portfolio.new'} as the portfolio" in lines[0], lines
        assert "Read-only file system" in lines[0]
        # told which copy to use, the user can point every command at it
        rc, _, out, raw = edge_cli("info", ro / ".portfolio.new", cache=tmp_path / "cache")
        assert rc == 0, raw
        assert tree_hashes(ro / ".portfolio.new") == before
