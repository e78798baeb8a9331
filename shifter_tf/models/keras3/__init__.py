"""Keras 3 models in and out: rebuild a Keras 3 model as tf_keras (where tfmot and the surgery
work) and a tf_keras model as Keras 3 (so a Keras 3 user gets a Keras 3 model back).

Layers are mapped generically by class name and config: the source layer's `get_config()` with
the few keys the two libraries spell differently fixed (dtype policies -> dtype names,
`LeakyReLU.negative_slope` <-> `alpha`, options one library lacks dropped only while they hold
their default), then the same-named class of the other library is instantiated, the graph is
rebuilt node by node and the weights are copied. Every conversion ends by running both models
on a sample; if their outputs differ, the first layer whose outputs differ is named.

Keras 3 is imported lazily (`import keras` only inside functions): the rest of shifter_tf runs
with TF_USE_LEGACY_KERAS=1 and `tf_keras`, and `import keras` still gives Keras 3 then.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

from shifter_tf.models.keras3.graph import convert as _convert
from shifter_tf.models.keras3.layers import RENAMED, UNSUPPORTED, first_line, keras3_lib, is_keras3
from shifter_tf.errors import ConversionError
from shifter_tf.errors import ModelError


def to_tf_keras(model, sample: Optional[np.ndarray] = None,
                atol: float = 1e-5) -> tf_keras.Model:
    """A tf_keras copy of Keras 3 functional/Sequential `model` with its weights, checked to
    give the same outputs on `sample` (default: a seeded random batch of the input shape).
    A tf_keras model is returned as it is. Raises ConversionError naming the first layer at
    fault."""
    if not is_keras3(model):
        return model
    return _convert(model, True, sample, atol)


def to_keras3(model: tf_keras.Model, sample: Optional[np.ndarray] = None, atol: float = 1e-5):
    """A Keras 3 copy of tf_keras functional/Sequential `model` (same check as `to_tf_keras`).
    A Keras 3 model is returned as it is."""
    if is_keras3(model):
        return model
    return _convert(model, False, sample, atol)


def load_any(path: str | Path, unsafe: bool = False) -> tf_keras.Model:
    """A model file saved by Keras 3 (.keras, or .h5 with Keras 3 configs), loaded with Keras 3
    and converted to tf_keras; ModelError/ConversionError on failure."""
    path = Path(path)
    k3 = keras3_lib()
    try:
        if path.suffix == ".keras":
            model = k3.saving.load_model(path, compile=False, safe_mode=not unsafe)
        else:
            model = k3.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras 3 raises many kinds; one line for the user
        raise ModelError(f"{path}: saved by Keras 3, which cannot load it: "
                         f"{first_line(e)}") from None
    try:
        return to_tf_keras(model)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None


def save_keras3(model: tf_keras.Model, path: str | Path, sample: Optional[np.ndarray] = None,
                atol: float = 1e-5) -> None:
    """Write tf_keras `model` as a Keras 3 `.keras` file (converted and checked first)."""
    to_keras3(model, sample, atol).save(str(path))


def is_keras3_file(path: str | Path) -> bool:
    """True if `path` (.keras zip or .h5) was written by Keras 3."""
    import json
    import zipfile
    path = Path(path)
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                if "metadata.json" not in z.namelist():
                    return False
                meta = json.loads(z.read("metadata.json"))
            return str(meta.get("keras_version", "")).startswith("3.")
        import h5py
        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version")
            config = f.attrs.get("model_config")
        version = version.decode() if isinstance(version, bytes) else str(version or "")
        if version.startswith("3."):
            return True
        text = config.decode() if isinstance(config, bytes) else str(config or "")
        return '"batch_shape"' in text and '"batch_input_shape"' not in text
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False


__all__ = ["ConversionError", "RENAMED", "UNSUPPORTED", "is_keras3", "is_keras3_file",
           "load_any", "save_keras3", "to_keras3", "to_tf_keras"]
