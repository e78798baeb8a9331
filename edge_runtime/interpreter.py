"""TFLite interpreter backend and a thread-safe runner around one interpreter.

Backend order: ``tflite_runtime`` (Raspberry Pi, Coral), ``ai_edge_litert`` (its successor),
``tensorflow.lite`` (last resort; never imported if either of the others is present). Set
``EDGE_RUNTIME_BACKEND`` to one of those names to force a choice.
"""
from __future__ import annotations

import importlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np

BACKENDS = ("tflite_runtime", "ai_edge_litert", "tensorflow")
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                   "Windows": "edgetpu.dll"}


class BackendUnavailable(ImportError):
    """No TFLite interpreter package is installed."""


class DelegateUnavailable(RuntimeError):
    """The Edge TPU delegate (library or device) is not available."""


@dataclass(frozen=True)
class Backend:
    """An interpreter implementation: its name, version, Interpreter class and delegate loader."""

    name: str
    version: str
    Interpreter: Any
    load_delegate: Callable[..., Any]


_backend: Optional[Backend] = None
_backend_lock = threading.Lock()


def _import_backend(name: str) -> Backend:
    if name == "tflite_runtime":
        mod = importlib.import_module("tflite_runtime.interpreter")
        version = getattr(importlib.import_module("tflite_runtime"), "__version__", "?")
        return Backend(name, version, mod.Interpreter, mod.load_delegate)
    if name == "ai_edge_litert":
        mod = importlib.import_module("ai_edge_litert.interpreter")
        try:
            from importlib.metadata import version as _v
            version = _v("ai-edge-litert")
        except Exception:  # pragma: no cover - metadata missing in odd installs
            version = "?"
        return Backend(name, version, mod.Interpreter, mod.load_delegate)
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return Backend(name, tf.__version__, tf.lite.Interpreter,
                       tf.lite.experimental.load_delegate)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def get_backend() -> Backend:
    """The interpreter backend, resolved once per process (see module docstring for order)."""
    global _backend
    if _backend is not None:
        return _backend
    with _backend_lock:
        if _backend is None:
            forced = os.environ.get("EDGE_RUNTIME_BACKEND")
            names = (forced,) if forced else BACKENDS
            errors: List[str] = []
            for name in names:
                try:
                    _backend = _import_backend(name)
                    break
                except ImportError as e:
                    errors.append(f"{name}: {e}")
            if _backend is None:
                raise BackendUnavailable(
                    "no TFLite interpreter found; install tflite-runtime (Python <= 3.11, "
                    "numpy<2) or ai-edge-litert (" + "; ".join(errors) + ")")
    return _backend


def edgetpu_library() -> str:
    import platform
    return EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")


def load_edgetpu_delegate(device: Optional[str] = None) -> Any:
    """Load the Edge TPU delegate, or raise ``DelegateUnavailable`` saying what is missing."""
    import ctypes

    lib = edgetpu_library()
    options = {"device": device} if device else {}
    try:
        # Probe the library first: a failed load_delegate leaves a half-built Delegate whose
        # __del__ raises in tflite_runtime 2.14.
        ctypes.CDLL(lib)
        return get_backend().load_delegate(lib, options)
    except (ValueError, OSError, RuntimeError) as e:
        raise DelegateUnavailable(
            f"Edge TPU delegate unavailable ({lib}: {e}); install libedgetpu and plug in the "
            "device, or use a CPU variant") from None


def open_interpreter(model: bytes, num_threads: int, edgetpu: bool = False) -> Any:
    """Create and allocate an interpreter from verified model bytes, with explicit threads."""
    backend = get_backend()
    delegates = [load_edgetpu_delegate()] if edgetpu else None
    interp = backend.Interpreter(model_content=model, num_threads=int(num_threads),
                                 experimental_delegates=delegates)
    interp.allocate_tensors()
    return interp


@dataclass(frozen=True)
class TensorSpec:
    """Index, shape, dtype and affine quantisation of one model input or output."""

    index: int
    shape: tuple
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _spec(detail: dict) -> TensorSpec:
    scale, zp = detail.get("quantization", (0.0, 0))
    return TensorSpec(int(detail["index"]), tuple(int(d) for d in detail["shape"]),
                      np.dtype(detail["dtype"]), float(scale), int(zp))


class Runner:
    """One interpreter plus the lock that serialises calls into it (TFLite is not thread-safe).

    ``run`` takes a normalised float32 batch, quantises it if the model's input is integer,
    invokes once per example (the model's batch dimension is 1: keeps the tensor arena at its
    loaded size and works for fixed-shape Edge TPU models) and returns a float32 *copy* of the
    outputs, never a view into the interpreter's buffers.
    """

    def __init__(self, interp: Any, model_bytes: int, load_ms: float):
        self.interp = interp
        self.lock = threading.Lock()
        self.load_ms = load_ms
        inputs, outputs = interp.get_input_details(), interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected a model with one input and one output, got "
                             f"{len(inputs)} inputs and {len(outputs)} outputs")
        self.input, self.output = _spec(inputs[0]), _spec(outputs[0])
        self.memory_bytes = model_bytes + self._tensor_bytes()

    def _tensor_bytes(self) -> int:
        """Upper bound of the arena: the sum of every tensor's size (the arena reuses memory)."""
        total = 0
        for d in self.interp.get_tensor_details():
            shape = d.get("shape")
            if shape is None or len(shape) == 0:
                continue
            total += int(np.prod(shape)) * np.dtype(d["dtype"]).itemsize
        return total

    @property
    def example_shape(self) -> tuple:
        return self.input.shape[1:]

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        spec = self.input
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            q = np.round(x / spec.scale) + spec.zero_point
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return x.astype(spec.dtype, copy=False)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        spec = self.output
        if spec.quantized:
            return ((y.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)
        return y.astype(np.float32, copy=False)  # already a copy

    def run(self, batch: np.ndarray) -> "tuple[np.ndarray, float]":
        """Outputs for a float32 batch ``(N, *example_shape)`` and the wall time in ms."""
        q = self._quantize(batch)
        outs = []
        in_idx, out_idx = self.input.index, self.output.index
        with self.lock:
            t0 = time.perf_counter()
            for i in range(q.shape[0]):
                self.interp.set_tensor(in_idx, q[i:i + 1])
                self.interp.invoke()
                outs.append(self.interp.get_tensor(out_idx))  # get_tensor returns a copy
            ms = (time.perf_counter() - t0) * 1e3
        y = np.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]
        return self._dequantize(y.reshape(q.shape[0], -1)), ms


def load_runner(model: bytes, num_threads: int, edgetpu: bool = False) -> Runner:
    """Open an interpreter from verified bytes and wrap it in a ``Runner`` (timed)."""
    t0 = time.perf_counter()
    interp = open_interpreter(model, num_threads, edgetpu=edgetpu)
    load_ms = (time.perf_counter() - t0) * 1e3
    return Runner(interp, len(model), load_ms)
