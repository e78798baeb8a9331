"""Streamed data: image folders decoded batch by batch, user tf.data pipelines, one-pass
statistics, and a training whose peak memory does not grow with the folder."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shifter_tf.config.schema import DataConfig
from shifter_tf.data.sets import DataError, Normalization
from shifter_tf.data.loaders import load_dataset


def write_folder(root, per_class: int, size: int = 12, classes=("cat", "dog", "emu"), seed=0):
    """PNG images whose class shows in the mean colour (so a tiny model can learn them)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.zeros((size, size, 3))
            base[..., k % 3] = 160
            img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i:05d}.png")
    return root


def test_stream_matches_keras_folder_loader(tmp_path):
    """Same pixels as keras.utils.image_dataset_from_directory, split without decoding."""
    import tf_keras as keras

    write_folder(tmp_path, 8, size=13)
    d = load_dataset(DataConfig(name="image_folder", path=str(tmp_path), image_size=[9, 9],
                                val_fraction=0.25, test_fraction=0.25, normalize=False))
    ref = keras.utils.image_dataset_from_directory(tmp_path, image_size=(9, 9), batch_size=None,
                                                   shuffle=False)
    by_path = {p: x for p, (x, _) in zip(ref.file_paths, ref.as_numpy_iterator())}
    src = d.sources["test"]
    x, y = d.sample("test", 100)
    assert len(x) == d.count("test") == 6 and sorted(y) == [0, 0, 1, 1, 2, 2]
    raw = np.stack([xi for xi, _ in src.make().as_numpy_iterator()])
    assert any(np.array_equal(raw[0], v) for v in by_path.values())
    np.testing.assert_allclose(x, raw / 255.0, atol=1e-6)    # fixed 1/255 scale
    assert d.norm.source == "fixed"


def test_streaming_statistics_equal_in_memory_ones(tmp_path):
    write_folder(tmp_path, 10)
    d = load_dataset(DataConfig(name="image_folder", path=str(tmp_path), image_size=[12, 12]),
                     seed=2)
    x = np.concatenate([xb.numpy() for xb, _ in d.sources["train"].make().batch(7)]
                       ).astype(np.float64) / 255.0
    np.testing.assert_allclose(d.norm.mean, x.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(d.norm.std, x.reshape(-1, 3).std(0), rtol=1e-5)
    assert d.norm.source == "stats"
    # a recorded normalisation is taken as it is: no statistics pass
    fixed = Normalization(0.5, [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], "stats")
    e = load_dataset(DataConfig(name="image_folder", path=str(tmp_path), image_size=[12, 12]),
                     seed=2, norm=fixed)
    assert e.norm == fixed
    xb, yb = next(iter(e.tf_dataset("train", 4, training=True, seed=0)))
    assert xb.shape == (4, 12, 12, 3) and yb.dtype.name == "int64"


def test_a_file_that_is_no_image_is_named(tmp_path):
    write_folder(tmp_path, 6)
    bad = tmp_path / "dog" / "00002.png"
    bad.write_bytes(b"this is text, not a png")
    with pytest.raises(DataError, match="00002.png"):
        d = load_dataset(DataConfig(name="image_folder", path=str(tmp_path),
                                    image_size=[8, 8], val_fraction=0.0, test_fraction=0.0))
        d.sample("train", 100)


def test_user_tf_data_batched_and_unbatched(mnist_tiny):
    import tensorflow as tf

    from shifter_tf.data.streams import from_tf_data

    x, y = mnist_tiny.normalized("train")
    val = mnist_tiny.normalized("val")
    batched = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(16)
    unbatched = tf.data.Dataset.from_tensor_slices(val)
    d = from_tf_data(batched, unbatched, input_shape=(28, 28, 1), labels=list("0123456789"),
                     norm=Normalization.identity("caller"))
    assert d.steps("train", 999) == 7 and d.count("train") == 100
    assert d.steps("val", 100) == -(-len(val[0]) // 100)
    xs, ys = d.sample("val", 5)
    np.testing.assert_array_equal(xs, val[0][:5])
    np.testing.assert_array_equal(d.sample("test", 10**6)[1], val[1])    # test defaults to val
    with pytest.raises(DataError, match=r"shape \(None, 14, 14, 1\)"):
        from_tf_data(batched.map(lambda a, b: (a[:, ::2, ::2], b)), unbatched,
                     input_shape=(28, 28, 1), labels=list("0123456789"),
                     norm=Normalization.identity("caller"))


PEAK = textwrap.dedent("""
    import json, resource, sys
    import shifter_tf
    import tf_keras as keras
    from shifter_tf.config.schema import DataConfig, TrainConfig
    from shifter_tf.data.loaders import load_dataset
    from shifter_tf.train import engine
    data = load_dataset(DataConfig(name="image_folder", path=sys.argv[1], image_size=[96, 96],
                                   val_fraction=0.1, test_fraction=0.1), seed=0)
    inp = keras.Input((96, 96, 3))
    h = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    cfg = TrainConfig(lr=0.01, epochs=1, batch_size=64, verbose=0)
    engine.compile_model(model, cfg, engine.steps_per_epoch(data, 64))
    engine.fit(model, data, cfg, seed=0, what="memory test")
    acc = engine.evaluate(model, data, "test")
    print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "train": data.count("train"), "acc": acc}))
""")


def test_peak_memory_does_not_grow_with_the_folder(tmp_path):
    """10x the images, < 1.5x the peak RSS. Held in memory as float32, the large folder's
    2,400 images of 96x96x3 would add ~265 MB per copy (the old loader made three)."""
    small = write_folder(tmp_path / "small", 80, size=96)
    large = write_folder(tmp_path / "large", 800, size=96, seed=1)
    peaks = {}
    for name, root in (("small", small), ("large", large)):
        out = subprocess.run([sys.executable, "-c", PEAK, str(root)], capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[name] = json.loads(out.stdout.strip().splitlines()[-1])
    assert peaks["large"]["train"] == 10 * peaks["small"]["train"]
    assert peaks["large"]["peak_kb"] < 1.5 * peaks["small"]["peak_kb"], peaks
    assert peaks["large"]["acc"] > 0.5, peaks    # it did learn from the stream
