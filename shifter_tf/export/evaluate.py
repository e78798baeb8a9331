"""Measure a .tflite file on a TFLite interpreter: accuracy, latency, load time.

Runs through `edge_runtime`'s own runner, so the host measures exactly the code path the device
uses (quantisation of int8 inputs included).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from edge_runtime.interpreter import load_runner


@dataclass
class TFLiteMetrics:
    accuracy: Optional[float]
    latency_ms: dict[str, float] = field(default_factory=dict)       # threads -> median
    latency_p90_ms: dict[str, float] = field(default_factory=dict)
    init_ms: float = 0.0


def resolve_threads(threads: Sequence[int]) -> list[int]:
    """0 means every core; duplicates removed, order kept."""
    out: list[int] = []
    for t in threads:
        t = int(t) or (os.cpu_count() or 1)
        if t not in out:
            out.append(t)
    return out


def accuracy(model: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of TFLite `model` on normalised inputs `x`."""
    runner = load_runner(model, num_threads=os.cpu_count() or 1)
    logits, _ = runner.run(np.asarray(x, np.float32))
    return float(np.mean(np.argmax(logits, -1) == y))


def latency(model: bytes, example: np.ndarray, threads: int, runs: int = 50,
            warmup: int = 5) -> tuple[float, float, float]:
    """(median ms, p90 ms, load ms) of single-example invocations at `threads`."""
    t0 = time.perf_counter()
    runner = load_runner(model, num_threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    x = np.asarray(example, np.float32)[None]
    for _ in range(warmup):
        runner.run(x)
    times = [runner.run(x)[1] for _ in range(runs)]
    return float(np.median(times)), float(np.percentile(times, 90)), load_ms


def measure(model: bytes, x: Optional[np.ndarray], y: Optional[np.ndarray],
            threads: Sequence[int] = (1, 0), runs: int = 50, warmup: int = 5) -> TFLiteMetrics:
    """Accuracy on (x, y) if given, and latency at each thread count (0 = all cores)."""
    acc = accuracy(model, x, y) if x is not None else None
    m = TFLiteMetrics(acc)
    example = x[0] if x is not None else None
    for t in resolve_threads(threads):
        med, p90, load = latency(model, example, t, runs, warmup)
        m.latency_ms[str(t)] = med
        m.latency_p90_ms[str(t)] = p90
        m.init_ms = m.init_ms or load
    return m
