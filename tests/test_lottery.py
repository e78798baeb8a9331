"""IMP with rewinding on real data (mnist5k subset), tiny settings: 1 epoch per level."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import tiny_config
from shifter_tf.train import lottery
from shifter_tf.train.rewind import load_weights
from shifter_tf.train import magnitude
from shifter_tf.train.engine import TrainingError


def levels_masks(run, n):
    return [magnitude.load_masks(lottery.level_dir(run, l) / "masks.npz") for l in range(n + 1)]


@pytest.fixture(scope="module")
def oneshot_run(tmp_path_factory, mnist_tiny):
    run = tmp_path_factory.mktemp("oneshot")
    cfg = tiny_config()
    results = lottery.run_lottery(cfg, run, data=mnist_tiny, progress=False)
    return cfg, run, results


def test_levels_hit_target_density_and_masks_are_monotone(oneshot_run):
    cfg, run, results = oneshot_run
    assert [r.level for r in results] == [0, 1, 2]
    for r in results:
        assert r.density == pytest.approx(0.5 ** r.level, abs=2e-3)
    ms = levels_masks(run, 2)
    for prev, cur in zip(ms, ms[1:]):
        for name in cur:
            assert not (cur[name] & ~prev[name]).any(), f"{name}: a pruned weight came back"
    # pruned weights are zero in the saved models, kept ones are not all zero
    model = lottery.load_level_model(run, 2)
    for name, k in magnitude.kernels(model, ms[2]).items():
        assert not k[~ms[2][name]].any()


def test_global_allocation_one_threshold_not_uniform(oneshot_run):
    cfg, run, results = oneshot_run
    ms = levels_masks(run, 2)
    for level in (1, 2):
        prev = lottery.load_level_model(run, level - 1)
        w = magnitude.kernels(prev, ms[level])
        # every kept weight is at least as large as every newly pruned one: one global threshold
        kept = np.concatenate([np.abs(w[n][ms[level][n]]) for n in w])
        dropped = np.concatenate([np.abs(w[n][ms[level - 1][n] & ~ms[level][n]]) for n in w])
        assert kept.min() >= dropped.max()
        assert kept.min() == pytest.approx(results[level].threshold)
        dens = [float(m.mean()) for m in ms[level].values()]
        assert max(dens) - min(dens) > 0.1, "per-layer sparsity should differ under global ranking"


def test_rewind_restores_theta_k_on_survivors(oneshot_run, mnist_tiny):
    cfg, run, _ = oneshot_run
    rewind = load_weights(run / "rewind.npz")
    prev = lottery.load_level_model(run, 1)
    prev_masks = magnitude.load_masks(lottery.level_dir(run, 1) / "masks.npz")
    model = lottery.make_model(cfg, mnist_tiny)
    names = magnitude.prunable_layers(model)
    wrapped, new_masks, *_ = lottery.prepare_level(cfg, model, names, 2, rewind, prev,
                                                  prev_masks, steps=8)
    for name in names:
        k = magnitude.kernel_variable(model.get_layer(name)).numpy()
        theta = rewind[f"{name}/0"]
        np.testing.assert_array_equal(k[new_masks[name]], theta[new_masks[name]])
        assert not k[~new_masks[name]].any()
    # θ_k is not the initialisation: k = 2 iterations had run when it was captured
    init = lottery.make_model(cfg, mnist_tiny)
    assert not np.array_equal(rewind[f"{names[0]}/0"],
                              init.get_layer(names[0]).kernel.numpy())


def test_polynomial_ramp_reaches_global_allocation(tmp_path, mnist_tiny):
    cfg = tiny_config(lottery={"schedule": "polynomial", "levels": 2, "ramp_frequency": 2})
    results = lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False)
    ms = levels_masks(tmp_path, 2)
    for level in (1, 2):
        prev = lottery.load_level_model(tmp_path, level - 1)
        alloc, _ = magnitude.global_allocation(magnitude.kernels(prev, ms[level]), ms[level - 1],
                                       0.5 ** level)
        for n in alloc:   # tfmot picked the weights; the per-layer count is the global allocation
            assert ms[level][n].sum() == pytest.approx(alloc[n].sum(), abs=1 + 0.002 * alloc[n].size)
            assert not (ms[level][n] & ~ms[level - 1][n]).any()
        assert results[level].density == pytest.approx(0.5 ** level, abs=5e-3)


def test_second_writer_on_a_run_is_refused(oneshot_run, tmp_path, mnist_tiny):
    """Two processes on one run folder would interleave their levels in lottery.json (seen when
    a killed benchmark was restarted on the same folder); the second gets RunBusyError."""
    from shifter_tf.errors import RunBusyError
    from shifter_tf.util.io import run_lock
    cfg, _, _ = oneshot_run
    with run_lock(tmp_path):
        with pytest.raises(RunBusyError, match=str(tmp_path)):
            lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False)
    assert lottery.finished_levels(tmp_path) == []
    results = lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False, stop_after=0)
    assert [r.level for r in results] == [0]     # released: the run goes ahead


def test_resume_continues_and_matches_uninterrupted(oneshot_run, tmp_path, mnist_tiny):
    cfg, full_run, _ = oneshot_run
    lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False, stop_after=1)
    assert lottery.finished_levels(tmp_path) == [0, 1]
    with pytest.raises(FileExistsError, match="--resume"):
        lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False)
    # a half-written level (as a kill mid-level leaves it) is ignored and redone
    (tmp_path / "levels" / ".level_02.tmp").mkdir()
    results = lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False, resume=True)
    assert [r.level for r in results] == [0, 1, 2]
    a = levels_masks(full_run, 2)[2]
    b = levels_masks(tmp_path, 2)[2]
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert len(json.loads((tmp_path / "lottery.json").read_text())) == 3


def test_resume_with_changed_config_is_refused(oneshot_run, tmp_path, mnist_tiny):
    from shifter_tf.config.schema import ConfigError
    cfg, run, _ = oneshot_run
    other = tiny_config(lottery={"prune_fraction": 0.3})
    with pytest.raises(ConfigError, match="lottery.prune_fraction"):
        lottery.run_lottery(other, run, data=mnist_tiny, progress=False, resume=True)


def test_diverging_level_raises_and_keeps_earlier(tmp_path, mnist_tiny):
    # a learning rate that truly diverges: the loss or the weights become non-finite whatever
    # the CPU does with NaN (the guard checks both), and the finished level 0 stays
    cfg = tiny_config(lottery={"levels": 1})
    lottery.run_lottery(cfg, tmp_path, data=mnist_tiny, progress=False, stop_after=0)
    bad = tiny_config(lottery={"levels": 1}, train={"lr": 1e30, "warmup_epochs": 0})
    with pytest.raises(TrainingError, match=r"level 1.*(loss became|non-finite)"):
        lottery.run_lottery(bad, tmp_path, data=mnist_tiny, progress=False, resume=True,
                            allow_changed_recipe=True)
    assert lottery.finished_levels(tmp_path) == [0]


def test_non_finite_data_is_refused_where_it_enters(mnist_tiny):
    from dataclasses import replace
    from shifter_tf.data.sets import DataError
    x = mnist_tiny.x_train.copy()
    x[3, 5, 5, 0] = np.nan
    x[7, 0, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"x_train holds 2 non-finite values.*example 3"):
        replace(mnist_tiny, x_train=x)


def test_non_finite_weights_raise(mnist_tiny):
    from shifter_tf.train.engine import check_finite_weights
    model = lottery.make_model(tiny_config(), mnist_tiny)
    check_finite_weights(model, "ok")
    bn = next(l for l in model.layers if "batch_normalization" in l.name or "bn" in l.name)
    w = bn.get_weights()
    w[-1][0] = np.nan      # a moving variance: loss-based guards never see it
    bn.set_weights(w)
    with pytest.raises(TrainingError, match="non-finite"):
        check_finite_weights(model, "level 3")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent(f"""
        import shifter_tf, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        from conftest import tiny_config
        from shifter_tf.train import lottery
        from shifter_tf.train import engine as train
        cfg = tiny_config(train={{"strategy": "mirrored"}}, lottery={{"levels": 1}})
        assert train.make_strategy("mirrored").num_replicas_in_sync == 2
        res = lottery.run_lottery(cfg, {str(tmp_path)!r}, progress=False)
        print("DENSITY", res[-1].density, "ACC", res[-1].history["accuracy"][-1])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("DENSITY"))
    density, acc = float(line.split()[1]), float(line.split()[3])
    # one epoch on ~1,000 images: the BN moving statistics are not settled yet, so judge the
    # replicas' training accuracy rather than held-out accuracy
    assert density == pytest.approx(0.5, abs=2e-3) and acc > 0.3   # chance is 0.1


def test_depthwise_convs_stay_dense_and_wrapping_works():
    """tfmot 0.8 gives a DepthwiseConv2D wrapper no prunable weight (no mask to assign): such
    layers are left out of the prunable set, and the others wrap and take masks."""
    import tf_keras as keras
    from shifter_tf.train import wrappers

    i = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(i)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    model = keras.Model(i, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x)))
    names = magnitude.prunable_layers(model)
    assert names == ["conv", "fc"]
    wrapped = wrappers.wrap(model, {n: wrappers.FixedMask(0.5) for n in names})
    masks = {n: np.random.default_rng(0).random(k.shape) < 0.5
             for n, k in magnitude.kernels(model, names).items()}
    wrappers.assign_masks(wrapped, masks)
    for n, w in wrappers.wrappers(wrapped).items():
        assert (w.pruning_vars[0][1].numpy().astype(bool) == masks[n]).all()


def test_every_level_is_saved_with_recalibrated_bn_statistics(oneshot_run, mnist_tiny):
    """A second recalibration of a saved level changes its variances by < 5 % (batches drawn
    in another order); Keras' running averages differed from them by 33-49 % on this run."""
    import tf_keras as keras
    from shifter_tf.train import engine
    cfg, run, results = oneshot_run
    for level in (0, cfg.lottery.levels):
        model = lottery.load_level_model(run, level)
        bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        saved = [b.moving_variance.numpy().copy() for b in bns]
        assert engine.recalibrate_bn(model, mnist_tiny, cfg.train) == len(bns) > 0
        for b, v in zip(bns, saved):
            np.testing.assert_allclose(b.moving_variance.numpy(), v, rtol=0.05, atol=1e-6)
