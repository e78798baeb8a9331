"""Peer of the Pareto benchmark: Sony's Model Compression Toolkit structured pruning + fine-tuning.

Runs in `.venv-mct` (TensorFlow 2.15.1, Keras 2.15, numpy 1.26, model-compression-toolkit 2.6.1,
see constraints-mct.txt; MCT 2.6.1 switches its Keras pruning off for TensorFlow >= 2.16) and
imports nothing of shifter_tf (only numpy, TensorFlow, MCT, `tools.bench.common` and the
stdlib-only file writer of edge_runtime). Its input is the .npz of `tools.bench.export_data`
(`make bench-mct` runs both): the embedded
default's data split exactly as the pipeline uses it and the run's trained dense model.

For each target (a fraction of the dense model's fp32 weights memory):
1. `mct.pruning.keras_pruning_experimental` with `ResourceUtilization(weights_memory=...)`,
   MCT's default label-free-Hessian (LFH) channel scores on representative training images, and a
   target-platform capability that prunes in SIMD groups of `--simd` channels (8 by default: the
   default IMX500 platform prunes in groups of 32, which on this 16-64-channel model cannot reach
   any target, "Insufficient memory for the target resource utilization").
2. Fine-tuning, which MCT requires after pruning, with the run's own recipe (recipe_json in the
   .npz; the embedded default: SGD lr 0.05, momentum 0.9, decoupled weight decay 1e-4 as tf_keras'
   `SGD(weight_decay=...)` of our training, batch 64, linear warm-up over 0.5 epoch then x0.1 at
   epoch 4.5, 6 epochs, normalised inputs, no augmentation), on the training split.
3. fp32 TFLite (`tf.lite.TFLiteConverter.from_keras_model`, default optimisations off), top-1
   accuracy on the test split measured on the .tflite with the TFLite interpreter.

Writes OUT/mct/<id>.tflite and OUT/mct/mct.json, a list of {id, target, weights_fraction, params,
accuracy, bytes, file, score_seconds, finetune_seconds, channels_per_layer, ...}, after every
target (atomically). Resumable: a target whose .tflite and json entry exist, made from the same
dense model with the same settings, is skipped; an entry of another dense model is redone.

    .venv-mct/bin/python -m tools.bench.mct --data bench/mct_data.npz --out bench \
        --targets 0.75 0.5 0.25 0.125 --epochs 6
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# MCT runs on TF 2.15's own Keras 2; the legacy switch the main environment sets (tf_keras) is
# not installed here and would make `tf.keras` unimportable.
os.environ.pop("TF_USE_LEGACY_KERAS", None)

import numpy as np  # noqa: E402

from edge_runtime.files import atomic_write_bytes  # noqa: E402  (standard library only)
from tools.bench.common import logger  # noqa: E402

log = logger("bench_mct")


def target_id(target: float) -> str:
    """0.125 -> 'mct_w1250' (per ten thousand of the dense weights memory, zero-padded)."""
    return f"mct_w{round(target * 10000):04d}"


# ---------------------------------------------------------------------------------------- data
class BenchData:
    def __init__(self, path: Path):
        d = np.load(path, allow_pickle=False)
        self.scale = float(d["norm_scale"])
        self.mean = d["norm_mean"].astype(np.float32)
        self.std = d["norm_std"].astype(np.float32)
        self.x = {s: self.normalize(d[f"x_{s}"]) for s in ("train", "val", "test")}
        self.y = {s: d[f"y_{s}"].astype(np.int64) for s in ("train", "val", "test")}
        self.model_json = str(d["model_json"])
        self.weights = [d[f"weight_{i}"] for i in range(int(d["num_weights"]))]
        self.recipe = json.loads(str(d["recipe_json"]))
        self.source = json.loads(str(d["source_json"]))
        h = hashlib.sha256(self.model_json.encode())
        for w in self.weights:
            h.update(np.ascontiguousarray(w).tobytes())
        self.dense_sha = h.hexdigest()[:16]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float32) * np.float32(self.scale) - self.mean) / self.std
                ).astype(np.float32)


def rebuild_dense(data: BenchData):
    import tensorflow as tf

    model = tf.keras.models.model_from_json(data.model_json)
    model.set_weights(data.weights)
    return model


# ------------------------------------------------------------------------------------- pruning
def simd_tpc(simd: int):
    """MCT's default Keras platform (IMX500 TPC v1.0) with every op's SIMD width set to `simd`.

    MCT prunes whole SIMD groups of output channels; its docs say to build a custom platform from
    `get_op_quantization_configs()` + `generate_tpc()` to change such settings.
    """
    from model_compression_toolkit.target_platform_capabilities.tpc_models.imx500_tpc.v1_0 import \
        tpc as imx500

    base, mixed, default = imx500.get_op_quantization_configs()
    base = base.clone_and_edit(simd_size=simd)
    mixed = [c.clone_and_edit(simd_size=simd) for c in mixed]
    default = default.clone_and_edit(simd_size=simd)
    return imx500.generate_tpc(default_config=default, base_config=base,
                               mixed_precision_cfg_list=mixed, name=f"imx500_simd{simd}")


def representative_gen(x: np.ndarray, batches: int, batch_size: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[:batches * batch_size]

    def gen():
        for b in range(batches):
            yield [x[idx[b * batch_size:(b + 1) * batch_size]]]
    return gen


def mct_prune(dense, target: float, data: BenchData, args):
    import model_compression_toolkit as mct

    dense_bytes = 4 * int(dense.count_params())
    ru = mct.core.ResourceUtilization(weights_memory=target * dense_bytes)
    cfg = mct.pruning.PruningConfig(num_score_approximations=args.score_approximations)
    pruned, info = mct.pruning.keras_pruning_experimental(
        model=dense, target_resource_utilization=ru,
        representative_data_gen=representative_gen(data.x["train"], args.repr_batches,
                                                   args.repr_batch_size, args.seed),
        pruning_config=cfg, target_platform_capabilities=simd_tpc(args.simd))
    return pruned, info


def channels_per_layer(model) -> dict:
    out = {}
    for layer in model.layers:
        if hasattr(layer, "filters"):
            out[layer.name] = int(layer.filters)
        elif hasattr(layer, "units"):
            out[layer.name] = int(layer.units)
    return out


# ---------------------------------------------------------------------------------- fine-tuning
def make_schedule(recipe: dict, steps_per_epoch: int):
    """Linear warm-up to lr, then x gamma at each milestone: the schedule of
    shifter_tf.train.engine.WarmupPiecewise, restated on TF 2.15's Keras 2 because this
    environment cannot import shifter_tf (which needs tf_keras and sets the legacy switch)."""
    import tensorflow as tf

    class WarmupPiecewise(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, lr, warmup_steps, boundaries, gamma):
            self.lr, self.warmup_steps = float(lr), int(warmup_steps)
            self.boundaries, self.gamma = [int(b) for b in boundaries], float(gamma)

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            drops = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries]) \
                if self.boundaries else 0.0
            lr = self.lr * tf.pow(self.gamma, drops)
            if self.warmup_steps > 0:
                lr = lr * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
            return lr

        def get_config(self):
            return {"lr": self.lr, "warmup_steps": self.warmup_steps,
                    "boundaries": self.boundaries, "gamma": self.gamma}

    return WarmupPiecewise(recipe["lr"], round(recipe["warmup_epochs"] * steps_per_epoch),
                           [round(m * steps_per_epoch) for m in recipe["milestones"]],
                           recipe["gamma"])


def finetune(model, data: BenchData, recipe: dict, epochs: int, seed: int) -> dict:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    bs = int(recipe["batch_size"])
    steps = int(np.ceil(len(data.x["train"]) / bs))
    schedule = make_schedule(recipe, steps)
    wd = recipe.get("weight_decay") or None
    if recipe.get("optimizer", "sgd") == "sgd":
        opt = tf.keras.optimizers.SGD(schedule, momentum=recipe["momentum"],
                                      nesterov=recipe.get("nesterov", False), weight_decay=wd)
    else:
        opt = tf.keras.optimizers.Adam(schedule, weight_decay=wd)
    model.compile(optimizer=opt,
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = (tf.data.Dataset.from_tensor_slices((data.x["train"], data.y["train"]))
             .shuffle(len(data.x["train"]), seed=seed, reshuffle_each_iteration=True)
             .batch(bs).prefetch(2))
    val = tf.data.Dataset.from_tensor_slices((data.x["val"], data.y["val"])).batch(256)
    start = time.perf_counter()
    hist = model.fit(train, validation_data=val, epochs=epochs, verbose=2)
    return {"seconds": time.perf_counter() - start,
            "val_accuracy": float(hist.history["val_accuracy"][-1])}


def keras_accuracy(model, x, y) -> float:
    return float((model.predict(x, batch_size=256, verbose=0).argmax(-1) == y).mean())


# ------------------------------------------------------------------------------------- TFLite
def to_tflite(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def tflite_accuracy(blob: bytes, x: np.ndarray, y: np.ndarray) -> float:
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=blob, num_threads=1)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [len(x), *x.shape[1:]])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    logits = interp.get_tensor(interp.get_output_details()[0]["index"])
    return float((logits.argmax(-1) == y).mean())


# ---------------------------------------------------------------------------------------- main
def load_results(path: Path) -> list:
    if path.is_file():
        return json.loads(path.read_text())
    return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="npz of tools.bench.export_data")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT/mct/")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.75, 0.5, 0.25, 0.125, 0.0625],
                    help="fractions of the dense fp32 weights memory (MCT ResourceUtilization)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="fine-tuning epochs (default: the recipe's, 6 for the embedded default)")
    ap.add_argument("--simd", type=int, default=8, help="channels pruned together (MCT SIMD)")
    ap.add_argument("--score-approximations", type=int, default=32,
                    help="MCT PruningConfig.num_score_approximations (its default, 32)")
    ap.add_argument("--repr-batches", type=int, default=4)
    ap.add_argument("--repr-batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import tensorflow as tf
    import model_compression_toolkit as mct

    for t in args.targets:
        if not 0.0 < t < 1.0:
            ap.error(f"--targets: {t} is not a fraction in (0, 1)")
    out = args.out / "mct"
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "mct.json"
    data = BenchData(args.data)
    epochs = args.epochs if args.epochs is not None else int(data.recipe["epochs"])
    settings = {"dense_sha": data.dense_sha, "simd": args.simd, "finetune_epochs": epochs,
                "score_approximations": args.score_approximations, "seed": args.seed,
                "repr_batches": args.repr_batches, "repr_batch_size": args.repr_batch_size}
    results = load_results(json_path)
    done = {r["id"] for r in results if (out / r["file"]).is_file()
            and all(r.get(k) == v for k, v in settings.items())}
    stale = sorted({r["id"] for r in results} - done)
    if stale:
        log(f"redoing {', '.join(stale)}: other dense model or settings, or file missing")
    results = [r for r in results if r["id"] in done]
    dense = rebuild_dense(data)
    dense_params = int(dense.count_params())
    dense_acc = keras_accuracy(dense, data.x["test"], data.y["test"])
    log(f"TensorFlow {tf.__version__}, MCT {mct.__version__}; dense {dense.name}: "
        f"{dense_params} params, test accuracy {dense_acc:.4f} (Keras); "
        f"channels {channels_per_layer(dense)}")
    todo = [t for t in args.targets if target_id(t) not in done]
    for t in args.targets:
        if target_id(t) in done:
            log(f"{target_id(t)}: done already, skipped")
    for n, target in enumerate(todo, 1):
        tid = target_id(target)
        log(f"[{n}/{len(todo)}] {tid}: MCT pruning to {target:.3f} of the dense weights memory "
            f"(SIMD {args.simd}, {args.score_approximations} LFH score approximations; minutes)")
        t0 = time.perf_counter()
        pruned, _ = mct_prune(rebuild_dense(data), target, data, args)
        score_s = time.perf_counter() - t0
        params = int(pruned.count_params())
        chans = channels_per_layer(pruned)
        acc_pruned = keras_accuracy(pruned, data.x["test"], data.y["test"])
        log(f"{tid}: pruned in {score_s:.0f} s: {params} params ({params / dense_params:.3f} of "
            f"dense), test accuracy before fine-tuning {acc_pruned:.4f}; channels {chans}")
        log(f"{tid}: fine-tuning {epochs} epochs")
        ft = finetune(pruned, data, data.recipe, epochs, args.seed)
        acc_keras = keras_accuracy(pruned, data.x["test"], data.y["test"])
        blob = to_tflite(pruned)
        acc = tflite_accuracy(blob, data.x["test"], data.y["test"])
        fname = f"{tid}.tflite"
        atomic_write_bytes(out / fname, blob)
        entry = {
            "id": tid, "target": target, "weights_fraction": params / dense_params,
            "params": params, "dense_params": dense_params, "accuracy": acc,
            "accuracy_keras": acc_keras, "accuracy_before_finetune": acc_pruned,
            "dense_accuracy_keras": dense_acc, "val_accuracy": ft["val_accuracy"],
            "bytes": len(blob), "file": fname, "score_seconds": score_s,
            "finetune_seconds": ft["seconds"], "channels_per_layer": chans, **settings,
            "source": data.source, "precision": "fp32",
            "method": "mct.pruning.keras_pruning_experimental (LFH) + fine-tuning",
            "mct_version": mct.__version__, "tf_version": tf.__version__,
        }
        results = [r for r in results if r["id"] != tid] + [entry]
        results.sort(key=lambda r: -r["target"])
        atomic_write_bytes(json_path, (json.dumps(results, indent=1) + "\n").encode())
        log(f"{tid}: fine-tuned in {ft['seconds']:.0f} s; TFLite test accuracy {acc:.4f} "
            f"(Keras {acc_keras:.4f}), {len(blob)} bytes -> {out / fname}")
    log(f"{len(results)} entries in {json_path}")
    print(f"{'id':<10} {'target':>6} {'w.frac':>6} {'params':>7} {'acc':>6} {'bytes':>7} "
          f"{'score s':>7} {'ft s':>5}")
    for r in results:
        print(f"{r['id']:<10} {r['target']:>6.3f} {r['weights_fraction']:>6.3f} "
              f"{r['params']:>7} {r['accuracy']:>6.4f} {r['bytes']:>7} "
              f"{r['score_seconds']:>7.0f} {r['finetune_seconds']:>5.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
