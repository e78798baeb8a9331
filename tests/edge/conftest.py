"""Shared fixtures for the edge tests, run without TensorFlow against each runtime: .venv-edge
(tflite-runtime, numpy<2) and .venv-edge-litert (ai-edge-litert, numpy 2).

The portfolio under fixtures/ is made by tools.edge_fixtures; reference outputs there
were computed with TensorFlow's own TFLite interpreter.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # works before `pip install -e .` too
    sys.path.insert(0, str(ROOT))

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Multiplies the tests' hang timeouts (subprocesses, thread joins): make test-devices sets it
#: under qemu emulation, where one child Python that imports numpy and the runtime takes seconds.
TIME_SCALE = float(os.environ.get("EDGE_TESTS_TIME_SCALE", "1"))
PORTFOLIO = FIXTURES / "portfolio"
IDS = ["L00-dense-fp32", "L02-pruned-fp32", "L04-pruned-fp32", "L04-pruned-int8"]
#: What the runtimes' native code prints to file descriptor 2 on its own: the delegate notice,
#: and cpuinfo's complaints where /sys/devices/system/cpu is missing (qemu user-mode, containers).
NATIVE_NOISE = ("INFO: Created TensorFlow Lite", "Error in cpuinfo:", "Warning in cpuinfo:")


def product_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines our own code wrote (the runtimes' native notices dropped)."""
    return [l for l in stderr.splitlines() if l.strip() and not l.startswith(NATIVE_NOISE)]


@pytest.fixture(scope="session", autouse=True)
def probe_cache_dir(tmp_path_factory) -> Path:
    """Verdicts of the isolated file checks go to a session folder, not the user's cache."""
    d = tmp_path_factory.mktemp("edge-cache")
    old = os.environ.get("EDGE_RUNTIME_CACHE")
    os.environ["EDGE_RUNTIME_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("EDGE_RUNTIME_CACHE", None)
    else:
        os.environ["EDGE_RUNTIME_CACHE"] = old


@pytest.fixture(scope="session")
def backend() -> str:
    """The interpreter backend this run uses ("tflite_runtime", "ai_edge_litert", ...): tests
    compare against it and never assume one (make test runs this suite against both)."""
    from edge_runtime.interpreter import get_backend
    return get_backend().name


def child_env(**extra: str) -> dict:
    """A minimal environment for a child Python that imports edge_runtime from this checkout,
    with the same backend choice as this process (EDGE_RUNTIME_BACKEND, if set)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    if os.environ.get("EDGE_RUNTIME_BACKEND"):
        env["EDGE_RUNTIME_BACKEND"] = os.environ["EDGE_RUNTIME_BACKEND"]
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def portfolio() -> Path:
    return PORTFOLIO


@pytest.fixture
def tmp_portfolio(tmp_path) -> Path:
    """A writable copy of the fixture portfolio (for tampering)."""
    dst = tmp_path / "portfolio"
    shutil.copytree(PORTFOLIO, dst)
    profile = dst / "device_profile.json"
    if profile.exists():
        profile.unlink()
    return dst


@pytest.fixture(scope="session")
def manifest_doc() -> dict:
    return json.loads((PORTFOLIO / "manifest.json").read_text())


@pytest.fixture(scope="session")
def ref_inputs() -> np.ndarray:
    return np.load(FIXTURES / "reference" / "inputs.npy")


@pytest.fixture(scope="session")
def refs() -> dict:
    return {vid: np.load(FIXTURES / "reference" / f"{vid}.npy") for vid in IDS}


@pytest.fixture
def make_switcher(portfolio):
    """Build a switcher with simulated (static) CPU signals, one thread, no device profile."""
    from edge_runtime.monitor import StaticMonitor
    from edge_runtime.switcher import EdgeSwitcher

    made = []

    def make(path=None, **kw):
        kw.setdefault("num_threads", 1)
        kw.setdefault("monitor", StaticMonitor(cpu_busy_other=0.0, cpu_count_=2))
        kw.setdefault("use_profile", False)
        sw = EdgeSwitcher.from_portfolio(path or portfolio, **kw)
        made.append(sw)
        return sw

    yield make
    for sw in made:
        sw.close()
