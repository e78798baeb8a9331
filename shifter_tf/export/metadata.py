"""TFLite Model Metadata in every exported variant (`export.metadata`, on by default).

What the Task Library and Android Studio's ML Model Binding read from a .tflite file: its name,
version (the variant id), description and author; the input's content (an RGB or GRAYSCALE image)
and normalisation in raw-pixel units (mean/std such that the model's input is
(pixel - mean) / std, what the Task Library computes for a float input); the output's meaning
(logits or probabilities, one per class) and the class names as `labels.txt`.

The metadata is tflite-support's schema (`metadata_schema.fbs`, identifier M001; field ids in
`edge_runtime.tflite_metadata`, which also reads it back) written with the `flatbuffers` package,
so it needs neither tflite-support nor a TensorFlow version tflite-support works with. As
tflite-support's `MetadataPopulator` does, it goes into a model buffer named by a
`TFLITE_METADATA` metadata entry (added with `ai_edge_litert.tools.flatbuffer_utils`) and the
labels are a zip archive appended to the file (stored, fixed timestamps: the bytes depend only on
the model and its metadata). The manifest's sha256 and bytes describe the final file.
"""
from __future__ import annotations

import io
import zipfile
from typing import Any, Optional, Sequence

import flatbuffers
import numpy as np

from edge_runtime import tflite_metadata as schema
from shifter_tf.errors import ExportError

LABELS_FILE = "labels.txt"
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 9: "int8"}


# ---- the metadata flatbuffer ------------------------------------------------------------
def _floats(b: flatbuffers.Builder, xs: Sequence[float]) -> int:
    b.StartVector(4, len(xs), 4)
    for x in reversed(list(xs)):
        b.PrependFloat32(float(x))
    return b.EndVector()


def _offsets(b: flatbuffers.Builder, offs: Sequence[int]) -> int:
    b.StartVector(4, len(offs), 4)
    for o in reversed(list(offs)):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _table(b: flatbuffers.Builder, fields: dict, bytes_: Optional[dict] = None) -> int:
    """A table of {slot: offset} fields and {slot: byte} enum/union-type fields."""
    slots = list(fields) + list(bytes_ or {})
    b.StartObject(max(slots) + 1 if slots else 0)
    for slot, off in fields.items():
        b.PrependUOffsetTRelativeSlot(slot, off, 0)
    for slot, v in (bytes_ or {}).items():
        b.PrependUint8Slot(slot, int(v), 0)
    return b.EndObject()


def _strings(b: flatbuffers.Builder, d: dict, names: dict) -> dict:
    return {names[k]: b.CreateString(str(d[k])) for k in names if d.get(k) is not None}


def _files(b: flatbuffers.Builder, files: Sequence[dict]) -> int:
    types = {v: k for k, v in schema.FILE_TYPES.items()}
    names = {"name": schema.FILE_NAME, "description": schema.FILE_DESCRIPTION}
    offs = [_table(b, _strings(b, f, names),
                   {schema.FILE_TYPE: types[f.get("type", "UNKNOWN")]}) for f in files]
    return _offsets(b, offs)


def _tensor(b: flatbuffers.Builder, t: dict) -> int:
    F = schema.TENSOR_FIELDS
    fields = _strings(b, t, {"name": F["name"], "description": F["description"]})
    kinds = {v: k for k, v in schema.CONTENT_KINDS.items()}
    kind = kinds[t.get("content", "feature")]
    spaces = {v: k for k, v in schema.COLOR_SPACES.items()}
    props = _table(b, {}, {schema.IMAGE_COLOR_SPACE: spaces[t["color_space"]]}
                   if kind == kinds["image"] and t.get("color_space") else None)
    fields[F["content"]] = _table(b, {schema.CONTENT_PROPERTIES: props},
                                  {schema.CONTENT_PROPERTIES_TYPE: kind})
    if t.get("normalization"):
        n = t["normalization"]
        opts = _table(b, {schema.NORMALIZATION_MEAN: _floats(b, n["mean"]),
                          schema.NORMALIZATION_STD: _floats(b, n["std"])})
        unit = _table(b, {schema.PROCESS_UNIT_OPTIONS: opts}, {schema.PROCESS_UNIT_OPTIONS_TYPE: 1})
        fields[F["process_units"]] = _offsets(b, [unit])
    if t.get("stats"):
        fields[F["stats"]] = _table(b, {schema.STATS_MAX: _floats(b, t["stats"]["max"]),
                                        schema.STATS_MIN: _floats(b, t["stats"]["min"])})
    if t.get("associated_files"):
        fields[F["associated_files"]] = _files(b, t["associated_files"])
    return _table(b, fields)


def build_metadata(meta: dict) -> bytes:
    """The M001 flatbuffer of `meta`, a dict shaped like `edge_runtime.tflite_metadata.
    parse_metadata`'s result (name, description, version, author, license, min_parser_version,
    inputs, outputs, associated_files)."""
    b = flatbuffers.Builder(1024)
    inputs = _offsets(b, [_tensor(b, t) for t in meta.get("inputs", [])])
    outputs = _offsets(b, [_tensor(b, t) for t in meta.get("outputs", [])])
    graph = _table(b, {schema.SUBGRAPH_FIELDS["input_tensor_metadata"]: inputs,
                       schema.SUBGRAPH_FIELDS["output_tensor_metadata"]: outputs})
    M = schema.MODEL_FIELDS
    fields = _strings(b, meta, {k: M[k] for k in ("name", "description", "version", "author",
                                                  "license", "min_parser_version")})
    fields[M["subgraph_metadata"]] = _offsets(b, [graph])
    if meta.get("associated_files"):
        fields[M["associated_files"]] = _files(b, meta["associated_files"])
    b.Finish(_table(b, fields), file_identifier=schema.FILE_IDENTIFIER)
    return bytes(b.Output())


# ---- into the model file ----------------------------------------------------------------
def io_types(model: bytes) -> tuple[str, str]:
    """The dtypes of the model's (first) input and output tensors."""
    from ai_edge_litert import schema_py_generated as fb

    g = fb.Model.GetRootAs(model, 0).Subgraphs(0)
    name = lambda i: _TENSOR_TYPES.get(g.Tensors(i).Type(), str(g.Tensors(i).Type()))
    return name(g.Inputs(0)), name(g.Outputs(0))


def attach(model: bytes, metadata: bytes, files: Optional[dict] = None) -> bytes:
    """`model` with `metadata` as its TFLITE_METADATA buffer (replacing any) and `files`
    ({name: bytes}) appended as a zip archive, as tflite-support's MetadataPopulator writes it."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    buf = fb.BufferT()
    buf.data = np.frombuffer(metadata, np.uint8)
    entries = [e for e in (m.metadata or []) if e.name.decode() == schema.METADATA_NAME]
    if entries:
        m.buffers[entries[0].buffer] = buf
    else:
        m.buffers.append(buf)
        entry = fb.MetadataT()
        entry.name = schema.METADATA_NAME
        entry.buffer = len(m.buffers) - 1
        m.metadata = list(m.metadata or []) + [entry]
    out = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(m)))
    if files:
        out.seek(0, io.SEEK_END)
        with zipfile.ZipFile(out, "a") as zf:
            for name, data in files.items():
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


# ---- what a variant says about itself ---------------------------------------------------
def raw_normalization(task: dict) -> Optional[dict]:
    """The task's input normalisation in raw-pixel units ({mean, std}: the model's input is
    (pixel - mean) / std); identity when the model normalises itself; None when the caller's
    own preprocessing does (unknown here)."""
    norm = task.get("normalization")
    if norm:
        scale = float(norm["scale"])
        return {"mean": [float(m) / scale for m in norm["mean"]],
                "std": [float(s) / scale for s in norm["std"]]}
    if task.get("normalization_source") == "caller":
        return None
    return {"mean": [0.0], "std": [1.0]}


def _input(task: dict, dtype: str) -> dict:
    shape = [int(d) for d in task["input_shape"]]
    image = len(shape) == 3 and shape[-1] in (1, 3)
    norm = raw_normalization(task)
    t: dict[str, Any] = {"name": "image" if image else "input",
                         "content": "image" if image else "feature"}
    if image:
        t["color_space"] = "RGB" if shape[-1] == 3 else "GRAYSCALE"
    what = (f"{'RGB' if shape[-1] == 3 else 'Grayscale'} image, {shape[0]}x{shape[1]}"
            if image else f"Input of shape {shape}")
    if dtype == "uint8":
        how = "raw pixel values 0..255 as uint8"
    elif norm == {"mean": [0.0], "std": [1.0]}:
        how = f"raw pixel values 0..255 as {dtype}"
    elif norm is None:
        how = f"{dtype}, preprocessed as by the caller's own pipeline at training time"
    else:
        how = (f"{dtype}, (pixel - mean) / std with mean {_fmt(norm['mean'])}, std "
               f"{_fmt(norm['std'])} (pixels 0..255)")
    android = task.get("android")
    if android:
        how += ("; the model converts RGB to luma and normalises itself"
                if android.get("luma") else "; the model normalises itself")
    t["description"] = f"{what}: {how}."
    if norm is not None:   # for int8 too: what to apply before quantising with its scale
        t["normalization"] = norm
    if dtype == "uint8":
        t["stats"] = {"min": [0.0], "max": [255.0]}
    elif dtype == "float32" and norm is not None:
        t["stats"] = {"min": [(0.0 - m) / s for m, s in zip(norm["mean"], norm["std"])],
                      "max": [(255.0 - m) / s for m, s in zip(norm["mean"], norm["std"])]}
    return t


def _output(task: dict, dtype: str) -> dict:
    probs = task.get("output") == "probabilities"
    n = int(task["num_classes"])
    t: dict[str, Any] = {
        "name": "probability" if probs else "logits", "content": "feature",
        "description": (f"Probabilities of the {n} labels respectively ({LABELS_FILE})."
                        if probs else
                        f"Logits (unnormalised scores) of the {n} labels respectively "
                        f"({LABELS_FILE}): the class is the largest; softmax gives "
                        "probabilities."),
        "associated_files": [{"name": LABELS_FILE, "type": "TENSOR_AXIS_LABELS",
                              "description": "Labels for categories that the model can "
                                             "recognize."}]}
    if dtype == "uint8":
        t["stats"] = {"min": [0.0], "max": [255.0]}
    elif probs and dtype == "float32":
        t["stats"] = {"min": [0.0], "max": [1.0]}
    return t


def _fmt(xs: Sequence[float]) -> str:
    return "[" + ", ".join(format(x, ".6g") for x in xs) + "]"


def variant_metadata(model: bytes, task: dict, variant: dict, author: str) -> dict:
    """The metadata of one variant (a dict for `build_metadata`): `task` is the manifest's task
    entry, `variant` has id, kind, level, density and precision."""
    in_type, out_type = io_types(model)
    desc = (f"Image classifier over {task['num_classes']} classes ({LABELS_FILE}): the "
            f"{variant['kind']} variant of IMP level {variant['level']} (density "
            f"{float(variant['density']):.4f}) in {variant['precision']}, from a DNNShifter "
            "portfolio (manifest.json beside it lists every variant and its measured accuracy "
            "and latency).")
    return {"name": task["name"], "version": variant["id"], "description": desc,
            "author": author, "min_parser_version": schema.MIN_PARSER_VERSION,
            "inputs": [_input(task, in_type)], "outputs": [_output(task, out_type)]}


def labels_file(labels: Sequence[str]) -> bytes:
    for i, label in enumerate(labels):
        if "\n" in str(label) or "\r" in str(label):
            raise ExportError(f"label {i} ({label!r}) contains a line break: it cannot go into "
                              f"{LABELS_FILE} (one label per line); rename it or set "
                              "export.metadata: false")
    return "".join(f"{label}\n" for label in labels).encode("utf-8")


def add_metadata(model: bytes, task: dict, variant: dict, author: str) -> bytes:
    """`model` with its TFLite Model Metadata and labels.txt (see module docstring)."""
    meta = variant_metadata(model, task, variant, author)
    return attach(model, build_metadata(meta), {LABELS_FILE: labels_file(task["labels"])})
