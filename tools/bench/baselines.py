"""Peers of the Pareto benchmark that we build ourselves: width-scaled dense models trained from
scratch with the config's recipe, and tfmot's own deployment path for each sparse level.

Each point is cached as OUT/<id>.tflite + OUT/<id>.json, so `make bench` reruns only what is
missing. Accuracy is measured on the TFLite file with the device's runner, on the same test split
as the portfolio's manifest.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shifter_tf.train import lottery
from shifter_tf.train import engine
from shifter_tf.config.schema import load_config
from shifter_tf.data.loaders import load_dataset
from shifter_tf.export.evaluate import accuracy
from shifter_tf.export.convert import convert
from shifter_tf.util.io import atomic_write_bytes, atomic_write_json
from shifter_tf.models import build_model
from shifter_tf.surgery import count_params_and_macs

_DATA: dict = {}


def _data(cfg):
    key = (cfg.data.name, cfg.seed)
    if key not in _DATA:
        _DATA[key] = load_dataset(cfg.data, cfg.seed)
    return _DATA[key]


def _point(folder: Path, pid: str, model, data, extra: dict, sparse: bool = False) -> dict:
    blob = convert(model, "fp32", sparse=sparse)
    x, y = data.normalized("test")
    params, _, macs = count_params_and_macs(model)
    path = folder / f"{pid.split('/')[-1]}.tflite"
    atomic_write_bytes(path, blob)
    p = {"id": pid, "accuracy": accuracy(blob, x, y), "bytes": len(blob), "params": params,
         "macs": macs, "file": str(path), **extra}
    atomic_write_json(path.with_suffix(".json"), p)
    return p


def _cached(path: Path):
    """A point written earlier, its file named where it is now (the cache may have moved)."""
    if not (path.exists() and path.with_suffix(".tflite").exists()):
        return None
    return {**json.loads(path.read_text()), "file": str(path.with_suffix(".tflite").resolve())}


def cached_baseline(config: str, folder: Path, width: float, epochs: int) -> dict:
    """The config's model at `width` times its own width (`model.kwargs.width`, default 1),
    trained from scratch for `epochs` epochs with the config's recipe (warm-up and milestones
    scaled with the epochs)."""
    pid = f"baseline/w{width:g}_e{epochs}"
    folder.mkdir(parents=True, exist_ok=True)
    hit = _cached(folder / f"w{width:g}_e{epochs}.json")
    if hit:
        return hit
    cfg = load_config(config)
    data = _data(cfg)
    tr = replace(engine.scaled(cfg.train, epochs), verbose=0)
    import tf_keras as keras
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model.name, data.input_shape, data.num_classes,
                        **{**cfg.model.kwargs,
                           "width": width * cfg.model.kwargs.get("width", 1.0)})
    engine.compile_model(model, tr, engine.steps_per_epoch(data, tr.batch_size))
    t = time.perf_counter()
    print(f"  baseline width {width} x {epochs} epochs", flush=True)
    engine.fit(model, data, tr, seed=cfg.seed, what=pid)
    engine.recalibrate_bn(model, data, tr)
    return _point(folder, pid, model, data,
                  {"source": f"baseline_e{epochs}", "kind": "dense", "width": width,
                   "epochs": epochs, "train_s": round(time.perf_counter() - t, 1)})


def tfmot_sparse_points(run: Path, folder: Path) -> list[dict]:
    """Each sparse level as tfmot deploys it: the stripped model with EXPERIMENTAL_SPARSITY."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_config(run / "config.yaml")
    pts = []
    for r in lottery.load_results(run):
        if r.level == 0:
            continue
        pid = f"tfmot/L{r.level:02d}"
        hit = _cached(folder / f"L{r.level:02d}.json")
        if hit is None:
            hit = _point(folder, pid, lottery.load_level_model(run, r.level), _data(cfg),
                         {"source": "tfmot", "kind": "sparse", "level": r.level,
                          "density": r.density}, sparse=True)
        pts.append(hit)
    return pts
