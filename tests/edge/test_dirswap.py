"""The folder swap behind every portfolio / level write: killed at any step, a complete copy is
always found afterwards, and the next start puts it back in place. Also: files we write get the
mode `open()` would give them (umask), not mkstemp's 0600. Standard library only (edge env)."""
import os
import shutil
import stat
from pathlib import Path

import pytest

from edge_runtime import dirswap
from edge_runtime.files import atomic_write_bytes


def _fill(version: str):
    """Two files written one after the other: a folder is complete when both say `version`."""
    def fill(tmp: Path) -> None:
        (tmp / "manifest.json").write_text(version)
        (tmp / "variants").mkdir()
        (tmp / "variants" / "a.tflite").write_text(version)
    return fill


def _version(folder: Path):
    """The version a folder completely holds, or None if it is missing or half-written."""
    try:
        a = (folder / "manifest.json").read_text()
        b = (folder / "variants" / "a.tflite").read_text()
    except OSError:
        return None
    return a if a == b else None


def _complete_copies(final: Path) -> set:
    names = [final] + [final.with_name(f".{final.name}.{s}") for s in ("tmp", "new", "old")]
    return {v for v in map(_version, names) if v}


class _Steps:
    """Counts the file-system steps of a swap (renames, deletions, mkdir, fill writes) and kills
    the process (os._exit: no except/finally runs) at step `kill_at`."""

    def __init__(self, monkeypatch, kill_at=None):
        self.n, self.kill_at = 0, kill_at
        for mod, name in ((dirswap.os, "replace"), (dirswap.shutil, "rmtree"),
                          (Path, "mkdir"), (Path, "write_text")):
            monkeypatch.setattr(mod, name, self._wrap(getattr(mod, name)))

    def _wrap(self, fn):
        def step(*a, **k):
            if self.n == self.kill_at:
                os._exit(17)
            self.n += 1
            return fn(*a, **k)
        return step


def _count_steps(tmp_path, monkeypatch) -> int:
    final = tmp_path / "count" / "portfolio"
    dirswap.swap_dir(final, _fill("v1"))
    with monkeypatch.context() as m:
        steps = _Steps(m)
        dirswap.swap_dir(final, _fill("v2"))
    return steps.n


def _killed_swap(final: Path, kill_at: int, version: str, recover_kill_at=None) -> int:
    """Fork; the child swaps in `version` (killed at step `kill_at`), optionally after an
    interrupted recovery; returns the child's exit status."""
    pid = os.fork()
    if pid == 0:   # child: never returns into pytest
        with pytest.MonkeyPatch.context() as m:
            _Steps(m, kill_at)
            try:
                dirswap.swap_dir(final, _fill(version))
            finally:
                os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_killed_at_every_step_a_complete_portfolio_is_always_found(tmp_path, monkeypatch):
    n = _count_steps(tmp_path, monkeypatch)
    assert n >= 8   # mkdir, 3 fill writes, 3 renames, rmtree of old (+ recovery's rmtrees)
    for k in range(n + 1):
        final = tmp_path / f"k{k}" / "portfolio"
        dirswap.swap_dir(final, _fill("v1"))
        code = _killed_swap(final, k, "v2")
        assert code == (17 if k < n else 0)
        # right after the crash: at least one complete copy, the old one unless the new is done
        assert _complete_copies(final) & {"v1", "v2"}, f"step {k}: no complete copy left"
        # the next start recovers a complete folder in place ...
        assert dirswap.recover_dir(final) and _version(final) in ("v1", "v2"), f"step {k}"
        assert sorted(p.name for p in final.parent.iterdir()) == ["portfolio"], f"step {k}"
        # ... and the next swap works as usual
        dirswap.swap_dir(final, _fill("v3"))
        assert _version(final) == "v3"


def test_killed_again_while_recovering_still_finds_a_complete_copy(tmp_path, monkeypatch):
    n = _count_steps(tmp_path, monkeypatch)
    for k in range(1, n):
        for j in range(4):   # a second crash early in the next swap (i.e. inside recovery)
            final = tmp_path / f"k{k}j{j}" / "portfolio"
            dirswap.swap_dir(final, _fill("v1"))
            _killed_swap(final, k, "v2")
            _killed_swap(final, j, "v3")
            assert _complete_copies(final), f"steps {k}/{j}: no complete copy left"
            assert dirswap.recover_dir(final) and _version(final) in ("v1", "v2", "v3")


def test_a_failing_fill_keeps_the_old_folder_and_leaves_no_debris(tmp_path):
    final = tmp_path / "portfolio"
    dirswap.swap_dir(final, _fill("v1"))

    def bad(tmp: Path) -> None:
        (tmp / "manifest.json").write_text("half")
        raise RuntimeError("converter crashed")
    with pytest.raises(RuntimeError):
        dirswap.swap_dir(final, bad)
    assert _version(final) == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portfolio"]


def test_first_swap_and_missing_folder_recovery(tmp_path):
    final = tmp_path / "a" / "portfolio"
    assert not dirswap.recover_dir(final)          # nothing anywhere: nothing to do
    dirswap.swap_dir(final, _fill("v1"))
    assert _version(final) == "v1"
    os.replace(final, final.with_name(".portfolio.old"))   # the state a crash leaves
    assert dirswap.recover_dir(final) and _version(final) == "v1"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "manifest.json", b"{}")
        with open(tmp_path / "plain.tflite", "wb") as fh:   # how variant files are written
            fh.write(b"x")
        assert dirswap.default_file_mode() == 0o666 & ~umask
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.tflite").stat().st_mode) == 0o666 & ~umask
    shutil.rmtree(tmp_path)
