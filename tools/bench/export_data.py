"""Export the embedded default's data split and a run's dense model for benchmark-only peers.

Peers that live in environments of their own (Sony's model-compression-toolkit needs TensorFlow
2.15 / Keras 2 / numpy 1, see tools.bench.mct) cannot import shifter_tf. This writes one .npz
holding everything they need, exactly as the pipeline sees it:

- x_train, y_train, x_val, y_val, x_test, y_test: raw pixels (float32, 0..255) and int64 labels
  from `shifter_tf.data.loaders.load_dataset(cfg.data, cfg.seed)`;
- norm_scale, norm_mean, norm_std: x_model = (x_raw * scale - mean) / std;
- model_json: the dense model's architecture (tf_keras `to_json()` less the keywords Keras 2.15
  does not know, so its `model_from_json` rebuilds it); weight_0 ... weight_{n-1} (num_weights
  of them) and weight_names: its weights in `model.get_weights()` order;
- recipe_json: the config's train section (optimiser, lr, momentum, weight decay, epochs, batch,
  warm-up, milestones, gamma), so a peer fine-tunes with our recipe.

Run in the main environment:  .venv/bin/python -m tools.bench.export_data --run runs/demo \
    --out bench/mct_data.npz
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from shifter_tf.util.io import atomic_save
from tools.bench.common import DEFAULT_CONFIG, DEFAULT_RUN


def keras2_json(model) -> str:
    """The model's JSON config in the form Keras 2.15 reads: tf_keras 2.21 adds
    `InputLayer(optional=False)`, a keyword Keras 2.15 refuses; False is its default there."""
    cfg = json.loads(model.to_json())

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "InputLayer" and isinstance(node.get("config"), dict):
                if node["config"].get("optional") is False:
                    del node["config"]["optional"]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(cfg)
    return json.dumps(cfg)


def export(run: Path, config: Path, out: Path) -> dict:
    import shifter_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tf_keras as keras
    from shifter_tf.config.schema import load_config
    from shifter_tf.data.loaders import load_dataset

    model_path = run / "levels" / "level_00" / "model.keras"
    if not model_path.is_file():
        raise SystemExit(f"{model_path}: no dense model; train the run first "
                         f"(make demo, or shifter-tf train --out {run})")
    cfg = load_config(config)
    data = load_dataset(cfg.data, cfg.seed)
    model = keras.models.load_model(model_path, compile=False)
    weights = model.get_weights()
    arrays = {
        "x_train": data.x_train.astype(np.float32), "y_train": data.y_train.astype(np.int64),
        "x_val": data.x_val.astype(np.float32), "y_val": data.y_val.astype(np.int64),
        "x_test": data.x_test.astype(np.float32), "y_test": data.y_test.astype(np.int64),
        "norm_scale": np.float32(data.norm.scale),
        "norm_mean": np.asarray(data.norm.mean, np.float32),
        "norm_std": np.asarray(data.norm.std, np.float32),
        "labels": np.asarray(data.labels),
        "model_json": np.asarray(keras2_json(model)),
        "weight_names": np.asarray([w.name for w in model.weights]),
        "num_weights": np.int64(len(weights)),
        "recipe_json": np.asarray(json.dumps(dataclasses.asdict(cfg.train))),
        "source_json": np.asarray(json.dumps({"run": str(run), "model": str(model_path),
                                              "config": str(config), "seed": cfg.seed,
                                              "data": cfg.data.name})),
    }
    for i, w in enumerate(weights):
        arrays[f"weight_{i}"] = w
    atomic_save(out, lambda tmp: np.savez_compressed(tmp, **arrays))
    return {"out": str(out), "train": len(data.x_train), "val": len(data.x_val),
            "test": len(data.x_test), "params": int(model.count_params()),
            "weights": len(weights)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path(os.environ.get("RUN", DEFAULT_RUN)),
                    help="finished run whose levels/level_00/model.keras is the dense model")
    ap.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG),
                    help="config whose data section and seed give the split (the run's own)")
    ap.add_argument("--out", type=Path, default=Path("bench/mct_data.npz"))
    args = ap.parse_args(argv)
    info = export(args.run, args.config, args.out)
    print(f"wrote {info['out']}: train/val/test {info['train']}/{info['val']}/{info['test']}, "
          f"dense model {info['params']} params in {info['weights']} arrays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
