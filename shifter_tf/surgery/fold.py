"""Fold inference-mode BatchNormalization into the Conv/DepthwiseConv/SeparableConv/Dense that
feeds it: w' = w * gamma/sqrt(var+eps), b' = (b - mean) * gamma/sqrt(var+eps) + beta.

The kernel is not multiplied here: the per-output-channel scale is stored next to it under
OUT_SCALE and applied after slicing (`scaled_kernel`), so a 25M-weight model is not copied twice.
"""
from __future__ import annotations

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.graph import layer_kinds
from shifter_tf.surgery.construct import multiply
from shifter_tf.graph.ir import ModelIR

L = keras.layers

OUT_SCALE = "__bn_scale__"   # weights-dict key of the pending per-output-channel BN scale


def kernel_names(layer) -> tuple[str, str]:
    """(name of the weight whose last axis is the output channel, bias name)."""
    t = type(layer)
    if t in (L.SeparableConv1D, L.SeparableConv2D):
        return "pointwise_kernel", "bias"
    if t in layer_kinds._DEPTHWISE:
        return "depthwise_kernel", "bias"
    return "kernel", "bias"


def _foldable(ir: ModelIR, kinds: list, bn_call) -> bool:
    src = ir.tensors[bn_call.inputs[0]]
    prod = ir.calls[src.producer]
    if kinds[prod.index].kind not in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE):
        return False
    if layer_kinds.activation_name(getattr(prod.layer, "activation", None)) != "linear":
        return False
    if len(ir.calls_of(prod.layer)) != 1 or len(ir.calls_of(bn_call.layer)) != 1:
        return False
    return src.consumers == [bn_call.index] and src.index not in ir.outputs


def fold_batchnorm_calls(ir: ModelIR, kinds: list, weights: dict) -> dict:
    """Fold every foldable BN call in place: kinds become FOLDED, producer weights are replaced.

    Returns {producer call index: folded BN layer name}. Producers that get a bias they did not
    have are listed too (their rebuilt config must say use_bias=True).
    """
    folded = {}
    for call in ir.calls:
        if type(call.layer) is not L.BatchNormalization or kinds[call.index].kind != layer_kinds.CHANNELWISE:
            continue
        if not _foldable(ir, kinds, call):
            continue
        prod = ir.calls[ir.tensors[call.inputs[0]].producer]
        scale, shift = layer_kinds.bn_affine(call.layer, weights[id(call.layer)])
        w = weights[id(prod.layer)]
        kname, bname = kernel_names(prod.layer)
        kernel = w[kname]
        bias = w[bname].astype(np.float64) if bname in w else np.zeros(len(scale))
        w = dict(w)
        w[OUT_SCALE] = scale
        w[bname] = (bias * scale + shift).astype(kernel.dtype)
        weights[id(prod.layer)] = w
        kinds[call.index] = layer_kinds.Kind(layer_kinds.FOLDED, f"folded into {prod.name}")
        folded[prod.index] = call.name
    return folded


def scaled_kernel(kernel: np.ndarray, scale, depthwise: bool = False,
                  inplace: bool = False) -> np.ndarray:
    """kernel * scale over the output axis; for depthwise kernels (..., C, m) output c*m+j.
    `scale` is already sliced like the kernel's outputs; `inplace` when `kernel` is our copy."""
    if scale is None:
        return kernel
    scale = np.asarray(scale, dtype=kernel.dtype)
    if depthwise:
        scale = scale.reshape(kernel.shape[-2], kernel.shape[-1])
    if inplace:
        kernel *= scale
        return kernel
    return multiply(kernel, scale)   # aligned: TensorFlow adopts it without another copy
