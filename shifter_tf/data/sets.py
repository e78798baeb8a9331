"""In-memory data sets and what every data source shares: `Dataset`, `Normalization`, label and
image checks, stratified splits, the augmenter.

In-memory sets (`Dataset`) hold raw float32 arrays (pixel values as stored, 0..255) so the
normalisation the model was trained with can be written into the portfolio manifest and re-applied
on the device. Image folders and user pipelines stream instead (`shifter_tf.data.streams.StreamData`);
both offer the same methods (`tf_dataset`, `steps`, `count`, `sample`).
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional


import numpy as np

import shifter_tf  # noqa: F401
from shifter_tf.config.schema import DataConfig
from shifter_tf.errors import DataError  # noqa: F401 (raised here)



@dataclass
class Normalization:
    """x_model = (x_raw * scale - mean) / std, per channel (last axis).

    `source` says where it comes from: `stats` (the training split's mean/std), `fixed` (only the
    1/255 scale), `model` (the model's own Rescaling/Normalization layers: inputs pass as they
    are) or `caller` (the caller's data are already what the model takes).
    """
    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    source: str = "stats"

    @classmethod
    def identity(cls, source: str, channels: int = 1) -> "Normalization":
        return cls(1.0, [0.0] * channels, [1.0] * channels, source)

    @classmethod
    def fixed(cls, channels: int) -> "Normalization":
        """Only the 1/255 scale (`data.normalize: false`)."""
        return cls(1.0 / 255.0, [0.0] * channels, [1.0] * channels, "fixed")

    @property
    def on_device(self) -> bool:
        """Whether the device must apply it (False: the model or the caller does)."""
        return self.source in ("stats", "fixed")

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32) * np.float32(self.scale)
        return ((x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
                ).astype(np.float32)

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "mean": [float(m) for m in self.mean],
                "std": [float(s) for s in self.std], "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(float(d["scale"]), list(d["mean"]), list(d["std"]), d.get("source", "stats"))


@dataclass
class Dataset:
    """Train/val/test splits (raw pixels), labels and the normalisation the model expects."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    norm: Normalization
    augment: bool = False
    flip: bool = True

    def __post_init__(self):
        check_finite(self)
        check_labels(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}: train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def normalized(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.split(name)
        return self.norm.apply(x), y

    def with_norm(self, norm: Normalization) -> "Dataset":
        return replace(self, norm=norm)

    def count(self, name: str) -> int:
        return len(self.split(name)[1])

    def steps(self, name: str, batch_size: int) -> int:
        return max(1, -(-self.count(name) // batch_size))

    def sample(self, name: str, n: int, seed: Optional[int] = None) -> tuple[np.ndarray,
                                                                             np.ndarray]:
        """`n` normalised examples: the first ones, or drawn with `seed`."""
        x, y = self.split(name)
        idx = (np.arange(min(n, len(x))) if seed is None else
               np.random.default_rng(seed).permutation(len(x))[:n])
        return self.norm.apply(x[idx]), y[idx]

    def tf_dataset(self, name: str, batch_size: int, training: bool = False, seed: int = 0):
        """A batched tf.data pipeline; shuffled and (if configured) augmented for training."""
        import tensorflow as tf

        x, y = self.normalized(name)
        ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int64)))
        if training:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            if self.augment:
                ds = ds.map(augmenter(self.input_shape, self.flip, seed),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def stream_errors(what: str, locate=None):
    """Turn what a streamed split raises while it is read (a file that is no image, a corrupt
    one, non-finite values) into one DataError line naming the file or split. `locate()` finds
    the file a decoder error came from (the decoder's message does not say)."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        msg = str(e)
        m = re.search(r"not a bmp/gif/jpeg/png image:\] \[(.*?)\]", msg)
        if m:
            raise DataError(f"{m.group(1)}: not a bmp/gif/jpeg/png image; remove or replace "
                            "the file") from None
        m = re.search(r"(\S+: non-finite values \(NaN/Inf\) in the \w+ split)", msg)
        if m:
            raise DataError(f"{m.group(1)}; clean the data before training") from None
        if "decode" in msg.lower() or "image" in msg.lower():
            bad = locate() if locate else None
            if bad:
                raise DataError(f"{bad[0]}: cannot decode image ({bad[1]}); remove or replace "
                                "the file") from None
            first = (msg.split("]")[-1].strip().splitlines() or [""])[0][:160]
            raise DataError(f"{what}: an image cannot be decoded ({first})") from None
        raise


def model_normalizes(model) -> bool:
    """Whether `model` normalises its own input (a Rescaling or Normalization layer first)."""
    import tf_keras as keras

    first = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)][:1]
    return bool(first) and isinstance(first[0], (keras.layers.Rescaling,
                                                 keras.layers.Normalization))


def check_finite(data: "Dataset") -> None:
    """Refuse NaN/Inf pixels where data enters: they poison BN statistics silently on CPUs whose
    ReLU maps NaN to 0, so the loss can stay finite while the saved model is garbage."""
    for split in ("train", "val", "test"):
        x = np.asarray(getattr(data, f"x_{split}"))
        if x.dtype.kind != "f":
            continue
        bad = x.size - int(np.isfinite(x).sum())
        if bad:
            first = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
            raise DataError(f"{data.name}: x_{split} holds {bad} non-finite values (NaN/Inf), "
                            f"first in example {first}; clean the data before training")


def check_labels(data: "Dataset") -> None:
    """Refuse labels outside [0, num_classes) and an empty training split before `fit` sees them."""
    if len(data.y_train) == 0:
        raise DataError(f"{data.name}: the training split is empty; lower data.val_fraction / "
                        "data.test_fraction or add data")
    k = data.num_classes
    for split in ("train", "val", "test"):
        y = np.asarray(getattr(data, f"y_{split}")).reshape(-1)
        bad = (y < 0) | (y >= k) if y.size else np.zeros(0, bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{data.name}: y_{split} holds {int(bad.sum())} label(s) outside "
                            f"[0, {k}) ({k} class names), first {y[i]} in example {i}")
    present = np.unique(np.asarray(data.y_train).reshape(-1))
    if k < 2 or len(present) < 2:
        what = (f"{k} class name(s)" if k < 2 else
                f"y_train holds only class {data.labels[int(present[0])]!r}")
        raise DataError(f"{data.name}: {what}; a classifier needs examples of at least two "
                        "classes")


def min_per_class(fractions: list[float]) -> int:
    """The fewest examples a class needs for `stratified_split(y, fractions)` to put at least
    one in every split (each fraction > 0, and the rest)."""
    for n in range(1, 10_000):
        cuts = [int(round(f * n)) for f in fractions]
        if all(c >= 1 for c, f in zip(cuts, fractions) if f > 0) and n - sum(cuts) >= 1:
            return n
    return 10_000


def check_classes(what: str, y: np.ndarray, labels: list[str], fractions: list[float],
                  keys: list[str]) -> None:
    """Before splitting: at least two classes, and every class with enough examples for one in
    each split (`keys` name the fractions' config keys for the message)."""
    if len(labels) < 2:
        found = f"only class {labels[0]!r}" if labels else "no class"
        raise DataError(f"{what}: {found}; a classifier needs at least two classes (one "
                        "sub-folder of images per class)")
    need = min_per_class(fractions)
    counts = np.bincount(np.asarray(y, np.int64), minlength=len(labels))
    few = [(labels[i], int(c)) for i, c in enumerate(counts) if c < need]
    if few:
        splits = ", ".join(f"{k} {f}" for k, f in zip(keys, fractions))
        names = ", ".join(f"{n!r} has {c}" for n, c in few[:5])
        raise DataError(f"{what}: class {names} example(s); with {splits} every class needs at "
                        f"least {need} so each split gets one: add examples of "
                        f"{'it' if len(few) == 1 else 'them'}")


IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")   # what Keras' folder loader reads


def check_image_tree(root: str | Path) -> None:
    """Raise DataError unless `root` holds one sub-folder per class, each with images."""
    root = Path(root)
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        what = (f"{len(loose)} images (e.g. {loose[0]}) but no class sub-folders" if loose
                else "no class sub-folders and no images")
        raise DataError(f"{root}: image_folder expects one sub-folder per class "
                        f"(ROOT/cat/1.png, ROOT/dog/2.png); found {what}")
    empty = [c.name for c in classes if not any(
        f.suffix.lower() in IMAGE_SUFFIXES for f in c.rglob("*") if f.is_file())]
    if empty:
        raise DataError(f"{root}: class folder(s) {', '.join(empty[:5])} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES)})")


def augmenter(shape, flip: bool, seed: int):
    import tensorflow as tf

    h, w, _ = shape

    def aug(x, y):
        x = tf.pad(x, [[4, 4], [4, 4], [0, 0]])
        x = tf.image.random_crop(x, shape, seed=seed)
        if flip:
            x = tf.image.random_flip_left_right(x, seed=seed)
        return x, y
    return aug


def stratified_split(y: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Deterministic stratified split of indices into len(fractions)+1 disjoint parts.

    Each class is shuffled with `seed` and cut by the fractions; the remainder is the last part.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for i, f in enumerate(fractions):
            n = int(round(f * len(idx)))
            parts[i].append(idx[start:start + n])
            start += n
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)) for p in parts]


def _stats(x: np.ndarray, scale: float) -> Normalization:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64) * scale
    std = flat.std(0)
    std[std == 0] = 1.0
    return Normalization(scale, flat.mean(0).tolist(), std.tolist())


def _from_arrays(name, cfg: DataConfig, x, y, labels, seed, x_test=None, y_test=None) -> Dataset:
    """Split (x, y) into train/val (and test when not given), deterministic and stratified."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if x.ndim == 3:
        x = x[..., None]
    fractions = [cfg.val_fraction] + ([cfg.test_fraction] if x_test is None else [])
    check_classes(name, y, labels, fractions,
                  ["data.val_fraction", "data.test_fraction"][:len(fractions)])
    if x_test is None:
        val_idx, test_idx, train_idx = stratified_split(
            y, [cfg.val_fraction, cfg.test_fraction], seed)
        x_test, y_test = x[test_idx], y[test_idx]
    else:
        x_test = np.asarray(x_test, np.float32)
        x_test = x_test[..., None] if x_test.ndim == 3 else x_test
        y_test = np.asarray(y_test).reshape(-1).astype(np.int64)
        val_idx, train_idx = stratified_split(y, [cfg.val_fraction], seed)
    if cfg.limit_train and cfg.limit_train < len(train_idx):
        # a stratified share: the indices are sorted and some sources are sorted by class
        (train_idx,) = [train_idx[p] for p in stratified_split(
            y[train_idx], [cfg.limit_train / len(train_idx)], seed)[:1]]
    x_train, y_train = x[train_idx], y[train_idx]
    norm = _stats(x_train, 1.0 / 255.0) if cfg.normalize else Normalization.fixed(x.shape[-1])
    return Dataset(name, x_train, y_train, x[val_idx], y[val_idx], x_test, y_test, labels, norm,
                   augment=cfg.augment, flip=cfg.flip)
