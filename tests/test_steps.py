"""Sparse training's per-step holding inside the train step (steps.HookedModel) and the short
levels of the cheap recipe, on real data (mnist5k subset)."""
import pytest

from conftest import tiny_config
import shifter_tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from shifter_tf.config.schema import lottery_epochs
from shifter_tf.train import lottery, magnitude, structure, wrappers
from shifter_tf.train.rewind import get_weights
from shifter_tf.train.steps import HookedModel

FILTERS = {"structure": "filters", "filter_fraction": 0.25, "levels": 2,
           "schedule": "polynomial", "ramp_frequency": 2}


@pytest.fixture(scope="module")
def level0(mnist_tiny):
    cfg = tiny_config(lottery=FILTERS)
    model, masks, _, rewind = lottery.train_level(cfg, mnist_tiny, 0, None, None, None,
                                                  tf.distribute.get_strategy())
    return cfg, model, masks, rewind


class Check(keras.callbacks.Callback):
    """After every step: tfmot's masks within the allowed set, dead channels' bias/γ/β zero."""

    def __init__(self, setup, pairs):
        super().__init__()
        self.s, self.pairs, self.steps = setup, pairs, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        for name, w in wrappers.wrappers(self.s.trained).items():
            mask = w.pruning_vars[0][1].numpy().astype(bool)
            assert not (mask & ~self.s.allowed[name]).any(), f"{name}: mask left allowed set"
        for v, keep in self.pairs:
            assert not v.numpy()[keep == 0].any(), f"{v.name}: a dead channel moved"

STEPS = 3   # a few steps: long enough to hold, short enough that rounding stays rounding


def test_in_step_holding_equals_callbacks_and_holds_every_step(level0, mnist_tiny):
    cfg, prev, prev_masks, rewind = level0
    strategy = tf.distribute.get_strategy()
    out = {}
    for in_step in (False, True):
        s = lottery.setup_level(cfg, mnist_tiny, 1, rewind, prev, prev_masks, strategy,
                                hooks_in_step=in_step)
        assert isinstance(s.fit_model, HookedModel) == in_step
        dead = {n: ~structure.filter_alive(m) for n, m in s.allowed.items()}
        assert any(d.any() for d in dead.values()), "the filter step killed nothing"
        pairs = structure.hold_pairs(s.model, dead)
        check = Check(s, pairs)
        s.fit_model.fit(mnist_tiny.tf_dataset("train", 32, training=True, seed=1), epochs=1,
                        steps_per_epoch=STEPS, verbose=0, callbacks=[*s.callbacks, check])
        assert check.steps == STEPS
        out[in_step] = get_weights(s.model), {
            n: w.pruning_vars[0][1].numpy() for n, w in wrappers.wrappers(s.trained).items()}
    # Both paths hold every step (Check above) and train the same layers. Their numbers are
    # not compared: measured here they drift apart by ~1e-3 relative within 3 steps.
    assert out[False][1].keys() == out[True][1].keys()


def test_tfmot_wrappers_trace_without_autograph(level0, mnist_tiny):
    cfg, prev, prev_masks, rewind = level0
    s = lottery.setup_level(cfg, mnist_tiny, 1, rewind, prev, prev_masks,
                            tf.distribute.get_strategy())
    from tensorflow.python.autograph.impl.api import is_autograph_artifact
    for w in wrappers.wrappers(s.trained).values():     # tf_convert leaves artifacts alone
        assert is_autograph_artifact(w.call)


def test_cheap_schedule_trains_short_levels_at_the_expected_densities(tmp_path, mnist_tiny):
    """The `cheap` recipe on tiny settings: dense 2 epochs, 3 levels within 3x -> 1 epoch each."""
    cfg = tiny_config(train={"epochs": 2}, lottery={"recipe": "cheap", "levels": 3,
                                                    "prune_fraction": 0.4, "schedule": "polynomial",
                                                    "ramp_frequency": 2, "rewind_iterations": 0})
    ep = lottery_epochs(cfg)
    assert (ep.dense, ep.level, ep.total) == (2, 1, 5)
    results = lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False)
    assert [r.epochs for r in results] == [2, 1, 1, 1]
    assert sum(r.epochs for r in results) == ep.total <= 3 * ep.dense
    steps = mnist_tiny.steps("train", cfg.train.batch_size)
    for r in results:
        assert len(r.history["loss"]) == r.epochs
        assert r.density == pytest.approx(0.6 ** r.level, abs=2e-3)
        if r.level:
            assert sum(r.killed_filters.values()) > 0            # the filter step ran
    masks = [magnitude.load_masks(lottery.level_dir(tmp_path, lv) / "masks.npz")
             for lv in range(4)]
    for prev, cur in zip(masks, masks[1:]):
        assert all(not (cur[n] & ~prev[n]).any() for n in cur)   # monotone
    assert steps > 4


@pytest.mark.parametrize("lot", [FILTERS, {**FILTERS, "structure": "none", "rewind": "weights",
                                           "schedule": "oneshot"},
                                 {**FILTERS, "structure": "groups", "rewind": "lr"}],
                         ids=["filters_lr_polynomial", "plain_weights_oneshot", "groups_lr"])
def test_reused_trainer_trains_levels_as_rebuilt_ones(lot, mnist_tiny):
    """Levels 1 and 2 on one compiled SparseTrainer (what run_lottery does) against each level
    built and traced anew: the same density and killed filters, and one trace."""
    from shifter_tf.train.trainer import SparseTrainer
    cfg = tiny_config(lottery=lot, data={"name": "mnist5k", "limit_train": 96})   # 3 steps
    strategy = tf.distribute.get_strategy()
    runs = {}
    for cache in (None, {}):
        model, masks, _, rewind = lottery.train_level(cfg, mnist_tiny, 0, None, None, None,
                                                      strategy, cache=cache)
        out = []
        for level in (1, 2):
            model, masks, r, _ = lottery.train_level(cfg, mnist_tiny, level, rewind, model,
                                                     masks, strategy, cache=cache)
            out.append((get_weights(model), masks, r))
        runs[cache is None] = out
        if lot["structure"] == "groups":   # dead groups' BN channels held at zero on both paths
            from shifter_tf.train import groups
            idx = groups.build_index(model)
            dead = groups.dead_groups(idx, masks)
            assert dead.any()
            for n, gs in idx.bns.items():
                assert not model.get_layer(n).gamma.numpy()[dead[gs]].any(), n
        if cache is not None:
            t = cache["trainer"]
            assert isinstance(t, SparseTrainer)
            assert t.fit_model.train_function.experimental_get_tracing_count() <= 2
    for (w_new, m_new, r_new), (w_re, m_re, r_re) in zip(runs[True], runs[False]):
        assert r_new.density == r_re.density and r_new.killed_filters == r_re.killed_filters
        assert m_new.keys() == m_re.keys()   # which weights: not compared (see above)
