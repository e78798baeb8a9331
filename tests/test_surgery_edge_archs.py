"""Structured pruning on the architectures deployed to phones and Coral:
squeeze-excite (Reshape + broadcasting Multiply), hard-swish built from TF ops (TFOpLambda),
per-channel Rescaling/Normalization and grouped convolutions.

Dead filters are planted as IMP leaves them: an all-zero filter whose following BN (random
statistics elsewhere) maps the zero to zero, so the channel is constant 0 downstream.
"""
import numpy as np
import pytest

import shifter_tf  # noqa: F401  (before TensorFlow)
import tensorflow as tf
import tf_keras as keras

from shifter_tf.models import iter_layers
from shifter_tf.surgery import prune_structured

from test_surgery import assert_close, assert_consistent, randomize_bn

L = keras.layers
TOL = 1e-4


def plant_dead_filters(model, rng, fraction=0.25, min_filters=8):
    """Zero `fraction` of the filters of every Conv2D / DepthwiseConv2D with >= min_filters
    outputs (and their bias); the BN after each gets beta = mean = 0 for those channels."""
    planted = 0
    for layer in iter_layers(model):
        t = type(layer)
        if t not in (L.Conv2D, L.DepthwiseConv2D):
            continue
        w = layer.get_weights()
        n = w[0].shape[-1] if t is L.Conv2D else w[0].shape[-2]
        if n < min_filters:
            continue
        dead = rng.choice(n, int(fraction * n), replace=False)
        if t is L.Conv2D:
            w[0][..., dead] = 0
        else:
            w[0][..., dead, :] = 0
        if len(w) > 1:
            w[1][dead] = 0
        layer.set_weights(w)
        planted += len(dead)
        nxt = layer._outbound_nodes[0].layer
        if type(nxt) is L.BatchNormalization:
            g, b, m, v = nxt.get_weights()
            b[dead], m[dead] = 0.0, 0.0
            nxt.set_weights([g, b, m, v])
    return planted


def no_empty_layers(model):
    for layer in model.layers:
        shape = layer.output_shape
        shapes = shape if isinstance(shape, list) else [shape]
        assert all(s[-1] is None or s[-1] >= 1 for s in shapes), layer.name


def _bn_stats_are_random(model) -> bool:
    bns = [l for l in iter_layers(model) if type(l) is L.BatchNormalization]
    return bool(bns) and all(np.abs(l.moving_mean.numpy()).max() > 0.1 and
                             np.abs(l.moving_variance.numpy() - 1).max() > 0.1 for l in bns)


@pytest.mark.parametrize("app,size", [("EfficientNetB0", 64), ("MobileNetV3Small", 96)])
def test_edge_applications_lose_a_fifth_exactly(app, size):
    rng = np.random.default_rng(sum(map(ord, app)))
    model = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3),
                                              classes=10)
    randomize_bn(model, rng)
    assert plant_dead_filters(model, rng) > 0
    assert _bn_stats_are_random(model)   # folding BN is really exercised
    x = rng.uniform(0, 255, size=(4, size, size, 3)).astype("float32")  # raw pixels
    new, rep = prune_structured(model, x)
    assert rep.params_after <= 0.8 * rep.params_before, (rep.params_before, rep.params_after)
    assert rep.exact and rep.verification.top1_agreement == 1.0
    assert_close(model, new, x)
    assert not rep.unsupported
    assert_consistent(model, new, rep)
    no_empty_layers(new)
    frozen = set(rep.frozen_layers)
    assert not any("reshape" in n or "Mul" in n or "multiply" in n for n in frozen), frozen


def _gate_model(hard_swish: bool):
    """conv -> BN -> act -> squeeze-excite (pool -> Reshape -> conv -> conv -> Multiply)."""
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    if hard_swish:    # MobileNetV3: x * relu6(x + 3) * (1/6), TF ops on Keras tensors
        x = L.Multiply(name="hswish")([x, L.ReLU(6.0, name="r6")(x + 3.0) * (1.0 / 6.0)])
    else:
        x = L.Activation("swish", name="act1")(x)
    se = L.GlobalAveragePooling2D(name="pool")(x)
    se = L.Reshape((1, 1, 16), name="se_reshape")(se)
    se = L.Conv2D(8, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(16, 1, name="se_expand")(se)
    se = tf.nn.relu6(se + 3.0) / 6.0 if hard_swish else L.Activation("sigmoid", name="sig")(se)
    x = L.Multiply(name="se_mul")([x, se])
    x = L.Conv2D(12, 1, name="project")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(5, name="fc")(x))


@pytest.mark.parametrize("hard_swish", [False, True])
def test_squeeze_excite_dead_channels_removed(hard_swish):
    rng = np.random.default_rng(7)
    model = _gate_model(hard_swish)
    randomize_bn(model, rng)
    c1, bn = model.get_layer("c1"), model.get_layer("bn1")
    k = c1.get_weights()[0]
    k[..., [1, 4, 9]] = 0
    c1.set_weights([k])
    g, b, m, v = bn.get_weights()
    b[[1, 4, 9]], m[[1, 4, 9]] = 0.0, 0.0
    bn.set_weights([g, b, m, v])
    x = rng.normal(size=(3, 10, 10, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert new.get_layer("c1").filters == 13
    assert new.get_layer("se_expand").filters == 13   # the gate's channels go with them
    assert new.get_layer("se_reduce").kernel.shape[-2] == 13
    assert new.get_layer("project").kernel.shape[-2] == 13
    assert new.get_layer("se_reshape").output_shape == (None, 1, 1, 13)
    assert not rep.unsupported and not rep.frozen_layers.keys() - {"fc"}
    assert rep.exact
    assert_close(model, new, x)
    assert_consistent(model, new, rep)


def test_tf_op_constants_per_channel_are_sliced():
    """Constants broadcast against a tensor (per-channel scale, offset, clip) go with it."""
    rng = np.random.default_rng(3)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="c1")(inp)
    scale = rng.uniform(0.5, 2, 8).astype("float32")
    x = x * scale                                    # ndarray constant, per channel
    x = tf.math.add(x, tf.constant(rng.normal(size=(1, 1, 1, 8)), tf.float32))
    x = tf.clip_by_value(tf.nn.relu6(x), 0.0, 4.0)
    x = L.Rescaling(rng.uniform(0.5, 2, 8).tolist(), offset=0.25, name="resc")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inp, L.Flatten()(x))
    k, b = model.get_layer("c1").get_weights()
    k[..., [0, 5]] = 0   # constant channels: relu6/clip of the planted offsets, folded into c2
    model.get_layer("c1").set_weights([k, b])
    x_in = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    new, rep = prune_structured(model, x_in)
    assert new.get_layer("c1").filters == 6 and new.get_layer("c2").kernel.shape[-2] == 6
    assert len(new.get_layer("resc").scale) == 6
    assert not rep.unsupported
    assert_close(model, new, x_in)


def test_normalization_per_channel_is_sliced():
    rng = np.random.default_rng(4)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 3, name="c1")(inp)
    norm = L.Normalization(name="norm")
    norm.adapt(rng.normal(2.0, 3.0, size=(16, 4, 4, 6)).astype("float32"))
    x = norm(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inp, L.GlobalAveragePooling2D()(x))
    k, b = model.get_layer("c1").get_weights()
    k[..., [2]] = 0
    model.get_layer("c1").set_weights([k, b])
    x_in = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    new, rep = prune_structured(model, x_in)
    assert new.get_layer("c1").filters == 5
    assert new.get_layer("norm").mean.shape[-1] == 5
    assert_close(model, new, x_in)


def test_grouped_conv_pruned_by_whole_group():
    """groups=4: a conv group goes when all its inputs are dead; a partly dead one stays."""
    rng = np.random.default_rng(5)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(8, 3, padding="same", groups=4, name="gconv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="r2")(x)
    x = L.Conv2D(6, 1, name="c3")(x)
    model = keras.Model(inp, L.GlobalAveragePooling2D()(x))
    randomize_bn(model, rng)
    k, b = model.get_layer("c1").get_weights()
    dead = [4, 5, 6, 7, 12]     # conv group 1 (inputs 4-7) entirely, group 3 only in part
    k[..., dead] = 0
    b[dead] = -1.0              # ReLU(-1) = 0: exactly removable
    model.get_layer("c1").set_weights([k, b])
    x_in = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    new, rep = prune_structured(model, x_in)
    g = new.get_layer("gconv")
    assert g.groups == 3 and g.filters == 6 and g.kernel.shape == (3, 3, 4, 6)
    assert new.get_layer("c1").filters == 12
    assert new.get_layer("c3").kernel.shape[-2] == 6
    assert rep.exact
    assert_close(model, new, x_in)
    assert_consistent(model, new, rep)


def test_unknown_tf_op_is_named_and_frozen():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="c1")(inp)
    x = tf.math.cumsum(x, axis=-1)      # mixes channels: must not be pruned through
    x = L.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inp, L.Flatten()(x))
    k, b = model.get_layer("c1").get_weights()
    k[..., :3] = 0
    model.get_layer("c1").set_weights([k, b])
    x_in = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    new, rep = prune_structured(model, x_in)
    assert any("cumsum" in n for n in rep.unsupported)
    assert new.get_layer("c1").filters == 8
    assert_close(model, new, x_in)


def test_fast_construction_gives_the_layers_from_config_would():
    """construct.new_layer (tracking off, objects instead of dicts, DLPack weights) builds the
    same layers as from_config + build + set_weights: config, weights, trackable children."""
    from shifter_tf.surgery import construct
    inp = keras.Input((8, 8, 4))
    a = L.ZeroPadding2D(((1, 0), (0, 1)))(L.Conv2D(6, 3, use_bias=False, activation="relu",
                                                    kernel_regularizer="l2")(inp))
    b = L.LeakyReLU(0.2)(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(inp))
    b = L.Cropping2D(((1, 0), (0, 1)))(L.SeparableConv2D(6, 3, padding="valid")(
        L.ZeroPadding2D(1)(b)))
    x = L.Concatenate()([L.Add()([a, b]), L.Multiply()([a, L.ELU()(b)]), L.Maximum()([a, b])])
    x = L.AveragePooling2D()(L.MaxPooling2D(1)(L.Activation("swish")(L.ReLU(6.0)(x))))
    g = L.Reshape((1, 1, 18))(L.GlobalAveragePooling2D()(x))
    x = L.Subtract()([x, L.Dense(18, bias_initializer="ones")(g)])
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(L.GlobalMaxPooling2D(keepdims=True)(x))))
    for layer in model.layers:
        if not construct._fast_class(type(layer)) or not layer.built:
            continue
        inputs = layer.input
        fast = construct.new_layer(layer, {}, layer.name + "_fast")
        values = {v.name.split("/")[-1].split(":")[0]: construct.multiply(v.numpy(), 1.0)
                  for v in layer.weights}
        if values:
            construct.build_with_values(fast, inputs, values)
        construct.finish(fast)
        fast(inputs)
        slow = type(layer).from_config({**layer.get_config(), "name": layer.name + "_fast"})
        slow(inputs)
        slow.set_weights(layer.get_weights())
        assert fast.get_config() == slow.get_config(), layer.name
        assert [(v.name, v.shape, v.trainable) for v in fast.weights] == \
               [(v.name, v.shape, v.trainable) for v in slow.weights]
        for a, b in zip(fast.weights, slow.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert sorted(fast._trackable_children()) == sorted(slow._trackable_children())
        assert fast._self_setattr_tracking
