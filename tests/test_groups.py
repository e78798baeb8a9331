"""The group-level structure step (`lottery.structure: groups`) on real tf_keras models: a killed
channel group is removed by the rewriter exactly (outputs and parameter count), the graph reaches
the filters of keras.applications' edge families, and a short IMP run on mobilenet_v2 kills
groups the rewriter then removes."""
import numpy as np
import pytest

from conftest import tiny_config
import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.train import groups as G
from shifter_tf.train import lottery
from shifter_tf.train import magnitude as M
from shifter_tf.surgery import prune_structured

L = keras.layers


# ---------------------------------------------------------------- tiny real models
def _bn(x, name):
    return L.BatchNormalization(name=name)(x)


def _randomize_bn(model, seed=0):
    """BN statistics and affine far from identity, so folding and removal are really tested."""
    rng = np.random.default_rng(seed)
    for l in model.layers:
        if isinstance(l, L.BatchNormalization):
            c = l.gamma.shape[0]
            l.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                           rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])
    return model


def residual():
    """Two basic blocks on one residual stream: the stream's channels are one group each,
    made by the stem and both blocks' second convs."""
    i = keras.Input((8, 8, 3))
    x = L.ReLU()(_bn(L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(i), "stem_bn"))
    for b in range(2):
        y = L.ReLU()(_bn(L.Conv2D(8, 3, padding="same", use_bias=False, name=f"b{b}a")(x),
                         f"b{b}a_bn"))
        y = _bn(L.Conv2D(8, 3, padding="same", use_bias=False, name=f"b{b}b")(y), f"b{b}b_bn")
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return _randomize_bn(keras.Model(i, L.Dense(10, name="fc")(x)))


def inverted():
    """Inverted-residual blocks: 1x1 expand -> 3x3 depthwise -> 1x1 project, + x."""
    i = keras.Input((8, 8, 3))
    x = L.ReLU(6.)(_bn(L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(i), "stem_bn"))
    for b in range(2):
        y = L.ReLU(6.)(_bn(L.Conv2D(24, 1, use_bias=False, name=f"b{b}_expand")(x),
                           f"b{b}_expand_bn"))
        y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"b{b}_dw")(y)
        y = L.ReLU(6.)(_bn(y, f"b{b}_dw_bn"))
        y = _bn(L.Conv2D(8, 1, use_bias=False, name=f"b{b}_project")(y), f"b{b}_project_bn")
        x = L.Add()([x, y])
    x = L.GlobalAveragePooling2D()(x)
    return _randomize_bn(keras.Model(i, L.Dense(10, name="fc")(x)))


def concatenating():
    """Two branches (one with BN, one with a bias and no BN) concatenated, a valid conv, and
    Flatten -> Dense -> Dense."""
    i = keras.Input((8, 8, 3))
    a = L.ReLU()(_bn(L.Conv2D(6, 3, padding="same", name="a")(i), "a_bn"))
    b = L.ReLU()(L.Conv2D(5, 1, name="b")(i))
    x = L.Concatenate()([a, b])
    x = L.ReLU()(_bn(L.Conv2D(7, 3, padding="valid", name="c")(x), "c_bn"))
    x = L.Flatten()(L.MaxPooling2D()(x))
    x = L.Dense(12, activation="relu", name="hidden")(x)
    return _randomize_bn(keras.Model(i, L.Dense(10, name="fc")(x)))


def _group_with(idx, role, layer, channel=0):
    return int(getattr(idx, role)[layer][channel])


CASES = {   # model, (role, layer, channel) naming one group, what must be in it
    "residual_stream": (residual, ("filters", "stem", 3),
                        {"filters": {"stem", "b0b", "b1b"}, "inputs": {"b0a", "b1a", "fc"}}),
    "residual_inner": (residual, ("filters", "b1a", 5), {"filters": {"b1a"}, "inputs": {"b1b"}}),
    "inverted_expand": (inverted, ("filters", "b0_expand", 17),
                        {"filters": {"b0_expand"}, "depthwise": {"b0_dw"},
                         "inputs": {"b0_project"}}),
    "inverted_stream": (inverted, ("filters", "b1_project", 2),
                        {"filters": {"stem", "b0_project", "b1_project"},
                         "inputs": {"b0_expand", "b1_expand", "fc"}}),
    "concat_bn_branch": (concatenating, ("filters", "a", 4), {"filters": {"a"}, "inputs": {"c"}}),
    "concat_bias_branch": (concatenating, ("filters", "b", 1), {"filters": {"b"},
                                                                "inputs": {"c"}}),
    "flatten_dense": (concatenating, ("filters", "c", 6), {"filters": {"c"},
                                                           "inputs": {"hidden"}}),
    "dense_hidden": (concatenating, ("filters", "hidden", 3), {"filters": {"hidden"},
                                                              "inputs": {"fc"}}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_group_is_removed_exactly(case):
    build, (role, layer, channel), expect = CASES[case]
    model = build()
    idx = G.build_index(model)
    g = _group_with(idx, role, layer, channel)
    assert idx.eligible[g]
    members = idx.members(g)
    for r, layers in expect.items():
        assert set(members[r]) == layers, (r, members[r])
    held = idx.params(model, g)
    G.kill_now(model, [g], idx)
    x = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    # BN kept as layers: the parameters removed are exactly the group's
    new, rep = prune_structured(model, x, fold_bn=False)
    assert model.count_params() - new.count_params() == held
    assert np.abs(new.predict(x, verbose=0) - ref).max() <= 1e-5
    # the deployed path (BN folded) removes it too, outputs unchanged
    folded, rep = prune_structured(model, x)
    unkilled, _ = prune_structured(build(), x)
    assert rep.channels_before - rep.channels_after >= len(members["filters"][layer])
    assert folded.count_params() < unkilled.count_params()
    assert np.abs(folded.predict(x, verbose=0) - ref).max() <= 1e-5
    assert rep.verification.top1_agreement == 1.0


def test_depthwise_channels_and_bn_are_held_at_zero_by_the_callback():
    model = inverted()
    idx = G.build_index(model)
    g = _group_with(idx, "filters", "b0_expand", 4)
    dead = np.zeros(idx.n_groups, bool)
    dead[g] = True
    masked = M.prunable_layers(model)
    cb = G.HoldDeadGroups(G.hold_pairs(idx, model, dead, masked))
    cb.on_train_batch_end(0)
    dw = model.get_layer("b0_dw").depthwise_kernel.numpy()
    assert not dw[:, :, 4, :].any() and dw[:, :, 5, :].any()
    for bn in ("b0_expand_bn", "b0_dw_bn"):
        layer = model.get_layer(bn)
        assert layer.gamma.numpy()[4] == 0 and layer.beta.numpy()[4] == 0
        assert layer.gamma.numpy()[5] != 0
    # kernels of wrapped layers are left to the masks: untouched here
    assert model.get_layer("b0_expand").kernel.numpy()[..., 4].any()


def test_choose_groups_keeps_min_width_and_weighs_cost():
    model = inverted()
    idx = G.build_index(model)
    dead = np.zeros(idx.n_groups, bool)
    scores = G.group_scores(idx, model, {}, dead)
    macs = G.group_macs(idx, dead)
    kill = G.choose_groups(idx, scores, macs, dead, fraction=0.9, min_width=0.5, min_channels=4)
    for n, gs in idx.widths().items():
        assert (~kill[gs]).sum() >= max(4, int(np.ceil(0.5 * len(gs)))), n
    # cost weighting prefers the groups that free more MACs at equal importance
    flat = np.where(idx.eligible, 1.0, np.nan)
    kill = G.choose_groups(idx, flat, macs, dead, fraction=0.1, cost=1.0)
    cand = idx.eligible
    assert macs[kill].min() >= np.median(macs[cand])


@pytest.mark.parametrize("name", ["MobileNetV2", "EfficientNetB0", "ResNet50"])
def test_group_graph_reaches_the_filters_of_keras_applications(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3), classes=10)
    idx = G.build_index(model, exclude=[])
    total = reached = 0
    for n, gs in idx.filters.items():
        if isinstance(model.get_layer(n), L.Conv2D):
            total += len(gs)
            reached += int(idx.eligible[gs].sum())
    convs = sum(l.filters for l in model.layers if type(l) is L.Conv2D)
    assert total == convs
    assert reached >= 0.9 * total, (reached, total)


# ---------------------------------------------------------------- a short IMP run
@pytest.fixture(scope="module")
def groups_run(tmp_path_factory, mnist_tiny):
    run = tmp_path_factory.mktemp("groups")
    # one sparse level: a MobileNet's first epoch is mostly tf.function tracing on 2 cores
    cfg = tiny_config(model={"name": "mobilenet_v2", "kwargs": {"width": 0.35,
                                                                "last_channels": 128}},
                      data={"limit_train": 512},
                      lottery={"structure": "groups", "filter_fraction": 0.3, "levels": 1,
                               "rewind": "lr", "schedule": "polynomial", "ramp_frequency": 2})
    return cfg, run, lottery.run_lottery(cfg, run, data=mnist_tiny, progress=False)


def test_group_step_kills_groups_in_mobilenet_and_the_rewriter_removes_them(groups_run,
                                                                          mnist_tiny):
    cfg, run, results = groups_run
    assert sum(results[1].killed_filters.values()) > 0
    model = lottery.load_level_model(run, 1)
    masks = M.load_masks(lottery.level_dir(run, 1) / "masks.npz")
    idx = G.build_index(model)
    dead = G.dead_groups(idx, masks)
    assert dead.sum() > 0.05 * idx.eligible.sum()     # 30 % of the MACs: the costly groups
    # every member of a dead group is zero in the saved model, depthwise channels included
    for n, gs in idx.depthwise.items():
        k = model.get_layer(n).depthwise_kernel.numpy()
        assert not k[:, :, dead[gs], :].any(), n
    for n, gs in idx.bns.items():
        layer = model.get_layer(n)
        assert not layer.gamma.numpy()[dead[gs]].any() and not layer.beta.numpy()[dead[gs]].any()
    x, _ = mnist_tiny.normalized("test")
    new, rep = prune_structured(model, x[:64])
    expand = [n for n in idx.depthwise]          # the inverted-residual hidden widths shrank
    shrunk = sum(int(dead[idx.depthwise[n]].sum()) for n in expand)
    assert shrunk > 0
    assert rep.channels_before - rep.channels_after >= int(
        sum(dead[gs].sum() for gs in idx.filters.values()))
    assert rep.macs_after < 0.85 * rep.macs_before
    assert rep.verification.max_abs_dlogit <= 1e-4 * rep.verification.logit_scale
    assert rep.verification.top1_agreement == 1.0
    # no layer below its minimum width
    for n, gs in idx.widths().items():
        assert (~dead[gs]).sum() >= G.min_keep(len(gs), cfg.lottery.min_width,
                                               cfg.lottery.min_channels), n


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_killed_groups_of_zoo_mobilenets_are_removed_exactly(name):
    """Many groups at once, through squeeze-excite gates and hard-swish too."""
    from shifter_tf.models import build_model
    model = _randomize_bn(build_model(name, (28, 28, 1), 10, width=0.5))
    idx = G.build_index(model)
    rng = np.random.default_rng(0)
    cand = np.flatnonzero(idx.eligible)
    kill = rng.choice(cand, size=len(cand) // 4, replace=False)
    G.kill_now(model, kill, idx)
    x = rng.normal(size=(32, 28, 28, 1)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    new, rep = prune_structured(model, x)
    dead = np.zeros(idx.n_groups, bool)
    dead[kill] = True
    removed = sum(int(dead[g].sum()) for g in idx.widths().values())
    assert rep.channels_before - rep.channels_after >= removed
    assert rep.kept_for_exactness == 0
    assert np.abs(new.predict(x, verbose=0) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
