"""Data that stream from disk or from a user's tf.data pipeline, never held whole in memory.

`StreamData` offers what the pipeline asks of a data set (`tf_dataset`, `steps`, `count`,
`sample`, `norm`), like the in-memory `data.Dataset`, so training, surgery and
export take either. Two sources:

- an image folder (ROOT/<class>/<image>): the file list is split (stratified, seeded) and each
  split decodes its files batch by batch; the training split shuffles file names, not pixels;
- user `tf.data.Dataset`s of (x, y), batched as Keras' `fit` takes them or not.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import shifter_tf  # noqa: F401
from shifter_tf.data.sets import (IMAGE_SUFFIXES, Normalization, augmenter, check_classes,
                                  check_image_tree, stratified_split, stream_errors)
from shifter_tf.errors import DataError

SPLITS = ("train", "val", "test")
# The first bytes of each format Keras' folder loader reads (bmp, gif, jpeg, png).
MAGIC = (b"BM", b"GIF8", b"\xff\xd8\xff", b"\x89PNG")


@dataclass
class Source:
    """One split: `make()` returns a fresh unbatched (x_raw, y) or batched (x, y) dataset."""
    make: Callable[[], Any]
    batched: bool
    count: Optional[int] = None          # examples; None = unknown until counted
    paths: Optional[list[str]] = None    # the files behind it (image folders)
    shuffled: Optional[Callable[[int], Any]] = None   # make(), cheaply shuffled with a seed


@dataclass
class StreamData:
    """Train/val/test as streams, the class names and the normalisation applied on the fly."""
    name: str
    sources: dict[str, Source]
    labels: list[str]
    input_shape: tuple[int, ...]
    norm: Normalization
    augment: bool = False
    flip: bool = True
    _counts: dict = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def with_norm(self, norm: Normalization) -> "StreamData":
        return replace(self, norm=norm, _counts=self._counts)

    def bad_file(self) -> Optional[tuple[str, str]]:
        """The first file of any split that does not decode, and why (a slow scan, run only
        after a decoder error, whose message names no file)."""
        import tensorflow as tf

        for split in SPLITS:
            for path in self.sources[split].paths or ():
                try:
                    tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
                except tf.errors.OpError as e:
                    return path, (e.message.splitlines() or [""])[0][:120]
        return None

    def _source(self, split: str) -> Source:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: train, val or test")
        return self.sources[split]

    def count(self, split: str) -> int:
        """Examples in `split` (one pass over a user pipeline of unknown length, then cached)."""
        src = self._source(split)
        if src.count is not None:
            return src.count
        if split not in self._counts:
            n = 0
            with stream_errors(f"{self.name} {split}", self.bad_file):
                for _, y in src.make():
                    n += int(np.shape(y)[0]) if src.batched else 1
            self._counts[split] = n
        return self._counts[split]

    def steps(self, split: str, batch_size: int) -> int:
        """Batches per pass: the user's own batching when the source is batched."""
        src = self._source(split)
        if src.batched:
            import tensorflow as tf

            n = int(src.make().cardinality())
            if n >= 0 and n != tf.data.INFINITE_CARDINALITY:
                return max(1, n)
            return max(1, sum(1 for _ in src.make()))
        return max(1, -(-self.count(split) // batch_size))

    def tf_dataset(self, split: str, batch_size: int, training: bool = False, seed: int = 0):
        """A batched pipeline of normalised (x, y); shuffled and augmented when training."""
        import tensorflow as tf

        src = self._source(split)
        ds = src.shuffled(seed) if training and src.shuffled else src.make()
        # A user's batched pipeline keeps its own batching and augmentation.
        ds = ds.map(self._normalize(split), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        if not src.batched:
            if training and self.augment:
                ds = ds.map(augmenter(self.input_shape, self.flip, seed),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            ds = ds.batch(batch_size)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _normalize(self, split: str):
        import tensorflow as tf

        n = self.norm
        scale = np.float32(n.scale)
        mean, std = np.asarray(n.mean, np.float32), np.asarray(n.std, np.float32)
        message = f"{self.name}: non-finite values (NaN/Inf) in the {split} split"

        def norm(x, y):
            x = tf.cast(x, tf.float32)
            x = tf.debugging.assert_all_finite(x, message)
            return (x * scale - mean) / std, tf.cast(y, tf.int64)
        return norm

    def sample(self, split: str, n: int, seed: Optional[int] = None) -> tuple[np.ndarray,
                                                                              np.ndarray]:
        """The first `n` normalised examples of `split` (shuffled by file name with `seed`)."""
        src = self._source(split)
        ds = src.shuffled(seed) if seed is not None and src.shuffled else src.make()
        if src.batched:
            ds = ds.unbatch()
        xs, ys = [], []
        with stream_errors(f"{self.name} {split}", self.bad_file):
            for x, y in ds.map(self._normalize(split)).take(n).batch(256):
                xs.append(x.numpy())
                ys.append(y.numpy())
        if not xs:
            raise DataError(f"{self.name}: the {split} split is empty")
        return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------- image folders
def list_images(root: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Every image under ROOT/<class>/ (sub-folders too), sorted, with its class index."""
    root = Path(root)
    check_image_tree(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for k, c in enumerate(classes):
        for dirpath, dirs, files in os.walk(root / c):
            dirs.sort()
            for f in sorted(files):
                if f.lower().endswith(IMAGE_SUFFIXES):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(k)
    return paths, np.asarray(labels, np.int64), classes


def _file_source(paths: list[str], labels: np.ndarray, size: tuple[int, int]) -> Source:
    import tensorflow as tf

    def decode(path, y):
        raw = tf.io.read_file(path)
        head = tf.strings.substr(raw, 0, 4)
        known = tf.reduce_any([tf.strings.substr(head, 0, len(m)) == m for m in MAGIC])
        # Assert (not a decoder error) so a bad file is named: its path is in the message.
        tf.debugging.Assert(known, ["not a bmp/gif/jpeg/png image:", path])
        img = tf.io.decode_image(raw, channels=3, expand_animations=False)
        img = tf.image.resize(img, size, method="bilinear")
        img.set_shape((*size, 3))
        return img, y

    paths_t, labels_t = np.asarray(paths), np.asarray(labels, np.int64)

    def make(seed=None):
        names = tf.data.Dataset.from_tensor_slices((paths_t, labels_t))
        if seed is not None:   # shuffle names each epoch, then decode: the buffer holds strings
            names = names.shuffle(len(paths_t), seed=seed, reshuffle_each_iteration=True)
        return names.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return Source(make=make, batched=False, count=len(paths), paths=list(paths),
                  shuffled=make)


def streaming_stats(ds, channels: int, scale: float, what: str,
                    locate=None) -> Normalization:
    """Per-channel mean/std of `ds` (unbatched raw x) in one pass, in float64."""
    total = np.zeros(channels)
    sq = np.zeros(channels)
    n = 0
    with stream_errors(what, locate):
        for x, _ in ds.batch(256).as_numpy_iterator():
            flat = x.reshape(-1, channels).astype(np.float64) * scale
            total += flat.sum(0)
            sq += np.square(flat).sum(0)
            n += len(flat)
    if n == 0:
        raise DataError(f"{what}: no training images")
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean ** 2, 0.0))
    std[std == 0] = 1.0
    return Normalization(scale, mean.tolist(), std.tolist(), source="stats")


def image_folder(root: str | Path, image_size=(32, 32), val_fraction: float = 0.1,
                 test_fraction: float = 0.2, seed: int = 0, normalize: bool = True,
                 norm: Optional[Normalization] = None, augment: bool = False,
                 flip: bool = True, limit_train: Optional[int] = None) -> StreamData:
    """A streamed image folder, split deterministically by file (stratified with `seed`).

    `norm` (e.g. the one a run recorded) skips the statistics pass; otherwise `normalize`
    computes per-channel statistics of the training split in one streaming pass.
    """
    paths, y, classes = list_images(root)
    check_classes(str(root), y, classes, [val_fraction, test_fraction],
                  ["data.val_fraction", "data.test_fraction"])
    val_idx, test_idx, train_idx = stratified_split(y, [val_fraction, test_fraction], seed)
    if limit_train and limit_train < len(train_idx):
        (keep,) = stratified_split(y[train_idx], [limit_train / len(train_idx)], seed)[:1]
        train_idx = train_idx[keep]
    size = tuple(int(s) for s in image_size)
    sources = {s: _file_source([paths[i] for i in idx], y[idx], size)
               for s, idx in zip(SPLITS, (train_idx, val_idx, test_idx))}
    if not sources["train"].count:
        raise DataError(f"{root}: the training split is empty; lower data.val_fraction / "
                        "data.test_fraction or add images")
    data = StreamData(Path(root).name, sources, classes, (*size, 3),
                      Normalization.fixed(3),
                      augment=augment, flip=flip)
    if norm is None and normalize:
        norm = streaming_stats(sources["train"].make(), 3, 1.0 / 255.0, str(root),
                               data.bad_file)
    return data if norm is None else data.with_norm(norm)


# ---------------------------------------------------------------- user pipelines
def _spec_shape(ds) -> tuple[Optional[int], ...]:
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise DataError("a tf.data.Dataset of (x, y) pairs is expected; got elements "
                        f"{spec!r}")
    return tuple(spec[0].shape)


def from_tf_data(train, validation, test=None, *, input_shape, labels: list[str],
                 norm: Normalization, name: str = "tf.data") -> StreamData:
    """User pipelines of (x, y), used as they come (their batching, shuffling and
    preprocessing); `test` defaults to `validation`."""
    rank = len(input_shape)
    sources = {}
    for split, ds in zip(SPLITS, (train, validation, test if test is not None else validation)):
        if ds is None:
            raise DataError(f"{name}: no {split} data given (validation_data is required)")
        shape = _spec_shape(ds)
        if len(shape) not in (rank, rank + 1) or any(
                s is not None and s != d for s, d in zip(shape[-rank:], input_shape)):
            raise DataError(f"{name}: {split} examples have shape {shape}; the model takes "
                            f"{tuple(input_shape)} (optionally with a batch axis)")
        sources[split] = Source(make=lambda ds=ds: ds, batched=len(shape) == rank + 1)
    return StreamData(name, sources, list(labels), tuple(input_shape), norm)
