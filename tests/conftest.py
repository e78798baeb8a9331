"""Shared fixtures: tiny real data (the embedded mnist5k) and tiny configs, so tests stay fast.

pytest also loads this file for tests/edge, which runs where only numpy and tflite-runtime are
installed: nothing of shifter_tf may be imported at module level here.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def tiny_config(**sections):
    """A config that trains vgg_small on ~1,000 mnist5k images (all 10 classes), 1 epoch a level."""
    from shifter_tf.config.schema import from_dict

    base = {
        "name": "tiny", "seed": 1,
        "data": {"name": "mnist5k", "limit_train": 1024},
        "model": {"name": "vgg_small"},
        "train": {"lr": 0.05, "epochs": 1, "batch_size": 32, "verbose": 0},
        "lottery": {"levels": 2, "prune_fraction": 0.5, "rewind_iterations": 2,
                    "schedule": "oneshot"},
        "export": {"precisions": ["fp32"], "latency_runs": 5, "threads": [1],
                   "eval_limit": 300, "representative_samples": 32},
        # a smoke run: some tests train on 96 images, whose dense level is at chance
        "portfolio": {"stop_at_chance": False},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(base, "<tiny>")


@pytest.fixture(scope="session")
def mnist_tiny():
    from shifter_tf.data.loaders import load_dataset
    return load_dataset(tiny_config().data, seed=1)
