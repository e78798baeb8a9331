"""Portfolio manifest: schema, validation, atomic writing and file verification.

This module is the contract between the host exporter (``shifter_tf``) and the device. It imports
only the standard library so the host can use it to write manifests and the device to read them.

Folder layout::

    portfolio/
      manifest.json
      variants/<id>.tflite
      device_profile.json      (optional, written on the device by ``edge-switcher bench``)

Host-side use::

    from edge_runtime.manifest import file_entry, new_manifest, write_manifest
    entry = {"id": "L03-pruned-fp32", **file_entry(folder, "variants/L03-pruned-fp32.tflite"),
             "kind": "pruned", "precision": "fp32", ...}
    write_manifest(folder, new_manifest(task, [entry, ...]))

Unknown top-level, task and variant keys are kept (``extra``) and ignored, so a newer exporter can
add fields without breaking older devices; a change that older readers must refuse bumps
``SCHEMA_VERSION``.

The module is split along its seams: ``schema`` (constants, errors, dataclasses), ``validation``
(``validate``), ``files`` (sha256, file verification, atomic writes) and this one (reading and
writing manifests). Everything is re-exported here, so ``from edge_runtime.manifest import X``
keeps working for all of them.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from edge_runtime.dirswap import complete_copy, restore_dir
from edge_runtime.files import (atomic_write_bytes, check_variant_bytes, file_entry,  # noqa: F401
                                read_variant_file, sha256_bytes, sha256_file,
                                verify_variant_file)
from edge_runtime.schema import (DEFAULT_GENERATOR, INPUT_DTYPES, KINDS,  # noqa: F401
                                 MANIFEST_NAME, PRECISIONS, SCHEMA_VERSION, Manifest,
                                 ManifestError, Normalization, PathLike, Task, Variant,
                                 VariantFileError)
from edge_runtime.validation import validate  # noqa: F401


# --------------------------------------------------------------------------------------------
# Building dataclasses from a validated document
# --------------------------------------------------------------------------------------------
_TASK_KEYS = {"name", "input_shape", "input_dtype", "normalization", "labels", "num_classes"}
_VARIANT_KEYS = {"id", "file", "sha256", "bytes", "kind", "precision", "level", "density",
                 "params_total", "params_nonzero", "macs", "accuracy", "latency_ms",
                 "latency_p90_ms", "init_ms", "parent", "edgetpu"}
_TOP_KEYS = {"schema_version", "created", "generator", "task", "variants"}


def _float_map(m: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    return {str(k): float(v) for k, v in (m or {}).items()}


def from_dict(doc: Dict[str, Any], source: str = "<manifest>",
              folder: Optional[PathLike] = None) -> Manifest:
    """Validate ``doc`` and turn it into a ``Manifest``."""
    validate(doc, source)
    t = doc["task"]
    norm = t.get("normalization")
    task = Task(
        name=t["name"], input_shape=tuple(int(d) for d in t["input_shape"]),
        input_dtype=t["input_dtype"], num_classes=int(t["num_classes"]),
        labels=tuple(t.get("labels") or ()),
        normalization=None if norm is None else Normalization(
            scale=float(norm.get("scale", 1.0)),
            mean=tuple(float(x) for x in norm.get("mean", [0.0])),
            std=tuple(float(x) for x in norm.get("std", [1.0]))),
        extra={k: v for k, v in t.items() if k not in _TASK_KEYS})
    variants = tuple(
        Variant(
            id=v["id"], file=v["file"], sha256=v["sha256"], bytes=int(v["bytes"]),
            kind=v["kind"], precision=v["precision"], level=int(v["level"]),
            density=float(v["density"]), params_total=int(v["params_total"]),
            params_nonzero=int(v["params_nonzero"]), macs=int(v["macs"]),
            accuracy=None if v["accuracy"] is None else float(v["accuracy"]),
            latency_ms=_float_map(v["latency_ms"]),
            latency_p90_ms=_float_map(v.get("latency_p90_ms")),
            init_ms=None if v.get("init_ms") is None else float(v["init_ms"]),
            parent=v.get("parent"), edgetpu=bool(v.get("edgetpu", False)),
            extra={k: x for k, x in v.items() if k not in _VARIANT_KEYS})
        for v in doc["variants"])
    return Manifest(schema_version=int(doc["schema_version"]), task=task, variants=variants,
                    created=doc.get("created"), generator=doc.get("generator"),
                    folder=None if folder is None else Path(folder), source=source,
                    extra={k: v for k, v in doc.items() if k not in _TOP_KEYS})


def manifest_path(folder_or_file: PathLike) -> Path:
    """``folder/manifest.json`` for a folder, the path itself for a file."""
    p = Path(folder_or_file)
    return p / MANIFEST_NAME if p.is_dir() else p


def recover_portfolio(folder_or_file: PathLike) -> None:
    """A portfolio folder that an interrupted swap left missing is put back from its complete
    copy (``.portfolio.new`` or ``.portfolio.old``, see ``edge_runtime.dirswap``); where that
    is not allowed (a read-only folder), ``ManifestError`` says which copy to use."""
    p = Path(folder_or_file)
    if p.exists():
        return
    folder = p.parent if p.name == MANIFEST_NAME else p
    try:
        copy = restore_dir(folder)
    except OSError as e:
        copy = complete_copy(folder)
        raise ManifestError(
            f"{folder}: missing, but an interrupted update left a complete copy at {copy} "
            f"that cannot be moved back here ({e.strerror or e}); use {copy} as the portfolio "
            f"(or rename it to {folder.name} where you may write)") from None
    if copy is not None:
        import logging
        logging.getLogger("edge_runtime").warning(
            "%s: restored from %s, the complete copy an interrupted update left", folder, copy)


def read_manifest_bytes(folder_or_file: PathLike) -> "tuple[Path, bytes]":
    """The manifest's path and its raw bytes (what a signature covers); a portfolio an
    interrupted update left aside is put back first (``recover_portfolio``)."""
    recover_portfolio(folder_or_file)
    if not Path(folder_or_file).exists():
        raise ManifestError(f"{folder_or_file}: no such portfolio folder or manifest file")
    path = manifest_path(folder_or_file)
    try:
        return path, path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest (is this a portfolio folder?)") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest: {e.strerror or e}") from None


def parse_manifest(data: bytes, path: PathLike) -> Manifest:
    """Validate manifest bytes read from ``path`` (its folder is where variant files live)."""
    path = Path(path)
    source = str(path)
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ManifestError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: "
                            f"{e.msg})") from None
    return from_dict(doc, source=source, folder=path.parent)


def load_manifest(folder_or_file: PathLike) -> Manifest:
    """Read and validate a portfolio's manifest; ``ManifestError`` names the file on any problem.

    This does not check a signature: ``edge_runtime.signature.load_signed_manifest`` does.
    """
    path, data = read_manifest_bytes(folder_or_file)
    return parse_manifest(data, path)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def utc_now() -> str:
    """Current UTC time as ``2026-11-22T10:00:00Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_manifest(task: Mapping[str, Any], variants: Sequence[Mapping[str, Any]],
                 generator: str = DEFAULT_GENERATOR, created: Optional[str] = None,
                 **extra: Any) -> Dict[str, Any]:
    """A manifest document with ``schema_version`` and ``created`` filled in (not yet validated)."""
    doc: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "created": created or utc_now(),
                           "generator": generator}
    doc.update(extra)
    doc["task"] = dict(task)
    doc["variants"] = [dict(v) for v in variants]
    return doc


def write_manifest(folder: PathLike, doc: Union[Mapping[str, Any], Manifest],
                   check_files: bool = True) -> Path:
    """Validate ``doc`` and write ``folder/manifest.json`` atomically; return its path.

    With ``check_files`` every listed variant file must exist with the declared size and sha256,
    so a manifest is never published ahead of (or out of step with) its files.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if isinstance(doc, Manifest):
        doc = doc.to_dict()
    doc = dict(doc)
    manifest = from_dict(doc, source=str(path), folder=folder)
    if check_files:
        for v in manifest.variants:
            verify_variant_file(folder, v)
    data = (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path
