"""Portfolio manifest schema: constants, errors and the dataclasses a manifest loads into.

Standard library only (the host exporter imports it too). ``edge_runtime.manifest`` re-exports
everything here; validation is in ``edge_runtime.validation``, file checks and atomic writes in
``edge_runtime.files``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
KINDS = ("dense", "sparse", "pruned", "finetuned")   # finetuned: pruned, then trained more
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
