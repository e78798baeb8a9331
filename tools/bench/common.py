"""What the benchmark modules share: repository paths and the interpreters of the three
environments, child-process commands, logging, percentiles and medians, the variants' keys and
labels, and level tags.

Imported in all three environments (.venv; the TensorFlow-free .venv-edge; .venv-mct with
TensorFlow 2.15 and no shifter_tf), so it imports only the standard library; `percentiles` uses
the project's one percentile helper, `edge_runtime.profile.percentile` (numpy, no TensorFlow),
imported when called.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "configs/mnist5k_vgg.yaml"
DEFAULT_RUN = "runs/demo"

# The deployment variants of one sparse checkpoint, in the order of every table and plot.
VARIANTS = ("dense", "pruned", "pruned_sparse", "tfmot_sparse", "sparse")
LABELS = {
    "dense": "(d) dense fp32",
    "pruned": "(a) ours: pruned fp32",
    "pruned_sparse": "(a+) ours + sparse encoding",
    "tfmot_sparse": "(b) tfmot: strip_pruning + EXPERIMENTAL_SPARSITY",
    "sparse": "(c) sparse fp32",
}


def level_tag(kind: str, level: int = 0, compression: float = 0) -> str:
    """A checkpoint's tag in file names and latency groups: `cr008` for a synthetic checkpoint
    at 8x compression, `L03` for level 3 of a trained run."""
    return f"cr{int(compression):03d}" if kind == "synthetic" else f"L{int(level):02d}"


# ---------------------------------------------------------------------------- environments
def venv_python(name: str) -> Optional[str]:
    """ROOT/<name>/bin/python if that environment exists."""
    p = ROOT / name / "bin" / "python"
    return str(p) if p.exists() else None


def host_python() -> str:
    """The host environment (.venv: TensorFlow, shifter_tf), else this interpreter."""
    return venv_python(".venv") or sys.executable


def edge_python() -> Optional[str]:
    """The TensorFlow-free device environment (.venv-edge: tflite_runtime, numpy)."""
    return venv_python(".venv-edge")


def mct_python() -> Optional[str]:
    """Sony MCT's own environment (.venv-mct: TensorFlow 2.15, no shifter_tf)."""
    return venv_python(".venv-mct")


def module_cmd(python, module: str, *args) -> List[str]:
    """argv running `python -m module args...`; start it with cwd=ROOT and env=child_env()."""
    return [str(python), "-m", module, *map(str, args)]


def child_env(*paths: Path, **extra: str) -> Dict[str, str]:
    """This process' environment for a child: `paths` (default ROOT) first on PYTHONPATH, so the
    `tools` package and this checkout's shifter_tf/edge_runtime resolve in any environment;
    TensorFlow's log level and legacy-Keras switch defaulted; `extra` set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in (paths or (ROOT,))),
                                         env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- logging
def logger(tag: str) -> Callable[[str], None]:
    """A `log(msg)` printing `[tag HH:MM:SS] msg`, flushed (children's output goes to files)."""
    def log(msg: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)
    return log


# ---------------------------------------------------------------------------- statistics
def percentiles(xs: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> Dict[str, float]:
    """{"p50": ..., "p90": ..., "p99": ...} of xs (numpy's linear interpolation)."""
    from edge_runtime.profile import percentile
    return {f"p{q}": percentile(list(xs), q) for q in qs}


def median(xs: Iterable[Optional[float]]) -> Optional[float]:
    """Median of the values that are not None; None if there are none."""
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None
