"""Structured pruning by graph surgery: rewrites must match the sparse model where exact.

Models get random non-trivial BN statistics (so BN folding and constant folding are really
exercised) and kernels zeroed by whole filters, by input slices and by coupled residual groups.
"""
import json

import numpy as np
import pytest

import shifter_tf  # noqa: F401  (before TensorFlow)
import tf_keras as keras

from shifter_tf.models import build_model, iter_layers, MODELS
from shifter_tf.surgery import (SurgeryError, build_dependency_graph, count_params_and_macs,
                                fold_batchnorm, prune_structured)

L = keras.layers
TOL = 1e-4  # max |dlogit| allowed, relative to the largest |logit|


# ---- helpers ------------------------------------------------------------------------------

def randomize_bn(model, rng):
    """Non-trivial inference statistics, so folding BN is not an identity."""
    for layer in iter_layers(model):
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, n), "beta": rng.normal(0, 0.5, n),
                      "moving_mean": rng.normal(0, 0.5, n), "moving_variance": rng.uniform(0.5, 2, n)}
            layer.set_weights([values[w.name.split("/")[-1].split(":")[0]] for w in layer.weights])


def _kernel_layers(model):
    return [l for l in iter_layers(model)
            if type(l) in (L.Conv2D, L.Dense, L.DepthwiseConv2D)]


def zero_random(model, rng, filters=0.25, slices=0.15):
    """Zero random whole filters and random input slices of every conv/dense kernel."""
    for layer in _kernel_layers(model):
        w = layer.get_weights()
        k = w[0].copy()
        n_out = k.shape[-1]
        k[..., rng.choice(n_out, int(filters * n_out), replace=False)] = 0
        if type(layer) is not L.DepthwiseConv2D:
            n_in = k.shape[-2]
            k[..., rng.choice(n_in, int(slices * n_in), replace=False), :] = 0
        w[0] = k
        layer.set_weights(w)


def _residual_producers(model):
    """Independently of the code under test: the convs feeding each residual stream.

    Walk back from every Add input through single-input layers to a Conv2D; Add inputs that
    are other Adds (identity shortcuts) join the same stream."""
    def producer(tensor):
        layer = tensor._keras_history.layer
        while not isinstance(layer, (L.Conv2D, L.Add)):
            tensor = layer.input
            layer = tensor._keras_history.layer
        return layer

    parent = {}

    def find(x):
        while parent.setdefault(x, x) is not x:
            x = parent[x]
        return x

    adds = [l for l in model.layers if isinstance(l, L.Add)]
    for add in adds:
        for t in add.input:
            parent[find(producer(t))] = find(add)
    streams = {}
    for layer in list(parent):
        if isinstance(layer, L.Conv2D):
            streams.setdefault(find(layer), []).append(layer)
    return list(streams.values())


def zero_coupled(model, rng, per_stream=3, negative_bias=False):
    """Zero the same filter index in every producer of a residual group.

    With `negative_bias` the BN after each zeroed filter gets beta=-1, mean=0, so the channel's
    constant is ReLU(negative) = 0: exactly removable even when 3x3 'same' convs read it."""
    groups = _residual_producers(model)
    for convs in groups:
        n = convs[0].filters
        for idx in rng.choice(n, min(per_stream, n), replace=False):
            for conv in convs:
                w = conv.get_weights()
                w[0] = w[0].copy()
                w[0][..., idx] = 0
                conv.set_weights(w)
                bn = conv._outbound_nodes[0].layer
                if negative_bias and isinstance(bn, L.BatchNormalization):
                    g, b, m, v = bn.get_weights()
                    b[idx], m[idx] = -1.0, 0.0
                    bn.set_weights([g, b, m, v])
    return groups


def assert_close(ref, new, x):
    a, b = np.asarray(ref(x, training=False)), np.asarray(new(x, training=False))
    scale = max(np.abs(a).max(), 1e-6)
    err = np.abs(a - b).max()
    assert err <= TOL * scale, f"max |dlogit| {err:.3g} > {TOL} x {scale:.3g}"
    return err


def assert_consistent(model, new, rep):
    """Report totals agree with count_params_and_macs and with the per-layer rows."""
    p0, nz0, m0 = count_params_and_macs(model)
    p1, nz1, m1 = count_params_and_macs(new)
    assert (rep.params_before, rep.params_nonzero_before, rep.macs_before) == (p0, nz0, m0)
    assert (rep.params_after, rep.params_nonzero_after, rep.macs_after) == (p1, nz1, m1)
    assert sum(l.params_after for l in rep.layers) == p1
    assert sum(l.params_before for l in rep.layers) == p0
    assert sum(l.macs_after for l in rep.layers) == m1
    assert sum(l.macs_before for l in rep.layers) == m0
    json.dumps(rep.to_dict())


def no_empty_layers(model):
    for layer in iter_layers(model):
        for attr in ("filters", "units"):
            # DepthwiseConv2D subclasses Conv2D with filters=None; its width is the
            # kernel's channel axis, checked through the output shapes below.
            if getattr(layer, attr, None) is not None:
                assert getattr(layer, attr) >= 1, layer.name
    for layer in model.layers:
        shape = layer.output_shape
        shapes = shape if isinstance(shape, list) else [shape]
        for s in shapes:
            assert s[-1] is None or s[-1] >= 1, (layer.name, s)


# ---- the zoo ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_rewrites_exactly(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    shape = (32, 32, 3)
    model = build_model(name, shape, 10)
    randomize_bn(model, rng)
    zero_random(model, rng)
    if name.startswith("resnet"):
        assert zero_coupled(model, rng, negative_bias=True)
    x = rng.normal(size=(4,) + shape).astype("float32")
    new, rep = prune_structured(model, x)
    assert rep.exact and rep.verification.passed
    assert rep.verification.top1_agreement == 1.0
    assert_close(model, new, x)
    assert rep.verification.relative <= TOL
    assert rep.params_after < rep.params_before and rep.macs_after < rep.macs_before
    assert rep.channels_after < rep.channels_before
    assert_consistent(model, new, rep)
    reasons = {k: sum(l.removed.get(k, 0) for l in rep.layers) for k in
               ("zero_filter", "dead_input")}
    assert reasons["zero_filter"] > 0 and reasons["dead_input"] > 0
    if name.startswith("resnet"):
        assert rep.coupled_groups_removed > 0
    no_empty_layers(new)


def test_bottleneck_residual_groups_removed_with_nonzero_constants():
    """ResNet-50's residual streams are read by 1x1 convs: non-zero constants fold exactly."""
    rng = np.random.default_rng(5)
    model = build_model("resnet50", (32, 32, 3), 10)
    randomize_bn(model, rng)
    groups = zero_coupled(model, rng, per_stream=4)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert rep.coupled_groups_removed == 4 * len(groups)
    assert any(l.folded_constants for l in rep.layers)
    assert_close(model, new, x)
    last_stream = max(groups, key=lambda g: g[0].filters)
    assert all(new.get_layer(c.name).filters == c.filters - 4 for c in last_stream)


# ---- keras.applications -------------------------------------------------------------------

@pytest.mark.parametrize("app", ["MobileNetV2", "ResNet50", "DenseNet121"])
def test_applications_rewrite_exactly(app):
    rng = np.random.default_rng(sum(map(ord, app)))
    model = getattr(keras.applications, app)(weights=None, input_shape=(32, 32, 3), classes=10)
    randomize_bn(model, rng)
    zero_random(model, rng, filters=0.2, slices=0.1)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert rep.exact and rep.verification.top1_agreement == 1.0
    assert_close(model, new, x)
    assert rep.params_after < rep.params_before and rep.macs_after < rep.macs_before
    assert_consistent(model, new, rep)
    assert not rep.unsupported
    if app == "MobileNetV2":  # depthwise in = out: a kept depthwise has its producer's width
        for layer in new.layers:
            if isinstance(layer, L.DepthwiseConv2D):
                assert layer.input_shape[-1] == layer.output_shape[-1]


# ---- edge cases ---------------------------------------------------------------------------

def _small_cnn(lambda_layer=False):
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    if lambda_layer:
        x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    x = L.Conv2D(8, 1, name="c2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(6, 3, padding="valid", name="c3", activation="relu")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dropout(0.5, name="drop")(x)
    out = L.Dense(5, name="fc")(x)
    return keras.Model(inp, out)


def test_nothing_to_remove_gives_identical_outputs():
    rng = np.random.default_rng(1)
    model = build_model("resnet20", (16, 16, 3), 10)
    randomize_bn(model, rng)
    x = rng.normal(size=(4, 16, 16, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert rep.groups_removed == 0 and rep.channels_after == rep.channels_before
    assert rep.macs_after == rep.macs_before
    assert not any(isinstance(l, L.BatchNormalization) for l in new.layers)
    assert assert_close(model, new, x) < 1e-5 * np.abs(model(x)).max()


def test_lambda_layer_is_named_and_its_channels_frozen():
    rng = np.random.default_rng(2)
    model = _small_cnn(lambda_layer=True)
    randomize_bn(model, rng)
    c1 = model.get_layer("c1")
    k = c1.get_weights()[0]
    k[..., :3] = 0  # would go without the Lambda
    c1.set_weights([k])
    x = rng.normal(size=(3, 12, 12, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert rep.unsupported == ["double"]
    assert new.get_layer("c1").filters == 8
    assert "double" in build_dependency_graph(model).group_of("c1", 0).frozen
    assert_close(model, new, x)


def test_all_zero_layer_keeps_one_channel():
    rng = np.random.default_rng(3)
    model = _small_cnn()
    randomize_bn(model, rng)
    c2 = model.get_layer("c2")
    c2.set_weights([np.zeros_like(c2.get_weights()[0]), rng.normal(size=8).astype("float32")])
    x = rng.normal(size=(3, 12, 12, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert new.get_layer("c2").filters == 1
    assert rep.layer("c2").forced_keep == 1
    no_empty_layers(new)
    assert_close(model, new, x)


def test_all_zero_model_still_builds():
    model = _small_cnn()
    for layer in _kernel_layers(model):
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.random.default_rng(4).normal(size=(2, 12, 12, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    no_empty_layers(new)
    assert_close(model, new, x)
    assert new.get_layer("c3").filters == 1


def test_flatten_dense_folds_constants_exactly():
    """A dead filter's act(bias) reaches the Dense through Flatten: folded into the fc bias."""
    rng = np.random.default_rng(6)
    model = _small_cnn()
    randomize_bn(model, rng)
    c3 = model.get_layer("c3")
    k, b = c3.get_weights()
    k[..., [1, 4]] = 0
    b[[1, 4]] = [0.7, 0.3]  # relu keeps them: non-zero constants
    c3.set_weights([k, b])
    x = rng.normal(size=(3, 12, 12, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert new.get_layer("c3").filters == 4
    assert rep.layer("fc").folded_constants == 2 * 4 * 4  # two channels x 4x4 flatten rows
    assert rep.layer("fc").fold_exact
    assert rep.layer("c3").removed["zero_filter"] == 2
    assert_close(model, new, x)


def test_same_padding_constant_is_kept_unless_folding_is_allowed():
    rng = np.random.default_rng(7)
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="a")(inp)
    x = L.Conv2D(4, 3, padding="same", name="b")(x)
    out = L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    a = model.get_layer("a")
    k, b = a.get_weights()
    k[..., [0, 1, 2]] = 0
    b[[0, 1, 2]] = [2.0, -1.0, 3.0]  # relu: constants 2, 0, 3
    a.set_weights([k, b])
    x = rng.normal(size=(4, 10, 10, 3)).astype("float32")

    kept, rep = prune_structured(model, x)
    assert kept.get_layer("a").filters == 5  # only the exact constant 0 goes
    assert rep.layer("a").kept_for_exactness == 2 and rep.exact
    assert_close(model, kept, x)

    folded, rep2 = prune_structured(model, x, inexact="fold", force=True)
    assert folded.get_layer("a").filters == 3
    assert not rep2.exact and rep2.inexact_layers == ["b"]
    assert rep2.verification.max_abs_dlogit > 1e-3  # the borders really differ

    with pytest.raises(SurgeryError, match="agrees"):
        prune_structured(model, x, inexact="fold", min_agreement=1.01)
    with pytest.raises(ValueError):
        prune_structured(model, x, inexact="sometimes")


def test_sequential_and_nested_models():
    rng = np.random.default_rng(8)
    block = keras.Sequential([L.Conv2D(8, 3, padding="same", use_bias=False, input_shape=(8, 8, 4)),
                              L.BatchNormalization(), L.ReLU()], name="block")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="stem")(inp)
    x = block(x)
    x = L.GlobalAveragePooling2D()(x)
    nested = keras.Model(inp, L.Dense(3, name="fc")(x))
    seq = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(6, 3, name="s1"), L.BatchNormalization(),
                            L.Activation("relu"), L.Conv2D(5, 3, name="s2"), L.Flatten(),
                            L.Dense(3, name="out")])
    for model in (nested, seq):
        randomize_bn(model, rng)
        zero_random(model, rng, filters=0.4, slices=0.0)
        x = rng.normal(size=(3, 8, 8, 3)).astype("float32")
        new, rep = prune_structured(model, x)
        assert rep.channels_after < rep.channels_before
        assert_close(model, new, x)
        assert_consistent(model, new, rep)
    assert rep.inlined_models == [] and "block" in prune_structured(nested)[1].inlined_models


def test_concatenate_offsets_and_depthwise_groups():
    rng = np.random.default_rng(9)
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(5, 1, name="b")(inp)
    x = L.Concatenate(name="cat")([a, b])
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(6, 1, name="pw")(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    graph = build_dependency_graph(model)
    g = graph.group_of("b", 2)
    assert ("cat", 4 + 2) in g.members and ("dw", 6) in g.members and ("pw", 6) in g.readers
    assert graph.groups_of("cat")[4 + 2] == graph.groups_of("dw")[6]

    bw, bb = model.get_layer("b").get_weights()
    bw[..., 2] = 0
    bb[2] = 0.0  # constant 0 through the same-padded depthwise: exact
    model.get_layer("b").set_weights([bw, bb])
    dw = model.get_layer("dw")
    dk, db = dw.get_weights()
    dk[..., 1, :] = 0  # depthwise filter of a's channel 1 is zero: constant db[1]
    dw.set_weights([dk, db])
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert new.get_layer("a").filters == 3 and new.get_layer("b").filters == 4
    assert new.get_layer("pw").input_shape[-1] == 7
    assert_close(model, new, x)


def test_fold_batchnorm_and_counts():
    rng = np.random.default_rng(10)
    model = _small_cnn()
    randomize_bn(model, rng)
    folded = fold_batchnorm(model)
    assert not any(isinstance(l, L.BatchNormalization) for l in folded.layers)
    assert folded.get_layer("c1").use_bias
    x = rng.normal(size=(2, 12, 12, 3)).astype("float32")
    assert_close(model, folded, x)
    total, nonzero, macs = count_params_and_macs(model)
    # c1 12*12*9*3*8, c2 12*12*8*8, c3 4*4*9*8*6, fc 96*5
    assert macs == 12 * 12 * 27 * 8 + 12 * 12 * 64 + 4 * 4 * 72 * 6 + 96 * 5
    assert total == 216 + 4 * 8 + (64 + 8) + (432 + 6) + (96 * 5 + 5)
    assert nonzero <= total


def test_tfmot_stripped_and_unstripped_models():
    import tensorflow_model_optimization as tfmot
    rng = np.random.default_rng(11)
    base = _small_cnn()
    randomize_bn(base, rng)
    zero_random(base, rng, filters=0.4, slices=0.0)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(
        base, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.0, 0))
    x = rng.normal(size=(2, 12, 12, 3)).astype("float32")
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    new, rep = prune_structured(stripped, x)
    assert rep.channels_after < rep.channels_before
    new2, rep2 = prune_structured(wrapped, x)
    assert any("strip_pruning" in n for n in rep2.notes)
    assert_close(stripped, new2, x)


def test_report_is_json_and_per_layer():
    rng = np.random.default_rng(12)
    model = build_model("vgg_small", (16, 16, 3), 10)
    randomize_bn(model, rng)
    zero_random(model, rng)
    new, rep = prune_structured(model)  # no sample: no verification
    d = json.loads(rep.to_json())
    assert d["verification"] is None and d["rewrite_ms"] > 0 and d["layers"]
    row = rep.layer("block1_conv2")
    assert row.folded_bn == "block1_bn2" and row.time_ms > 0
    assert row.channels_out_after == new.get_layer("block1_conv2").filters
    assert sum(row.removed.values()) == row.channels_out_before - row.channels_out_after > 0
    gone = sum(row.removed_channels.values(), [])
    assert len(gone) == len(set(gone)) == sum(row.removed.values())
    assert all(0 <= i < row.channels_out_before for i in gone)
    # every channel reported as a zero filter really has an all-zero kernel
    k = model.get_layer("block1_conv2").get_weights()[0]
    assert all(not k[..., i].any() for i in row.removed_channels["zero_filter"])
    assert "block1_conv2" in rep.summary()


def test_separable_conv1d_and_shared_layers():
    rng = np.random.default_rng(13)
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(6, 1, name="c")(inp)
    x = L.SeparableConv2D(8, 3, padding="valid", depth_multiplier=2, name="sep")(x)
    x = L.BatchNormalization(name="sep_bn")(x)
    x = L.ReLU()(x)
    shared = L.Conv2D(5, 1, name="shared")
    a = shared(x)
    b = shared(L.MaxPooling2D(1)(x))
    x = L.Add()([a, b])
    x = L.Reshape((8 * 8, 5))(x)
    x = L.Conv1D(4, 3, name="c1d")(x)
    x = L.Dense(3, name="d3")(x)  # Dense on a 3-D tensor reads the last axis
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    randomize_bn(model, rng)
    sep = model.get_layer("sep")
    dw, pw, bias = sep.get_weights()
    pw[..., [0, 5]] = 0  # two dead separable filters
    dw[..., 2, :] = 0    # input channel 2 of the separable conv is never read
    sep.set_weights([dw, pw, bias])
    k, kb = model.get_layer("shared").get_weights()
    k[..., 3, :] = 0     # channel 3 unread by the shared conv in both calls
    model.get_layer("shared").set_weights([k, kb])
    x = rng.normal(size=(3, 10, 10, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert new.get_layer("c").filters == 5
    assert new.get_layer("sep").filters < 8
    assert new.get_layer("shared").input_shape[-1] == new.get_layer("sep").filters
    assert "reshape" in " ".join(rep.frozen_layers)
    assert new.get_layer("shared").filters == 5  # feeds Reshape: frozen
    assert_close(model, new, x)
    assert_consistent(model, new, rep)


def test_nested_model_called_twice_is_pruned_consistently():
    rng = np.random.default_rng(14)
    sub_in = keras.Input((6, 6, 4))
    y = L.Conv2D(6, 3, padding="same", name="inner")(sub_in)
    sub = keras.Model(sub_in, L.ReLU(name="inner_relu")(y), name="sub")
    inp = keras.Input((6, 6, 4))
    a, b = sub(inp), sub(L.Activation("tanh")(inp))
    x = L.Concatenate()([a, b])
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    k, kb = sub.get_layer("inner").get_weights()
    k[..., [1, 2]] = 0
    kb[[1, 2]] = [-1.0, 0.5]  # constants 0 and 0.5: both fold exactly into the Dense
    sub.get_layer("inner").set_weights([k, kb])
    x = rng.normal(size=(3, 6, 6, 4)).astype("float32")
    new, rep = prune_structured(model, x)
    assert new.get_layer("inner").filters == 4
    # the non-zero constant (0.5) of each call is folded; the zero one needs nothing
    assert rep.layer("fc").folded_constants == 2 and rep.layer("fc").fold_exact
    assert rep.inlined_models == ["sub", "sub"]
    assert_close(model, new, x)


class _Scale(L.Layer):
    """A custom layer the rewriter cannot know."""

    def call(self, x):
        return x * 0.5


class _Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 1)

    def call(self, x):
        return self.conv(x)


def test_custom_layers_and_subclassed_models_are_reported_not_rewritten():
    rng = np.random.default_rng(15)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(5, 1, name="a")(inp)
    x = _Scale(name="custom")(x)
    x = L.Conv2D(6, 1, name="b")(x)
    x = _Sub()(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    for name in ("a", "b"):
        k, b = model.get_layer(name).get_weights()
        k[..., 0] = 0
        model.get_layer(name).set_weights([k, b])
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert set(rep.unsupported) == {"custom", model.layers[4].name}
    assert new.get_layer("a").filters == 5 and new.get_layer("b").filters == 6  # frozen around
    assert_close(model, new, x)

    sub = _Sub()
    sub(x)
    same, rep2 = prune_structured(sub)
    assert same is sub and rep2.unsupported == [sub.name]


def test_pruned_model_saves_reloads_and_converts_to_tflite(tmp_path):
    """The shape-only layer connection must leave an ordinary Keras model behind."""
    import tensorflow as tf
    rng = np.random.default_rng(16)
    model = _small_cnn()
    randomize_bn(model, rng)
    zero_random(model, rng, filters=0.4, slices=0.0)
    x = rng.normal(size=(2, 12, 12, 3)).astype("float32")
    new, rep = prune_structured(model, x)
    assert rep.channels_after < rep.channels_before
    new.save(tmp_path / "p.keras")
    again = keras.models.load_model(tmp_path / "p.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(new(x)), atol=1e-6)
    interpreter = tf.lite.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(new).convert())
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    assert_close(lambda v, training: model(v, training=training),
                 lambda v, training: interpreter.get_tensor(out["index"]), x)
