"""edge_runtime runs without TensorFlow: this suite runs in .venv-edge and .venv-edge-litert
(and the device userlands of make test-devices), where it is absent."""
import subprocess
import sys

from conftest import ROOT, TIME_SCALE, child_env


def test_tensorflow_is_not_installed_here():
    # The Makefile runs tests/edge only in TensorFlow-free environments: .venv-edge
    # (tflite-runtime, numpy<2) and .venv-edge-litert (ai-edge-litert, numpy 2).
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return
    raise AssertionError("tensorflow is importable: run tests/edge in .venv-edge or "
                         ".venv-edge-litert")


def test_numpy_is_one_the_backend_supports(backend):
    # tflite-runtime 2.14 (the last release) fails under numpy 2; ai-edge-litert works with both.
    import numpy
    if backend == "tflite_runtime":
        assert int(numpy.__version__.split(".")[0]) < 2


def test_using_edge_runtime_does_not_import_tensorflow(portfolio, ref_inputs, backend):
    code = (
        "import sys; import numpy as np\n"
        "from edge_runtime import EdgeSwitcher\n"
        "import edge_runtime.cli, edge_runtime.profile, edge_runtime.monitor\n"
        f"sw = EdgeSwitcher.from_portfolio({str(portfolio)!r}, num_threads=1)\n"
        f"y = sw.predict(np.load({str(portfolio.parent / 'reference' / 'inputs.npy')!r}))\n"
        "from edge_runtime.interpreter import get_backend\n"
        "print(get_backend().name, y.shape, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60 * TIME_SCALE, env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [backend, "(8,", "10)", "False"]


def test_importing_the_manifest_module_loads_no_interpreter():
    # The host exporter imports edge_runtime.manifest: it must stay stdlib-only and cheap.
    code = ("import sys, edge_runtime.manifest\n"
            "print(sorted(m for m in ('numpy', 'tensorflow', 'tflite_runtime', "
            "'ai_edge_litert', 'edge_runtime.interpreter') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60 * TIME_SCALE, env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
