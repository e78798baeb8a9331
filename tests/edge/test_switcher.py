"""EdgeSwitcher on the fixture portfolio: load, predict == reference, switch, verify, lazy LRU."""
import json

import numpy as np
import pytest

from conftest import IDS
from edge_runtime.manifest import ManifestError
from edge_runtime.switcher import EdgeSwitcher, VariantUnavailable


def _close(vid, got, want):
    if vid.endswith("int8"):
        # TF 2.21's interpreter and tflite-runtime 2.14 may round one output step apart.
        assert np.abs(got - want).max() <= 1 / 256 + 1e-7
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.75
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_loads_all_variants_and_starts_on_the_most_accurate(make_switcher):
    sw = make_switcher()
    assert sw.available == IDS and sorted(sw.loaded) == sorted(IDS)
    assert sw.active == "L00-dense-fp32"           # no budget: best accuracy
    assert [v.id for v in sw.variants] == IDS


@pytest.mark.parametrize("vid", IDS)
def test_predict_equals_the_tf_reference(make_switcher, ref_inputs, refs, vid):
    sw = make_switcher()
    assert sw.switch_to(vid) == vid and sw.active == vid
    batch = sw.predict(ref_inputs)
    assert batch.shape == (8, 10) and batch.dtype == np.float32
    _close(vid, batch, refs[vid])
    one, served = sw.predict(ref_inputs[3], return_variant=True)
    assert one.shape == (10,) and served == vid and sw.last_variant == vid
    _close(vid, one[None], refs[vid][3:4])


def test_int8_variant_quantizes_input_and_dequantizes_output(make_switcher, ref_inputs):
    sw = make_switcher()
    sw.switch_to("L04-pruned-int8")
    y = sw.predict(ref_inputs)
    # softmax output dequantised from int8: probabilities on a 1/256 grid that sum to ~1
    assert y.dtype == np.float32 and np.allclose(y.sum(axis=1), 1.0, atol=0.05)
    assert np.allclose(y * 256, np.round(y * 256), atol=1e-4)


def test_results_are_copies_not_views_into_the_interpreter(make_switcher, ref_inputs, refs):
    sw = make_switcher()
    sw.switch_to("L02-pruned-fp32")
    first = sw.predict(ref_inputs[0])
    keep = first.copy()
    for i in range(1, 8):
        sw.predict(ref_inputs[i])
    assert np.array_equal(first, keep)
    first[:] = -1.0                                   # writing into a result changes nothing
    _close("L02-pruned-fp32", sw.predict(ref_inputs[0])[None], refs["L02-pruned-fp32"][:1])


def test_predict_accepts_other_numeric_dtypes_and_does_not_modify_input(make_switcher,
                                                                        ref_inputs, refs):
    sw = make_switcher()
    sw.switch_to("L00-dense-fp32")
    x64 = ref_inputs.astype(np.float64)
    keep = x64.copy()
    _close("L00-dense-fp32", sw.predict(x64), refs["L00-dense-fp32"])
    assert np.array_equal(x64, keep)
    _close("L00-dense-fp32", sw.predict(ref_inputs.astype(np.uint8)), refs["L00-dense-fp32"])
    _close("L00-dense-fp32", sw.predict(ref_inputs.tolist()), refs["L00-dense-fp32"])


@pytest.mark.parametrize("bad", [
    np.zeros((28, 28), np.float32),
    np.zeros((1, 28, 28), np.float32),
    np.zeros((2, 28, 28, 3), np.float32),
    np.zeros((0, 28, 28, 1), np.float32),
    np.zeros((784,), np.float32),
])
def test_wrong_shape_is_a_value_error_naming_the_expected_shape(make_switcher, bad):
    sw = make_switcher()
    with pytest.raises(ValueError, match=r"expected \(28, 28, 1\) for one example or "
                                         r"\(N, 28, 28, 1\) for a batch"):
        sw.predict(bad)


@pytest.mark.parametrize("bad", [
    np.zeros((28, 28, 1), np.complex64),
    np.full((28, 28, 1), "a"),
    np.zeros((28, 28, 1), object),
])
def test_wrong_dtype_is_a_value_error_naming_the_expected_shape(make_switcher, bad):
    sw = make_switcher()
    with pytest.raises(ValueError, match=r"dtype .*; expected float32 with shape \(28, 28, 1\)"):
        sw.predict(bad)


def test_switch_to_unknown_variant_lists_the_known_ones(make_switcher):
    sw = make_switcher()
    with pytest.raises(ValueError, match="unknown variant 'L09'; the portfolio has L00-dense"):
        sw.switch_to("L09")


def test_switch_pins_until_policy_resumes(make_switcher, ref_inputs):
    sw = make_switcher(latency_budget_ms=1.0, learn=False)   # expectations = manifest numbers
    assert sw.active == "L04-pruned-fp32"       # 1 thread: 0.90 ms fits the 0.9 ms enter band
    sw.switch_to("L00-dense-fp32")
    for _ in range(3):
        assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L00-dense-fp32"
    sw.resume_policy()
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L04-pruned-fp32"


def test_stats_count_calls_switches_and_decisions(make_switcher, ref_inputs):
    sw = make_switcher()
    sw.switch_to("L02-pruned-fp32")
    sw.predict(ref_inputs)
    sw.predict(ref_inputs[0])
    sw.switch_to("L04-pruned-int8")
    sw.predict(ref_inputs[:2])
    st = sw.stats()
    json.dumps(st)                                   # plain JSON-able data
    v = st["variants"]
    assert (v["L02-pruned-fp32"]["calls"], v["L02-pruned-fp32"]["examples"]) == (2, 9)
    assert (v["L04-pruned-int8"]["calls"], v["L04-pruned-int8"]["examples"]) == (1, 2)
    assert v["L00-dense-fp32"]["calls"] == 0 and v["L00-dense-fp32"]["latency_ms"]["p50"] is None
    assert 0 < v["L02-pruned-fp32"]["latency_ms"]["p50"] <= v["L02-pruned-fp32"]["latency_ms"]["p99"]
    assert st["switches"]["manual"] == 2 and st["switches"]["total"] >= 2
    assert st["switches"]["time_us"]["p50"] > 0
    assert st["decisions"]["count"] >= 1 and st["decisions"]["time_us"]["p50"] > 0
    assert st["active"] == "L04-pruned-int8" and st["pinned"] is True
    assert all(x["loaded"] and x["memory_mb"] > 0 for x in v.values())


# ------------------------------------------------------------------------------ verification
def test_tampered_variant_is_refused_and_the_others_stay_usable(make_switcher, tmp_portfolio,
                                                                ref_inputs, refs):
    path = tmp_portfolio / "variants" / "L00-dense-fp32.tflite"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    sw = make_switcher(tmp_portfolio)
    assert "L00-dense-fp32" not in sw.available and "L00-dense-fp32" not in sw.loaded
    assert sw.active == "L02-pruned-fp32"            # next most accurate
    err = sw.stats()["variants"]["L00-dense-fp32"]["error"]
    assert str(path) in err and "sha256" in err
    with pytest.raises(VariantUnavailable, match=r"L00-dense-fp32\.tflite does not match its "
                                                 r"sha256"):
        sw.switch_to("L00-dense-fp32")
    _close("L02-pruned-fp32", sw.predict(ref_inputs), refs["L02-pruned-fp32"])


def test_missing_and_truncated_files_are_named(make_switcher, tmp_portfolio):
    (tmp_portfolio / "variants" / "L02-pruned-fp32.tflite").unlink()
    p = tmp_portfolio / "variants" / "L04-pruned-fp32.tflite"
    p.write_bytes(p.read_bytes()[:1000])
    sw = make_switcher(tmp_portfolio, preload="lazy")
    st = sw.stats()["variants"]
    assert "L02-pruned-fp32.tflite is missing" in st["L02-pruned-fp32"]["error"]
    assert "L04-pruned-fp32.tflite is truncated: 1000 bytes" in st["L04-pruned-fp32"]["error"]
    assert sw.available == ["L00-dense-fp32", "L04-pruned-int8"]


def test_file_tampered_after_start_is_caught_when_it_is_loaded(make_switcher, tmp_portfolio,
                                                               ref_inputs):
    sw = make_switcher(tmp_portfolio, preload="lazy")
    assert sw.loaded == ["L00-dense-fp32"]
    p = tmp_portfolio / "variants" / "L02-pruned-fp32.tflite"
    data = bytearray(p.read_bytes())
    data[500] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(VariantUnavailable, match="does not match its sha256"):
        sw.switch_to("L02-pruned-fp32")
    assert sw.active == "L00-dense-fp32" and "L02-pruned-fp32" not in sw.available
    assert sw.predict(ref_inputs[0]).shape == (10,)


def test_unknown_schema_version_refuses_the_portfolio(make_switcher, tmp_portfolio):
    doc = json.loads((tmp_portfolio / "manifest.json").read_text())
    doc["schema_version"] = 7
    (tmp_portfolio / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=rf"{tmp_portfolio}/manifest\.json: schema_version: "
                                            r"unknown schema_version 7"):
        make_switcher(tmp_portfolio)


def test_all_variants_broken_is_one_clear_error(make_switcher, tmp_portfolio):
    for p in (tmp_portfolio / "variants").iterdir():
        p.write_bytes(b"x")
    with pytest.raises(VariantUnavailable, match="no variant is usable: L00-dense-fp32: .*"
                                                 "truncated"):
        make_switcher(tmp_portfolio)


def test_edgetpu_variant_without_delegate_falls_back_to_its_cpu_parent(make_switcher,
                                                                      tmp_portfolio, ref_inputs):
    from edge_runtime.manifest import write_manifest

    doc = json.loads((tmp_portfolio / "manifest.json").read_text())
    tpu = dict(doc["variants"][3], id="L04-pruned-edgetpu", edgetpu=True, accuracy=0.999,
               parent="L04-pruned-int8")
    doc["variants"].append(tpu)
    write_manifest(tmp_portfolio, doc)
    sw = make_switcher(tmp_portfolio)                     # no libedgetpu here: must not crash
    err = sw.stats()["variants"]["L04-pruned-edgetpu"]["error"]
    assert "Edge TPU delegate unavailable (libedgetpu" in err
    assert sw.active == "L00-dense-fp32"                  # the policy never picks it
    assert sw.switch_to("L04-pruned-edgetpu") == "L04-pruned-int8"
    assert sw.predict(ref_inputs[0], return_variant=True)[1] == "L04-pruned-int8"


# ------------------------------------------------------------------------------ lazy / memory
def _measured_memory_profile(folder, mem):
    """A device profile that holds this backend's own measurements of each variant's memory, so
    that the switcher knows them before loading (without one it starts from 2 x file + 0.25 MiB,
    which for these tiny models says nothing about the backend: tflite-runtime measures the
    dense fixture at 0.20 MiB, ai-edge-litert at 0.12 MiB)."""
    from edge_runtime.manifest import load_manifest
    from edge_runtime.profile import PROFILE_VERSION, profile_path

    m = load_manifest(folder)
    doc = {"schema_version": PROFILE_VERSION, "backend": "measured by the test",
           "variants": {v.id: {"sha256": v.sha256, "latency_ms": dict(v.latency_ms),
                               "memory_mb": mem[v.id]} for v in m.variants}}
    profile_path(folder).write_text(json.dumps(doc))


def test_lazy_mode_keeps_an_lru_within_the_memory_budget(make_switcher, tmp_portfolio,
                                                         ref_inputs, refs):
    full = make_switcher(tmp_portfolio, preload="all")
    mem = {k: v["memory_mb"] for k, v in full.stats()["variants"].items()}
    _measured_memory_profile(tmp_portfolio, mem)
    budget = mem["L00-dense-fp32"] + mem["L02-pruned-fp32"] + 0.01   # room for two big ones
    sw = make_switcher(tmp_portfolio, preload="lazy", memory_budget_mb=budget, use_profile=True)
    assert sw.loaded == ["L00-dense-fp32"]
    for vid in ["L02-pruned-fp32", "L04-pruned-fp32", "L00-dense-fp32", "L04-pruned-int8",
                "L02-pruned-fp32"]:
        sw.switch_to(vid)
        _close(vid, sw.predict(ref_inputs), refs[vid])
        st = sw.stats()
        assert st["loaded_mb"] <= budget
        assert vid in sw.loaded
    assert sw.stats()["evictions"] >= 2
    assert sw.stats()["variants"]["L02-pruned-fp32"]["loads"] == 2       # evicted, reloaded


def test_lazy_mode_stays_in_budget_when_a_load_measures_more_than_estimated(
        make_switcher, tmp_portfolio, ref_inputs):
    # Estimates far below what loading measures: room is made for the estimate, then the
    # measurement evicts further least-recently-used variants (never the one just loaded).
    full = make_switcher(tmp_portfolio, preload="all")
    mem = {k: v["memory_mb"] for k, v in full.stats()["variants"].items()}
    budget = max(mem.values()) + 0.001                   # any one variant, never all four
    sw = make_switcher(tmp_portfolio, preload="lazy")    # loads the dense variant only
    for vid, slot in sw._pool.slots.items():
        if vid not in sw.loaded:
            slot.memory_mb = 1e-6
    sw.memory_budget_mb = budget
    for vid in IDS[1:] + IDS[:1]:
        sw.switch_to(vid)
        assert sw.predict(ref_inputs[0], return_variant=True)[1] == vid
        assert vid in sw.loaded and sw.stats()["loaded_mb"] <= budget
    assert sw.stats()["evictions"] >= 3


def test_preload_all_stops_at_the_memory_budget(make_switcher, portfolio):
    # Before loading, a variant's memory is estimated as 2 x file + 0.25 MiB (no device
    # profile): budget room for the dense model's estimate and nothing more.
    dense_bytes = (portfolio / "variants" / "L00-dense-fp32.tflite").stat().st_size
    budget = 2 * dense_bytes / 2**20 + 0.25 + 0.001
    sw = make_switcher(preload="all", memory_budget_mb=budget)
    assert sw.loaded == ["L00-dense-fp32"] and sw.stats()["loaded_mb"] <= budget


def test_device_profile_overrides_manifest_latency(make_switcher, tmp_portfolio):
    from edge_runtime.manifest import load_manifest
    from edge_runtime.profile import bench_portfolio, load_profile

    m = load_manifest(tmp_portfolio)
    doc = bench_portfolio(tmp_portfolio, m, threads=[1], runs=3, warmup=1)
    assert (tmp_portfolio / "device_profile.json").exists() and not doc["errors"]
    prof = load_profile(tmp_portfolio, m)
    assert set(prof.variants) == set(IDS)
    sw = make_switcher(tmp_portfolio, use_profile=True)
    st = sw.stats()
    assert st["profile"].endswith("device_profile.json")
    for vid in IDS:
        assert st["variants"][vid]["baseline_ms"] == doc["variants"][vid]["latency_ms"]["1"]
        assert st["variants"][vid]["baseline_ms"] != m.variant(vid).latency_ms["1"]
    # a profile entry for a file that has changed since is ignored (sha256 mismatch)
    pdoc = json.loads((tmp_portfolio / "device_profile.json").read_text())
    pdoc["variants"]["L02-pruned-fp32"]["sha256"] = "0" * 64
    (tmp_portfolio / "device_profile.json").write_text(json.dumps(pdoc))
    assert "L02-pruned-fp32" not in load_profile(tmp_portfolio, m).variants


def test_min_accuracy_keeps_the_policy_off_less_accurate_variants(make_switcher):
    accs = {v.id: v.accuracy for v in make_switcher().variants}
    floor = sorted(accs.values())[1]              # the least accurate variant is below it
    sw = make_switcher(min_accuracy=floor)
    below = sorted(k for k, a in accs.items() if a < floor)
    assert below and sw.stats()["below_min_accuracy"] == below
    sw.set_budget(latency_ms=1e-6)                # nothing fits: the policy goes fastest...
    sw.decide(force=True)
    assert sw.active not in below                 # ...but never below the floor
    with pytest.raises(VariantUnavailable, match="min_accuracy"):
        make_switcher(min_accuracy=1.01)
