"""A user's own model: load a `.keras`/`.h5` file safely, import named custom objects, and check
that the model fits the data before anything trains.

Every failure is a `ModelError` naming the file and the layer, class or shape at fault.
"""
from __future__ import annotations

import importlib
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras
from shifter_tf.errors import ModelError  # noqa: F401 (raised here)

UNSAFE_HINT = "set model.unsafe: true (unsafe=True in Python) only if you trust this file"



def import_custom_objects(specs: Iterable[str], unsafe: bool = False) -> dict[str, Any]:
    """Import each `package.module:Name` and register it with Keras (so every later load of a
    model holding it works); importing runs the module's code, hence `unsafe` is required."""
    specs = list(specs)
    if specs and not unsafe:
        raise ModelError(f"model.custom_objects: importing {specs[0]} runs that module's code; "
                         "set model.unsafe: true if you trust it")
    found = {}
    for spec in specs:
        module, _, name = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module), name)
        except ImportError as e:
            raise ModelError(f"model.custom_objects: {spec}: cannot import {module} "
                             f"({e})") from None
        except AttributeError:
            raise ModelError(f"model.custom_objects: {spec}: module {module} has no "
                             f"{name!r}") from None
        found[name] = obj
    keras.utils.get_custom_objects().update(found)
    return found


BUILTIN_MODULES = ("keras", "tf_keras", "tensorflow", "builtins")
MODEL_CLASSES = ("Functional", "Sequential", "Model")


def _saved_config(path: Path) -> dict:
    """The model config stored in a .keras (zip: config.json) or .h5 (attribute) file."""
    import json

    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        import h5py
        with h5py.File(path, "r") as f:
            text = f.attrs.get("model_config")
        if text is None:
            raise ModelError(f"{path}: holds weights only, no model config; save the whole model")
        return json.loads(text.decode() if isinstance(text, bytes) else text)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as e:
        if isinstance(e, ModelError):
            raise
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"{path}: not a readable Keras model file (empty, truncated or "
                         f"corrupt: {first})") from None


def _check_classes(path: Path, config: dict, unsafe: bool, keras3: bool = False) -> None:
    """Refuse, before Keras sees the file, what it would fail on or run: a subclassed model, a
    class not registered (Keras would import the module the file names), a Lambda in safe mode.
    In a Keras 3 file (`keras3`) every custom class is refused: it cannot become tf_keras."""
    top = config.get("class_name")
    if top not in MODEL_CLASSES:
        raise ModelError(f"{path}: {top!r} is a subclassed model; shifter-tf prunes functional or "
                         "Sequential models only (tfmot wraps their layers): rebuild it with "
                         "keras.Input(...) and keras.Model(inputs, outputs)")
    known = keras.utils.get_custom_objects()

    def walk(node, layer):
        if isinstance(node, list):
            for v in node:
                walk(v, layer)
            return
        if not isinstance(node, dict):
            return
        cls, module = node.get("class_name"), node.get("module")
        if isinstance(cls, str) and isinstance(node.get("config"), dict):
            layer = node.get("name") or node["config"].get("name") or layer
            custom = (module is not None and not str(module).split(".")[0] in BUILTIN_MODULES
                      or module is None and "inbound_nodes" in node
                      and not hasattr(keras.layers, cls) and cls not in MODEL_CLASSES)
            if custom and keras3:
                raise ModelError(f"{path}: layer {layer!r} has class {cls!r}, a custom Keras 3 "
                                 "class, which cannot be converted to tf_keras (only built-in "
                                 "layers are); rebuild the model from built-in layers")
            if custom and cls not in known and node.get("registered_name") not in known:
                raise ModelError(f"{path}: layer {layer!r} has class {cls!r} (a custom class) "
                                 "that is not known here; name it in model.custom_objects, e.g. "
                                 f"[my_pkg.layers:{cls}], with model.unsafe: true")
            if cls == "Lambda" and not unsafe:
                raise ModelError(f"{path}: layer {layer!r} is a Lambda layer, refused in safe "
                                 f"mode ({UNSAFE_HINT})")
        for v in node.values():
            walk(v, layer)
    walk(config.get("config", {}), None)


def _load_error(path: Path, e: Exception, unsafe: bool) -> ModelError:
    """Turn what Keras/h5py raise into one line naming the file and the class at fault."""
    msg = str(e)
    if "Lambda" in msg or "safe_mode" in msg:
        return ModelError(f"{path}: contains a Lambda layer, refused in safe mode ({UNSAFE_HINT})")
    if "batch_shape" in msg or re.search(r"['`]Functional['`]", msg):
        return ModelError(f"{path}: saved by Keras 3, which tf_keras cannot read; save it with "
                          "tf_keras (TF_USE_LEGACY_KERAS=1) or rebuild it layer by layer")
    m = re.search(r"(?:object of type|Unknown \w+:|locate class) [`']?(\w+)[`']?", msg)
    if m:
        name = m.group(1)
        return ModelError(f"{path}: class {name!r} (a custom layer or subclassed model) is not "
                          f"known here; name it in model.custom_objects, e.g. "
                          f"[my_pkg.layers:{name}], with model.unsafe: true")
    if isinstance(e, (OSError, zipfile.BadZipFile, EOFError, KeyError)):
        first = (msg.splitlines() or [type(e).__name__])[0][:160]
        return ModelError(f"{path}: not a readable Keras model file (empty, truncated or "
                          f"corrupt: {first})")
    return ModelError(f"{path}: cannot load model: {(msg.splitlines() or [''])[0][:200]}")


def load_user_model(path: str | Path, unsafe: bool = False,
                    custom_objects: Iterable[str] = ()) -> keras.Model:
    """Load a user's `.keras` / `.h5` model; Lambda layers are refused unless `unsafe=True`.
    A file saved by Keras 3 is loaded with Keras 3 and converted to tf_keras
    (`shifter_tf.models.keras3.load_any`; outputs checked equal).

    Keras' safe mode refuses to deserialise Lambda bytecode in `.keras` files; `.h5` files have no
    safe mode, so we inspect the layers ourselves and refuse there too. `custom_objects` are
    `package.module:Name` strings (see `import_custom_objects`).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"{path}: expected a .keras or .h5 file")
    import_custom_objects(custom_objects, unsafe)
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: not a readable Keras model file (empty)")
    from shifter_tf.models import keras3
    config = _saved_config(path)   # a corrupt file fails here, with its own line
    k3 = keras3.is_keras3_file(path)
    _check_classes(path, config, unsafe, keras3=k3)
    if k3:
        return keras3.load_any(path, unsafe=unsafe)
    try:
        if path.suffix == ".keras":
            model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
        else:
            model = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise _load_error(path, e, unsafe) from None
    if not unsafe:
        from shifter_tf.models import iter_layers
        lambdas = [l.name for l in iter_layers(model) if isinstance(l, keras.layers.Lambda)]
        if lambdas:
            raise ModelError(f"{path}: contains Lambda layer(s) {lambdas}, refused in safe mode "
                             f"({UNSAFE_HINT})")
    return model


def _fmt(shape: Sequence[Optional[int]]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def check_model_fits(model: keras.Model, input_shape: Sequence[int], num_classes: int,
                     source: str = "model") -> None:
    """Raise ModelError unless `model` takes one image of `input_shape` and returns
    `num_classes` logits."""
    if model.inputs is None or model.outputs is None:
        raise ModelError(f"{source}: a subclassed model; shifter-tf prunes functional or "
                         "Sequential models only")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{source}: has {len(model.inputs)} input(s) and {len(model.outputs)} "
                         "output(s); one image input and one logits output are expected")
    got = tuple(model.inputs[0].shape[1:])
    want = tuple(int(d) for d in input_shape)
    if len(got) != len(want) or any(g is not None and g != w for g, w in zip(got, want)):
        raise ModelError(f"{source}: input {model.input_names[0]!r} has shape {_fmt(got)} but the "
                         f"data's images are {_fmt(want)}; set data.image_size or use a model "
                         "built for this data")
    out = tuple(model.outputs[0].shape)
    layer = model.output_names[0]
    if len(out) != 2 or out[-1] != int(num_classes):
        raise ModelError(f"{source}: output layer {layer!r} has shape {_fmt(out)} but the data "
                         f"has {int(num_classes)} classes; expected (?, {int(num_classes)}) logits")
