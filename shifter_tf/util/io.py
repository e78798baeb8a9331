"""Atomic file writes: a crash mid-write leaves the old file (or none), never half a file.

A write the file system refuses (full, over quota, read-only, no permission) becomes one
`StorageError` naming the folder and what was being written, here and only here: every writer
below goes through `storage_errors`, and the CLI maps a stray refusal with `storage_error`.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from edge_runtime.dirswap import swap_dir
from edge_runtime.files import atomic_write_bytes  # the device side's writer: temp, fsync, rename
from shifter_tf.errors import RunBusyError, StorageError

#: errno -> what the user is told; the refusals a user fixes (space, quota, mount, permissions)
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device",
                  errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                  errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}

Text = Union[str, Callable[[], str]]
Size = Union[int, None, Callable[[], Optional[int]]]


def free_bytes(folder: str | Path) -> Optional[int]:
    """Bytes free for this user on the file system that holds `folder` (or its nearest parent)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _refusal(e: BaseException) -> Optional[OSError]:
    """The OSError with a storage errno in `e` or in what caused it (Keras, zipfile and h5py
    re-raise or chain the file system's own error)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, StorageError):
            return e.oserror
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return e
        e, seen = (e.__cause__ or e.__context__), seen + 1
    return None


def storage_error(e: BaseException, folder: Optional[str | Path] = None,
                  what: Optional[Text] = None, needed: Size = None) -> Optional[StorageError]:
    """The one-line `StorageError` for a refused write, or None if `e` is something else.

    `folder`: where the write went (default: the folder of the file the error names); `what`:
    what was being written; `needed`: bytes the whole write needs, when it can be known."""
    os_err = _refusal(e)
    if os_err is None:
        return None
    if folder is None:       # a write outside the helpers: the file the error names
        name = os_err.filename
        folder = Path(name).parent if name else Path(".")
        what = what or (Path(name).name if name else None)
    what = what() if callable(what) else what
    needed = needed() if callable(needed) else needed
    free = free_bytes(folder)
    msg = f"{folder}: {STORAGE_ERRNOS[os_err.errno]}"
    msg += f" while writing {what}" if what else ""
    if os_err.errno in (errno.ENOSPC, errno.EDQUOT):
        if needed:
            msg += f"; it needs at least {needed:,} bytes"
        if free is not None:
            msg += f"{',' if needed else ';'} {free:,} bytes are free there"
        msg += ("; the previous copy (if any) is intact and nothing half-written was left: "
                "free some space or write elsewhere, then run again")
    else:
        msg += ("; the previous copy (if any) is intact: make the folder writable or write "
                "elsewhere, then run again")
    return StorageError(msg, os_err)


@contextlib.contextmanager
def storage_errors(folder: str | Path, what: Text, needed: Size = None) -> Iterator[None]:
    """Turn a refused write inside the block into one `StorageError` about `folder`."""
    try:
        yield
    except Exception as e:
        err = storage_error(e, folder, what, needed)
        if err is None:
            raise
        raise err from None


def check_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse before a long job when `folder`'s file system has fewer than `needed` bytes free."""
    free = free_bytes(folder)
    if free is not None and needed > free:
        raise StorageError(f"{folder}: not enough space for {what}: it needs at least "
                           f"{needed:,} bytes, {free:,} bytes are free there; nothing was "
                           "written: free some space or write elsewhere, then run again",
                           OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold `folder`/.lock (an exclusive flock) while a process writes the run: a second writer
    gets RunBusyError instead of interleaving its levels with the first's."""
    path = Path(folder) / ".lock"
    with storage_errors(folder, path.name):     # a read-only run folder: StorageError, as writes
        f = open(path, "a")
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunBusyError(f"{folder}: another process is writing this run ({path} is "
                               "locked); wait for it to finish or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    with storage_errors(path.parent, path.name):
        atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """Call `save(tmp_path)` for a writer that needs a file name (Keras, np.savez), then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with storage_errors(path.parent, path.name):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def atomic_dir(final: str | Path, fill: Callable[[Path], None], what: Text = None,
               needed: Size = None) -> None:
    """Build a directory with `fill(tmp)`, then swap it in for `final`; a crash at any step
    leaves a complete copy that the next call (or `edge_runtime.dirswap.recover_dir`) restores.
    A refused write removes the half-built copy and is a `StorageError` naming `final` and
    `what` (default: the folder's name)."""
    final = Path(final)
    with storage_errors(final, what or f"{final.name}/", needed):
        swap_dir(final, fill)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
