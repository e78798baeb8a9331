"""Parameter and MAC counts of tf_keras models (the numbers reports and the portfolio use)."""
from __future__ import annotations

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.graph import layer_kinds
from shifter_tf.graph.ir import ModelIR, trace
from shifter_tf.errors import SurgeryError

L = keras.layers


def _prod(dims) -> int:
    return int(np.prod([d for d in dims if d is not None], dtype=np.int64))


def layer_macs(layer, in_shape: tuple, out_shape: tuple) -> int:
    """Multiply-accumulates of one call: the full kernel at every output position.

    Conv/Depthwise/Separable/Dense (and Conv*Transpose, counted per input position); other
    layers count 0. Unknown (None) spatial dims count as 1.
    """
    t = type(layer)
    if not (len(in_shape) >= 2 and len(out_shape) >= 2):
        return 0
    cin, cout = in_shape[-1] or 0, out_shape[-1] or 0
    positions = _prod(out_shape[1:-1])
    if t in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
        return _prod(in_shape[1:-1]) * _prod(layer.kernel_size) * cin * cout
    if t in layer_kinds._CONV:
        return positions * _prod(layer.kernel_size) * (cin // layer.groups) * cout
    if t in layer_kinds._DEPTHWISE:
        return positions * _prod(layer.kernel_size) * cout
    if t in layer_kinds._SEPARABLE:
        mid = cin * layer.depth_multiplier
        return positions * (_prod(layer.kernel_size) * mid + mid * cout)
    if t is L.Dense:
        return positions * cin * cout
    return 0


def ir_macs(ir: ModelIR) -> dict:
    """{call index: MACs} for every call of a traced model."""
    out = {}
    for call in ir.calls:
        if call.inputs and call.outputs:
            out[call.index] = layer_macs(call.layer, ir.tensors[call.inputs[0]].shape,
                                         ir.tensors[call.outputs[0]].shape)
    return out


def _unique_weights(model) -> list:
    seen, out = set(), []
    for v in model.weights:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def count_params_and_macs(model) -> tuple[int, int, int]:
    """(params_total, params_nonzero, macs) of a tf_keras model.

    Params are all weights (trainable and not, BN statistics included), each shared variable
    once. MACs need a functional graph; a subclassed model reports 0 MACs.
    """
    weights = _unique_weights(model)
    total = sum(int(np.prod(v.shape)) for v in weights)
    nonzero = sum(int(np.count_nonzero(np.asarray(v.value()))) for v in weights)
    try:
        macs = sum(ir_macs(trace(model)).values())
    except SurgeryError:
        macs = 0
    return total, nonzero, int(macs)
