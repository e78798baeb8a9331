"""Seconds per training step: a dense level (level 0) against a sparse level, interleaved, and
what it costs to start a level.

    .venv/bin/python -m tools.bench.step_time [--config C] [--level 3] [--out bench]

Every arm is built by the training code itself (`lottery.setup_level`) and trained with Keras'
`fit` on the **same batch**, repeated, with the callbacks a level trains with (engine.fit's
NaN guard included).

Steady state, per step (`--rounds` rounds; each runs every arm for `--steps` steps, order
rotated by one each round, and keeps the median step; a ratio is arm / dense within one round,
so load from other processes hits both sides alike; reported: the median over rounds):
- `dense`: level 0;
- `sparse`: a level >= 1 as it trains now: the run's reused `trainer.SparseTrainer`, tfmot's
  wrappers, KeepPruned and the dead-channel hold inside the train step (`steps.HookedModel`);
- `sparse_callbacks`: KeepPruned / HoldDeadChannels as per-batch Keras callbacks (as before);
- `sparse_tfmot_only`: the wrapped model with tfmot's own callback only.

Starting a level (`--setups` times each, alternated): build/wrap/compile or reuse (`setup_s`)
and the first `fit` call of 2 steps, which traces the train step (`first_fit_s`):
- `dense`: level 0;
- `sparse_before`: a sparse level as levels started before this benchmark's fixes: rebuilt,
  per-batch callbacks, tfmot's wrappers converted by AutoGraph at every trace;
- `sparse_rebuilt`: rebuilt with the fixes (a resumed run's first sparse level);
- `sparse_reused`: the run's SparseTrainer taking the next level (every other sparse level).

The previous level is the dense model at initialisation with every weight allowed (or a trained
run's level L-1 with `--run`): a level's step costs the same whatever its masks hold, since
tfmot multiplies by the mask instead of skipping zeros.

Writes OUT/raw/step_time.json and OUT/STEP_TIME.md, and prints the tables.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from shifter_tf.util.io import atomic_write_json, atomic_write_text
from shifter_tf.util.tables import markdown_table
from tools.bench.common import DEFAULT_CONFIG, logger

log = logger("step_time")
ARMS = ("dense", "sparse", "sparse_callbacks", "sparse_tfmot_only")
STARTS = ("dense", "sparse_before", "sparse_rebuilt", "sparse_reused")


def _builder(cfg, data, level: int, run):
    """build(arm) -> (LevelSetup, seconds to set it up), by the training code."""
    import numpy as np
    import tensorflow as tf
    from shifter_tf.train import lottery, magnitude, wrappers
    from shifter_tf.train.rewind import CaptureRewind, get_weights, load_weights

    strategy = tf.distribute.get_strategy()
    if run is not None:
        prev = lottery.load_level_model(run, level - 1)
        masks = magnitude.load_masks(lottery.level_dir(run, level - 1) / "masks.npz")
        rewind = load_weights(Path(run) / "rewind.npz")
    else:
        prev = lottery.make_model(cfg, data)
        names = magnitude.prunable_layers(prev, cfg.lottery.exclude_classifier,
                                          cfg.lottery.exclude_layers)
        masks = {n: np.ones(k.shape, bool) for n, k in magnitude.kernels(prev, names).items()}
        rewind = get_weights(prev)
    caches: dict = {}

    def build(arm):
        t = time.perf_counter()
        if arm == "dense":
            s = lottery.setup_level(cfg, data, 0, None, None, None, strategy)
            s.callbacks = [c for c in s.callbacks if not isinstance(c, CaptureRewind)]
            return s, time.perf_counter() - t
        if arm in ("sparse", "sparse_reused"):
            cache = caches.setdefault(arm, {})
        else:
            cache = None
        s = lottery.setup_level(cfg, data, level, rewind, prev, masks, strategy,
                                hooks_in_step=arm not in ("sparse_callbacks", "sparse_before"),
                                cache=cache)
        seconds = time.perf_counter() - t
        if arm == "sparse_before":          # tfmot's call converted by AutoGraph again
            for w in wrappers.wrappers(s.trained).values():
                del w.call
        if arm == "sparse_tfmot_only":
            s.callbacks = s.callbacks[:1]        # UpdatePruningStep
        return s, seconds
    return build


def _clock():
    """A Keras callback keeping batch-end timestamps (made once tf_keras is loaded)."""
    import tf_keras as keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._supports_tf_logs = True       # no log conversion on our account
            self.t: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.t.append(time.perf_counter())
    return Clock()


def _fit(s, batch, steps: int) -> list[float]:
    """Train `steps` steps on `batch`; the per-step times after the first."""
    import tensorflow as tf
    from shifter_tf.train import engine

    clock = _clock()
    ds = tf.data.Dataset.from_tensors(batch).repeat(steps + 1)
    t0 = time.perf_counter()
    s.fit_model.fit(ds, epochs=1, verbose=0,
                    callbacks=[*s.callbacks, engine.NaNGuard(), clock])
    ts = [t0, *clock.t]
    return [b - a for a, b in zip(ts[1:], ts[2:])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--run", default=None, help="take level L-1 of this trained run")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15, help="steps per arm per round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--setups", type=int, default=3, help="level starts timed per arm")
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    ap.add_argument("--out", default="bench")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import shifter_tf  # noqa: F401
    import tensorflow as tf
    from shifter_tf.config.rules import parse_overrides
    from shifter_tf.config.schema import load_config
    from shifter_tf.data.loaders import load_dataset

    cfg = load_config(args.config, parse_overrides(args.set))
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()     # as run_lottery trains
    data = load_dataset(cfg.data, cfg.seed)
    x, y = data.normalized("train")
    bs = cfg.train.batch_size
    batch = (tf.constant(x[:bs]), tf.constant(y[:bs]))
    build = _builder(cfg, data, args.level, args.run)
    load0 = os.getloadavg()

    # starting a level, alternated; the reused trainer has trained (traced) once before
    warm, _ = build("sparse_reused")
    _fit(warm, batch, 1)
    fixed = {a: {"setup_s": [], "first_fit_s": []} for a in STARTS}
    for i in range(args.setups):
        for arm in STARTS[i % len(STARTS):] + STARTS[:i % len(STARTS)]:
            s, setup_s = build(arm)
            t = time.perf_counter()
            _fit(s, batch, 1)
            fixed[arm]["setup_s"].append(setup_s)
            fixed[arm]["first_fit_s"].append(time.perf_counter() - t)
            log(f"start {arm}: setup {setup_s:.2f} s, first fit "
                f"{fixed[arm]['first_fit_s'][-1]:.2f} s")

    # steady state, interleaved
    arms = {a: build(a)[0] for a in args.arms}
    for s in arms.values():
        _fit(s, batch, 2)                                      # trace, warm
    per_round = {a: [] for a in arms}
    order = list(arms)
    for r in range(args.rounds):
        for a in order[r % len(order):] + order[:r % len(order)]:
            per_round[a].append(statistics.median(_fit(arms[a], batch, args.steps)))
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{a} {1e3 * per_round[a][-1]:.1f} ms" for a in arms))
    load1 = os.getloadavg()

    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]

    rows, doc_arms = [], {}
    for a in arms:
        ratios = [v / d for v, d in zip(per_round[a], per_round["dense"])]
        doc_arms[a] = {"step_ms": [1e3 * v for v in per_round[a]],
                       "median_step_ms": 1e3 * statistics.median(per_round[a]),
                       "ratio_vs_dense": {"median": statistics.median(ratios),
                                          "q25": q(ratios, 0.25), "q75": q(ratios, 0.75)}}
        d = doc_arms[a]
        rows.append([a, f"{d['median_step_ms']:.1f}", f"{d['ratio_vs_dense']['median']:.3f}",
                     f"{d['ratio_vs_dense']['q25']:.3f}–{d['ratio_vs_dense']['q75']:.3f}"])
    starts, start_rows = {}, []
    for a, v in fixed.items():
        starts[a] = {**{k: statistics.median(x) for k, x in v.items()},
                     **{f"{k}_all": x for k, x in v.items()}}
        total = starts[a]["setup_s"] + starts[a]["first_fit_s"]
        dense_total = statistics.median(fixed["dense"]["setup_s"]) + statistics.median(
            fixed["dense"]["first_fit_s"])
        start_rows.append([a, f"{starts[a]['setup_s']:.2f}", f"{starts[a]['first_fit_s']:.2f}",
                           f"{total:.2f}", f"{total / dense_total:.2f}"])
    doc = {"config": args.config, "sets": args.set, "level": args.level, "run": args.run,
           "batch_size": bs, "steps": args.steps, "rounds": args.rounds,
           "machine": {"cpus": os.cpu_count(), "processor": platform.processor()
                       or platform.machine(), "loadavg_start": load0, "loadavg_end": load1},
           "arms": doc_arms, "starts": starts}
    out = Path(args.out)
    atomic_write_json(out / "raw" / "step_time.json", doc)
    table = markdown_table(["arm", "ms / step (median)", "× dense (median of rounds)",
                            "IQR"], rows, "lrrr")
    start_table = markdown_table(["level start", "setup s", "first fit s (2 steps, trace)",
                                  "total s", "× dense"], start_rows, "lrrrr")
    text = (f"# Training step time, dense vs sparse level\n\n`python -m tools.bench.step_time "
            f"--config {args.config} --level {args.level}`: batch {bs}; load average "
            f"{load0[0]:.1f} at start, {load1[0]:.1f} at end ({os.cpu_count()} CPUs).\n\n"
            f"Per step, {args.steps} steps per arm per round, {args.rounds} rounds "
            f"interleaved:\n\n{table}\n\nStarting a level, median of {args.setups}, "
            f"alternated:\n\n{start_table}\n")
    atomic_write_text(out / "STEP_TIME.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
