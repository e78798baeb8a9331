"""The Task Library opens what we export: tflite-support 0.4.4's `ImageClassifier` (the C++ that
runs on Android) classifies 200 mnist5k test images with an Android-ready fp32 and full-integer
variant of a small VGG, and its top-1 equals the TFLite interpreter's; `MetadataDisplayer` shows
the labels and the normalisation of those and of a standard variant.

tflite-support cannot share an environment with TensorFlow 2.21 (protobuf), so it lives in
.venv-tasklib (`make test` creates it); tests/tasklib/classify.py runs there. Without that
environment the test is skipped, unless SHIFTER_TF_REQUIRE_TASKLIB=1 (set by `make test`).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKLIB = Path(os.environ.get("SHIFTER_TF_TASKLIB", ROOT / ".venv-tasklib"))
PYTHON = TASKLIB / "bin" / "python"
N = 200

if not PYTHON.exists():
    if os.environ.get("SHIFTER_TF_REQUIRE_TASKLIB") == "1":
        pytest.fail(f"{PYTHON} is missing: `make {TASKLIB.name}/.installed` creates it",
                    pytrace=False)
    pytest.skip(f"no Task Library environment at {TASKLIB} (`make test` creates it)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A vgg_small (width 0.25) trained one epoch on mnist5k, exported Android-ready in fp32 and
    int8 and as a standard fp32 variant; the 200 test images as raw RGB uint8."""
    import shifter_tf  # noqa: F401  (before TensorFlow)
    import tf_keras as keras

    from conftest import tiny_config
    from shifter_tf.data.loaders import load_dataset
    from shifter_tf.export.android import raw_pixels
    from shifter_tf.export.portfolio import Candidate, build_portfolio
    from shifter_tf.models import build_model

    cfg = tiny_config(data={"limit_train": 2000})
    data = load_dataset(cfg.data, seed=1)
    keras.utils.set_random_seed(1)
    model = build_model("vgg_small", data.input_shape, data.num_classes, width=0.25)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.tf_dataset("train", 32, training=True), epochs=1, verbose=0)
    out = tmp_path_factory.mktemp("tasklib")
    kw = dict(threads=[1], runs=2, warmup=1, representative=64, eval_limit=N, progress=False,
              workers=0)
    android = build_portfolio(out / "android", [Candidate("dense", 0, 1.0, lambda: model,
                                                          ["fp32", "int8"])],
                              data, "mnist5k_vgg", android=True, **kw)
    plain = build_portfolio(out / "plain", [Candidate("dense", 0, 1.0, lambda: model,
                                                      ["fp32"])], data, "mnist5k_vgg", **kw)
    x, y = raw_pixels(data, "test", N)
    np.save(out / "images.npy", x.astype(np.uint8))
    files = {f"android-{v['precision']}": out / "android" / v["file"]
             for v in android["variants"]}
    files["plain-fp32"] = out / "plain" / plain["variants"][0]["file"]
    r = subprocess.run([str(PYTHON), str(ROOT / "tests/tasklib/classify.py"),
                        str(out / "images.npy"), *map(str, files.values())],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout)
    return {k: seen[str(p)] for k, p in files.items()}, files, x, y, data, android


def _interpreter(path, x):
    from edge_runtime.interpreter import load_runner
    return load_runner(Path(path).read_bytes(), 1).run(x.astype(np.float32))[0]


@pytest.mark.parametrize("variant", ["android-fp32", "android-int8"])
def test_image_classifier_top1_equals_the_interpreters(exported, variant):
    seen, files, x, y, data, manifest = exported
    assert "error" not in seen[variant], seen[variant].get("error")
    probs = _interpreter(files[variant], x)
    top = seen[variant]["top1"]
    assert len(top) == N
    tl_index = np.array([t[0] for t in top])
    tl_score = np.array([t[1] for t in top])
    ours = np.argmax(probs, -1)
    # equal top-1; where two classes share the top uint8 score either is the top-1
    tied = probs[np.arange(N), tl_index] == probs.max(-1)
    assert np.all((tl_index == ours) | tied), np.flatnonzero(tl_index != ours)
    np.testing.assert_allclose(tl_score, probs.max(-1), atol=1e-5)
    assert [t[2] for t in top] == [data.labels[i] for i in tl_index]
    recorded = {f"android-{v['precision']}": v["accuracy"] for v in manifest["variants"]}
    # the manifest's accuracy; one short epoch: well above chance (0.1), far from converged
    assert float(np.mean(ours == y)) == recorded[variant] > 0.3


def test_metadata_displayer_shows_labels_and_normalisation(exported):
    seen, files, x, y, data, manifest = exported
    mean = data.norm.mean[0] / data.norm.scale
    std = data.norm.std[0] / data.norm.scale
    for variant, (colour, norm) in {"android-fp32": ("RGB", ([0.0], [1.0])),
                                    "android-int8": ("RGB", ([0.0], [1.0])),
                                    "plain-fp32": ("GRAYSCALE", ([mean], [std]))}.items():
        meta = seen[variant]["metadata"]
        assert meta["packed_files"] == ["labels.txt"]
        assert meta["labels"] == list(data.labels)
        graph = meta["json"]["subgraph_metadata"][0]
        (inp,), (out,) = graph["input_tensor_metadata"], graph["output_tensor_metadata"]
        assert inp["content"]["content_properties"]["color_space"] == colour
        unit = inp["process_units"][0]
        assert unit["options_type"] == "NormalizationOptions"
        np.testing.assert_allclose(unit["options"]["mean"], norm[0], rtol=1e-5)
        np.testing.assert_allclose(unit["options"]["std"], norm[1], rtol=1e-5)
        assert out["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"
        assert meta["json"]["version"].endswith(variant.split("-")[1])
    # a 1-channel GRAYSCALE file is not for the Task Library: it says so, and nothing crashes
    assert "RGB" in seen["plain-fp32"]["error"] or "x 3" in seen["plain-fp32"]["error"]
