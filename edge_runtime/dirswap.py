"""Swap a whole folder (a portfolio, a level) for a new one so a complete copy always survives.

    NAME/          the live folder
    .NAME.tmp/     being filled: never complete, always safe to delete
    .NAME.new/     complete, not yet in place
    .NAME.old/     the previous complete copy, deleted once NAME is the new one

A crash at any step leaves NAME, or .NAME.new, or .NAME.old complete; `recover_dir` (called at the
start of every swap, and usable by a reader) puts the newest complete copy back at NAME. The old
folder is deleted only after the new one is in place. Standard library only (device side too).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def default_file_mode() -> int:
    """The mode `open()` gives a new file under this process' umask (mkstemp gives 0600)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)   # no /proc: read the umask by setting it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _names(final: Path) -> tuple[Path, Path, Path]:
    return tuple(final.with_name(f".{final.name}.{s}") for s in ("tmp", "new", "old"))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _swap_in(new: Path, final: Path, old: Path) -> None:
    """`new` (complete) becomes `final`; the previous `final` is deleted only afterwards."""
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: PathLike) -> bool:
    """Finish or undo a swap of `final` that was interrupted; True if `final` exists afterwards."""
    final = Path(final)
    tmp, new, old = _names(final)
    if not final.exists():
        for copy in (new, old):          # the newest complete copy first
            if copy.exists():
                os.replace(copy, final)
                _fsync_dir(final.parent)
                break
    if final.exists():
        if new.exists():                 # new was complete, the swap had not started
            _swap_in(new, final, old)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return final.exists()


def complete_copy(final: PathLike) -> Optional[Path]:
    """The complete copy an interrupted swap left beside a missing `final` (.NAME.new, else
    .NAME.old), or None."""
    final = Path(final)
    _, new, old = _names(final)
    return next((c for c in (new, old) if c.is_dir()), None)


def restore_dir(final: PathLike) -> Optional[Path]:
    """For a reader (a device starting up): if `final` is missing but an interrupted swap left
    a complete copy, rename that copy back to `final` and return the copy's old path.

    Unlike `recover_dir` it never deletes anything: a `.NAME.tmp` may be a writer's folder being
    filled right now. Raises OSError when the rename is refused (a read-only folder): the caller
    then names the copy to use.
    """
    final = Path(final)
    if final.exists():
        return None
    copy = complete_copy(final)
    if copy is None:
        return None
    os.replace(copy, final)
    _fsync_dir(final.parent)
    return copy


def swap_dir(final: PathLike, fill: Callable[[Path], None]) -> None:
    """Build a folder with `fill(tmp)`, then swap it in for `final` (see the module doc)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, new, old = _names(final)
    recover_dir(final)
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, new)                 # from here on the new copy counts as complete
    _swap_in(new, final, old)
