"""engine.recalibrate_bn: BatchNormalization statistics recomputed after training, on real data."""
from dataclasses import replace

import numpy as np

from conftest import tiny_config


def _model(data, seed=3):
    import tf_keras as keras
    from shifter_tf.models import build_model
    keras.utils.set_random_seed(seed)
    return build_model("vgg_small", data.input_shape, data.num_classes)


def _bns(model):
    import tf_keras as keras
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def test_first_bn_gets_the_mean_of_its_inputs_and_momentum_is_restored(mnist_tiny):
    import tf_keras as keras
    from shifter_tf.train import engine
    x, _ = mnist_tiny.normalized("train")
    cfg = replace(tiny_config().train, batch_size=32, bn_recalibration=len(x))
    model = _model(mnist_tiny)
    bn = _bns(model)[0]
    momentum = bn.momentum
    assert engine.recalibrate_bn(model, mnist_tiny, cfg) == len(_bns(model))
    # the first BN's input depends on no other BN: over the whole split (in any order), the
    # plain average of the batch means is the split's mean (the last batch is a little short)
    feed = keras.Model(model.input, bn.input)
    expected = feed.predict(x, verbose=0).mean(axis=(0, 1, 2))
    scale = float(np.abs(expected).max())
    assert scale > 0.01
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=0, atol=0.02 * scale)
    assert bn.momentum == momentum


def test_recalibration_draws_images_as_training_does_from_a_class_sorted_split(mnist_tiny):
    """mnist5k's split is sorted by class: its first 256 images hold 3 classes. The images the
    statistics come from must be drawn as training draws them (shuffled)."""
    from shifter_tf.train import engine
    _, y = mnist_tiny.normalized("train")
    assert len(set(y[:256].tolist())) <= 3
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(mnist_tiny, name)

        def tf_dataset(self, *args, **kwargs):
            for x, labels in mnist_tiny.tf_dataset(*args, **kwargs):
                seen.extend(labels.numpy().tolist())
                yield x, labels

    cfg = replace(tiny_config().train, batch_size=32, bn_recalibration=256)
    engine.recalibrate_bn(_model(mnist_tiny), Spy(), cfg)
    assert len(seen) == 256 and len(set(seen)) == 10


def test_frozen_bn_and_zero_samples_leave_statistics_alone(mnist_tiny):
    from shifter_tf.train import engine
    cfg = replace(tiny_config().train, batch_size=32, bn_recalibration=64)
    model = _model(mnist_tiny)
    frozen, other = _bns(model)[0], _bns(model)[1]
    frozen.trainable = False
    before = frozen.moving_mean.numpy().copy(), other.moving_mean.numpy().copy()
    assert engine.recalibrate_bn(model, mnist_tiny, replace(cfg, bn_recalibration=0)) == 0
    np.testing.assert_array_equal(other.moving_mean.numpy(), before[1])
    engine.recalibrate_bn(model, mnist_tiny, cfg)
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), before[0])
    assert not np.allclose(other.moving_mean.numpy(), before[1])


def test_stale_running_averages_after_a_short_run_are_repaired(mnist_tiny):
    """After 32 steps of a first epoch the running averages (the zoo's momentum 0.9) describe
    the weights of the last ten steps, which moved fast."""
    from shifter_tf.train import engine
    cfg = replace(tiny_config().train, batch_size=32, epochs=1, bn_recalibration=1024)
    model = _model(mnist_tiny)
    engine.compile_model(model, cfg, engine.steps_per_epoch(mnist_tiny, cfg.batch_size))
    engine.fit(model, mnist_tiny, cfg, seed=1, what="short run")
    before = engine.evaluate(model, mnist_tiny, "val")
    engine.recalibrate_bn(model, mnist_tiny, cfg)
    after = engine.evaluate(model, mnist_tiny, "val")
    assert after > before + 0.05, (before, after)
