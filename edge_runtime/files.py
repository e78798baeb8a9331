"""Variant files: sha256, size/hash verification of the very bytes loaded, atomic writes.

Standard library only; shared by the host exporter and the device.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

from edge_runtime.dirswap import default_file_mode
from edge_runtime.schema import PathLike, Variant, VariantFileError


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a partial one.

    Temp file in the same folder (so ``os.replace`` is a rename on one file system), fsync of the
    file, rename, then a best-effort fsync of the folder so the rename survives power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.chmod(tmp, default_file_mode())   # as open() would: mkstemp makes it 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)



def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(folder: PathLike, relpath: PathLike) -> Dict[str, Any]:
    """``{"file", "sha256", "bytes"}`` of a variant file, for building a variant entry."""
    rel = Path(relpath).as_posix()
    full = Path(folder) / rel
    return {"file": rel, "sha256": sha256_file(full), "bytes": full.stat().st_size}


def _variant_fields(variant: Union[Variant, Mapping[str, Any]]) -> Tuple[str, str, int, str]:
    if isinstance(variant, Variant):
        return variant.id, variant.file, variant.bytes, variant.sha256
    return variant["id"], variant["file"], int(variant["bytes"]), variant["sha256"]


def check_variant_bytes(path: Path, variant: Union[Variant, Mapping[str, Any]],
                        data: bytes) -> None:
    """Check already-read file content against the manifest entry (size, then sha256)."""
    vid, _, size, sha = _variant_fields(variant)
    if len(data) != size:
        what = "truncated" if len(data) < size else "altered"
        raise VariantFileError(f"variant {vid!r}: {path} is {what}: {len(data)} bytes, the "
                               f"manifest says {size}")
    digest = sha256_bytes(data)
    if digest != sha:
        raise VariantFileError(f"variant {vid!r}: {path} does not match its sha256 (file "
                               f"{digest[:12]}…, manifest {sha[:12]}…): tampered or corrupt")


def read_variant_file(folder: PathLike, variant: Union[Variant, Mapping[str, Any]]) -> bytes:
    """Read a variant's file and verify it; the returned bytes are exactly what was verified."""
    vid, rel, _, _ = _variant_fields(variant)
    path = Path(folder) / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VariantFileError(f"variant {vid!r}: file {path} is missing") from None
    except OSError as e:
        raise VariantFileError(f"variant {vid!r}: cannot read {path}: {e.strerror or e}") from None
    check_variant_bytes(path, variant, data)
    return data


def verify_variant_file(folder: PathLike, variant: Union[Variant, Mapping[str, Any]]) -> Path:
    """Check that a variant's file exists with the declared size and sha256; return its path."""
    read_variant_file(folder, variant)
    return Path(folder) / _variant_fields(variant)[1]
