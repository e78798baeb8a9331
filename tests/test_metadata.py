"""TFLite Model Metadata in every exported file (`export.metadata`) and Android-ready variants
(`export.android`). The Task Library itself opens them in tests/test_task_library.py."""
import hashlib
import json

import numpy as np
import pytest

import shifter_tf  # noqa: F401  (before TensorFlow)
import tf_keras as keras

from edge_runtime import tflite_metadata as tm
from edge_runtime.interpreter import load_runner
from shifter_tf.data.sets import Dataset, Normalization
from shifter_tf.errors import ExportError
from shifter_tf.export import android as droid
from shifter_tf.export.convert import convert
from shifter_tf.export.metadata import add_metadata, build_metadata
from shifter_tf.export.portfolio import Candidate, build_portfolio

L = keras.layers
LABELS = ["zero", "one", "two", "three"]
NORM = Normalization(1 / 255, [0.2], [0.3])
KW = dict(threads=[1], runs=2, warmup=1, representative=32, progress=False, workers=0)


def _data(channels=1, norm=NORM) -> Dataset:
    rng = np.random.default_rng(0)

    def split(n):
        return (rng.integers(0, 256, size=(n, 12, 12, channels)).astype("float32"),
                np.arange(n) % 4)
    (xtr, ytr), (xv, yv), (xte, yte) = split(48), split(8), split(40)
    return Dataset("tiny", xtr, ytr, xv, yv, xte, yte, LABELS, norm)


def _model(channels=1):
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, channels))
    x = L.Conv2D(6, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(6, 3, activation="relu", name="c2")(x)
    return keras.Model(inp, L.Dense(4, name="fc")(L.Flatten()(x)), name="tiny")


@pytest.fixture(scope="module")
def tiny():
    return _model(), _data()


def _export(tmp_path, tiny, precisions, **kw):
    model, data = tiny
    cands = [Candidate("dense", 0, 1.0, lambda: model, precisions)]
    return build_portfolio(tmp_path, cands, data, "tiny", **KW, **kw)


def test_metadata_round_trips_through_the_device_reader():
    meta = {"name": "m", "description": "d", "version": "L01-pruned-int8", "author": "a",
            "min_parser_version": "1.0.0",
            "inputs": [{"name": "image", "description": "x", "content": "image",
                        "color_space": "RGB",
                        "normalization": {"mean": [1.5, 2.5, 3.5], "std": [4.0, 5.0, 6.0]},
                        "stats": {"min": [0.0], "max": [255.0]}}],
            "outputs": [{"name": "probability", "content": "feature",
                         "stats": {"min": [0.0], "max": [1.0]},
                         "associated_files": [{"name": "labels.txt", "description": "l",
                                               "type": "TENSOR_AXIS_LABELS"}]}]}
    buf = build_metadata(meta)
    assert buf[4:8] == b"M001"
    assert tm.parse_metadata(buf) == meta


def test_every_variant_carries_metadata_and_the_manifest_describes_the_final_file(tmp_path,
                                                                                  tiny):
    precisions = ["fp32", "fp16", "int8_dynamic", "int8"]
    on = _export(tmp_path / "on", tiny, precisions)
    off = _export(tmp_path / "off", tiny, precisions, metadata=False)
    x = NORM.apply(_data().x_test[:8])
    mean, std = 0.2 * 255, 0.3 * 255
    for v, w in zip(on["variants"], off["variants"]):
        blob = (tmp_path / "on" / v["file"]).read_bytes()
        assert v["sha256"] == hashlib.sha256(blob).hexdigest() and v["bytes"] == len(blob)
        assert v["metadata"] is True and w["metadata"] is False
        meta = tm.read_metadata(blob)
        assert tm.read_metadata((tmp_path / "off" / w["file"]).read_bytes()) is None
        assert meta["name"] == "tiny" and meta["version"] == v["id"]
        assert meta["labels"] == LABELS and meta["packed_files"] == ["labels.txt"]
        (inp,), (out,) = meta["inputs"], meta["outputs"]
        assert inp["content"] == "image" and inp["color_space"] == "GRAYSCALE"
        np.testing.assert_allclose(inp["normalization"]["mean"], [mean], rtol=1e-6)
        np.testing.assert_allclose(inp["normalization"]["std"], [std], rtol=1e-6)
        assert out["name"] == "logits" and "Logits" in out["description"]
        # the metadata changes nothing the interpreter computes
        ya = load_runner(blob, 1).run(x)[0]
        yb = load_runner((tmp_path / "off" / w["file"]).read_bytes(), 1).run(x)[0]
        np.testing.assert_array_equal(ya, yb)
        assert v["accuracy"] == w["accuracy"]
    assert on["task"]["output"] == "logits"


def test_labels_with_a_line_break_are_refused(tiny):
    blob = convert(tiny[0], "fp32")
    task = {"name": "t", "input_shape": [12, 12, 1], "normalization": None,
            "normalization_source": "model", "labels": ["a", "b\nc", "d", "e"],
            "num_classes": 4}
    with pytest.raises(ExportError, match="line break"):
        add_metadata(blob, task, {"id": "x", "kind": "dense", "level": 0, "density": 1.0,
                                  "precision": "fp32"}, "me")


def test_luma_front_is_exact_on_grey_images():
    w = np.asarray(droid.LUMA, np.float32)
    assert w.sum(dtype=np.float32) == 1.0
    assert np.array_equal(w.astype(np.float16).astype(np.float32), w)
    np.testing.assert_allclose(w, [0.299, 0.587, 0.114], atol=3e-4)
    inp = keras.Input((12, 12, 1))
    core = keras.Model(inp, L.Flatten()(inp))
    front = droid.android_model(core, Normalization.identity("model"))
    luma = keras.Model(front.input, front.get_layer("android_luma").output)
    grey = np.repeat(np.arange(256, dtype=np.float32)[:144].reshape(1, 12, 12, 1), 3, -1)
    grey = np.concatenate([grey, grey + 112])
    assert np.array_equal(luma.predict(grey, verbose=0), grey[..., :1])


def test_android_variants_are_what_the_task_library_accepts(tmp_path, tiny):
    model, data = tiny
    m = _export(tmp_path, tiny, ["fp32", "int8"], android=True)
    t = m["task"]
    assert t["input_shape"] == [12, 12, 3] and t["normalization"] is None
    assert t["normalization_source"] == "model" and t["output"] == "probabilities"
    assert t["android"]["luma"] == list(droid.LUMA)
    grey = data.x_test[:16]
    ref = keras.activations.softmax(model(NORM.apply(grey))).numpy()
    for v in m["variants"]:
        blob = (tmp_path / v["file"]).read_bytes()
        r = load_runner(blob, 1)
        io_type = np.uint8 if v["precision"] == "int8" else np.float32
        assert r.input.shape == (1, 12, 12, 3) and r.input.dtype == io_type
        assert r.output.dtype == io_type
        if io_type == np.uint8:   # uint8 in = the pixels themselves
            assert (r.input.scale, r.input.zero_point) == (1.0, 0)
        y = r.run(droid.to_rgb(grey))[0]
        tol = 1e-5 if io_type == np.float32 else 0.05
        np.testing.assert_allclose(y, ref, atol=tol)
        meta = tm.read_metadata(blob)
        (inp,), (out,) = meta["inputs"], meta["outputs"]
        assert inp["color_space"] == "RGB"
        assert inp["normalization"] == {"mean": [0.0], "std": [1.0]}
        assert out["name"] == "probability" and meta["labels"] == LABELS
        assert inp["stats"] == {"min": [0.0], "max": [255.0]}   # raw pixels either way
    # the switcher serves them with raw pixels, as the manifest says; verify accepts them
    from edge_runtime import EdgeSwitcher
    from edge_runtime.cli import main
    assert main(["verify", str(tmp_path)]) == 0
    sw = EdgeSwitcher.from_portfolio(tmp_path, preload="all", safe_load=False)
    sw.switch_to(m["variants"][0]["id"])
    np.testing.assert_allclose(sw.predict(droid.to_rgb(grey)), ref, atol=1e-5)


def test_uint8_input_means_pixels_even_when_calibration_misses_0_and_255(tiny):
    model, data = tiny
    front = droid.android_model(model, NORM)
    rep = droid.to_rgb(np.clip(data.x_train, 20, 200))
    blob = convert(front, "int8", rep, android=True)
    r = load_runner(blob, 1)
    assert (r.input.scale, r.input.zero_point) == (1.0, 0)
    x = data.x_test     # pixels beyond the calibrated range saturate inside, as always
    ref = keras.activations.softmax(model(NORM.apply(np.clip(x, 20, 200)))).numpy()
    y = r.run(droid.to_rgb(x))[0]
    assert np.abs(y - ref).max() < 0.05


def test_android_refuses_what_it_cannot_make(tmp_path):
    with pytest.raises(ExportError, match="normalisation"):
        droid.check_android((12, 12, 1), Normalization.identity("caller"))
    with pytest.raises(ExportError, match="image input"):
        droid.check_android((784,), NORM)


def test_rgb_model_and_own_softmax(tmp_path):
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, activation="relu")(inp)
    model = keras.Model(inp, L.Dense(4, activation="softmax")(L.Flatten()(x)))
    norm = Normalization(1 / 255, [0.1, 0.2, 0.3], [0.2, 0.3, 0.4])
    data = _data(3, norm)
    m = build_portfolio(tmp_path / "a", [Candidate("dense", 0, 1.0, lambda: model, ["fp32"])],
                        data, "rgb", android=True, **KW)
    assert m["task"]["android"] == {"luma": None, "trained_normalization": norm.to_dict(),
                                    "softmax_added": False}
    blob = (tmp_path / "a" / m["variants"][0]["file"]).read_bytes()
    y = load_runner(blob, 1).run(data.x_test[:8])[0]
    np.testing.assert_allclose(y, model(norm.apply(data.x_test[:8])).numpy(), atol=1e-5)
    plain = build_portfolio(tmp_path / "b", [Candidate("dense", 0, 1.0, lambda: model,
                                                       ["fp32"])], data, "rgb", **KW)
    meta = tm.read_metadata((tmp_path / "b" / plain["variants"][0]["file"]).read_bytes())
    assert plain["task"]["output"] == "probabilities"
    assert meta["inputs"][0]["color_space"] == "RGB" and meta["outputs"][0]["name"] == \
        "probability"
    np.testing.assert_allclose(meta["inputs"][0]["normalization"]["mean"],
                               [25.5, 51.0, 76.5], rtol=1e-6)


def test_edge_switcher_info_shows_the_metadata(tmp_path, tiny, capsys, monkeypatch):
    from edge_runtime.cli import main

    _export(tmp_path, tiny, ["fp32", "int8"])
    monkeypatch.setenv("EDGE_RUNTIME_CACHE", str(tmp_path / "cache.json"))
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "metadata   L00-dense-fp32: tiny  version L00-dense-fp32" in out
    assert "GRAYSCALE, (x - [51]) / [76.5]" in out and "labels (4): zero, one, two" in out
    assert "--metadata shows every variant's" in out
    assert main(["info", "--metadata", str(tmp_path)]) == 0
    assert "metadata   L00-dense-int8: tiny  version L00-dense-int8" in capsys.readouterr().out
    # where the flatbuffers package is missing (a tflite-runtime device) it says so
    monkeypatch.setitem(__import__("sys").modules, "flatbuffers", None)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cannot read TFLite Model Metadata here: the `flatbuffers` package is not " \
           "installed" in out and "per the manifest 2 of 2 variants carry it" in out
    json.loads((tmp_path / "manifest.json").read_text())


def test_config_keys():
    from shifter_tf.config.schema import from_dict
    from shifter_tf.errors import ConfigError

    cfg = from_dict({})
    assert cfg.export.metadata is True and cfg.export.android is False
    assert from_dict({"export": {"android": True, "metadata": False}}).export.android is True
    with pytest.raises(ConfigError, match="export.android"):
        from_dict({"export": {"android": "yes"}})
