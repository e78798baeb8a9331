"""Validation of a manifest document: every error names the source file and the key at fault."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Mapping

from edge_runtime.schema import (_HEX64, _ID, INPUT_DTYPES, KINDS, PRECISIONS, SCHEMA_VERSION,
                                 ManifestError)


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
