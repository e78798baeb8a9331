"""Knowledge distillation on sparse levels (`lottery.distill`): the loss term, that a level really
learns from its teacher, and that a resumed run distils from the saved dense level."""
import numpy as np
import pytest

from conftest import tiny_config
import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.config.schema import from_dict
from shifter_tf.errors import ConfigError
from shifter_tf.train import lottery
from shifter_tf.graph.layer_kinds import ends_with_softmax
from shifter_tf.train.steps import Teacher


def identity(classes: int, softmax: bool) -> keras.Model:
    """model(x) = x (logits) or softmax(x)."""
    inp = keras.Input((classes,))
    out = keras.layers.Dense(classes, use_bias=False, kernel_initializer="identity",
                             activation="softmax" if softmax else None)(inp)
    return keras.Model(inp, out)


def kd_numpy(t, s, temp):
    def soft(z):
        e = np.exp(z / temp - (z / temp).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    p, q = soft(t), soft(s)
    return float((p * (np.log(p) - np.log(q))).sum(-1).mean() * temp ** 2)


def test_distillation_loss_is_tempered_kl_from_logits_or_probabilities():
    rng = np.random.default_rng(0)
    t = rng.normal(0, 3, (16, 10)).astype(np.float32)
    s = rng.normal(0, 3, (16, 10)).astype(np.float32)
    want = kd_numpy(t, s, 4.0)
    assert want > 0.1
    logits = Teacher(identity(10, False), 0.5, 4.0, probabilities=False)
    assert not ends_with_softmax(logits.model)
    assert float(logits.loss(t, s)) == pytest.approx(want, rel=1e-4)
    assert float(logits.loss(t, t)) == pytest.approx(0.0, abs=1e-5)
    probs = Teacher(identity(10, True), 0.5, 4.0, probabilities=True)
    assert ends_with_softmax(probs.model)
    s_prob = tf.nn.softmax(s)
    assert float(probs.loss(t, s_prob)) == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("key,value", [("distill", 1.0), ("distill", -0.1),
                                       ("distill_temperature", 0.0)])
def test_bad_distillation_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"lottery.{key}"):
        from_dict({"lottery": {key: value}}, "<t>")


def rigged_teacher(input_shape, favourite: int) -> keras.Model:
    """Says `favourite` for every image, whatever it shows."""
    inp = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inp)
    bias = np.zeros(10, np.float32)
    bias[favourite] = 10.0
    out = keras.layers.Dense(10, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(bias))(x)
    return keras.Model(inp, out)


def test_a_distilled_level_learns_from_its_teacher(mnist_tiny):
    """A teacher that always answers 3 drags a distilled level's predictions to 3; the same
    level without distillation keeps reading digits."""
    lot = {"levels": 1, "schedule": "oneshot", "rewind_iterations": 2, "prune_fraction": 0.3}
    strategy = tf.distribute.get_strategy()
    cfg0 = tiny_config(lottery=lot)
    dense, masks, _, rewind = lottery.train_level(cfg0, mnist_tiny, 0, None, None, None, strategy)
    teacher = rigged_teacher(mnist_tiny.input_shape, 3)
    x, y = mnist_tiny.normalized("test")
    share = {}
    for alpha in (0.0, 0.9):
        cfg = tiny_config(lottery={**lot, "distill": alpha, "distill_temperature": 2.0})
        model, _, result, _ = lottery.train_level(cfg, mnist_tiny, 1, rewind, dense, masks,
                                                  strategy, teacher=teacher)
        share[alpha] = float((model.predict(x, verbose=0).argmax(-1) == 3).mean())
    assert share[0.0] < 0.3, share
    assert share[0.9] > 0.6, share


def test_a_resumed_run_distils_from_the_saved_dense_level(tmp_path, mnist_tiny, monkeypatch):
    cfg = tiny_config(lottery={"levels": 2, "distill": 0.5})
    run = tmp_path / "run"
    lottery.run_lottery(cfg, run, data=mnist_tiny, progress=False, stop_after=1)
    seen = []
    real = lottery.train_level

    def spy(*args, teacher=None, **kwargs):
        seen.append(teacher)
        return real(*args, teacher=teacher, **kwargs)
    monkeypatch.setattr(lottery, "train_level", spy)
    results = lottery.run_lottery(cfg, run, resume=True, data=mnist_tiny, progress=False)
    assert [r.level for r in results] == [0, 1, 2]
    assert len(seen) == 1 and seen[0] is not None
    dense = lottery.load_level_model(run, 0)
    for a, b in zip(dense.get_weights(), seen[0].get_weights()):
        np.testing.assert_array_equal(a, b)
