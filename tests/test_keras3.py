"""Keras 3 models in and out: conversion to tf_keras and back with equal outputs, one-line
refusals naming the layer, Keras 3 files as `model.path`, and a Keras 3 model through the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

import shifter_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tf_keras
from shifter_tf.models import keras3
from shifter_tf.models import ModelError, load_user_model

keras = pytest.importorskip("keras")   # Keras 3 ships with TensorFlow 2.16+
L = keras.layers


def _randomize(model, seed=0):
    """Non-trivial weights everywhere (BN statistics too), so a mixed-up weight shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.standard_normal(w.shape).astype("float32") * 0.3
        if "variance" in w.path:
            v = np.abs(v) + 0.5
        w.assign(v)
    return model


def _functional(shape=(32, 32, 3), classes=10):
    inp = keras.Input(shape, name="image")
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.BatchNormalization()(x)
    y = L.DepthwiseConv2D(3, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    x = L.Add()([x, y])
    z = L.Conv2D(4, 1)(x)
    x = L.Concatenate()([x, z])
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.AveragePooling2D(2)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.3)(x)
    return keras.Model(inp, L.Dense(classes)(x), name="k3_functional")


def _sequential(shape=(32, 32, 3), classes=10):
    return keras.Sequential([
        keras.Input(shape), L.Rescaling(1 / 255.0),
        L.Conv2D(8, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
        L.DepthwiseConv2D(3, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(8, 3), L.BatchNormalization(), L.Activation("relu"),
        L.GlobalMaxPooling2D(), L.Dropout(0.2), L.Dense(16, activation="relu"), L.Dense(classes),
    ], name="k3_sequential")


def _images(n=16, shape=(32, 32, 3), seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def _max_diff(a, b, x):
    return float(np.max(np.abs(np.asarray(a(x, training=False)) -
                               np.asarray(b(x, training=False)))))


@pytest.mark.parametrize("build", [_functional, _sequential])
def test_keras3_model_converts_with_equal_outputs_and_back(build):
    k3 = _randomize(build())
    x = _images()
    tk = keras3.to_tf_keras(k3, x)
    assert keras3.is_keras3(k3) and not keras3.is_keras3(tk) and isinstance(tk, tf_keras.Model)
    assert type(tk).__name__ == type(k3).__name__          # Sequential stays Sequential
    assert [l.name for l in tk.layers] == [l.name for l in k3.layers]
    assert tk.count_params() == k3.count_params()
    assert _max_diff(k3, tk, x) <= 1e-5
    back = keras3.to_keras3(tk)
    assert keras3.is_keras3(back) and type(back).__name__ == type(k3).__name__
    assert _max_diff(k3, back, x) <= 1e-5


def test_unconvertible_layer_is_one_line_naming_it():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3)(inp)
    x = L.Activation("hard_silu", name="hswish")(x)      # no tf_keras equivalent
    with pytest.raises(keras3.ConversionError) as e:
        keras3.to_tf_keras(keras.Model(inp, L.GlobalAveragePooling2D()(x)))
    msg = str(e.value)
    assert "\n" not in msg and "'hswish'" in msg and "hard_silu" in msg

    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="conv")(inp)
    with pytest.raises(keras3.ConversionError) as e:      # tensor arithmetic: a keras.ops node
        keras3.to_tf_keras(keras.Model(inp, x * 2.0))
    assert "\n" not in str(e.value) and "keras.ops" in str(e.value)


def test_layer_with_different_math_is_caught_by_the_output_check():
    """Keras 3's hard_sigmoid is relu6(x+3)/6, tf_keras' is clip(0.2x+0.5): same name, different
    function; only comparing outputs catches it, and the message names the layer."""
    inp = keras.Input((8,))
    x = L.Dense(8, name="fc")(inp)
    model = _randomize(keras.Model(inp, L.Activation("hard_sigmoid", name="hsig")(x)))
    with pytest.raises(keras3.ConversionError) as e:
        keras3.to_tf_keras(model, np.random.default_rng(0).standard_normal((8, 8)) * 4)
    msg = str(e.value)
    assert "\n" not in msg and "'hsig'" in msg and "differs" in msg


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_file_loads_as_tf_keras(tmp_path, suffix):
    k3 = _randomize(_functional())
    path = tmp_path / f"k3{suffix}"
    k3.save(path)
    assert keras3.is_keras3_file(path)
    tk = load_user_model(path)
    assert isinstance(tk, tf_keras.Model)
    assert _max_diff(k3, tk, _images()) <= 1e-5


def test_keras3_file_with_custom_class_is_refused_naming_it(tmp_path):
    @keras.saving.register_keras_serializable(package="mine")
    class Twice(L.Layer):
        def call(self, x):
            return x * 2

    inp = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(inp, L.Dense(2)(Twice(name="twice")(inp))).save(path)
    with pytest.raises(ModelError) as e:
        load_user_model(path)
    msg = str(e.value)
    assert "\n" not in msg and "'twice'" in msg and "Twice" in msg and "custom" in msg


def test_prune_structured_takes_and_returns_keras3():
    from shifter_tf.surgery import prune_structured

    k3 = _randomize(_sequential())
    conv = k3.get_layer(index=1)                   # first Conv2D: kill half its filters
    kernel = conv.get_weights()[0]
    kernel[..., ::2] = 0
    conv.set_weights([kernel])
    x = _images(32)
    pruned, report = prune_structured(k3, sample=x)
    assert keras3.is_keras3(pruned)
    assert report.params_after < report.params_before
    assert pruned.count_params() < k3.count_params()
    assert _max_diff(k3, pruned, x) <= 1e-4 * max(1.0, float(np.max(np.abs(k3(x)))))


def _cli(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "shifter_tf.cli", *args], cwd=cwd,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_keras3_model_through_cli_train_prune_export(tmp_path):
    """config `model.path: k3.keras` -> train -> prune (also writing Keras 3 files) -> export;
    the pruned Keras 3 file reloads in Keras 3 and equals the tf_keras pruned model."""
    k3 = _functional(shape=(28, 28, 1), classes=10)
    k3.save(tmp_path / "k3.keras")
    cfg = {"name": "k3", "seed": 1,
           "data": {"name": "mnist5k", "limit_train": 384},
           "model": {"path": "k3.keras"},
           "train": {"lr": 0.05, "epochs": 1, "batch_size": 32, "verbose": 0},
           "lottery": {"levels": 1, "prune_fraction": 0.8, "rewind_iterations": 2,
                       "schedule": "oneshot"},
           "surgery": {"keras3": True, "sample_size": 64},
           "export": {"precisions": ["fp32"], "latency_runs": 2, "threads": [1],
                      "eval_limit": 100, "representative_samples": 16},
           "portfolio": {"max_accuracy_drop": None, "stop_at_chance": False}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    _cli("train", "--config", "cfg.yaml", "--out", "run", cwd=tmp_path)
    _cli("prune", "run", cwd=tmp_path)
    _cli("export", "run", cwd=tmp_path)

    level = tmp_path / "run" / "pruned" / "level_01"
    manifest = json.loads((tmp_path / "run" / "portfolio" / "manifest.json").read_text())
    assert any(v["kind"] == "pruned" for v in manifest["variants"])
    reloaded = keras.saving.load_model(level / "model_keras3.keras", compile=False)
    assert keras3.is_keras3(reloaded)
    tk = tf_keras.models.load_model(level / "model.keras", compile=False, safe_mode=False)
    x = np.random.default_rng(2).standard_normal((8, 28, 28, 1)).astype("float32")
    assert _max_diff(reloaded, tk, x) <= 1e-5 * max(1.0, float(np.max(np.abs(tk(x)))))
