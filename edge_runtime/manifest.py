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
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
KINDS = ("dense", "sparse", "pruned")
PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8")
INPUT_DTYPES = ("float32", "float16", "float64", "uint8", "int8", "int16", "int32")
DEFAULT_GENERATOR = "shifter-tf"

PathLike = Union[str, "os.PathLike[str]"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ManifestError(ValueError):
    """The manifest (or a file it lists) is unusable; the message names the file and the key."""


class VariantFileError(ManifestError):
    """A variant's .tflite file is missing, truncated or does not match its sha256."""


# --------------------------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalization:
    """``x_model = (x_raw * scale - mean) / std``, broadcast over the last (channel) axis."""

    scale: float = 1.0
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)

    def to_dict(self) -> Dict[str, Any]:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Task:
    """What the model consumes and produces (one example, no batch dimension)."""

    name: str
    input_shape: Tuple[int, ...]
    input_dtype: str
    num_classes: int
    labels: Tuple[str, ...] = ()
    normalization: Optional[Normalization] = None
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = dict(self.extra)
        doc.update({
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype,
            "normalization": self.normalization.to_dict() if self.normalization else None,
            "labels": list(self.labels),
            "num_classes": self.num_classes,
        })
        return doc


@dataclass(frozen=True)
class Variant:
    """One .tflite file of the portfolio and its host-measured metrics."""

    id: str
    file: str
    sha256: str
    bytes: int
    kind: str
    precision: str
    level: int
    density: float
    params_total: int
    params_nonzero: int
    macs: int
    accuracy: Optional[float]
    latency_ms: Dict[str, float]
    latency_p90_ms: Dict[str, float] = field(default_factory=dict)
    init_ms: Optional[float] = None
    parent: Optional[str] = None
    edgetpu: bool = False
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = dict(self.extra)
        doc.update({
            "id": self.id, "file": self.file, "sha256": self.sha256, "bytes": self.bytes,
            "kind": self.kind, "precision": self.precision, "level": self.level,
            "density": self.density, "params_total": self.params_total,
            "params_nonzero": self.params_nonzero, "macs": self.macs,
            "accuracy": self.accuracy, "latency_ms": dict(self.latency_ms),
        })
        if self.latency_p90_ms:
            doc["latency_p90_ms"] = dict(self.latency_p90_ms)
        if self.init_ms is not None:
            doc["init_ms"] = self.init_ms
        doc["parent"] = self.parent
        if self.edgetpu:
            doc["edgetpu"] = True
        return doc


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``folder`` is where variant files are resolved from."""

    schema_version: int
    task: Task
    variants: Tuple[Variant, ...]
    created: Optional[str] = None
    generator: Optional[str] = None
    folder: Optional[Path] = None
    source: str = "<manifest>"
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    def variant(self, variant_id: str) -> Variant:
        """The variant with this id; ``KeyError`` listing the known ids otherwise."""
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise KeyError(f"unknown variant {variant_id!r}; the portfolio has "
                       f"{', '.join(v.id for v in self.variants)}")

    @property
    def ids(self) -> List[str]:
        return [v.id for v in self.variants]

    def to_dict(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = dict(self.extra)
        doc.update({"schema_version": self.schema_version})
        if self.created is not None:
            doc["created"] = self.created
        if self.generator is not None:
            doc["generator"] = self.generator
        doc["task"] = self.task.to_dict()
        doc["variants"] = [v.to_dict() for v in self.variants]
        return doc


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)
            and math.isfinite(float(x)))


def _type_name(x: Any) -> str:
    return "null" if x is None else type(x).__name__


class _Checker:
    """Small helper that formats every error as ``<source>: <key path>: <problem>``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str) -> None:
        raise ManifestError(f"{self.source}: {key}: {problem}")

    def get(self, obj: Mapping[str, Any], key: str, where: str, required: bool = True) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in obj:
            if required:
                self.fail(path, "missing required key")
            return None
        return obj[key]

    def want(self, ok: bool, path: str, expected: str, value: Any) -> None:
        if not ok:
            self.fail(path, f"expected {expected}, got {_type_name(value)} {value!r}"[:300])

    def threads_map(self, value: Any, path: str) -> None:
        self.want(isinstance(value, dict), path, "an object {num_threads: ms}", value)
        for k, ms in value.items():
            ok_key = isinstance(k, str) and k.isdigit() and int(k) > 0
            self.want(ok_key, f"{path}[{k!r}]", "a key that is a thread count like \"1\"", k)
            self.want(_is_num(ms) and ms >= 0, f"{path}[{k!r}]", "a non-negative number", ms)


def validate(doc: Any, source: str = "<manifest>") -> None:
    """Check a manifest document; raise ``ManifestError`` naming ``source`` and the key at fault."""
    c = _Checker(source)
    c.want(isinstance(doc, dict), "<root>", "a JSON object", doc)

    version = c.get(doc, "schema_version", "")
    c.want(_is_int(version), "schema_version", "an integer", version)
    if version != SCHEMA_VERSION:
        c.fail("schema_version", f"unknown schema_version {version} (this edge_runtime reads "
                                 f"version {SCHEMA_VERSION}); re-export the portfolio or upgrade "
                                 "edge_runtime")
    for key in ("created", "generator"):
        value = c.get(doc, key, "", required=False)
        c.want(value is None or isinstance(value, str), key, "a string", value)

    _validate_task(c, c.get(doc, "task", ""))

    variants = c.get(doc, "variants", "")
    c.want(isinstance(variants, list), "variants", "a list", variants)
    if not variants:
        c.fail("variants", "the portfolio has no variants")
    seen: Dict[str, int] = {}
    for i, v in enumerate(variants):
        vid = _validate_variant(c, v, f"variants[{i}]")
        if vid in seen:
            c.fail(f"variants[{i}].id", f"duplicate id {vid!r} (also variants[{seen[vid]}])")
        seen[vid] = i


def _validate_task(c: _Checker, task: Any) -> None:
    c.want(isinstance(task, dict), "task", "an object", task)
    name = c.get(task, "name", "task")
    c.want(isinstance(name, str) and bool(name), "task.name", "a non-empty string", name)

    shape = c.get(task, "input_shape", "task")
    c.want(isinstance(shape, list) and len(shape) > 0
           and all(_is_int(d) and d > 0 for d in shape),
           "task.input_shape", "a non-empty list of positive integers (no batch dim)", shape)

    dtype = c.get(task, "input_dtype", "task")
    if dtype not in INPUT_DTYPES:
        c.fail("task.input_dtype", f"unknown dtype {dtype!r} (expected one of "
                                   f"{', '.join(INPUT_DTYPES)})")

    n = c.get(task, "num_classes", "task")
    c.want(_is_int(n) and n > 0, "task.num_classes", "a positive integer", n)

    labels = c.get(task, "labels", "task", required=False)
    if labels is not None:
        c.want(isinstance(labels, list) and all(isinstance(s, str) for s in labels),
               "task.labels", "a list of strings", labels)
        if labels and len(labels) != n:
            c.fail("task.labels", f"{len(labels)} labels but num_classes is {n}")

    norm = c.get(task, "normalization", "task", required=False)
    if norm is not None:
        c.want(isinstance(norm, dict), "task.normalization", "an object or null", norm)
        channels = shape[-1]
        scale = norm.get("scale", 1.0)
        c.want(_is_num(scale), "task.normalization.scale", "a number", scale)
        for key, default in (("mean", [0.0]), ("std", [1.0])):
            vals = norm.get(key, default)
            path = f"task.normalization.{key}"
            c.want(isinstance(vals, list) and len(vals) > 0 and all(_is_num(x) for x in vals),
                   path, "a non-empty list of numbers", vals)
            if len(vals) not in (1, channels):
                c.fail(path, f"has {len(vals)} values; expected 1 or {channels} "
                             "(the last axis of input_shape)")
            if key == "std" and any(float(x) == 0.0 for x in vals):
                c.fail(path, "contains 0 (division by zero)")


def _validate_variant(c: _Checker, v: Any, where: str) -> str:
    c.want(isinstance(v, dict), where, "an object", v)
    vid = c.get(v, "id", where)
    c.want(isinstance(vid, str) and bool(_ID.match(vid)), f"{where}.id",
           "a string of letters, digits, '.', '_' or '-'", vid)
    where_id = f"{where}({vid})"

    f = c.get(v, "file", where_id)
    c.want(isinstance(f, str) and bool(f), f"{where_id}.file", "a relative path", f)
    parts = Path(f).parts
    if Path(f).is_absolute() or f.startswith(("/", "\\")) or ".." in parts:
        c.fail(f"{where_id}.file", f"{f!r} must be relative to the portfolio folder "
                                   "and stay inside it")

    sha = c.get(v, "sha256", where_id)
    c.want(isinstance(sha, str) and bool(_HEX64.match(sha)), f"{where_id}.sha256",
           "64 lowercase hex digits", sha)
    for key in ("bytes", "params_total", "params_nonzero", "macs", "level"):
        value = c.get(v, key, where_id)
        c.want(_is_int(value) and value >= 0, f"{where_id}.{key}",
               "a non-negative integer", value)

    kind = c.get(v, "kind", where_id)
    if kind not in KINDS:
        c.fail(f"{where_id}.kind", f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    precision = c.get(v, "precision", where_id)
    if precision not in PRECISIONS:
        c.fail(f"{where_id}.precision",
               f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")

    density = c.get(v, "density", where_id)
    c.want(_is_num(density) and 0.0 <= density <= 1.0, f"{where_id}.density",
           "a number in [0, 1]", density)
    acc = c.get(v, "accuracy", where_id)
    c.want(acc is None or (_is_num(acc) and 0.0 <= acc <= 1.0), f"{where_id}.accuracy",
           "a number in [0, 1] or null", acc)

    c.threads_map(c.get(v, "latency_ms", where_id), f"{where_id}.latency_ms")
    p90 = c.get(v, "latency_p90_ms", where_id, required=False)
    if p90 is not None:
        c.threads_map(p90, f"{where_id}.latency_p90_ms")
    init = c.get(v, "init_ms", where_id, required=False)
    c.want(init is None or (_is_num(init) and init >= 0), f"{where_id}.init_ms",
           "a non-negative number or null", init)
    parent = c.get(v, "parent", where_id, required=False)
    c.want(parent is None or isinstance(parent, str), f"{where_id}.parent",
           "a string or null", parent)
    tpu = c.get(v, "edgetpu", where_id, required=False)
    c.want(tpu is None or isinstance(tpu, bool), f"{where_id}.edgetpu", "true or false", tpu)
    return vid


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


def load_manifest(folder_or_file: PathLike) -> Manifest:
    """Read and validate a portfolio's manifest; ``ManifestError`` names the file on any problem."""
    if not Path(folder_or_file).exists():
        raise ManifestError(f"{folder_or_file}: no such portfolio folder or manifest file")
    path = manifest_path(folder_or_file)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{source}: no such manifest (is this a portfolio folder?)") from None
    except OSError as e:
        raise ManifestError(f"{source}: cannot read manifest: {e.strerror or e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: "
                            f"{e.msg})") from None
    return from_dict(doc, source=source, folder=path.parent)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a partial one.

    Temp file in the same folder (so ``os.replace`` is a rename on one file system), fsync of the
    file, rename, then a best-effort fsync of the folder so the rename survives power loss.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
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


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
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
