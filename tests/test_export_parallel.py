"""Parallel TFLite export: the files are byte-identical to a serial export and the
manifest is the same apart from the measured latencies."""
import numpy as np

import shifter_tf  # noqa: F401  (before TensorFlow)
import tf_keras as keras

from shifter_tf.data.sets import Dataset, Normalization
from shifter_tf.export.convert import ConverterPool, convert
from shifter_tf.export.portfolio import Candidate, build_portfolio
from shifter_tf.surgery import prune_structured

L = keras.layers


def _data(rng) -> Dataset:
    def split(n):
        return rng.integers(0, 255, size=(n, 12, 12, 1)).astype("uint8"), np.arange(n) % 4
    (xtr, ytr), (xv, yv), (xte, yte) = split(40), split(8), split(16)
    return Dataset("tiny", xtr, ytr, xv, yv, xte, yte, ["a", "b", "c", "d"], Normalization())


def _models(rng):
    inp = keras.Input((12, 12, 1))
    x = L.Conv2D(8, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(8, 3, activation="relu", name="c2")(x)
    dense = keras.Model(inp, L.Dense(4, name="fc")(L.Flatten()(x)), name="tiny")
    sparse = keras.models.clone_model(dense)
    w = dense.get_weights()
    w[0] = w[0].copy()
    w[0][..., :3] = 0
    sparse.set_weights(w)
    pruned, _ = prune_structured(sparse)
    return dense, sparse, pruned


def test_parallel_export_is_byte_identical_to_serial(tmp_path):
    rng = np.random.default_rng(0)
    data = _data(rng)
    dense, sparse, pruned = _models(rng)
    precisions = ["fp32", "fp16", "int8_dynamic", "int8"]
    cands = [Candidate("dense", 0, 1.0, lambda: dense, precisions),
             Candidate("sparse", 1, 0.6, lambda: sparse, ["fp32"]),
             Candidate("pruned", 1, 0.6, lambda: pruned, precisions, parent_kind="sparse",
                       sparse_encoding=True)]
    kw = dict(threads=[1], runs=2, warmup=1, representative=16, progress=False)
    serial = build_portfolio(tmp_path / "serial", cands, data, "tiny", workers=0, **kw)
    parallel = build_portfolio(tmp_path / "parallel", cands, data, "tiny", workers=2, **kw)
    drop = ("latency_ms", "latency_p90_ms", "init_ms")
    assert [{k: v for k, v in e.items() if k not in drop} for e in serial["variants"]] == \
           [{k: v for k, v in e.items() if k not in drop} for e in parallel["variants"]]
    for e in serial["variants"]:
        assert (tmp_path / "serial" / e["file"]).read_bytes() == \
               (tmp_path / "parallel" / e["file"]).read_bytes(), e["id"]


class Twice(L.Layer):
    """A custom layer the spawned workers do not know."""

    def call(self, x):
        return 2.0 * x


def test_pool_uses_workers_and_converts_here_what_they_cannot():
    rng = np.random.default_rng(1)
    dense, sparse, pruned = _models(rng)
    inp = keras.Input((12, 12, 1))
    custom = keras.Model(inp, L.Flatten()(Twice()(inp)))
    rep = rng.normal(size=(4, 12, 12, 1)).astype("float32")
    jobs = [(0, dense, "fp32", False), (0, dense, "int8", False), (1, pruned, "fp16", True),
            (2, custom, "fp32", False), (1, pruned, "int8_dynamic", False)]
    with ConverterPool(rep, workers=1, local=False) as pool:
        out = dict(pool.run(jobs))
    assert sorted(out) == list(range(len(jobs)))
    for i, (_, model, precision, sparse) in enumerate(jobs):
        assert out[i] == convert(model, precision, rep, sparse=sparse), i
    assert pool.converted["workers"] >= 1
    assert sum(pool.converted.values()) == len(jobs)
