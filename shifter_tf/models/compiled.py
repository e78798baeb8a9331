"""A user's `model.compile(...)` carried into every IMP level: optimizer, loss and metrics as
plain config (Keras 3 or tf_keras), rebuilt as fresh tf_keras objects for each level.

Stored in `train.compiled`, so a resumed run or `shifter-tf` on the run folder compiles alike.
"""
from __future__ import annotations

import inspect
from typing import Any, Optional

import shifter_tf  # noqa: F401
from shifter_tf.errors import CompileError  # noqa: F401 (raised here)

PACKAGES = {"optimizer": "optimizers", "loss": "losses", "metric": "metrics",
            "schedule": "optimizers.schedules"}



def _tf_keras_class(kind: str, name: str):
    import tf_keras as keras

    mod = keras
    for part in PACKAGES[kind].split("."):
        mod = getattr(mod, part)
    cls = getattr(mod, name, None)
    if not inspect.isclass(cls):
        raise CompileError(f"compiled {kind} {name!r}: no tf_keras.{PACKAGES[kind]}.{name}; "
                           "compile with a built-in one, or pass train= settings instead")
    return cls


def _plain(obj: Any, kind: str) -> Any:
    """A serialized Keras object -> {"class_name", "config"} with only the keywords tf_keras'
    class takes (Keras 3 adds some, e.g. loss_scale_factor); strings pass as they are."""
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    if not isinstance(obj, dict) or "class_name" not in obj:
        raise CompileError(f"compiled {kind}: cannot carry {obj!r} (use a built-in Keras "
                           f"{kind} by name or object)")
    cls = _tf_keras_class(kind, obj["class_name"])
    params = inspect.signature(cls.__init__).parameters
    config = {}
    for k, v in (obj.get("config") or {}).items():
        if k not in params or v is None and params[k].default is None:
            continue
        if kind == "optimizer" and k == "learning_rate" and isinstance(v, dict):
            v = _plain(v, "schedule")
        config[k] = v
    return {"class_name": obj["class_name"], "config": config}


def compile_spec(model) -> Optional[dict]:
    """The optimizer, loss and metrics `model` was compiled with (Keras 3 or tf_keras), as
    plain config; None when it was never compiled."""
    if getattr(model, "optimizer", None) is None:
        return None
    doc = model.get_compile_config() or {}
    if doc.get("loss") is None:
        raise CompileError("the model is compiled without a loss; compile it with one (e.g. "
                           "SparseCategoricalCrossentropy(from_logits=True)) or not at all")
    metrics = doc.get("metrics") or []
    if isinstance(metrics, (str, dict)):
        metrics = [metrics]
    if not isinstance(metrics, list):
        raise CompileError("compiled metrics: a list is expected (one output)")
    return {"optimizer": _plain(doc["optimizer"], "optimizer"),
            "loss": _plain(doc["loss"], "loss"),
            "metrics": [_plain(m, "metric") for m in metrics]}


def build(spec: dict):
    """Fresh tf_keras (optimizer, loss, metrics) from `compile_spec`'s output."""
    import tf_keras as keras

    def make(obj, kind):
        if isinstance(obj, dict):
            config = dict(obj["config"])
            if kind == "optimizer" and isinstance(config.get("learning_rate"), dict):
                config["learning_rate"] = make(config["learning_rate"], "schedule")
            return _tf_keras_class(kind, obj["class_name"])(**config)
        return keras.optimizers.get(obj) if kind == "optimizer" else obj
    return (make(spec["optimizer"], "optimizer"), make(spec["loss"], "loss"),
            [make(m, "metric") for m in spec.get("metrics") or []])


HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
         "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
         "on_predict_batch_begin", "on_predict_batch_end")


def tf_keras_callbacks(callbacks) -> list:
    """The user's callbacks as tf_keras ones: Keras 3 callbacks (EarlyStopping, CSVLogger,
    LambdaCallback...) are wrapped so tf_keras' fit can call them; they see the tf_keras model,
    whose get_weights/stop_training they use alike."""
    import tf_keras as keras

    class Keras3Callback(keras.callbacks.Callback):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            for hook in HOOKS:
                setattr(self, hook, getattr(inner, hook))

        def set_model(self, model):
            super().set_model(model)
            self.inner.set_model(model)

        def set_params(self, params):
            super().set_params(params)
            self.inner.set_params(params)

    out = []
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.Callback):
            out.append(cb)
        elif all(hasattr(cb, h) for h in HOOKS) and hasattr(cb, "set_model"):
            out.append(Keras3Callback(cb))
        else:
            raise TypeError(f"callbacks: {type(cb).__name__} is not a Keras callback")
    return out
