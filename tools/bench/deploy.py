"""Build the deployment variants of the same sparse checkpoints, for the structured vs
unstructured comparison of the benchmark suite (`tools.bench.all`).

    python -m tools.bench.deploy synthetic --model vgg16 --out bench/models/vgg16 \
        [--ratios 2 4 8 16 32 64 128 256] [--alpha 0.25] [--seed 0]
    python -m tools.bench.deploy trained --run runs/demo --out bench/models/demo

Per sparse checkpoint (one per compression ratio / IMP level) it writes fp32 TFLite files:

  pruned         (a)  ours: `prune_structured` then the converter (what `shifter-tf export` ships)
  pruned_sparse  (a+) ours, plus the converter's EXPERIMENTAL_SPARSITY for the zeros left inside
                      the surviving filters
  tfmot_sparse   (b)  tfmot's recommended deployment: `strip_pruning` + EXPERIMENTAL_SPARSITY
  sparse         (c)  the plain sparse fp32 TFLite (zeros stored as zeros)
  dense          (d)  the dense model (written once)

and `deploy.json`: bytes, gzip bytes (tfmot's guide measures compression this way), params,
MACs, *non-zero* MACs (what a zero-skipping kernel would execute), zero filters, the rewrite
time and verification of the surgery, and for trained runs the TFLite test accuracy.

`synthetic` = Kaiming-initialised weights, no training: global magnitude pruning at density
1/ratio over all conv/dense kernels except the classifier (as the paper's IMP ranks weights),
combined with zeroing the lowest-L1 filters of every layer so that the structural sparsity grows
with compression, as IMP training makes it (magnitude ranking of untrained weights almost never
kills a whole filter: the `natural_zero_filters` field counts how many it did). Rule, per layer
with density d_l after global allocation: keep the ceil(F_l * d_l**alpha) filters of largest L1
norm, then re-run the global allocation inside the kept filters so the overall density is exactly
1/ratio. Such checkpoints are for structure, size and speed only, never for accuracy.

Conversion: `shifter_tf.export.convert.convert(model, "fp32", sparse=...)`, what `shifter-tf export`
ships. Synthetic checkpoints use the frozen-graph path by default (another ≈3x; same ops and
weights, tensor order differs, no signature def), every variant of a model through the same
path; `--converter module` switches.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from shifter_tf.train import magnitude
from shifter_tf.export.convert import convert
from shifter_tf.util.io import atomic_write_bytes, atomic_write_json
from shifter_tf.models import build_model, iter_layers
from shifter_tf.surgery import count_params_and_macs, prune_structured
from shifter_tf.graph.ir import trace
from shifter_tf.graph.metrics import ir_macs
from tools.bench.common import level_tag

RATIOS = (2, 4, 8, 16, 32, 64, 128, 256)
SHAPES = {"vgg16": ((32, 32, 3), 10), "resnet56": ((32, 32, 3), 10)}


# ------------------------------------------------------------------------------ measurements
def convert_fp32(model: keras.Model, sparse: bool = False, path: str = "module") -> bytes:
    """path="module": `shifter_tf.export.convert.convert(model, "fp32", sparse=sparse)` itself.

    path="frozen": the batch-1 function with its variables
    frozen to constants, no SavedModel step: the same converter settings, ops and weights; the
    file differs only in tensor order and has no signature def (≈3x faster again).
    """
    if path != "frozen":
        return convert(model, "fp32", sparse=sparse)
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(concrete)])
    if sparse:
        conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return conv.convert()


def nonzero_macs(model: keras.Model) -> int:
    """MACs that touch a non-zero weight: each layer's MACs times its kernel density."""
    ir = trace(model)
    total = 0.0
    for idx, macs in ir_macs(ir).items():
        layer = ir.calls[idx].layer
        if not macs:
            continue
        kernel = getattr(layer, "depthwise_kernel", None)
        kernel = kernel if kernel is not None else getattr(layer, "kernel", None)
        frac = 1.0
        if kernel is not None:
            k = np.asarray(kernel.numpy())
            frac = np.count_nonzero(k) / max(k.size, 1)
        total += macs * frac
    return int(round(total))


def model_stats(model: keras.Model) -> dict:
    params, nonzero, macs = count_params_and_macs(model)
    return {"params_total": int(params), "params_nonzero": int(nonzero), "macs": int(macs),
            "macs_nonzero": nonzero_macs(model)}


def write_variant(out: Path, name: str, blob: bytes, stats: dict, extra: Optional[dict] = None
                  ) -> dict:
    atomic_write_bytes(out / name, blob)
    return {"file": name, "bytes": len(blob),
            "gzip_bytes": len(gzip.compress(blob, compresslevel=6, mtime=0)),
            "sha256": hashlib.sha256(blob).hexdigest(), **stats, **(extra or {})}


def zero_filter_count(model: keras.Model, names) -> int:
    layers = {l.name: l for l in iter_layers(model)}
    return sum(magnitude.zero_filters(magnitude.kernel_variable(layers[n]).numpy(),
                                      isinstance(layers[n], keras.layers.DepthwiseConv2D))
               for n in names if not isinstance(layers[n], keras.layers.Dense))


def surgery_summary(rep: dict) -> dict:
    """The rewrite's time, exactness, channels and verification from a surgery report's dict."""
    ver = rep.get("verification") or {}
    return {"rewrite_ms": rep.get("rewrite_ms"), "exact": rep.get("exact"),
            "channels_before": rep.get("channels_before"),
            "channels_after": rep.get("channels_after"),
            "max_abs_dlogit": ver.get("max_abs_dlogit"),
            "top1_agreement": ver.get("top1_agreement")}


# ------------------------------------------------------------------------------ synthetic
def synthetic_masks(weights: dict, density: float, alpha: float) -> tuple[dict, dict]:
    """Global magnitude masks at `density`, plus lowest-L1 filter zeroing (see module doc)."""
    full = {n: np.ones(w.shape, bool) for n, w in weights.items()}
    natural, _ = magnitude.global_allocation(weights, full, density)
    filt = {}
    for n, w in weights.items():
        f = w.shape[-1]
        keep = max(1, int(math.ceil(f * float(natural[n].mean()) ** alpha)))
        l1 = np.abs(w).reshape(-1, f).sum(0)
        m = np.zeros(w.shape, bool)
        m[..., np.argsort(-l1, kind="stable")[:keep]] = True
        filt[n] = m
    final, _ = magnitude.global_allocation(weights, filt, density)
    return natural, final


def run_synthetic(model_name: str, out: Path, ratios, alpha: float, seed: int,
                  sample_size: int = 16, converter: str = "frozen") -> dict:
    shape, classes = SHAPES[model_name]
    keras.utils.set_random_seed(seed)
    model = build_model(model_name, shape, classes)
    names = magnitude.prunable_layers(model, exclude_classifier=True)
    layers = {l.name: l for l in iter_layers(model)}
    w0 = magnitude.kernels(model, names)
    filters = sum(w.shape[-1] for n, w in w0.items()
                  if not isinstance(layers[n], keras.layers.Dense))
    sample = np.random.default_rng(seed).standard_normal((sample_size, *shape)).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    dense = write_variant(out, "dense.tflite", convert_fp32(model, path=converter),
                          model_stats(model))
    dense["convert_s"] = round(time.perf_counter() - t, 2)
    print(f"[{model_name}] dense: {dense['bytes'] / 1e6:.1f} MB, {dense['macs'] / 1e6:.0f} MMACs, "
          f"converted in {dense['convert_s']:.1f} s", flush=True)
    levels = []
    for ratio in ratios:
        t0 = time.perf_counter()
        natural, final = synthetic_masks(w0, 1.0 / ratio, alpha)
        for n in names:
            magnitude.kernel_variable(layers[n]).assign(w0[n] * final[n])
        nat_zero = sum(magnitude.zero_filters(w0[n] * natural[n]) for n in names
                       if not isinstance(layers[n], keras.layers.Dense))
        mask_s = time.perf_counter() - t0
        pruned, report = prune_structured(model, sample=sample)
        sparse_stats = model_stats(model)
        pruned_stats = model_stats(pruned)
        tag = level_tag("synthetic", compression=ratio)
        conv_s = {}
        variants = {}
        for key, mdl, sparse_flag, stats in (("pruned", pruned, False, pruned_stats),
                                             ("pruned_sparse", pruned, True, pruned_stats),
                                             ("tfmot_sparse", model, True, sparse_stats),
                                             ("sparse", model, False, sparse_stats)):
            t = time.perf_counter()
            blob = convert_fp32(mdl, sparse=sparse_flag, path=converter)
            conv_s[key] = round(time.perf_counter() - t, 2)
            variants[key] = write_variant(out, f"{tag}_{key}.tflite", blob, stats)
        level = {
            "level": len(levels) + 1, "compression": ratio, "density": magnitude.density(final),
            "zero_filters": zero_filter_count(model, names), "filters": filters,
            "natural_zero_filters": nat_zero, "mask_s": round(mask_s, 2),
            "surgery": surgery_summary(report.to_dict()), "convert_s": conv_s,
            "variants": variants, "accuracy_note": "untrained: no accuracy",
        }
        levels.append(level)
        print(f"[{model_name}] {ratio:4d}x density {level['density']:.4f}  zero filters "
              f"{level['zero_filters']}/{filters} (magnitude alone: {nat_zero})  MACs "
              f"x{dense['macs'] / pruned_stats['macs']:.2f}  rewrite "
              f"{report.rewrite_ms:.0f} ms  convert {sum(conv_s.values()):.1f} s", flush=True)
        del pruned
    return {"kind": "synthetic", "model": model_name, "input_shape": list(shape),
            "classes": classes, "seed": seed, "alpha": alpha, "converter_path": converter,
            "label": "synthetic sparsity on Kaiming-initialised weights: structure and speed only",
            "rule": "global magnitude at density 1/ratio (classifier excluded) + per layer keep "
                    f"the ceil(F*d_l^{alpha:g}) largest-L1 filters, then global magnitude again "
                    "inside the kept filters",
            "dense": dense, "levels": levels}


# ------------------------------------------------------------------------------ trained run
def run_trained(run: Path, out: Path) -> dict:
    import tensorflow_model_optimization as tfmot

    from edge_runtime.manifest import load_manifest, read_variant_file
    from shifter_tf.train import lottery
    from shifter_tf.data.loaders import load_dataset
    from shifter_tf.export.evaluate import accuracy
    from shifter_tf.pipeline import pruned_dir, run_config

    cfg = run_config(run)
    manifest = load_manifest(run / "portfolio")
    by_id = {v.id: v for v in manifest.variants}
    data = load_dataset(cfg.data, cfg.seed)
    x_test, y_test = data.normalized("test")
    if cfg.export.eval_limit:
        x_test, y_test = x_test[:cfg.export.eval_limit], y_test[:cfg.export.eval_limit]
    results = {r.level: r for r in lottery.load_results(run)}
    out.mkdir(parents=True, exist_ok=True)

    def from_portfolio(vid: str, name: str, stats: dict) -> dict:
        v = by_id[vid]
        blob = read_variant_file(manifest.folder, v)   # sha256-verified
        return write_variant(out, name, blob, stats,
                             {"accuracy": v.accuracy, "from_portfolio": vid})

    dense_model = lottery.load_level_model(run, 0)
    dense = from_portfolio("L00-dense-fp32", "dense.tflite", model_stats(dense_model))
    names = magnitude.prunable_layers(dense_model,
                                      exclude_classifier=cfg.lottery.exclude_classifier,
                                      exclude=cfg.lottery.exclude_layers or ())
    convs = [l.name for l in iter_layers(dense_model)
             if l.name in names and not isinstance(l, keras.layers.Dense)]
    filters = sum(magnitude.kernel_variable(l).shape[-1] for l in iter_layers(dense_model)
                  if l.name in convs)
    levels = []
    # levels the accuracy floor kept out of the portfolio are not deployed, so not compared
    for level in sorted(l for l in results if l > 0 and f"L{l:02d}-pruned-fp32" in by_id):
        r = results[level]
        sparse_model = tfmot.sparsity.keras.strip_pruning(lottery.load_level_model(run, level))
        pruned_model = keras.models.load_model(pruned_dir(run, level) / "model.keras",
                                               compile=False, safe_mode=False)
        s_stats, p_stats = model_stats(sparse_model), model_stats(pruned_model)
        tag = level_tag("trained", level)
        variants = {
            "pruned": from_portfolio(f"{tag}-pruned-fp32", f"{tag}_pruned.tflite", p_stats),
            "sparse": from_portfolio(f"{tag}-sparse-fp32", f"{tag}_sparse.tflite", s_stats),
        }
        conv_s = {}
        for key, mdl, stats in (("pruned_sparse", pruned_model, p_stats),
                                ("tfmot_sparse", sparse_model, s_stats)):
            t = time.perf_counter()
            blob = convert_fp32(mdl, sparse=True)
            conv_s[key] = round(time.perf_counter() - t, 2)
            variants[key] = write_variant(out, f"{tag}_{key}.tflite", blob, stats,
                                          {"accuracy": accuracy(blob, x_test, y_test)})
        report = json.loads((pruned_dir(run, level) / "report.json").read_text())
        levels.append({
            "level": level, "compression": 1.0 / r.density, "density": r.density,
            "zero_filters": int(sum(r.zero_filters.get(n, 0) for n in convs)),
            "filters": filters, "natural_zero_filters": None,
            "surgery": surgery_summary(report),
            "convert_s": conv_s, "variants": variants,
            "sparse_test_accuracy_keras": r.test_accuracy,
        })
        print(f"[trained] level {level} density {r.density:.4f}  pruned "
              f"{p_stats['macs'] / 1e6:.2f} MMACs  acc pruned {variants['pruned']['accuracy']} "
              f"tfmot {variants['tfmot_sparse']['accuracy']}", flush=True)
    return {"kind": "trained", "model": cfg.model.name, "run": str(run),
            "config": cfg.name, "input_shape": list(data.input_shape),
            "classes": data.num_classes, "test_samples": int(len(y_test)),
            "label": f"trained IMP portfolio ({cfg.name}): accuracy included",
            "dense": dense, "levels": levels}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--model", required=True, choices=sorted(SHAPES))
    s.add_argument("--ratios", nargs="+", type=int, default=list(RATIOS))
    s.add_argument("--alpha", type=float, default=0.25)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--converter", choices=["frozen", "module"], default="frozen",
                   help="frozen: fastest; module: shifter_tf.export.convert.convert itself")
    s.add_argument("--out", required=True)
    t = sub.add_parser("trained")
    t.add_argument("--run", required=True)
    t.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    if args.mode == "synthetic":
        res = run_synthetic(args.model, out, args.ratios, args.alpha, args.seed,
                            converter=args.converter)
    else:
        res = run_trained(Path(args.run), out)
    res["tensorflow"] = tf.__version__
    res["wall_s"] = round(time.perf_counter() - start, 1)
    atomic_write_json(out / "deploy.json", res)
    print(f"wrote {out / 'deploy.json'} in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
