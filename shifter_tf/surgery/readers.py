"""Producers (Conv/Dense/SeparableConv, grouped convs too) seen as readers of their input
channels: which filter reads which input (`ReadPattern`), the bias, the all-zero filters and the
kernel sums that fold a constant input into the bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.surgery.fold import OUT_SCALE, kernel_names

L = keras.layers

class ReadPattern:
    """Which filter o reads (has a non-zero weight on) which input channel i.

    Dense float32 matrix-vector products when many pairs are non-zero, index pairs when few:
    at 99 % sparsity the pairs are ~100x cheaper than scanning the (in x out) matrix."""

    SPARSE_BELOW = 0.1  # fraction of non-zero (i, o) pairs under which pairs are used

    def __init__(self, nz: np.ndarray):
        self.shape = nz.shape
        self.read_rows = nz.any(1)    # inputs read by some filter: the answer for all filters
        self.reading_cols = nz.any(0)
        # Both forms are made on first use: most queries select all filters or all inputs.
        self._nz, self._dense, self._pairs = nz, None, None

    def _form(self):
        """The index pairs (rows, cols) when few pairs are non-zero, else the float matrix."""
        if self._pairs is None and self._dense is None:
            nz = self._nz
            if np.count_nonzero(nz) < self.SPARSE_BELOW * nz.size:
                self._pairs = np.divmod(np.flatnonzero(nz), nz.shape[1])  # 10x np.nonzero
            else:
                self._dense = nz.astype(np.float32)
        return self._pairs, self._dense

    def inputs_read_by(self, outputs: np.ndarray) -> np.ndarray:
        """bool (in,): input channels read by at least one of the selected filters."""
        if outputs.all():
            return self.read_rows.copy()
        pairs, dense = self._form()
        if dense is not None:
            return (dense @ outputs.astype(np.float32)) > 0
        rows, cols = pairs
        read = np.zeros(self.shape[0], bool)
        read[rows[outputs[cols]]] = True
        return read

    def outputs_reading(self, inputs: np.ndarray) -> np.ndarray:
        """bool (out,): filters reading at least one of the selected input channels."""
        if inputs.all():
            return self.reading_cols.copy()
        pairs, dense = self._form()
        if dense is not None:
            return (inputs.astype(np.float32) @ dense) > 0
        rows, cols = pairs
        hit = np.zeros(self.shape[1], bool)
        hit[cols[inputs[rows]]] = True
        return hit


@dataclass
class Reader:
    """A producer layer seen as a reader of its input channels."""
    pattern: ReadPattern      # which filter reads which input
    bias: np.ndarray          # (out,) float64 (zeros when the layer has none)
    filter_zero: np.ndarray   # (out,) bool, the filter is all zero
    act: object
    _w: dict
    _layer: object
    _ksum: np.ndarray | None = None

    def ksum(self) -> np.ndarray:
        """(in, out) kernel summed over space: the bias change per unit of constant input."""
        if self._ksum is None:
            self._ksum = _kernel_sum(self._layer, self._w)
        return self._ksum

    def fold(self, c: np.ndarray) -> np.ndarray:
        """Bias change (out,) caused by constant inputs c (0 where not constant)."""
        k = self.ksum()
        return (c.astype(k.dtype) @ k).astype(np.float64)


def block_diagonal(per_group: np.ndarray, groups: int) -> np.ndarray:
    """(in/groups, out) matrix of a grouped conv -> the (in, out) matrix over all inputs:
    filter o of conv group g only sees inputs of group g."""
    if groups == 1:
        return per_group
    cin_g, out = per_group.shape
    og = out // groups
    full = np.zeros((cin_g * groups, out), per_group.dtype)
    for g in range(groups):
        full[g * cin_g:(g + 1) * cin_g, g * og:(g + 1) * og] = per_group[:, g * og:(g + 1) * og]
    return full


def _kernel_sum(layer, w: dict) -> np.ndarray:
    t = type(layer)
    if t in (L.SeparableConv1D, L.SeparableConv2D):
        dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
        cin, mult = dw.shape[-2], dw.shape[-1]
        dws = dw.reshape(-1, cin, mult).sum(0)
        ksum = np.einsum("im,imo->io", dws, pw.reshape(cin, mult, -1))
    else:
        kernel = w["kernel"]
        ksum = block_diagonal(kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(0),
                              getattr(layer, "groups", 1))
    scale = w.get(OUT_SCALE)
    return ksum * scale.astype(ksum.dtype) if scale is not None else ksum


def nonzero_inputs(kernel: np.ndarray) -> np.ndarray:
    """bool (in, out): some spatial tap of filter o has a non-zero weight on input i
    (`!= 0` first: numpy's any() over float32 is slower, most of all over a 1x1 kernel)."""
    k3 = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
    return k3[0] != 0 if len(k3) == 1 else (k3 != 0).any(0)


def make_reader(layer, w: dict) -> Reader:
    """Zero pattern and bias of a PRODUCER layer's (possibly BN-folded) weights."""
    t = type(layer)
    if t in (L.SeparableConv1D, L.SeparableConv2D):
        dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
        cin, mult = dw.shape[-2], dw.shape[-1]
        dwnz = dw.reshape(-1, cin, mult).any(0)
        nz = (dwnz[:, :, None] & (pw.reshape(cin, mult, -1) != 0)).any(1)
    else:
        kernel = w["kernel"]
        nz = block_diagonal(nonzero_inputs(kernel), getattr(layer, "groups", 1))
    scale = w.get(OUT_SCALE)
    if scale is not None and not scale.all():   # a BN with gamma 0 zeroes its filter
        nz = nz & (scale != 0)
    _, bname = kernel_names(layer)
    out = nz.shape[1]
    bias = w[bname].astype(np.float64) if bname in w else np.zeros(out)
    pattern = ReadPattern(nz)
    return Reader(pattern, bias, ~pattern.reading_cols, layer.activation, w, layer)


