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
