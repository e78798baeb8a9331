import numpy as np
import pytest

from shifter_tf.config.schema import DataConfig
from shifter_tf.data.sets import DataError, stratified_split
from shifter_tf.data.loaders import load_dataset


def test_mnist5k_splits_deterministic_disjoint_stratified():
    a = load_dataset(DataConfig(), seed=3)
    b = load_dataset(DataConfig(), seed=3)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (3500, 500, 1000)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(split)[0], b.split(split)[0])
    # disjoint: no image appears in two splits (mnist5k has no duplicate images)
    keys = [set(map(bytes, a.split(s)[0].reshape(len(a.split(s)[0]), -1).astype(np.uint8)))
            for s in ("train", "val", "test")]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    # stratified: every class is ~10% of the test split
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 90 and counts.max() <= 110
    c = load_dataset(DataConfig(), seed=4)
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.x_test, c.x_test)


def test_stratified_split_partitions_indices():
    y = np.repeat(np.arange(5), 37)
    parts = stratified_split(y, [0.1, 0.2], seed=0)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(y)))
    assert all(len(np.unique(y[p])) == 5 for p in parts)


def test_normalisation_recorded_and_applied():
    d = load_dataset(DataConfig(), seed=0)
    x, _ = d.normalized("train")
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2
    assert d.norm.to_dict()["scale"] == pytest.approx(1 / 255)
    assert d.input_shape == (28, 28, 1) and d.num_classes == 10


def test_offline_keras_dataset_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.tar.gz.*" + str(tmp_path)):
        load_dataset(DataConfig(name="cifar10", path=str(tmp_path)))


def test_unknown_dataset():
    with pytest.raises(DataError, match="data.name"):
        load_dataset(DataConfig(name="imagenet22k"))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png")
    d = load_dataset(DataConfig(name="image_folder", path=str(tmp_path), image_size=[8, 8],
                                val_fraction=0.2, test_fraction=0.2))
    assert d.labels == ["cat", "dog"] and d.input_shape == (8, 8, 3)
    assert sum(d.count(s) for s in ("train", "val", "test")) == 20
    with pytest.raises(DataError, match="image_folder"):
        load_dataset(DataConfig(name="image_folder", path=str(tmp_path / "missing")))


def test_augmented_pipeline_shapes(mnist_tiny):
    from dataclasses import replace
    d = replace(mnist_tiny, augment=True, flip=False)
    x, y = next(iter(d.tf_dataset("train", 8, training=True)))
    assert tuple(x.shape) == (8, 28, 28, 1) and tuple(y.shape) == (8,)


def test_limit_train_is_a_stratified_share():
    d = load_dataset(DataConfig(limit_train=500), seed=0)
    assert len(d.x_train) == 500
    counts = np.bincount(d.y_train, minlength=10)
    assert counts.min() >= 45 and counts.max() <= 55


# ---------------------------------------------------------------- keras.datasets files on disk
def _write_idx(path, arr):
    import gzip
    import struct
    arr = np.asarray(arr, np.uint8)
    head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.tobytes())


def test_fashion_mnist_read_from_data_path_without_network(tmp_path, monkeypatch):
    from shifter_tf.data import files
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 255, (50, 28, 28)), np.arange(50) % 10
    xte, yte = rng.integers(0, 255, (20, 28, 28)), np.arange(20) % 10
    for name, arr in zip(files.FASHION, (xtr, ytr, xte, yte)):
        _write_idx(folder / name, arr)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))     # nothing may be written there
    d = load_dataset(DataConfig(name="fashion_mnist", path=str(tmp_path), val_fraction=0.2))
    assert d.x_test.shape == (20, 28, 28, 1) and d.count("train") + d.count("val") == 50
    np.testing.assert_array_equal(d.x_test[..., 0], xte)
    assert d.labels[9] == "Ankle boot"
    assert not (tmp_path / "home").exists()


@pytest.mark.skipif(not __import__("pathlib").Path(
    "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package():
    d = load_dataset(DataConfig(name="fashion_mnist", limit_train=500))
    assert d.count("test") == 10000 and d.count("train") == 500
    assert d.input_shape == (28, 28, 1) and d.num_classes == 10


def test_cifar_read_from_the_archive_in_place(tmp_path):
    import io
    import pickle
    import tarfile
    rng = np.random.default_rng(0)
    archive = tmp_path / "datasets" / "cifar-10-batches-py.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            body = pickle.dumps({b"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8),
                                 b"labels": list(range(10))})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    d = load_dataset(DataConfig(name="cifar10", path=str(tmp_path), val_fraction=0.2))
    assert d.input_shape == (32, 32, 3) and d.count("test") == 10
    assert d.count("train") + d.count("val") == 50
    assert not (tmp_path / "datasets" / "cifar-10-batches-py").exists()   # never unpacked
