"""Compare the rewritten model with the sparse original on a sample batch."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf


@dataclass
class Verification:
    """Agreement of the rewritten model with the original on `n_samples` inputs."""
    n_samples: int
    max_abs_dlogit: float       # max |new - original| over all outputs
    logit_scale: float          # max |original output|, to read the error against
    relative: float             # max_abs_dlogit / logit_scale
    top1_agreement: float       # fraction of samples with the same argmax (mean over outputs)
    min_agreement: float
    passed: bool
    finite: bool = True         # every output of both models is finite

    def to_dict(self) -> dict:
        return asdict(self)


def _run(model, sample, batch_size: int) -> list:
    if isinstance(sample, (np.ndarray, tf.Tensor)):
        parts = [model(sample[i:i + batch_size], training=False)
                 for i in range(0, int(sample.shape[0]), batch_size)]
        flat = [tf.nest.flatten(p) for p in parts]
        return [np.concatenate([np.asarray(f[k]) for f in flat]) for k in range(len(flat[0]))]
    return [np.asarray(o) for o in tf.nest.flatten(model(sample, training=False))]


def compare(reference, candidate, sample, min_agreement: float = 0.99,
            batch_size: int = 64) -> Verification:
    """Run both models on `sample` and measure how far the candidate's outputs move."""
    ref = _run(reference, sample, batch_size)
    new = _run(candidate, sample, batch_size)
    n = int(ref[0].shape[0]) if ref and ref[0].ndim else 1
    if not all(np.isfinite(o).all() for o in ref + new):
        # NaN compares as equal argmax: agreement would mean nothing here
        return Verification(n, float("nan"), float("nan"), float("nan"), 0.0,
                            float(min_agreement), False, False)
    max_abs, scale, agree = 0.0, 0.0, []
    for a, b in zip(ref, new):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        max_abs = max(max_abs, float(np.max(np.abs(a64 - b64))) if a.size else 0.0)
        scale = max(scale, float(np.max(np.abs(a64))) if a.size else 0.0)
        a2, b2 = a64.reshape(-1, a.shape[-1]), b64.reshape(-1, b.shape[-1])
        agree.append(float(np.mean(a2.argmax(-1) == b2.argmax(-1))))
    agreement = float(np.mean(agree)) if agree else 1.0
    return Verification(n, max_abs, scale, max_abs / scale if scale else 0.0, agreement,
                        float(min_agreement), agreement >= min_agreement)
