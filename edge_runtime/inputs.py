"""What ``EdgeSwitcher.predict`` does to an input before any model sees it.

Shape and dtype checks (one example or a batch), refusal of NaN and infinity (unless allowed), the
manifest's normalisation to float32. Always returns a new array: the caller's is never modified.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from edge_runtime.schema import Task


def _check_finite(arr: np.ndarray, xf: np.ndarray, single: bool) -> None:
    """``ValueError`` naming the NaN / infinite values of a float input (after the float32 cast)."""
    bad = ~np.isfinite(xf)
    if not bad.any():
        return
    n_nan = int(np.isnan(xf).sum())
    n_inf = int(bad.sum()) - n_nan
    first = tuple(int(i) for i in np.argwhere(bad)[0])[1 if single else 0:]
    what = " and ".join(w for w in (f"{n_nan} NaN" if n_nan else "",
                                    f"{n_inf} infinite" if n_inf else "") if w)
    why = ("" if not np.isfinite(arr).all()
           else f" (beyond float32's range in the {arr.dtype} input)")
    raise ValueError(f"input contains {what} value(s){why}, first at index {first}; refusing to "
                     "serve it (allow_nonfinite=True, or edge-switcher run --allow-nonfinite, "
                     "serves it)")


class InputAdapter:
    """Checks and normalises inputs for one task (see module docstring)."""

    def __init__(self, task: Task):
        n = task.normalization
        self.dtype = np.dtype(task.input_dtype)
        self.shape = tuple(task.input_shape)
        self.norm = None if n is None else (
            np.float32(n.scale), np.asarray(n.mean, dtype=np.float32),
            np.asarray(n.std, dtype=np.float32))

    def prepare(self, x: Any, allow_nonfinite: bool = False) -> Tuple[np.ndarray, bool]:
        """Check shape, dtype and finiteness, add the batch axis, normalise to float32 (a copy)."""
        arr = np.asarray(x)
        shape = self.shape
        if arr.shape == shape:
            single, arr = True, arr.reshape((1,) + shape)
        elif arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and arr.shape[0] > 0:
            single = False
        else:
            raise ValueError(f"input has shape {arr.shape}; expected {shape} for one example "
                             f"or (N, {', '.join(map(str, shape))}) for a batch")
        want = self.dtype
        if arr.dtype != want and not (arr.dtype.kind in "biuf"
                                      and np.can_cast(arr.dtype, want, casting="same_kind")):
            raise ValueError(f"input has dtype {arr.dtype}; expected {want} with shape {shape} "
                             "(or a batch of them)")
        with np.errstate(over="ignore", invalid="ignore"):   # reported just below
            xf = arr.astype(np.float32)  # a copy: the caller's array is never modified
        if arr.dtype.kind == "f" and not allow_nonfinite:
            _check_finite(arr, xf, single)
        if self.norm is not None:
            scale, mean, std = self.norm
            xf *= scale
            xf -= mean
            xf /= std
        return xf, single
