"""keras.datasets sets read from files already on the machine: no network, no copy into ~/.keras.

Where each set is looked for, first hit wins:

1. `data.path` = DIR: DIR/datasets/<files>, then DIR/<files>;
2. `$KERAS_HOME/datasets/<files>` when KERAS_HOME is set, then `~/.keras/datasets/<files>`
   (where keras.datasets caches a download: tf_keras's `get_file` itself ignores KERAS_HOME);
3. the system copy Debian installs: `/usr/share/datasets/fashion-mnist/` from the package
   `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`).

<files> are the names keras.datasets uses: `fashion-mnist/` with the four original IDX `.gz`
files, `mnist.npz`, `cifar-10-batches-py/` or `cifar-10-batches-py.tar.gz`, `cifar-100-python/`
or `cifar-100-python.tar.gz` (an archive is read in place, never unpacked).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np

SYSTEM = {"fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")]}
FILES = {"fashion_mnist": "fashion-mnist", "mnist": "mnist.npz",
         "cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FASHION = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
HINTS = {"fashion_mnist": "apt-get install dataset-fashion-mnist (Debian/Ubuntu: the four .gz "
                          "files in /usr/share/datasets/fashion-mnist/)"}

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def roots(path: Optional[str] = None) -> list[Path]:
    """Folders a keras.datasets file may sit in, in search order."""
    out = []
    if path:
        out += [Path(path) / "datasets", Path(path)]
    if os.environ.get("KERAS_HOME"):
        out.append(Path(os.environ["KERAS_HOME"]) / "datasets")
    out.append(Path.home() / ".keras" / "datasets")
    return out


def candidates(name: str, path: Optional[str] = None) -> list[Path]:
    """Every place `name`'s files may be (folders or archives), in search order."""
    base = FILES[name]
    out = []
    for r in roots(path):
        out.append(r / base)
        if name in ("cifar10", "cifar100"):
            out.append(r / f"{base}.tar.gz")
    if not path:
        out += SYSTEM.get(name, [])
    return out


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not, as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion(folder: Path) -> Optional[Arrays]:
    files = [folder / f for f in FASHION]
    if not all(f.is_file() for f in files):
        return None
    xtr, ytr, xte, yte = (read_idx(f) for f in files)
    return xtr, ytr, xte, yte


def _mnist(file: Path) -> Optional[Arrays]:
    if not file.is_file():
        return None
    with np.load(file, allow_pickle=False) as z:
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]


def _cifar_batches(members: dict, name: str) -> Arrays:
    """CIFAR's python pickles (name -> bytes) as NHWC uint8 arrays and label vectors."""
    def load(key):
        d = pickle.loads(members[key], encoding="bytes")
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.asarray(d[b"labels" if name == "cifar10" else b"fine_labels"])
        return x, y
    train = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    parts = [load(k) for k in train]
    xte, yte = load("test_batch" if name == "cifar10" else "test")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), xte, yte


def _cifar(where: Path, name: str) -> Optional[Arrays]:
    wanted = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
              "cifar100": ["train", "test"]}[name]
    if where.is_dir():
        if not all((where / w).is_file() for w in wanted):
            return None
        return _cifar_batches({w: (where / w).read_bytes() for w in wanted}, name)
    if where.is_file():
        with tarfile.open(where, "r:gz") as tar:
            members = {}
            for m in tar.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if base in wanted and m.isfile():
                    members[base] = tar.extractfile(m).read()
        return _cifar_batches(members, name) if len(members) == len(wanted) else None
    return None


def find(name: str, path: Optional[str] = None) -> Optional[tuple[Arrays, Path]]:
    """(x_train, y_train, x_test, y_test) and where they were read from, or None."""
    for where in candidates(name, path):
        if name == "fashion_mnist":
            got = _fashion(where)
        elif name == "mnist":
            got = _mnist(where)
        else:
            got = _cifar(where, name)
        if got is not None:
            return got, where
    return None


def where_to_put(name: str, path: Optional[str] = None) -> str:
    """One line saying where the files go, for an error message."""
    base = FILES[name] + ("/ (the four original .gz files)" if name == "fashion_mnist" else
                          "" if name == "mnist" else ".tar.gz (or the folder it unpacks to)")
    first = roots(path)[0]
    line = f"put {base} in {first}/ (or set data.path to a folder holding datasets/{base})"
    return line + (f", or {HINTS[name]}" if name in HINTS else "")
