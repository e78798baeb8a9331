"""The fast paths of surgery.construct and weights give what the plain Keras / numpy calls give:
Layer.__new__ replayed, functional connection without __call__, run-wise slicing, weight lists."""
import numpy as np
import pytest

import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.surgery import construct
from shifter_tf.surgery.weights import _own_weights

L = keras.layers


def _counts(layer) -> list:
    return sorted(repr((type(k).__name__, v)) for k, v in layer._obj_reference_counts.items())


@pytest.mark.parametrize("make", [lambda: L.Conv2D(4, 3, kernel_regularizer="l2"), L.ReLU,
                                  L.Add, lambda: L.Dense(3), L.Flatten, L.MaxPooling2D])
def test_allocate_sets_what_layer_new_sets(make):
    layer = make()
    cls, cfg = type(layer), layer.get_config()
    slow, fast = cls.__new__(cls, **dict(cfg)), construct._allocate(cls, dict(cfg))
    assert type(fast) is type(slow)
    assert sorted(vars(fast)) == sorted(vars(slow))
    assert fast._auto_get_config == slow._auto_get_config
    if slow._auto_get_config:
        assert fast._auto_config.config == slow._auto_config.config
    assert _counts(fast) == _counts(slow)


def test_connect_makes_the_node_a_keras_call_makes():
    """construct._connect against tf_keras' own shape-only (dynamic=True) functional call,
    which is what the rewrite used before (weightless layers stay unbuilt in both)."""
    a, b = keras.Input((6, 6, 4)), keras.Input((6, 6, 4))
    for make, args in ((lambda: L.Conv2D(5, 3, padding="same"), (a,)), (L.ReLU, (a,)),
                       (L.Add, ([a, b],)), (L.GlobalAveragePooling2D, (a,))):
        fast, slow = make(), make()
        if fast.weights or isinstance(fast, L.Conv2D):
            fast.build(a.shape)
            slow.build(a.shape)
        out_fast = construct._connect(fast, args[0])
        object.__setattr__(slow, "_dynamic", True)
        out_slow = slow(*args)
        object.__setattr__(slow, "_dynamic", False)
        assert out_fast.shape == out_slow.shape and out_fast.dtype == out_slow.dtype
        nf, ns = fast._inbound_nodes[-1], slow._inbound_nodes[-1]
        assert len(fast._inbound_nodes) == len(slow._inbound_nodes) == 1
        assert type(nf.call_args[0]) is type(ns.call_args[0]) and nf.call_kwargs == ns.call_kwargs
        assert nf.flat_input_ids == ns.flat_input_ids
        assert nf._single_positional_tensor_passed == ns._single_positional_tensor_passed
        h = out_fast._keras_history
        assert (h.layer, h.node_index, h.tensor_index) == (fast, 0, 0)
        assert fast._called and fast.built == slow.built
        known = make()   # the output spec given (what rebuild knows from the trace)
        if known.weights or isinstance(known, L.Conv2D):
            known.build(a.shape)
        out_known = construct._connect(known, args[0], tf.TensorSpec(out_slow.shape, out_slow.dtype))
        assert out_known.type_spec == out_slow.type_spec
        nk = known._inbound_nodes[-1]
        assert nk.flat_input_ids == ns.flat_input_ids and nk.call_kwargs == ns.call_kwargs
        assert out_known._keras_history.layer is known


@pytest.mark.parametrize("keep", ["few_gaps", "scattered", "prefix"])
def test_take_by_runs_equals_np_take(keep):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3, 8, 96)).astype(np.float32)
    idx = {"few_gaps": np.delete(np.arange(96), [5, 40, 41, 90]),
           "scattered": np.sort(rng.choice(96, 40, replace=False)),
           "prefix": np.arange(50)}[keep]
    for axis in (-1, -2, 0):
        i = idx[idx < a.shape[axis]]
        out = construct.take(a, i, axis)
        np.testing.assert_array_equal(out, np.take(a, i, axis=axis))
        assert out.ctypes.data % construct.ALIGN == 0 and out.flags.c_contiguous


def test_own_weights_are_layer_weights():
    inp = keras.Input((6, 6, 3))
    x = L.BatchNormalization()(L.Conv2D(4, 3)(inp))
    x = L.PReLU(shared_axes=[1, 2])(x)
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(x)))
    model.layers[2].trainable = False
    for layer in model.layers:
        assert [v.name for v in _own_weights(layer)] == [v.name for v in layer.weights] or \
            sorted(v.name for v in _own_weights(layer)) == sorted(v.name for v in layer.weights)
