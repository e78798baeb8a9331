"""Does a variant's model fit the manifest's task? Input ``(1, *task.input_shape)``, float32 (or
quantised int8/uint8 for a full-int8 variant); output ``(1, task.num_classes)``, float32 or
quantised. Used when a variant loads (``edge_runtime.loading``: a mismatch disables it and the
switcher fails over) and by ``edge-switcher verify``. Standard library only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from edge_runtime.schema import Variant

QUANTIZED_INPUT = ("int8",)        # precisions whose model input is integer


def describe(spec: Any) -> Dict[str, Any]:
    """A runner's ``TensorSpec`` as the isolated check reports it (outputs flattened per example,
    as ``Runner.run`` returns them)."""
    shape = [int(d) for d in spec.shape]
    return {"shape": shape, "dtype": str(spec.dtype), "quantized": bool(spec.quantized)}


def _flat_output(shape: Optional[List[int]]) -> Optional[List[int]]:
    if not shape:
        return shape
    n = 1
    for d in shape[1:]:
        n *= int(d)
    return [int(shape[0]), n]


def io_problems(v: Variant, task_shape: tuple, num_classes: int,
                inp: Optional[Mapping[str, Any]], out: Optional[Mapping[str, Any]],
                check_finite: bool = True) -> List[str]:
    """What is wrong with a variant's input/output (``describe`` dicts); empty if it fits."""
    problems: List[str] = []
    name = f"variant {v.id!r} ({v.file})"
    i, o = dict(inp or {}), dict(out or {})
    want_in = [1, *[int(d) for d in task_shape]]
    if i.get("shape") != want_in:
        problems.append(f"{name}: input shape {i.get('shape')}, the manifest's task says "
                        f"{want_in}")
    if v.precision in QUANTIZED_INPUT:
        if not (i.get("quantized") and i.get("dtype") in ("int8", "uint8")):
            problems.append(f"{name}: precision {v.precision} means quantised int8/uint8 input, "
                            f"the model takes {i.get('dtype')}")
    elif i.get("dtype") != "float32":
        problems.append(f"{name}: input dtype {i.get('dtype')}, expected float32 for a "
                        f"{v.precision} variant")
    if _flat_output(o.get("shape")) != [1, int(num_classes)]:
        problems.append(f"{name}: output shape {o.get('shape')}, expected [1, {num_classes}] "
                        "(task.num_classes)")
    if not (o.get("dtype") == "float32" or (o.get("quantized")
                                            and o.get("dtype") in ("int8", "uint8"))):
        problems.append(f"{name}: output dtype {o.get('dtype')}, expected float32 or quantised "
                        "int8/uint8")
    if check_finite and o.get("finite") is False:
        problems.append(f"{name}: the output on an all-zero input is not finite (NaN or inf)")
    return problems


def runner_problems(v: Variant, task_shape: tuple, num_classes: int, runner: Any) -> List[str]:
    """``io_problems`` of a loaded ``Runner`` (shapes and dtypes only)."""
    return io_problems(v, task_shape, num_classes, describe(runner.input),
                       describe(runner.output), check_finite=False)
