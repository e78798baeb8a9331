"""Config checks beyond types, all before TensorFlow loads: the data split, zoo model keywords,
custom objects, `--set` overrides and the TF_CONFIG cluster variable.

Each failure is a `ConfigError` naming the file (or `--set`, or TF_CONFIG) and the dotted key.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import yaml

#: Keywords each zoo builder takes through `model.kwargs`; tests keep this equal to the builders'
#: signatures and `shifter_tf.models.register_model` adds entries for a user's builders.
MODEL_KWARGS: dict[str, dict[str, type]] = {
    **{n: {"width": float} for n in ("vgg_small", "vgg11", "vgg13", "vgg16", "vgg19")},
    **{n: {"width": float, "base_filters": int, "zero_init_residual": bool}
       for n in ("resnet20", "resnet32", "resnet56")},
    **{n: {"small_input": bool, "width": float, "zero_init_residual": bool}
       for n in ("resnet18", "resnet50")},
    **{n: {"width": float, "alpha": float, "last_channels": int, "dropout": float,
           "zero_init_residual": bool}
       for n in ("mobilenet_v2", "mobilenet_v3_small")},
}
#: `width` is a multiplier everywhere; the CIFAR ResNets' old `width` (base filters, >= 8) is
#: refused with the new spelling (models.resnet.check_width says the same to Python callers).
OLD_RESNET_WIDTH = 8

Bad = Callable[[str, str], None]   # bad(dotted_key, message) raises ConfigError


def _error(msg: str) -> Exception:
    from shifter_tf.errors import ConfigError
    return ConfigError(msg)


def parse_overrides(pairs: Optional[list[str]]) -> dict[str, Any]:
    """`["train.epochs=2", ...]` (the CLI's --set) -> {dotted key: YAML value}."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        key, eq, text = p.partition("=")
        key = key.strip()
        if not eq or not key or not all(key.split(".")):
            raise _error(f"--set {p!r}: expected KEY=VALUE, e.g. --set train.epochs=2")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise _error(f"--set {key}: {text!r} is not a valid YAML value ({first})") from None
    return out


def apply_overrides(values: dict, overrides: dict[str, Any]) -> None:
    """Set each dotted key of `overrides` in the nested mapping `values`, in place."""
    for dotted, v in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise _error(f"--set {dotted}: {'.'.join(parents[:i + 1])} is not a mapping "
                             f"(it is {type(node).__name__} {node!r})")
        node[leaf] = v


def check_tf_config(environ: Optional[dict] = None) -> None:
    """Raise ConfigError unless TF_CONFIG describes a usable multi-worker cluster for this task
    (set, valid JSON, chief/worker jobs of host:port, a task inside the cluster)."""
    from shifter_tf.config.tfconfig import parse_tf_config
    parse_tf_config(environ)


def validate_data(d: Any, bad: Bad) -> None:
    """Fractions that leave training data, an image size of [height, width]."""
    for key in ("val_fraction", "test_fraction"):
        if not 0.0 <= getattr(d, key) < 1.0:
            bad(f"data.{key}", f"must be in [0, 1), got {getattr(d, key)}")
    if d.name in ("mnist5k", "image_folder") and d.val_fraction + d.test_fraction >= 1.0:
        bad("data.val_fraction", f"val_fraction + test_fraction = {d.val_fraction} + "
                                 f"{d.test_fraction} >= 1 leaves no training data")
    if d.image_size is not None and (len(d.image_size) != 2 or min(d.image_size) < 1):
        bad("data.image_size", f"expected [height, width] of positive ints, got {d.image_size}")
    if d.limit_train is not None and d.limit_train < 1:
        bad("data.limit_train", f"must be >= 1, got {d.limit_train}")


def validate_model(m: Any, bad: Bad) -> None:
    """Custom objects need `unsafe`; zoo names and their keywords must exist."""
    for spec in m.custom_objects:
        module, _, name = spec.partition(":")
        if not (name.isidentifier() and module and
                all(part.isidentifier() for part in module.split("."))):
            bad("model.custom_objects", f"{spec!r}: expected 'package.module:ClassName'")
    if m.custom_objects and not m.unsafe:
        bad("model.custom_objects", f"importing {m.custom_objects[0]} runs that module's code; "
                                    "set model.unsafe: true if you trust it")
    if m.path:
        if m.kwargs:
            bad("model.kwargs", "applies to zoo models (model.name) only, not to model.path")
        return
    if m.name not in MODEL_KWARGS:
        bad("model.name", f"unknown model {m.name!r} (known: {', '.join(sorted(MODEL_KWARGS))})")
    known = MODEL_KWARGS[m.name]
    for k, v in m.kwargs.items():
        if k not in known:
            bad(f"model.kwargs.{k}", f"{m.name} takes no keyword {k!r} "
                                     f"(known: {', '.join(sorted(known)) or 'none'})")
        tp = known[k]
        if (k == "width" and m.name.startswith("resnet") and isinstance(v, int)
                and not isinstance(v, bool) and v >= OLD_RESNET_WIDTH):
            bad("model.kwargs.width", f"{m.name}: width is a multiplier of every stage's "
                                      f"filters now (1.0 = the paper's network); {v} looks like "
                                      f"the old base-filter count: write model.kwargs."
                                      f"base_filters: {v} instead")
        if k == "dropout":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                bad(f"model.kwargs.{k}", f"expected a fraction in [0, 1), got {v!r}")
            continue
        if tp is bool:
            if not isinstance(v, bool):
                bad(f"model.kwargs.{k}", f"expected true or false, got {v!r}")
        elif (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0
              or (tp is int and not isinstance(v, int))):
            bad(f"model.kwargs.{k}", f"expected a positive {tp.__name__}, got {v!r}")
