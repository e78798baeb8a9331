"""edge_runtime: the device side of shifter-tf.

Loads a portfolio of TFLite variants (``manifest.json`` + ``variants/*.tflite``) and switches
between them at run time. Depends only on numpy and a TFLite interpreter (``tflite_runtime``,
else ``ai_edge_litert``, else ``tensorflow.lite``); importing this package loads neither — the
interpreter backend is resolved on first use, so the host exporter can import
``edge_runtime.manifest`` cheaply.

Device use::

    from edge_runtime import EdgeSwitcher
    sw = EdgeSwitcher.from_portfolio("portfolio/", memory_budget_mb=64, preload="all")
    sw.set_budget(5.0)                       # ms per example; may change at any time
    scores, served_by = sw.predict(x, return_variant=True)
    sw.stats()

Modules: ``manifest`` (reading/writing; ``schema``, ``validation`` and ``files`` behind it),
``signature`` (Ed25519 signed manifests), ``interpreter`` (backend, runner), ``probe`` (files
loaded and run in a child process first, verdicts cached by sha256), ``loading`` (verification,
loading, eviction and health of the variants), ``inputs`` (input checks and normalisation),
``policy`` (latency model, selection), ``monitor`` (/proc), ``profile`` (on-device calibration),
``switcher`` (EdgeSwitcher), ``verify`` and ``cli`` (``edge-switcher``).
"""
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "EdgeSwitcher": "edge_runtime.switcher",
    "VariantUnavailable": "edge_runtime.switcher",
    "BudgetPolicy": "edge_runtime.policy",
    "FixedPolicy": "edge_runtime.policy",
    "Manifest": "edge_runtime.manifest",
    "ManifestError": "edge_runtime.manifest",
    "VariantFileError": "edge_runtime.manifest",
    "load_manifest": "edge_runtime.manifest",
    "write_manifest": "edge_runtime.manifest",
    "validate": "edge_runtime.manifest",
    "SignatureError": "edge_runtime.signature",
    "load_signed_manifest": "edge_runtime.signature",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
