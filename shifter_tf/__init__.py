"""shifter-tf: DNNShifter for TensorFlow/Keras, targeting TFLite.

tfmot 0.8 only works with Keras 2, so the legacy Keras switch must be set before TensorFlow is
first imported anywhere in the process; importing this package does that.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# The public API: everything a training script uses, imported on first use so `import shifter_tf`
# stays free of TensorFlow (the legacy-Keras switch above must come first).
_API = {
    # train a portfolio, rewrite it, export it (shifter_tf.api)
    "train_portfolio": "api", "prune": "api", "export_portfolio": "api", "Portfolio": "api",
    # data, configs and named recipes
    "image_folder": "data.streams", "Config": "config.schema", "load_config": "config.schema",
    "RECIPES": "config.recipes",
    # structured pruning of any sparse model, Keras 3 <-> tf_keras
    "prune_structured": "surgery", "to_tf_keras": "models.keras3", "to_keras3": "models.keras3",
    # Reconvene: structured pruning at initialisation, one training run
    "run_pai": "pai", "PaiConfig": "pai",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"shifter_tf.{_API[name]}"), name)
    raise AttributeError(f"module 'shifter_tf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = list(_API)
