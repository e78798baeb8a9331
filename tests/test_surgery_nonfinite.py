"""A model with NaN statistics must not pass verification: NaN argmaxes 'agree' trivially."""
import numpy as np
import pytest

import shifter_tf  # noqa: F401  (before TensorFlow)
import tf_keras as keras

from shifter_tf.models import build_model
from shifter_tf.surgery import SurgeryError, prune_structured


def test_non_finite_model_fails_verification_even_when_forced():
    model = build_model("vgg_small", (28, 28, 1), 10)
    bn = next(l for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    w = bn.get_weights()
    w[2][:] = np.nan          # moving mean: what a NaN pixel leaves behind after training
    bn.set_weights(w)
    x = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype("float32")
    for force in (False, True):
        with pytest.raises(SurgeryError, match="non-finite outputs"):
            prune_structured(model, x, force=force)


def test_finite_model_still_verifies():
    model = build_model("vgg_small", (28, 28, 1), 10)
    x = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype("float32")
    _, rep = prune_structured(model, x)
    assert rep.verification.finite and rep.verification.passed
