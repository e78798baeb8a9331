"""shifter-tf: DNNShifter for TensorFlow/Keras, targeting TFLite.

tfmot 0.8 only works with Keras 2, so the legacy Keras switch must be set before TensorFlow is
first imported anywhere in the process; importing this package does that.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# The Python API (shifter_tf.api), imported on first use so `import shifter_tf` stays free of
# TensorFlow (the legacy-Keras switch above must come first).
_API = {"train_portfolio": "api", "prune": "api", "export_portfolio": "api", "Portfolio": "api",
        "image_folder": "streams", "prune_structured": "surgery"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"shifter_tf.{_API[name]}"), name)
    raise AttributeError(f"module 'shifter_tf' has no attribute {name!r}")


__all__ = ["train_portfolio", "prune", "export_portfolio", "Portfolio", "image_folder",
           "prune_structured"]
