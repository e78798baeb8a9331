"""The portfolio folder, the contract with the device: variants/*.tflite + manifest.json.

Every variant is converted, given its TFLite Model Metadata (`export.metadata`), written and
measured on a TFLite interpreter; the folder is built under a temporary name and swapped in whole,
so a crash mid-export leaves the previous portfolio (and its manifest) intact. With
`export.android` every variant is Android-ready (`shifter_tf.export.android`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

import shifter_tf
from edge_runtime.manifest import file_entry, load_manifest, new_manifest, write_manifest
from shifter_tf.data.sets import Dataset
from shifter_tf.export import android as droid
from shifter_tf.export.convert import ConverterPool, convert, default_workers
from shifter_tf.export.evaluate import measure
from shifter_tf.export.metadata import add_metadata
from shifter_tf.util.io import atomic_dir, check_space
from shifter_tf.util.tables import markdown_table
from shifter_tf.surgery import count_params_and_macs


#: Precisions whose sparse-encoded files load on every runtime a device may have: ai-edge-litert
#: 2.3's XNNPACK fails to prepare sparse int8 CONV_2D / FULLY_CONNECTED nodes (tflite-runtime
#: 2.14 loads them), so int8 files stay dense.
SPARSE_ENCODABLE = ("fp32", "fp16")


#: Variants from which `build_portfolio` starts converter workers by default: a worker costs
#: one TensorFlow start-up (~4 s of CPU), which a handful of small conversions do not repay.
PARALLEL_FROM = 8


@dataclass
class Candidate:
    """A Keras model to put in the portfolio, and what it is."""
    kind: str                 # dense | sparse | pruned
    level: int
    density: float
    load: Callable[[], object]    # returns the tf_keras model (loaded lazily, one at a time)
    precisions: Sequence[str]
    parent_kind: Optional[str] = None   # the variant (same level, same precision) it came from
    extra: Optional[dict] = None
    sparse_encoding: bool = False       # converter's EXPERIMENTAL_SPARSITY for leftover zeros
    params: Optional[int] = None        # weights the file stores (None: unknown before loading)
    nonzero: Optional[int] = None       # ... of which non-zero (what a sparse-encoded file keeps)


#: Bytes per stored weight at each precision, at least (int8_dynamic keeps small tensors fp32).
WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8_dynamic": 1, "int8": 1}


def expected_bytes(candidates: Sequence[Candidate]) -> int:
    """A lower bound of the portfolio's size before anything is converted: every stored weight
    at its precision's width (TFLite keeps unstructured zeros; a sparse-encoded file only the
    non-zero ones). Candidates whose counts are unknown add nothing."""
    total = 0
    for c in candidates:
        for precision in c.precisions:
            encoded = c.sparse_encoding and precision in SPARSE_ENCODABLE
            n = c.nonzero if encoded else c.params
            total += int(n or 0) * WEIGHT_BYTES.get(precision, 1)
    return total


def variant_id(kind: str, level: int, precision: str) -> str:
    return f"L{level:02d}-{kind}-{precision}"


def task_entry(data: Dataset, name: str, output: str = "logits") -> dict:
    """The manifest's task. `normalization` is what the device applies: null when the model
    (`normalization_source: model`) or the caller's own preprocessing (`caller`) does it.
    `output`: what the model returns, logits or probabilities."""
    norm = data.norm.to_dict()
    source = norm.pop("source")
    return {"name": name, "input_shape": list(data.input_shape), "input_dtype": "float32",
            "normalization": norm if data.norm.on_device else None,
            "normalization_source": source, "labels": list(data.labels),
            "num_classes": data.num_classes, "output": output}


def _samples(data, eval_limit, representative, representative_data, android):
    """(x_test, y_test, representative inputs) as the exported models take them."""
    if android:
        x_test, y_test = droid.raw_pixels(data, "test", eval_limit or data.count("test"))
        rep = (droid.raw_pixels(data, "train", representative, seed=0)[0]
               if representative_data is None else droid.to_rgb(droid.denormalize(
                   np.asarray(representative_data)[:representative], data.norm)))
        return x_test, y_test, rep
    x_test, y_test = data.sample("test", eval_limit or data.count("test"))
    rep = (data.sample("train", representative, seed=0)[0] if representative_data is None
           else np.asarray(representative_data, np.float32)[:representative])
    return x_test, y_test, rep


def build_portfolio(out: Path, candidates: Sequence[Candidate], data: Dataset, name: str,
                    threads: Sequence[int] = (1, 0), runs: int = 50, warmup: int = 5,
                    representative: int = 200, eval_limit: Optional[int] = None,
                    progress: bool = True, workers: Optional[int] = None,
                    representative_data: Optional[np.ndarray] = None, metadata: bool = True,
                    android: bool = False) -> dict:
    """Convert, measure and write every candidate at each of its precisions; returns the manifest.

    `workers`: converter processes besides this one (default, from PARALLEL_FROM variants on:
    one per further core that is idle when the export starts; 0 converts everything here).
    The files are byte-identical whichever process converts them. `metadata`: TFLite Model
    Metadata and labels.txt in every file; `android`: Android-ready variants (raw RGB pixels in,
    probabilities out, uint8 at the boundary of full-integer ones).
    """
    if android:
        droid.check_android(data.input_shape, data.norm)
    x_test, y_test, rep = _samples(data, eval_limit, representative, representative_data,
                                   android)
    total = sum(len(c.precisions) for c in candidates)
    manifest: dict = {}
    task: dict = {}
    generator = f"shifter-tf {shifter_tf.__version__}"
    what = f"the portfolio ({total} variant files and manifest.json)"
    needed = expected_bytes(candidates)
    check_space(Path(out), needed, what)   # before minutes of converting
    writing = [what]

    def fill(tmp: Path) -> None:
        (tmp / "variants").mkdir()
        entries = []
        jobs: list = []    # (candidate, precision, sparse encoding, (params, nonzero, macs))

        def conversions():
            for k, c in enumerate(candidates):
                model = c.load()
                counts = count_params_and_macs(model)   # the network's, without a front
                if not task:
                    softmax = droid.ends_with_softmax(model)
                    task.update(task_entry(data, name, "probabilities" if softmax
                                           else "logits"))
                    if android:
                        task.update(droid.android_task(task, data.norm, not softmax))
                if android:
                    model = droid.android_model(model, data.norm)
                for precision in c.precisions:
                    encode = c.sparse_encoding and precision in SPARSE_ENCODABLE
                    jobs.append((c, precision, encode, counts))
                    yield k, model, precision, encode

        # Convert on every core (this process and `workers` spawned ones), then measure one
        # variant at a time, so no conversion disturbs a latency measurement.
        n_workers = workers if workers is not None else (
            default_workers() if total >= PARALLEL_FROM else 0)
        bar = tqdm(total=total, desc="convert", unit="variant", disable=not progress)
        with ConverterPool(rep, min(n_workers, max(total - 1, 0)),
                           convert_fn=lambda *a, **k: convert(*a, **k),
                           options={"android": True} if android else None) as pool:
            for i, blob in pool.run(conversions()):
                c, precision = jobs[i][:2]
                vid = variant_id(c.kind, c.level, precision)
                if metadata:
                    blob = add_metadata(blob, task, {
                        "id": vid, "kind": c.kind, "level": c.level, "density": c.density,
                        "precision": precision}, generator)
                rel = f"variants/{vid}.tflite"
                writing[0] = f"{what}, at {rel}"
                (tmp / rel).write_bytes(blob)
                bar.update(1)
        bar.close()
        bar = tqdm(total=total, desc="measure", unit="variant", disable=not progress)
        for c, precision, encode, (params, nonzero, macs) in jobs:
            vid = variant_id(c.kind, c.level, precision)
            rel = f"variants/{vid}.tflite"
            blob = (tmp / rel).read_bytes()
            m = measure(blob, x_test, y_test, threads, runs, warmup)
            parent = (variant_id(c.parent_kind, c.level, precision)
                      if c.parent_kind else None)
            entries.append({
                "id": vid, **file_entry(tmp, rel), "kind": c.kind, "precision": precision,
                "level": c.level, "density": float(c.density), "params_total": int(params),
                "params_nonzero": int(nonzero), "macs": int(macs), "accuracy": m.accuracy,
                "latency_ms": m.latency_ms, "latency_p90_ms": m.latency_p90_ms,
                "init_ms": m.init_ms, "parent": parent,
                "sparse_encoding": encode, "metadata": bool(metadata), **(c.extra or {})})
            bar.update(1)
        bar.close()
        known = {e["id"] for e in entries}
        for e in entries:   # a parent that was not exported (kind or precision off) is dropped
            if e["parent"] not in known:
                e["parent"] = None
        manifest.update(new_manifest(task or task_entry(data, name), entries,
                                     generator=generator))
        writing[0] = f"{what}, at manifest.json"
        write_manifest(tmp, manifest)

    atomic_dir(out, fill, what=lambda: writing[0], needed=needed or None)
    load_manifest(out)   # read back through the device's own validator
    return manifest


def variant_table(manifest: dict, kinds: Sequence[str] = ("dense", "sparse", "pruned")) -> str:
    """The portfolio as a Markdown table, one row per variant."""
    rows = []
    for v in manifest["variants"]:
        if v["kind"] not in kinds:
            continue
        lat = v["latency_ms"]
        one = lat.get("1")
        allc = lat[max(lat, key=int)] if lat else None
        acc = "n/a" if v["accuracy"] is None else f"{v['accuracy']:.4f}"
        rows.append([v["id"], v["kind"], v["precision"], f"{v['density']:.4f}",
                     f"{v['params_total']:,}", f"{v['macs']:,}", acc, f"{v['bytes'] / 1024:.1f}",
                     _ms(one), _ms(allc)])
    return markdown_table(["id", "kind", "prec", "density", "params", "MACs", "accuracy", "KB",
                           "ms@1", "ms@all"], rows, "lllrrrrrrr")


def _ms(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def verify_portfolio(folder: Path) -> list[str]:
    """Check every variant file against the manifest and that it loads; returns the problems.

    Each problem names the variant and its file, so a corrupted or truncated .tflite is found
    on the host before it is copied to a device.
    """
    from edge_runtime.interpreter import load_runner
    from edge_runtime.manifest import ManifestError, read_variant_file

    manifest = load_manifest(folder)
    problems = []
    for v in manifest.variants:
        try:
            load_runner(read_variant_file(folder, v), num_threads=1)
        except ManifestError as e:
            problems.append(str(e))
        except Exception as e:  # the interpreter's own message for a file that will not load
            problems.append(f"{Path(folder) / v.file}: variant {v.id} does not load: "
                            f"{str(e).splitlines()[0][:200]}")
    return problems
