"""``edge-switcher verify``: is every variant of a portfolio usable on this device?

Each variant is loaded in a process of its own and runs one inference on zeros (see
``edge_runtime.probe``); its input and output are checked against the manifest's task: input
``(1, *task.input_shape)``, float32 (or quantised int8/uint8 for a full-int8 variant), output
``(1, num_classes)``, float32 or quantised, finite. Every problem is one line naming the variant
and the file. With a public key the signature must verify first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_runtime.iocheck import QUANTIZED_INPUT, io_problems as check_io  # noqa: F401
from edge_runtime.manifest import (Manifest, VariantFileError, load_manifest, parse_manifest,
                                   read_manifest_bytes, read_variant_file)
from edge_runtime.probe import ProbeItem, Verdict, open_cache, probe_files
from edge_runtime.schema import PathLike, Variant


@dataclass
class Report:
    manifest: Optional[Manifest] = None
    signature: str = "not checked"
    rows: List[List[str]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def io_problems(v: Variant, task_shape: tuple, num_classes: int,
                verdict: Verdict) -> List[str]:
    """What is wrong with a variant's input/output as the child process saw them."""
    return check_io(v, task_shape, num_classes, verdict.input, verdict.output)


def verify_portfolio(path: PathLike, public_key: Any = None, timeout_s: float = 30.0,
                     cache: Any = None) -> Report:
    """Check a portfolio variant by variant; see the module docstring."""
    rep = Report()
    if public_key is not None:
        from edge_runtime.signature import verify_manifest_bytes
        mpath, data = read_manifest_bytes(path)
        rep.signature = f"verified with key {verify_manifest_bytes(mpath, data, public_key)}"
        m = parse_manifest(data, mpath)
    else:
        m = load_manifest(path)
        from edge_runtime.signature import read_signature
        rep.signature = "unsigned" if read_signature(m.folder) is None else \
            "signed (not checked: pass --public-key)"
    rep.manifest = m
    folder = Path(m.folder)  # type: ignore[arg-type]
    status: Dict[str, str] = {}
    probe: List[Variant] = []
    for v in m.variants:
        try:
            read_variant_file(folder, v)
            probe.append(v)
        except VariantFileError as e:
            rep.problems.append(str(e))
            status[v.id] = "BAD file"
    verdicts = probe_files([ProbeItem(folder / v.file, v.sha256, v.edgetpu) for v in probe],
                           timeout_s=timeout_s, isolate_each=True)
    open_cache(cache).put({v.sha256: r for v, r in zip(probe, verdicts)})
    for v, r in zip(probe, verdicts):
        if not r.ok:
            rep.problems.append(f"variant {v.id!r}: {r.reason}")
            status[v.id] = f"BAD {r.stage}"
            continue
        bad = io_problems(v, m.task.input_shape, m.task.num_classes, r)
        rep.problems.extend(bad)
        status[v.id] = "BAD io" if bad else "ok"
    for v in m.variants:
        r = dict(zip([p.id for p in probe], verdicts)).get(v.id)
        shape_in = "x".join(map(str, (r.input or {}).get("shape", []))) if r and r.ok else "-"
        dt = (r.input or {}).get("dtype", "-") if r and r.ok else "-"
        shape_out = "x".join(map(str, (r.output or {}).get("shape", []))) if r and r.ok else "-"
        rep.rows.append([v.id, v.precision, f"{shape_in} {dt}", shape_out, status[v.id]])
    return rep
