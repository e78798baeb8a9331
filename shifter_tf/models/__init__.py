"""Model zoo: tf_keras builders for the architectures of the paper, and loading a user's model.

Every builder returns an uncompiled functional `tf_keras.Model` with Kaiming-normal (fan-in,
untruncated, as PyTorch's `kaiming_normal_`) conv/dense kernels, so sparse training and the graph
rewriter see the same layer kinds whatever the architecture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from shifter_tf.models import resnet, vgg

Builder = Callable[..., keras.Model]

#: name -> builder(input_shape, num_classes, **kwargs). Users may register their own.
MODELS: dict[str, Builder] = {
    "vgg_small": vgg.vgg_small,
    "vgg11": vgg.vgg11,
    "vgg13": vgg.vgg13,
    "vgg16": vgg.vgg16,
    "vgg19": vgg.vgg19,
    "resnet20": resnet.cifar_resnet20,
    "resnet32": resnet.cifar_resnet32,
    "resnet56": resnet.cifar_resnet56,
    "resnet18": resnet.resnet18,
    "resnet50": resnet.resnet50,
}


class ModelError(ValueError):
    """A model name, file or layer that cannot be used, with the reason."""


def register_model(name: str, builder: Builder) -> None:
    """Add a builder under `name` so configs can refer to it."""
    MODELS[name] = builder


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> keras.Model:
    """Build zoo model `name` for inputs of `input_shape` (no batch dim) and `num_classes`."""
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}'; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](tuple(input_shape), int(num_classes), **kwargs)


def load_user_model(path: str | Path, unsafe: bool = False) -> keras.Model:
    """Load a user's `.keras` / `.h5` model; Lambda layers are refused unless `unsafe=True`.

    Keras' safe mode refuses to deserialise Lambda bytecode in `.keras` files; `.h5` files have no
    safe mode, so we inspect the layers ourselves and refuse there too.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"{path}: expected a .keras or .h5 file")
    try:
        if path.suffix == ".keras":
            model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
        else:
            model = keras.models.load_model(path, compile=False)
    except ValueError as e:
        if "Lambda" in str(e) or "safe_mode" in str(e):
            raise ModelError(f"{path}: contains a Lambda layer, refused in safe mode "
                             "(pass --unsafe / unsafe=True only if you trust this file)") from None
        raise ModelError(f"{path}: cannot load model: {str(e).splitlines()[0]}") from None
    if not unsafe:
        lambdas = [l.name for l in iter_layers(model) if isinstance(l, keras.layers.Lambda)]
        if lambdas:
            raise ModelError(f"{path}: contains Lambda layer(s) {lambdas}, refused in safe mode "
                             "(pass --unsafe / unsafe=True only if you trust this file)")
    return model


def iter_layers(model: keras.Model):
    """All layers of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


__all__ = ["MODELS", "ModelError", "build_model", "load_user_model", "register_model",
           "iter_layers"]
