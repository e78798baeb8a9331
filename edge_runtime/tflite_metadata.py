"""TFLite Model Metadata: what a .tflite file says about itself (name, version, input
normalisation and colour space, the meaning of its output, its labels).

The format is tflite-support's metadata schema (``metadata_schema.fbs``, Apache-2.0,
github.com/tensorflow/tflite-support, file identifier ``M001``): a flatbuffer stored in the model's
buffer that the model's ``metadata`` entry named ``TFLITE_METADATA`` points to; associated files
(``labels.txt``) are a zip archive appended to the model, as tflite-support's
``MetadataPopulator`` writes them. The Task Library and Android Studio's ML Model Binding read it.

Reading needs the ``flatbuffers`` package, which ``requirements-edge.txt`` does not install (the
switcher never needs the metadata: the manifest is its source of truth). Without it
``read_metadata`` raises ``MetadataUnavailable`` and ``edge-switcher info`` says it cannot read
the metadata. The numbers below are the schemas' field ids (a table's n-th field is vtable slot n;
a union takes two slots, its type and then its value); the host's writer,
``shifter_tf.export.metadata``, uses the same ones.
"""
from __future__ import annotations

import io
import zipfile
from typing import Any, Dict, List, Optional

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"   # nothing we write is newer than the schema's first version

# tensorflow/lite/schema/schema.fbs
MODEL_BUFFERS, MODEL_METADATA = 4, 6
METADATA_ENTRY_NAME, METADATA_ENTRY_BUFFER = 0, 1
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2

# metadata_schema.fbs, table by table: {field: slot}
MODEL_FIELDS = {"name": 0, "description": 1, "version": 2, "subgraph_metadata": 3, "author": 4,
                "license": 5, "associated_files": 6, "min_parser_version": 7}
SUBGRAPH_FIELDS = {"name": 0, "description": 1, "input_tensor_metadata": 2,
                   "output_tensor_metadata": 3, "associated_files": 4}
TENSOR_FIELDS = {"name": 0, "description": 1, "dimension_names": 2, "content": 3,
                 "process_units": 4, "stats": 5, "associated_files": 6}
CONTENT_PROPERTIES_TYPE, CONTENT_PROPERTIES, CONTENT_RANGE = 0, 1, 2
IMAGE_COLOR_SPACE = 0
PROCESS_UNIT_OPTIONS_TYPE, PROCESS_UNIT_OPTIONS = 0, 1
NORMALIZATION_MEAN, NORMALIZATION_STD = 0, 1
STATS_MAX, STATS_MIN = 0, 1
FILE_NAME, FILE_DESCRIPTION, FILE_TYPE = 0, 1, 2

# enums and union tags
CONTENT_KINDS = {1: "feature", 2: "image", 3: "bounding_box", 4: "audio"}
COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
PROCESS_UNITS = {1: "normalization", 2: "score_calibration", 3: "score_thresholding",
                 4: "bert_tokenizer", 5: "sentencepiece_tokenizer", 6: "regex_tokenizer"}
FILE_TYPES = {0: "UNKNOWN", 1: "DESCRIPTIONS", 2: "TENSOR_AXIS_LABELS", 3: "TENSOR_VALUE_LABELS",
              4: "TENSOR_AXIS_SCORE_CALIBRATION", 5: "VOCABULARY", 6: "SCANN_INDEX_FILE"}


class MetadataUnavailable(RuntimeError):
    """This environment cannot read TFLite Model Metadata (no ``flatbuffers`` package)."""


class MetadataError(ValueError):
    """The file's metadata (or the model flatbuffer around it) cannot be parsed."""


def _flatbuffers():
    try:
        from flatbuffers import number_types, table
    except ImportError:
        raise MetadataUnavailable("cannot read TFLite Model Metadata here: the `flatbuffers` "
                                  "package is not installed (pip install flatbuffers)") from None
    return table, number_types


class _Table:
    """One flatbuffer table, read by field slot (what generated accessors do)."""

    def __init__(self, buf: bytes, pos: int):
        table, self._n = _flatbuffers()
        self._t = table.Table(buf, pos)

    @classmethod
    def root(cls, buf: bytes) -> "_Table":
        return cls(buf, int.from_bytes(bytes(buf[0:4]), "little"))

    def _off(self, slot: int) -> int:
        return self._t.Offset(4 + 2 * slot)

    def has(self, slot: int) -> bool:
        return self._off(slot) != 0

    def string(self, slot: int) -> Optional[str]:
        o = self._off(slot)
        return None if not o else self._t.String(o + self._t.Pos).decode("utf-8", "replace")

    def scalar(self, slot: int, flags: str, default: int = 0):
        o = self._off(slot)
        return default if not o else self._t.Get(getattr(self._n, flags), o + self._t.Pos)

    def table(self, slot: int) -> Optional["_Table"]:
        o = self._off(slot)
        return None if not o else _Table(self._t.Bytes, self._t.Indirect(o + self._t.Pos))

    def _vector(self, slot: int) -> "tuple[int, int]":
        o = self._off(slot)
        return (0, 0) if not o else (self._t.Vector(o), self._t.VectorLen(o))

    def tables(self, slot: int) -> List["_Table"]:
        start, n = self._vector(slot)
        return [_Table(self._t.Bytes, self._t.Indirect(start + 4 * i)) for i in range(n)]

    def floats(self, slot: int) -> List[float]:
        start, n = self._vector(slot)
        f = self._n.Float32Flags
        return [float(self._t.Get(f, start + 4 * i)) for i in range(n)]

    def data(self, slot: int) -> bytes:
        start, n = self._vector(slot)
        return bytes(self._t.Bytes[start:start + n])


def metadata_buffer(model: bytes) -> Optional[bytes]:
    """The raw ``M001`` metadata flatbuffer of a .tflite file, None if it has none."""
    try:
        root = _Table.root(model)
        buffers = root.tables(MODEL_BUFFERS)
        for entry in root.tables(MODEL_METADATA):
            if entry.string(METADATA_ENTRY_NAME) != METADATA_NAME:
                continue
            buf = buffers[entry.scalar(METADATA_ENTRY_BUFFER, "Uint32Flags")]
            data = buf.data(BUFFER_DATA)
            offset = buf.scalar(BUFFER_OFFSET, "Uint64Flags")
            if not data and offset > 1:      # a large model's buffer stored after the flatbuffer
                data = bytes(model[offset:offset + buf.scalar(BUFFER_SIZE, "Uint64Flags")])
            if data[4:8] != FILE_IDENTIFIER:
                raise MetadataError(f"{METADATA_NAME} buffer lacks the {FILE_IDENTIFIER!r} "
                                    "identifier")
            return data
    except MetadataUnavailable:
        raise
    except MetadataError:
        raise
    except Exception as e:  # struct/index errors of a malformed flatbuffer
        raise MetadataError(f"unreadable model flatbuffer ({type(e).__name__}: {e})") from None
    return None


def packed_files(model: bytes) -> Dict[str, bytes]:
    """The associated files appended to the model as a zip archive (standard library only)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return {}


def _files(t: _Table, slot: int) -> List[Dict[str, Any]]:
    out = []
    for f in t.tables(slot):
        d: Dict[str, Any] = {"name": f.string(FILE_NAME),
                             "type": FILE_TYPES.get(f.scalar(FILE_TYPE, "Int8Flags"), "UNKNOWN")}
        if f.has(FILE_DESCRIPTION):
            d["description"] = f.string(FILE_DESCRIPTION)
        out.append(d)
    return out


def _tensor(t: _Table) -> Dict[str, Any]:
    F = TENSOR_FIELDS
    d: Dict[str, Any] = {k: t.string(F[k]) for k in ("name", "description") if t.has(F[k])}
    content = t.table(F["content"])
    if content is not None:
        kind = content.scalar(CONTENT_PROPERTIES_TYPE, "Uint8Flags")
        d["content"] = CONTENT_KINDS.get(kind, "none")
        props = content.table(CONTENT_PROPERTIES)
        if kind == 2 and props is not None:
            d["color_space"] = COLOR_SPACES.get(props.scalar(IMAGE_COLOR_SPACE, "Int8Flags"),
                                                "UNKNOWN")
    for unit in t.tables(F["process_units"]):
        kind = unit.scalar(PROCESS_UNIT_OPTIONS_TYPE, "Uint8Flags")
        opts = unit.table(PROCESS_UNIT_OPTIONS)
        if kind == 1 and opts is not None:
            d["normalization"] = {"mean": opts.floats(NORMALIZATION_MEAN),
                                  "std": opts.floats(NORMALIZATION_STD)}
        else:
            d.setdefault("process_units", []).append(PROCESS_UNITS.get(kind, "unknown"))
    stats = t.table(F["stats"])
    if stats is not None and (stats.has(STATS_MIN) or stats.has(STATS_MAX)):
        d["stats"] = {"min": stats.floats(STATS_MIN), "max": stats.floats(STATS_MAX)}
    files = _files(t, F["associated_files"])
    if files:
        d["associated_files"] = files
    return d


def parse_metadata(buf: bytes) -> Dict[str, Any]:
    """An ``M001`` metadata flatbuffer as a plain dict (absent fields left out)."""
    try:
        root = _Table.root(buf)
        M = MODEL_FIELDS
        d: Dict[str, Any] = {k: root.string(M[k]) for k in (
            "name", "description", "version", "author", "license", "min_parser_version")
            if root.has(M[k])}
        graphs = root.tables(M["subgraph_metadata"])
        if graphs:
            S = SUBGRAPH_FIELDS
            d["inputs"] = [_tensor(t) for t in graphs[0].tables(S["input_tensor_metadata"])]
            d["outputs"] = [_tensor(t) for t in graphs[0].tables(S["output_tensor_metadata"])]
        files = _files(root, M["associated_files"])
        if files:
            d["associated_files"] = files
        return d
    except MetadataUnavailable:
        raise
    except Exception as e:
        raise MetadataError(f"unreadable metadata ({type(e).__name__}: {e})") from None


def read_metadata(model: bytes) -> Optional[Dict[str, Any]]:
    """A .tflite file's metadata as a dict, with ``labels`` (the lines of the first output's
    TENSOR_AXIS_LABELS file) and ``packed_files`` added; None when the file has no metadata.

    ``MetadataUnavailable`` without the ``flatbuffers`` package, ``MetadataError`` when the
    metadata is there but cannot be parsed.
    """
    buf = metadata_buffer(model)
    if buf is None:
        return None
    meta = parse_metadata(buf)
    packed = packed_files(model)
    meta["packed_files"] = sorted(packed)
    for out in meta.get("outputs", [])[:1]:
        for f in out.get("associated_files", []):
            if f["type"] == "TENSOR_AXIS_LABELS" and f["name"] in packed:
                meta["labels"] = packed[f["name"]].decode("utf-8", "replace").splitlines()
                break
    return meta


def _num(xs: List[float]) -> str:
    return "[" + ", ".join(format(x, ".6g") for x in xs) + "]"


def describe(meta: Optional[Dict[str, Any]]) -> List[str]:
    """A few lines for ``edge-switcher info``."""
    if meta is None:
        return ["no TFLite Model Metadata"]
    lines = [f"{meta.get('name', '-')}  version {meta.get('version', '-')}  "
             f"author {meta.get('author', '-')}"]
    if meta.get("description"):
        lines.append(meta["description"])
    for role in ("inputs", "outputs"):
        for t in meta.get(role, []):
            parts = [f"{role[:-1]} {t.get('name', '?')}: {t.get('content', '-')}"]
            if "color_space" in t:
                parts.append(t["color_space"])
            if "normalization" in t:
                n = t["normalization"]
                parts.append(f"(x - {_num(n['mean'])}) / {_num(n['std'])}")
            if "stats" in t:
                parts.append(f"range {_num(t['stats']['min'])}..{_num(t['stats']['max'])}")
            parts += [f"{f['name']} ({f['type']})" for f in t.get("associated_files", [])]
            lines.append(", ".join(parts))
            if t.get("description"):
                lines.append(f"  {t['description']}")
    if "labels" in meta:
        labels = meta["labels"]
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        lines.append(f"labels ({len(labels)}): {shown}")
    return lines
