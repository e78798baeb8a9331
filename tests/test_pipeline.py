"""Phases 2-3 on a real (tiny) IMP run: prune every level, export, verify the portfolio."""
import json

import numpy as np
import pytest

from conftest import tiny_config
from edge_runtime.manifest import load_manifest, validate
from shifter_tf import pipeline
from shifter_tf.train import lottery
from shifter_tf.export import portfolio
from shifter_tf.export import report
from shifter_tf.export.evaluate import accuracy


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_tiny):
    """Two levels at p = 0.8 (density 4%): deep filters die, so pruning has work to do."""
    run = tmp_path_factory.mktemp("run")
    # no accuracy floor here: these tiny levels collapse, and this run tests the plumbing
    cfg = tiny_config(lottery={"levels": 2, "prune_fraction": 0.8},
                      export={"precisions": ["fp32", "int8"]},
                      portfolio={"max_accuracy_drop": None})
    lottery.run_lottery(cfg, run, data=mnist_tiny, progress=False)
    pipeline.prune_run(run, data=mnist_tiny, progress=False)
    pipeline.export_run(run, data=mnist_tiny, progress=False)
    return run


def test_manifest_validates_and_lists_every_variant(run):
    doc = json.loads((run / "portfolio" / "manifest.json").read_text())
    validate(doc, "manifest.json")
    ids = {v["id"] for v in doc["variants"]}
    assert ids == {"L00-dense-fp32", "L00-dense-int8", "L01-sparse-fp32", "L01-pruned-fp32",
                   "L01-pruned-int8", "L02-sparse-fp32", "L02-pruned-fp32", "L02-pruned-int8"}
    assert doc["task"]["input_shape"] == [28, 28, 1]
    assert doc["task"]["normalization"]["scale"] == pytest.approx(1 / 255)
    for v in doc["variants"]:
        assert v["latency_ms"]["1"] > 0 and 0 <= v["accuracy"] <= 1
        assert v["params_nonzero"] <= v["params_total"]
    assert portfolio.verify_portfolio(run / "portfolio") == []


def test_pruned_tflite_agrees_with_sparse_tflite_and_is_smaller(run, mnist_tiny):
    m = load_manifest(run / "portfolio")
    by_id = {v.id: v for v in m.variants}
    x, y = mnist_tiny.normalized("test")
    for level in (1, 2):
        sparse = by_id[f"L{level:02d}-sparse-fp32"]
        pruned = by_id[f"L{level:02d}-pruned-fp32"]
        a_s = accuracy((run / "portfolio" / sparse.file).read_bytes(), x, y)
        a_p = accuracy((run / "portfolio" / pruned.file).read_bytes(), x, y)
        assert abs(a_s - a_p) <= 0.001
        assert pruned.parent == sparse.id
    deepest = by_id["L02-pruned-fp32"]
    assert deepest.bytes < by_id["L02-sparse-fp32"].bytes
    assert deepest.macs < by_id["L02-sparse-fp32"].macs


def test_corrupted_and_truncated_files_are_named(run, tmp_path):
    import shutil
    folder = tmp_path / "portfolio"
    shutil.copytree(run / "portfolio", folder)
    trunc = folder / "variants" / "L01-pruned-fp32.tflite"
    trunc.write_bytes(trunc.read_bytes()[:1000])
    flip = folder / "variants" / "L02-sparse-fp32.tflite"
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flip.write_bytes(bytes(data))
    problems = portfolio.verify_portfolio(folder)
    assert len(problems) == 2
    assert any("L01-pruned-fp32" in p for p in problems)
    assert any("L02-sparse-fp32" in p for p in problems)


def test_crash_mid_export_keeps_old_portfolio(run, mnist_tiny, monkeypatch):
    before = (run / "portfolio" / "manifest.json").read_text()
    calls = {"n": 0}
    real = portfolio.convert

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(*a, **k)
    monkeypatch.setattr(portfolio, "convert", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.export_run(run, data=mnist_tiny, progress=False)
    assert (run / "portfolio" / "manifest.json").read_text() == before
    assert portfolio.verify_portfolio(run / "portfolio") == []
    assert not list(run.glob(".portfolio*"))
    # and a successful re-export replaces it (new created stamp, same variants)
    monkeypatch.setattr(portfolio, "convert", real)
    pipeline.export_run(run, data=mnist_tiny, progress=False)
    after = json.loads((run / "portfolio" / "manifest.json").read_text())
    assert after["created"] >= json.loads(before)["created"]
    assert len(after["variants"]) == len(json.loads(before)["variants"])


def test_report_writes_markdown_and_plots(run):
    path = report.write_report(run)
    text = path.read_text()
    assert "L02-pruned-fp32" in text and "sparse twin" in text
    for png in ("accuracy_vs_size.png", "accuracy_vs_latency.png", "channels.png"):
        assert (run / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front():
    pts = [(1, 0.5), (2, 0.9), (3, 0.8), (0.5, 0.4), (4, 0.95)]
    assert report.pareto_front(pts) == [3, 0, 1, 4]


def test_pruned_keras_models_match_sparse(run, mnist_tiny):
    import tf_keras as keras
    x, _ = mnist_tiny.normalized("val")
    for level in (1, 2):
        sparse = lottery.load_level_model(run, level)
        pruned = keras.models.load_model(pipeline.pruned_dir(run, level) / "model.keras",
                                         compile=False, safe_mode=False)
        a, b = sparse.predict(x[:64], verbose=0), pruned.predict(x[:64], verbose=0)
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())


def test_edge_switcher_serves_the_exported_portfolio(run, mnist_tiny):
    """The device side reads the host's portfolio: raw pixels in, the manifest's accuracy out."""
    from edge_runtime import EdgeSwitcher

    sw = EdgeSwitcher.from_portfolio(run / "portfolio", preload="all")
    m = load_manifest(run / "portfolio")
    x_raw, y = mnist_tiny.split("test")
    for vid in ("L02-pruned-fp32", "L00-dense-int8"):
        sw.switch_to(vid)
        scores, served = sw.predict(x_raw[:300], return_variant=True)
        assert served == vid
        acc = float(np.mean(np.argmax(scores, -1) == y[:300]))
        expected = next(v.accuracy for v in m.variants if v.id == vid)
        assert acc == pytest.approx(expected, abs=1e-9)   # eval_limit is 300 in the tiny config


def test_sparse_encoding_shrinks_pruned_files_without_changing_outputs(run, mnist_tiny):
    """export.sparse_encoding (on by default): zeros left inside kept filters stored sparsely."""
    import tf_keras as keras
    from shifter_tf.export.convert import convert
    from edge_runtime.interpreter import load_runner

    doc = json.loads((run / "portfolio" / "manifest.json").read_text())
    enc = {v["id"]: v["sparse_encoding"] for v in doc["variants"]}
    assert enc["L02-pruned-fp32"] is True and enc["L02-pruned-int8"] is False
    assert enc["L02-sparse-fp32"] is False and enc["L00-dense-fp32"] is False
    pruned = keras.models.load_model(pipeline.pruned_dir(run, 2) / "model.keras",
                                     compile=False, safe_mode=False)
    x = mnist_tiny.normalized("test")[0][:50]
    for precision in ("fp32", "fp16"):
        plain = convert(pruned, precision)
        encoded = convert(pruned, precision, sparse=True)
        assert len(encoded) < len(plain)
        np.testing.assert_array_equal(load_runner(plain, 1).run(x)[0],
                                      load_runner(encoded, 1).run(x)[0])
    shipped = (run / "portfolio" / "variants" / "L02-pruned-fp32.tflite").read_bytes()
    from shifter_tf.export.metadata import add_metadata   # export.metadata is on by default
    entry = next(v for v in doc["variants"] if v["id"] == "L02-pruned-fp32")
    assert shipped == add_metadata(convert(pruned, "fp32", sparse=True), doc["task"], entry,
                                   doc["generator"])


def test_accuracy_floor_keeps_collapsed_levels_out_of_the_portfolio(run, mnist_tiny, tmp_path):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    results = {r.level: r.test_accuracy for r in lottery.load_results(copy)}
    pipeline.export_run(copy, data=mnist_tiny, progress=False,
                        overrides={"portfolio.max_accuracy_drop": 0.01,
                                   "export.precisions": ["fp32"]})
    below = {l for l, a in results.items() if l and a < results[0] - 0.01}
    assert below, "the tiny run's 4%-density levels collapse: the floor must have work to do"
    deployed = {v["level"] for v in json.loads(
        (copy / "portfolio" / "manifest.json").read_text())["variants"]}
    assert deployed == set(results) - below
    text = report.write_report(copy).read_text()
    assert "Not deployed" in text and all(f"level {l} (" in text for l in below)
    assert (copy / "levels" / f"level_{max(below):02d}" / "model.keras").exists()   # kept


def test_finetuned_variants_are_deployed_next_to_their_lossless_parents(run, mnist_tiny,
                                                                        tmp_path):
    import shutil
    import tf_keras as keras
    from shifter_tf.train import finetune
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    over = {"surgery.finetune_epochs": 1, "export.precisions": ["fp32"],
            "export.kinds": ["dense", "pruned"], "portfolio.max_accuracy_drop": None}
    cfg = pipeline.run_config(copy, over)
    done = finetune.finetune_run(copy, cfg, mnist_tiny, pipeline.pruned_dir, progress=False)
    assert [m["level"] for m in done] == [1, 2] and finetune.finetuned_levels(copy) == [1, 2]
    assert finetune.finetune_run(copy, cfg, mnist_tiny, pipeline.pruned_dir,
                                 progress=False) == []          # resumable: nothing left to do
    pruned = keras.models.load_model(pipeline.pruned_dir(copy, 2) / "model.keras",
                                     compile=False)
    tuned = keras.models.load_model(finetune.finetuned_dir(copy, 2) / "model.keras",
                                    compile=False)
    assert pruned.count_params() == tuned.count_params()     # same shape, trained further
    assert any(not np.array_equal(a, b) for a, b in zip(pruned.get_weights(),
                                                         tuned.get_weights()))
    pipeline.export_run(copy, data=mnist_tiny, progress=False, overrides=over)
    doc = json.loads((copy / "portfolio" / "manifest.json").read_text())
    validate(doc, "manifest.json")
    v = {x["id"]: x for x in doc["variants"]}
    assert v["L02-finetuned-fp32"]["kind"] == "finetuned"
    assert v["L02-finetuned-fp32"]["parent"] == "L02-pruned-fp32"     # lossless twin kept
    x, y = mnist_tiny.normalized("test")
    n = cfg.export.eval_limit or len(y)
    keras_acc = float(np.mean(tuned.predict(x[:n], verbose=0).argmax(-1) == y[:n]))
    assert v["L02-finetuned-fp32"]["accuracy"] == pytest.approx(keras_acc, abs=0.004)
