"""Model zoo: tf_keras builders for the architectures of the paper, and loading a user's model.

Every builder returns an uncompiled functional `tf_keras.Model` with Kaiming-normal (fan-in,
untruncated, as PyTorch's `kaiming_normal_`) conv/dense kernels, so sparse training and the graph
rewriter see the same layer kinds whatever the architecture.
"""
from __future__ import annotations

import inspect
import types
import typing
from typing import Callable, Sequence

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from shifter_tf.config.schema import ModelConfig
from shifter_tf.errors import ConfigError
from shifter_tf.config.rules import MODEL_KWARGS
from shifter_tf.models import mobilenet, resnet, vgg
from shifter_tf.models.user import check_model_fits, import_custom_objects, load_user_model
from shifter_tf.errors import ModelError

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
    "mobilenet_v2": mobilenet.mobilenet_v2,
    "mobilenet_v3_small": mobilenet.mobilenet_v3_small,
}


def builder_kwargs(builder: Builder) -> dict[str, type]:
    """The keywords `builder` takes after (input_shape, num_classes), with their types."""
    params = list(inspect.signature(builder).parameters.values())[2:]
    try:   # string annotations (from __future__ import annotations) resolved, Optional[X] -> X
        hints = typing.get_type_hints(builder)
    except Exception:
        hints = {}
    out = {}
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = hints.get(p.name, p.annotation)
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, getattr(types, "UnionType", None)) \
                and len(args) == 1:
            ann = args[0]
        ann = ann if isinstance(ann, type) else None
        out[p.name] = ann or (type(p.default) if p.default is not p.empty else object)
    return out


def register_model(name: str, builder: Builder) -> None:
    """Add a builder under `name` so configs can refer to it (and to its keywords)."""
    MODELS[name] = builder
    MODEL_KWARGS[name] = builder_kwargs(builder)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> keras.Model:
    """Build zoo model `name` for inputs of `input_shape` (no batch dim) and `num_classes`.

    A keyword the builder does not take is a ConfigError naming `model.kwargs.<key>`.
    """
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}'; known: {', '.join(sorted(MODELS))}")
    known = builder_kwargs(MODELS[name])
    for k in kwargs:
        if k not in known:
            raise ConfigError(f"model.kwargs.{k}: {name} takes no keyword {k!r} "
                              f"(known: {', '.join(sorted(known)) or 'none'})")
    return MODELS[name](tuple(input_shape), int(num_classes), **kwargs)


def model_for(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """The config's model, checked against the data: a zoo builder, or the user's file (Lambda
    and custom objects refused unless `model.unsafe`)."""
    import_custom_objects(cfg.custom_objects, cfg.unsafe)
    if not cfg.path:
        return build_model(cfg.name, input_shape, num_classes, **cfg.kwargs)
    model = load_user_model(cfg.path, unsafe=cfg.unsafe)
    check_model_fits(model, input_shape, num_classes, source=str(cfg.path))
    return model


def iter_layers(model: keras.Model):
    """All layers of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


__all__ = ["MODELS", "ModelError", "build_model", "load_user_model", "register_model",
           "iter_layers", "model_for", "check_model_fits", "import_custom_objects",
           "builder_kwargs"]
