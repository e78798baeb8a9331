"""Reconvene / pruning at initialisation: scores, whole-filter conversion, rectifier, one run."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.train import magnitude
from shifter_tf.config.schema import ConfigError
from shifter_tf.train.lottery import make_model
from shifter_tf.pai import PaiConfig, load_pai_config, pai_settings, prune_at_init, run_pai
from shifter_tf.pai.reconvene import sample_batch
from shifter_tf.pai.scores import score_masks, snip_scores, synflow

DENSITY = 0.05


def fresh_model(data, seed=1):
    keras.utils.set_random_seed(seed)
    return make_model(tiny_config(), data)


def whole_filters(mask, live_in):
    """Every filter is either empty or dense over exactly the live input channels."""
    full = np.broadcast_to(live_in[None, None, :], mask.shape[:-1])
    return all(np.array_equal(mask[..., f], full) for f in range(mask.shape[-1])
               if mask[..., f].any())


# ---------------------------------------------------------------- scores
@pytest.mark.parametrize("method", ["magnitude", "random", "snip", "synflow"])
def test_scores_finite_and_masks_hit_target_density(method, mnist_tiny):
    model = fresh_model(mnist_tiny)
    names = magnitude.prunable_layers(model)
    x, y = sample_batch(mnist_tiny, 64, seed=0)
    masks, scores = score_masks(model, names, method, DENSITY, x=x, y=y, rounds=10)
    total = sum(m.size for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(DENSITY * total)
    for n in names:
        assert scores[n].shape == masks[n].shape
        assert np.isfinite(scores[n]).all() and (scores[n] >= 0).all()
        assert masks[n].any(), f"{n}: layer cut off entirely"
    if method != "synflow":   # one global threshold: every kept score >= every dropped score
        kept = np.concatenate([scores[n][masks[n]] for n in names])
        dropped = np.concatenate([scores[n][~masks[n]] for n in names])
        assert kept.min() >= dropped.max()
    dens = [float(m.mean()) for m in masks.values()]
    if method in ("magnitude", "snip", "synflow"):
        assert max(dens) - min(dens) > 0.1, "global ranking gives layers different densities"


def test_synflow_scores_are_conserved_per_layer(mnist_tiny):
    """Synaptic saliency conservation (Tanaka et al., Thm 1): in a bias-free homogeneous network
    every layer's SynFlow scores sum to R; a wrong R or gradient breaks the equality."""
    model = fresh_model(mnist_tiny)
    names = magnitude.prunable_layers(model)
    _, scores = synflow(model, names, density=1.0, rounds=1)
    sums = np.array([scores[n].sum() for n in names])
    assert sums.min() > 0
    np.testing.assert_allclose(sums, sums[0], rtol=1e-6)


def test_snip_is_grad_times_weight_and_leaves_model_untouched(mnist_tiny):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 20)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    inp = keras.Input((20,))
    model = keras.Model(inp, keras.layers.Dense(10, name="fc")(inp))
    w, b = model.get_weights()
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = x.T @ (p - np.eye(10)[y]) / len(x)          # d mean cross-entropy / dW
    scores = snip_scores(model, ["fc"], x, y, batch_size=10)   # accumulated over 4 chunks
    np.testing.assert_allclose(scores["fc"], np.abs(grad * w), rtol=1e-4, atol=1e-7)

    vgg = fresh_model(mnist_tiny)   # BN moving statistics must survive SNIP's training pass
    before = vgg.get_weights()
    xb, yb = sample_batch(mnist_tiny, 64, seed=0)
    snip_scores(vgg, magnitude.prunable_layers(vgg), xb, yb)
    for a, b_ in zip(before, vgg.get_weights()):
        np.testing.assert_array_equal(a, b_)


# ---------------------------------------------------------------- Reconvene's pruning step
@pytest.fixture(scope="module")
def reconvene_plan(mnist_tiny):
    model = fresh_model(mnist_tiny)
    plan = prune_at_init(model, PaiConfig(method="synflow", density=DENSITY, rounds=20,
                                          budget=0.5), mnist_tiny, seed=1)
    return model, plan


def live_inputs(plan):
    """vgg_small is a chain: a layer's dead inputs are the previous prunable layer's dead
    outputs (BN, ReLU, pooling and GAP keep channels)."""
    names = [d.name for d in plan.layers]
    out = {names[0]: np.ones(plan.masks[names[0]].shape[-2], bool)}
    for prev, n in zip(names, names[1:]):
        out[n] = ~plan.dead[prev]
    return out


def test_converted_layers_have_whole_filter_masks(reconvene_plan):
    model, plan = reconvene_plan
    convs = [d for d in plan.layers if d.sensitivity is not None]
    assert len(convs) == 6 and len(plan.converted) == 3     # budget 0.5 of the 6 convs
    ranked = sorted(convs, key=lambda d: d.sensitivity)
    assert set(plan.converted) == {d.name for d in ranked[:3]}, "least sensitive go first"
    live = live_inputs(plan)
    unstructured = []
    for d in plan.layers:
        m = plan.masks[d.name]
        if d.converted:
            assert whole_filters(m, live[d.name]), d.name
            assert int(m.reshape(-1, m.shape[-1]).any(0).sum()) == d.filters_kept
            # about as many weights as the unstructured mask had: within one filter
            assert abs(d.kept - d.kept_unstructured) <= m[..., 0].size
        elif d.sensitivity is not None:
            unstructured.append(not whole_filters(m, live[d.name]))
    assert any(unstructured), "the layers left alone keep unstructured masks"


def test_rectifier_keeps_density_and_wastes_no_weight(reconvene_plan):
    model, plan = reconvene_plan
    assert plan.density == pytest.approx(DENSITY, abs=1e-3)
    live = live_inputs(plan)
    for d in plan.layers:
        m = plan.masks[d.name]
        dead_in = ~live[d.name]
        assert not (m[dead_in] if m.ndim == 2 else m[..., dead_in, :]).any(), \
            f"{d.name}: kept weights read dead channels"
    assert sum(d.repaired for d in plan.layers) > 0, "conversion should disturb its consumers"
    assert 0 < plan.seconds < 60, "pruning takes seconds"
    assert set(plan.timings) >= {"score", "sensitivity", "convert", "rectify"}


def test_model_holds_masked_and_reinitialised_kernels(reconvene_plan):
    model, plan = reconvene_plan
    kernels = magnitude.kernels(model, plan.masks)
    for d in plan.layers:
        k, m = kernels[d.name], plan.masks[d.name]
        assert not k[~m].any(), f"{d.name}: pruned weights are not zero"
        assert k[m].all()
        if d.converted:   # He init for the fan-in the smaller network has
            assert d.reinitialised
            fan = d.kept / d.filters_kept
            assert np.std(k[m]) == pytest.approx(math.sqrt(2 / fan), rel=0.3)


def test_budget_zero_is_plain_unstructured_pai(mnist_tiny):
    m1, m2 = fresh_model(mnist_tiny), fresh_model(mnist_tiny)
    s = dict(method="magnitude", density=DENSITY)
    plain = prune_at_init(m1, PaiConfig(**s, structured=False), mnist_tiny)
    zero = prune_at_init(m2, PaiConfig(**s, budget=0.0, rectify=False), mnist_tiny)
    assert zero.converted == [] and plain.converted == []
    assert all(d.reason.startswith("budget") for d in zero.layers if d.sensitivity is not None)
    for n in plain.masks:
        np.testing.assert_array_equal(plain.masks[n], zero.masks[n])
    capped = prune_at_init(fresh_model(mnist_tiny),
                           PaiConfig(**s, max_sensitivity=-1.0), mnist_tiny)
    assert capped.converted == []


# ---------------------------------------------------------------- one run end to end
@pytest.fixture(scope="module")
def pai_run(tmp_path_factory, mnist_tiny):
    out = tmp_path_factory.mktemp("pai")
    cfg = tiny_config(surgery={"sample_size": 128})
    s = PaiConfig(method="synflow", density=DENSITY, rounds=20, budget=0.5)
    return cfg, out, run_pai(cfg, out, s, data=mnist_tiny, progress=False)


def test_run_writes_report_models_and_portfolio(pai_run):
    from edge_runtime.manifest import load_manifest

    cfg, out, result = pai_run
    report = json.loads((out / "pai.json").read_text())
    arm = report["arms"][0]
    assert arm["label"] == "reconvene" and len(arm["plan"]["converted"]) == 3
    assert {l["name"] for l in arm["plan"]["layers"] if l["converted"]} == \
        set(arm["plan"]["converted"])
    assert arm["plan"]["pruning_seconds"] < 60
    for f in ("model.keras", "masks.npz", "pruned/model.keras", "pruned/surgery.json"):
        assert (out / "pai" / f).exists(), f
    manifest = load_manifest(out / "pai" / "portfolio")
    by_kind = {v.kind: v for v in manifest.variants}
    assert by_kind["pruned"].params_total < by_kind["sparse"].params_total
    assert by_kind["pruned"].macs < by_kind["sparse"].macs
    text = str(result)
    assert "reconvene" in text and arm["plan"]["converted"][0] in text
    with pytest.raises(FileExistsError):
        run_pai(cfg, out, PaiConfig(), progress=False)


def test_trained_model_keeps_masks_and_empty_channels(pai_run):
    cfg, out, result = pai_run
    model = keras.models.load_model(out / "pai" / "model.keras", compile=False)
    masks = magnitude.load_masks(out / "pai" / "masks.npz")
    layers = {l.name: l for l in model.layers}
    for n, k in magnitude.kernels(model, masks).items():
        assert not k[~masks[n]].any(), f"{n}: a pruned weight trained"
    for d in result.arms[0].plan["layers"]:
        if d["converted"]:
            bn = layers[d["name"].replace("conv", "bn")]
            dead = ~masks[d["name"]].reshape(-1, d["filters"]).any(0)
            assert dead.sum() == d["filters"] - d["filters_kept"] > 0
            assert not bn.gamma.numpy()[dead].any() and not bn.beta.numpy()[dead].any()


def test_rewriter_removes_converted_filters_and_agrees(pai_run, mnist_tiny):
    cfg, out, result = pai_run
    sparse = keras.models.load_model(out / "pai" / "model.keras", compile=False)
    pruned = keras.models.load_model(out / "pai" / "pruned" / "model.keras", compile=False)
    surgery = json.loads((out / "pai" / "pruned" / "surgery.json").read_text())
    after = {l["name"]: l["channels_out_after"] for l in surgery["layers"]}
    for d in result.arms[0].plan["layers"]:
        if d["converted"]:
            assert after[d["name"]] == d["filters_kept"] < d["filters"], d["name"]
            assert pruned.get_layer(d["name"]).filters == d["filters_kept"]
    x = mnist_tiny.normalized("test")[0][:200]
    a, b = sparse.predict(x, verbose=0), pruned.predict(x, verbose=0)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    assert (a.argmax(1) == b.argmax(1)).mean() == 1.0


# ---------------------------------------------------------------- settings
def test_settings_are_checked_and_shipped_config_loads():
    with pytest.raises(ConfigError, match=r"pai\.method"):
        pai_settings({"method": "grasp"})
    with pytest.raises(ConfigError, match=r"pai\.densty: unknown key"):
        pai_settings({"densty": 0.1})
    with pytest.raises(ConfigError, match=r"pai\.budget"):
        pai_settings({"budget": 2})
    cfg, s = load_pai_config(Path(__file__).parents[1] / "configs" / "mnist5k_vgg_pai.yaml")
    assert cfg.name == "mnist5k_vgg_pai" and cfg.model.name == "vgg_small"
    assert s.method == "synflow" and s.density == 0.05 and s.baseline
