"""Build the tiny .tflite portfolio the edge tests use (run in the host env, needs TensorFlow).

Four untrained (seeded) Keras CNNs on 28x28x1 input, 10 classes, of decreasing width, stand in
for a dense model and its pruned variants; the narrowest is also exported as full-integer int8
with int8 input/output so the quantise/dequantise path of ``EdgeSwitcher.predict`` is tested.
Metrics in the manifest (accuracy, latency, density) are synthetic but plausible and distinct, so
budget-driven selection is testable; the manifest's ``generator`` says so.

Reference outputs are computed with TensorFlow's own TFLite interpreter from the raw inputs,
normalised and (for int8) quantised here independently of edge_runtime.

    .venv/bin/python -m tools.edge_fixtures [--out tests/edge/fixtures]     # make edge-fixtures
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from edge_runtime.manifest import file_entry, new_manifest, write_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SCALE, MEAN, STD = 1.0 / 255.0, 0.1307, 0.3081
N_REF = 8

# id, kind, level, density, (conv1, conv2) widths, accuracy, {threads: ms}, parent
SPECS = [
    ("L00-dense-fp32", "dense", 0, 1.0, (8, 16), 0.991, {"1": 2.40, "2": 1.50}, None),
    ("L02-pruned-fp32", "pruned", 2, 0.64, (6, 12), 0.986, {"1": 1.60, "2": 1.05},
     "L02-sparse-fp32"),
    ("L04-pruned-fp32", "pruned", 4, 0.41, (4, 8), 0.974, {"1": 0.90, "2": 0.62},
     "L04-sparse-fp32"),
]
INT8 = ("L04-pruned-int8", "pruned", 4, 0.41, (4, 8), 0.968, {"1": 0.55, "2": 0.40},
        "L04-pruned-fp32")


def build(widths, seed):
    import tf_keras as keras
    keras.utils.set_random_seed(seed)
    c1, c2 = widths
    return keras.Sequential([
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(c1, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(c2, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
        keras.layers.Softmax(),
    ])


def count(model):
    """(params_total, params_nonzero, MACs) of the tiny CNN."""
    total = int(sum(np.prod(w.shape) for w in model.get_weights()))
    nonzero = int(sum(np.count_nonzero(w) for w in model.get_weights()))
    macs = 0
    for layer in model.layers:
        if layer.__class__.__name__ == "Conv2D":
            k = layer.kernel.shape
            h, w = layer.output.shape[1:3]
            macs += int(h * w * np.prod(k))
        elif layer.__class__.__name__ == "Dense":
            macs += int(np.prod(layer.kernel.shape))
    return total, nonzero, macs


def normalise(raw):
    return ((raw.astype(np.float32) * SCALE - MEAN) / STD).astype(np.float32)


def reference(tflite_bytes, raw):
    """Outputs of TF's TFLite interpreter, one example at a time, dequantised to float32."""
    import tensorflow as tf
    interp = tf.lite.Interpreter(model_content=tflite_bytes, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = normalise(raw)
    ys = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            xi = np.clip(np.round(xi / s) + z, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], xi)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            s, z = out["quantization"]
            y = (y.astype(np.float32) - z) * s
        ys.append(y.astype(np.float32))
    return np.concatenate(ys)


def make_odd(out: Path) -> None:
    """fixtures/odd/five-class.tflite: a valid model of the same input but 5 classes, for the
    test that a variant which does not fit the manifest's task is never served."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.layers.Input((28, 28, 1)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5),
                              keras.layers.Softmax()])
    (out / "odd").mkdir(parents=True, exist_ok=True)
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    (out / "odd" / "five-class.tflite").write_bytes(data)
    print(f"odd/five-class.tflite {len(data):7d} bytes")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests/edge/fixtures"))
    ap.add_argument("--odd-only", action="store_true",
                    help="only (re)make fixtures/odd/ (models that do not fit the task)")
    args = ap.parse_args(argv)
    import tensorflow as tf

    out = Path(args.out)
    make_odd(out)
    if args.odd_only:
        return 0
    port, ref = out / "portfolio", out / "reference"
    for d in (port, ref):
        if d.exists():
            shutil.rmtree(d)
    (port / "variants").mkdir(parents=True)
    ref.mkdir(parents=True)

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(N_REF, 28, 28, 1)).astype(np.float32)
    np.save(ref / "inputs.npy", raw)
    calib = normalise(rng.integers(0, 256, size=(64, 28, 28, 1)).astype(np.float32))

    entries = []
    models = {}
    for seed, spec in enumerate(SPECS + [INT8]):
        vid, kind, level, density, widths, acc, lat, parent = spec
        int8 = spec is INT8
        model = models.get(widths) or build(widths, seed)
        models[widths] = model
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        data = conv.convert()
        rel = f"variants/{vid}.tflite"
        (port / rel).write_bytes(data)
        total, _, macs = count(model)
        nonzero = int(round(total * density))  # synthetic: these stand-ins are not really sparse
        entries.append({
            "id": vid, **file_entry(port, rel), "kind": kind,
            "precision": "int8" if int8 else "fp32", "level": level, "density": density,
            "params_total": total, "params_nonzero": nonzero, "macs": macs, "accuracy": acc,
            "latency_ms": lat,
            "latency_p90_ms": {k: round(v * 1.25, 3) for k, v in lat.items()},
            "init_ms": round(2.0 + len(data) / 20000, 2), "parent": parent,
        })
        np.save(ref / f"{vid}.npy", reference(data, raw))
        print(f"{vid:18s} {len(data):7d} bytes  params={total}")

    task = {"name": "mnist-fixture", "input_shape": [28, 28, 1], "input_dtype": "float32",
            "normalization": {"scale": SCALE, "mean": [MEAN], "std": [STD]},
            "labels": [str(i) for i in range(10)], "num_classes": 10}
    doc = new_manifest(task, entries, generator="python -m tools.edge_fixtures (synthetic metrics)")
    write_manifest(port, doc)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {port}/manifest.json; fixtures total {size / 1024:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
