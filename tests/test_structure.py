"""Exact per-layer allocation and the structure-inducing filter step, on real data (mnist5k)."""
import numpy as np
import pytest

from conftest import tiny_config
import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.train import lottery
from shifter_tf.train import magnitude
from shifter_tf.train import structure
from shifter_tf.models import build_model


def _masks(run, level):
    return magnitude.load_masks(lottery.level_dir(run, level) / "masks.npz")


# ---------------------------------------------------------------- exact allocation
@pytest.mark.parametrize("schedule,limit", [("polynomial", 320), ("polynomial", 96),
                                            ("oneshot", 96)])
def test_every_layer_ends_every_level_at_exactly_its_allocation(tmp_path, schedule, limit):
    # limit 96 with batch 32: 3 steps a level, too short for tfmot's ramp to finish
    cfg = tiny_config(data={"limit_train": limit},
                      lottery={"schedule": schedule, "levels": 2, "ramp_frequency": 2})
    from shifter_tf.data.loaders import load_dataset
    data = load_dataset(cfg.data, cfg.seed)
    results = lottery.run_lottery(cfg, tmp_path, data=data, progress=False)
    for level in (1, 2):
        prev = lottery.load_level_model(tmp_path, level - 1)
        alloc, _ = magnitude.global_allocation(magnitude.kernels(prev, results[level].allocated),
                                       _masks(tmp_path, level - 1), 0.5 ** level)
        got = _masks(tmp_path, level)
        for n in alloc:
            assert int(got[n].sum()) == int(alloc[n].sum()) == results[level].allocated[n], \
                f"level {level} {n}"
            assert not (got[n] & ~_masks(tmp_path, level - 1)[n]).any()
        # the kept weights really are non-zero and the pruned ones zero in the saved model
        model = lottery.load_level_model(tmp_path, level)
        for n, k in magnitude.kernels(model, got).items():
            assert not k[~got[n]].any()
        assert results[level].density == pytest.approx(
            sum(int(a.sum()) for a in alloc.values()) / sum(a.size for a in alloc.values()))


def test_keep_pruned_zeroes_disallowed_weights_before_tfmot_ranks():
    model = build_model("vgg_small", (28, 28, 1), 10)
    names = magnitude.prunable_layers(model)
    masks = {n: np.random.default_rng(0).random(k.shape) < 0.3
             for n, k in magnitude.kernels(model, names).items()}
    from tensorflow_model_optimization.sparsity import keras as sp
    from shifter_tf.train.wrappers import wrap
    wrapped = wrap(model, {n: sp.ConstantSparsity(0.5, 0) for n in names})
    from shifter_tf.train.wrappers import KeepPruned
    cb = KeepPruned(wrapped, masks)
    cb.on_train_batch_begin(0)
    for n, k in magnitude.kernels(model, names).items():
        assert not k[~masks[n]].any() and k[masks[n]].any()


# ---------------------------------------------------------------- the filter step
def test_kill_filters_ranks_layer_relative_scores_globally():
    rng = np.random.default_rng(0)
    k = {"a": rng.normal(size=(3, 3, 2, 8)), "b": 100 * rng.normal(size=(3, 3, 8, 4))}
    k["a"][..., 5] *= 0.01          # the weakest filter of a, relative to its layer
    k["b"][..., 2] *= 0.001         # b's weights are large, but this filter is weak for b
    m = {n: np.ones(v.shape, bool) for n, v in k.items()}
    out, killed = structure.kill_filters(k, m, fraction=2 / 12)
    assert killed == {"a": 1, "b": 1}
    assert not out["a"][..., 5].any() and not out["b"][..., 2].any()
    assert out["a"].sum() == m["a"].sum() - 18
    # a layer never loses its last filter
    out, killed = structure.kill_filters(k, m, fraction=0.99, min_filters=1)
    assert structure.filter_alive(out["a"]).sum() == 1 and structure.filter_alive(out["b"]).sum() == 1


def test_gamma_scores_filters_when_bn_follows():
    k = np.ones((3, 3, 2, 3))
    s = structure.filter_scores(k, np.ones(k.shape, bool), gamma=np.array([0.1, 1.0, -2.0]))
    np.testing.assert_allclose(s, np.array([0.1, 1.0, 2.0]) / (3.1 / 3))


def test_channel_graph_follows_bn_relu_pool_to_readers():
    model = build_model("vgg_small", (28, 28, 1), 10)
    names = magnitude.prunable_layers(model)
    g = structure.channel_graph(model, names)
    assert g.readers["block1_conv2"] == ["block2_conv1"]      # through BN, ReLU, max-pool
    assert g.readers["block3_conv2"] == ["fc"]                # through global average pool
    assert g.bn["block2_conv1"] == "block2_bn1"
    masks = {n: np.ones(k.shape, bool) for n, k in magnitude.kernels(model, names).items()}
    masks["block1_conv2"][..., [3, 7]] = False
    cleared = structure.clear_dead_inputs(masks, g)
    assert not cleared["block2_conv1"][:, :, [3, 7], :].any()
    assert cleared["block2_conv1"][:, :, 0, :].all()


@pytest.fixture(scope="module")
def filters_run(tmp_path_factory, mnist_tiny):
    run = tmp_path_factory.mktemp("filters")
    cfg = tiny_config(lottery={"structure": "filters", "filter_fraction": 0.25, "levels": 2,
                               "schedule": "polynomial", "ramp_frequency": 2})
    return cfg, run, lottery.run_lottery(cfg, run, data=mnist_tiny, progress=False)


def test_filter_step_kills_whole_filters_at_moderate_density(filters_run):
    cfg, run, results = filters_run
    r1 = results[1]                              # density 0.5: plain IMP kills no filter here
    total = sum(v for n, v in r1.filters.items() if n != "fc")
    assert sum(r1.killed_filters.values()) == round(0.25 * total)
    assert sum(r1.zero_filters[n] for n in r1.killed_filters) >= sum(r1.killed_filters.values())
    model = lottery.load_level_model(run, 1)
    ms = _masks(run, 1)
    g = structure.channel_graph(model, list(ms))
    for prod, bn in g.bn.items():      # a killed channel's BN is held at gamma = beta = 0
        dead = ~structure.filter_alive(ms[prod])
        layer = model.get_layer(bn)
        assert not layer.gamma.numpy()[dead].any() and not layer.beta.numpy()[dead].any()


def test_killed_channels_are_removed_exactly_by_the_rewriter(filters_run, mnist_tiny):
    from shifter_tf.surgery import prune_structured
    cfg, run, results = filters_run
    model = lottery.load_level_model(run, 2)
    x, _ = mnist_tiny.normalized("test")
    new, rep = prune_structured(model, x[:64])
    dead = sum(results[2].zero_filters[n] for n in results[2].killed_filters)
    assert rep.channels_before - rep.channels_after >= dead
    assert rep.kept_for_exactness == 0     # zero, not constant: nothing to fold
    assert rep.verification.max_abs_dlogit <= 1e-4 * rep.verification.logit_scale
    assert rep.verification.top1_agreement == 1.0


def test_gamma_l1_penalty_drives_bn_scales_down(tmp_path, mnist_tiny):
    def mean_gamma(l1):
        cfg = tiny_config(lottery={"levels": 0, "gamma_l1": l1})
        lottery.run_lottery(cfg, tmp_path / str(l1), data=mnist_tiny, progress=False)
        m = lottery.load_level_model(tmp_path / str(l1), 0)
        return np.mean([np.abs(l.gamma.numpy()).mean() for l in m.layers
                        if isinstance(l, keras.layers.BatchNormalization)])
    assert mean_gamma(1e-2) < mean_gamma(0.0) - 0.05   # lr·λ·steps ≈ 0.1 with momentum


def test_channel_graph_is_the_dependency_graph_through_concatenate_and_flatten():
    """The filter step's graph is the rewriter's: a branch before a Concatenate or a conv before
    Flatten -> Dense may lose filters, and the readers' slices are found by group."""
    L = keras.layers
    i = keras.Input((8, 8, 3))
    a = L.ReLU()(L.BatchNormalization(name="a_bn")(L.Conv2D(4, 3, padding="same", name="a")(i)))
    b = L.ReLU()(L.Conv2D(3, 1, name="b")(i))
    x = L.Conv2D(5, 3, name="c")(L.Concatenate()([a, b]))
    x = L.Flatten()(L.ReLU()(x))
    model = keras.Model(i, L.Dense(10, name="fc")(x))
    names = magnitude.prunable_layers(model)
    g = structure.channel_graph(model, names)
    assert g.readers["a"] == ["c"] and g.readers["b"] == ["c"] and g.readers["c"] == ["fc"]
    assert g.bn == {"a": "a_bn"}
    masks = {n: np.ones(k.shape, bool) for n, k in magnitude.kernels(model, names).items()}
    masks["b"][..., 1] = False
    masks["c"][..., 2] = False
    cleared = structure.clear_dead_inputs(masks, g)
    assert not cleared["c"][:, :, 4 + 1, :].any() and cleared["c"][:, :, 4, [0, 1, 3, 4]].all()
    rows = cleared["fc"].reshape(-1, 5, 10)          # Flatten: row = position * 5 + channel
    assert not rows[:, 2, :].any() and rows[:, 1, :].all()


@pytest.mark.parametrize("name,shape,expected", [
    ("vgg_small", (28, 28, 1), "structured"),     # a plain chain: every filter may die alone
    ("resnet20", (28, 28, 1), "groups"),           # residual stages couple most of them
    ("mobilenet_v2", (28, 28, 1), "groups"),       # expand -> depthwise, project -> Add
])
def test_filter_reach_and_the_api_default_recipe_follow_the_architecture(name, shape, expected):
    from shifter_tf.api import default_recipe
    model = build_model(name, shape, 10)
    names = magnitude.prunable_layers(model)
    reach, total = structure.filter_reach(model, names)
    convs = [l for l in model.layers if type(l) is keras.layers.Conv2D]
    assert total == sum(l.filters for l in convs)
    assert default_recipe(model) == expected
    say = structure.reach_warning(model, names)
    if expected == "structured":
        assert reach == total and say is None
    else:
        assert reach < 0.5 * total
        assert f"{reach:,} of the {total:,}" in say and "lottery.recipe: groups" in say


def test_filter_step_on_a_residual_net_warns_at_the_start_of_the_run(tmp_path, mnist_tiny):
    cfg = tiny_config(model={"name": "resnet20", "kwargs": {"width": 0.25}},
                      lottery={"structure": "filters"})
    with pytest.warns(UserWarning, match="lottery.structure: filters can remove"):
        lottery.run_lottery(cfg, tmp_path / "run", data=mnist_tiny, progress=False,
                            stop_after=0)
