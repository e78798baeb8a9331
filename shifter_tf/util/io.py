"""Atomic file writes: a crash mid-write leaves the old file (or none), never half a file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime.dirswap import swap_dir
from edge_runtime.files import atomic_write_bytes  # the device side's writer: temp, fsync, rename


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """Call `save(tmp_path)` for a writer that needs a file name (Keras, np.savez), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_dir(final: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with `fill(tmp)`, then swap it in for `final`; a crash at any step
    leaves a complete copy that the next call (or `edge_runtime.dirswap.recover_dir`) restores."""
    swap_dir(final, fill)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
