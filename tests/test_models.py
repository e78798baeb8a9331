import numpy as np
import pytest
import tf_keras as keras

from shifter_tf.models import MODELS, ModelError, build_model, load_user_model


@pytest.mark.parametrize("name,shape,classes,expected,tol", [
    ("vgg16", (32, 32, 3), 10, 14.7e6, 0.01),      # open_lth cifar_vgg_16 with BN and one fc
    ("resnet56", (32, 32, 3), 10, 0.85e6, 0.02),
    ("resnet50", (64, 64, 3), 200, 23.9e6, 0.01),
])
def test_parameter_counts_match_references(name, shape, classes, expected, tol):
    n = build_model(name, shape, classes).count_params()
    assert abs(n - expected) / expected < tol, n


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_zoo_model_builds_and_runs(name):
    shape = (64, 64, 3) if name in ("resnet18", "resnet50") else (32, 32, 3)
    m = build_model(name, shape, 7)
    out = m(np.zeros((2, *shape), np.float32), training=False)
    assert out.shape == (2, 7)


def test_kaiming_normal_init():
    m = build_model("vgg11", (32, 32, 3), 10)
    k = m.get_layer("block4_conv1").kernel.numpy()
    fan_in = np.prod(k.shape[:-1])
    assert abs(k.std() - np.sqrt(2 / fan_in)) / np.sqrt(2 / fan_in) < 0.05


def test_unknown_model():
    with pytest.raises(ModelError, match="unknown model 'vgg99'"):
        build_model("vgg99", (32, 32, 3), 10)


def _lambda_model():
    inp = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    return keras.Model(inp, keras.layers.Dense(3)(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_user_model_with_lambda_refused_unless_unsafe(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    _lambda_model().save(path)
    with pytest.raises(ModelError, match="Lambda"):
        load_user_model(path)
    assert load_user_model(path, unsafe=True).output_shape == (None, 3)


def test_user_model_plain_loads(tmp_path):
    m = build_model("vgg_small", (28, 28, 1), 10)
    m.save(tmp_path / "m.keras")
    loaded = load_user_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x, training=False), m(x, training=False), atol=1e-6)
    with pytest.raises(ModelError, match="not found"):
        load_user_model(tmp_path / "absent.keras")


# ---------------------------------------------------------------- edge families, one `width`
@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3)])
def test_mobilenets_take_small_inputs_of_one_or_three_channels(name, shape):
    m = build_model(name, shape, 10, width=0.5)
    assert m.output_shape == (None, 10)
    assert any(isinstance(l, keras.layers.DepthwiseConv2D) for l in m.layers)
    # the final feature map keeps at least 4 pixels
    gap = m.get_layer("gap")
    assert gap.input_shape[1] >= 4


def test_mobilenet_v2_matches_the_paper_at_224():
    m = build_model("mobilenet_v2", (224, 224, 3), 1000)
    assert abs(m.count_params() - 3.5e6) / 3.5e6 < 0.02     # Keras' MobileNetV2: 3,538,984
    assert m.get_layer("gap").input_shape[1:3] == (7, 7)


def test_width_is_a_multiplier_across_the_zoo_alpha_its_alias():
    for name in ("vgg_small", "resnet20", "mobilenet_v2", "mobilenet_v3_small"):
        full = build_model(name, (32, 32, 3), 10).count_params()
        half = build_model(name, (32, 32, 3), 10, width=0.5).count_params()
        assert half < 0.6 * full, name
    a = build_model("mobilenet_v2", (32, 32, 3), 10, alpha=0.5).count_params()
    assert a == build_model("mobilenet_v2", (32, 32, 3), 10, width=0.5).count_params()
    r = build_model("resnet20", (32, 32, 3), 10, base_filters=8)
    assert r.get_layer("stem_conv").filters == 8
    assert build_model("resnet20", (32, 32, 3), 10, width=2.0).get_layer("stem_conv").filters == 32


def test_resnet_old_width_spelling_is_a_clear_error():
    with pytest.raises(ValueError, match="base_filters: 16"):
        build_model("resnet20", (32, 32, 3), 10, width=16)
    from shifter_tf.config.schema import from_dict
    from shifter_tf.errors import ConfigError
    with pytest.raises(ConfigError, match="model.kwargs.width.*base_filters: 16"):
        from_dict({"model": {"name": "resnet20", "kwargs": {"width": 16}}}, "<old>")


@pytest.mark.parametrize("name,shape", [("resnet20", (28, 28, 1)), ("resnet50", (64, 64, 3)),
                                        ("mobilenet_v2", (28, 28, 1)),
                                        ("mobilenet_v3_small", (32, 32, 3))])
def test_zero_init_residual_starts_every_residual_block_as_the_identity(name, shape):
    """With `zero_init_residual`, each Add's branch input is exactly 0 at initialisation (so
    the block passes its shortcut through); without it, it is not."""
    import numpy as np
    import tf_keras as keras
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    for zero in (True, False):
        keras.utils.set_random_seed(0)
        model = build_model(name, shape, 10, zero_init_residual=zero)
        adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
        assert adds
        branches = [a.input[1] for a in adds]   # (shortcut, branch) in every zoo block
        outs = keras.Model(model.input, branches)(x, training=False)
        peak = max(float(np.abs(o.numpy()).max()) for o in outs)
        assert (peak == 0.0) == zero, (name, zero, peak)
