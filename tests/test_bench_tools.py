"""Smoke tests of the benchmark suite (tools.bench), fast: no model building."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.bench import common, numbers, report

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "edge" / "fixtures" / "portfolio" / "variants"


@pytest.mark.parametrize("ratio", [2, 16, 256])
def test_synthetic_masks_exact_density_and_growing_structure(ratio):
    from tools.bench import deploy
    rng = np.random.default_rng(0)
    weights = {"c1": rng.normal(0, 0.3, (3, 3, 3, 16)).astype(np.float32),
               "c2": rng.normal(0, 0.05, (3, 3, 16, 64)).astype(np.float32),
               "c3": rng.normal(0, 0.03, (3, 3, 64, 64)).astype(np.float32)}
    total = sum(w.size for w in weights.values())
    natural, final = deploy.synthetic_masks(weights, 1.0 / ratio, alpha=0.25)
    kept = sum(int(m.sum()) for m in final.values())
    assert abs(kept - round(total / ratio)) <= len(weights)   # each layer keeps >= 1 weight
    for n, m in final.items():
        alive = m.reshape(-1, m.shape[-1]).any(0).sum()
        assert 1 <= alive <= math.ceil(m.shape[-1] * natural[n].mean() ** 0.25)
    dead = sum(int((~m.reshape(-1, m.shape[-1]).any(0)).sum()) for m in final.values())
    if ratio >= 16:
        assert dead > 0


def test_synthetic_structure_grows_with_compression():
    from tools.bench import deploy
    rng = np.random.default_rng(1)
    weights = {"a": rng.normal(0, 0.1, (3, 3, 8, 32)).astype(np.float32),
               "b": rng.normal(0, 0.05, (3, 3, 32, 64)).astype(np.float32)}
    dead = []
    for ratio in (2, 8, 32, 128):
        _, final = deploy.synthetic_masks(weights, 1.0 / ratio, alpha=0.25)
        dead.append(sum(int((~m.reshape(-1, m.shape[-1]).any(0)).sum())
                        for m in final.values()))
    assert dead == sorted(dead) and dead[-1] > dead[0]


def test_bench_latency_interleaved_and_memory(tmp_path):
    spec = {"threads": [1], "rounds": 3, "min_rounds": 2, "block_ms": 0.5, "warmup": 1,
            "base": str(FIXTURES),
            "groups": [{"id": "fixture", "reference": "dense",
                        "variants": {"dense": "L00-dense-fp32.tflite",
                                     "pruned": "L04-pruned-fp32.tflite",
                                     "same": "L00-dense-fp32.tflite"},
                        "pairs": [["dense", "pruned"]]}],
            "memory": {"fixture/dense": str(FIXTURES / "L00-dense-fp32.tflite")}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "lat.json"
    res = subprocess.run([sys.executable, "-m", "tools.bench.latency",
                          str(tmp_path / "spec.json"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    m = doc["groups"][0]["by_threads"][0]
    assert m["threads"] == 1 and m["rounds"] == 3 and m["block"] >= 3
    assert m["vs_reference"]["dense"]["median"] == pytest.approx(1.0)
    assert all(v["median_ms"] > 0 for v in m["variants"].values())
    assert "dense/pruned" in m["pairs"]
    mem = doc["memory"]["fixture/dense"]
    assert mem["bytes"] == (FIXTURES / "L00-dense-fp32.tflite").stat().st_size
    assert mem["rss_invoked_mb"] >= mem["rss_base_mb"]


def test_report_renders_from_minimal_results(tmp_path):
    variant = lambda b, macs, nz, acc=None: {  # noqa: E731
        "file": "x.tflite", "bytes": b, "gzip_bytes": b // 2, "params_total": 10,
        "params_nonzero": 5, "macs": macs, "macs_nonzero": nz, "accuracy": acc, "sha256": "0"}
    doc = {"kind": "trained", "model": "m", "label": "trained", "test_samples": 10,
           "dense": variant(1000, 100, 100, 0.9),
           "levels": [{"level": 1, "compression": 4.0, "density": 0.25, "zero_filters": 2,
                       "filters": 8, "surgery": {"rewrite_ms": 12.0},
                       "variants": {"pruned": variant(500, 50, 25, 0.9),
                                    "pruned_sparse": variant(200, 50, 25, 0.9),
                                    "tfmot_sparse": variant(300, 100, 25, 0.9),
                                    "sparse": variant(1000, 100, 25, 0.9)}}]}
    by = {"threads": 1, "rounds": 5, "block": 3,
          "variants": {k: {"median_ms": 1.0, "p10_ms": 1.0, "p90_ms": 1.0, "load_ms": 1.0}
                       for k in common.VARIANTS},
          "vs_reference": {k: {"median": 1.5, "q25": 1.4, "q75": 1.6} for k in common.VARIANTS},
          "pairs": {"tfmot_sparse/pruned": {"median": 1.5, "q25": 1.4, "q75": 1.6}}}
    lat = {"host": {"groups": [{"id": "demo/L01", "by_threads": [by]}]}}
    fam = numbers.family_results("demo", doc, lat)
    results = {"meta": {}, "deployment": {"demo": fam}, "runtimes": {}, "demo": {},
               "switching": {}, "surgery": {}, "paper": numbers.PAPER}
    results["headline"] = numbers.headline(results)
    results["behind"] = numbers.behind(results)
    text = report.render(results)
    assert "Headline" in text and "(a) ours" in text and "1.50x" in text
    assert any("below the paper" in b for b in results["behind"])
    assert len(report.plot(results, tmp_path)) == 2


def test_pareto_coverage_and_report(tmp_path):
    pt = lambda i, src, kind, acc, ms, level=None: {  # noqa: E731
        "id": i, "source": src, "kind": kind, "accuracy": acc, "ms": ms, "level": level,
        "speedup": 0.1 / ms, "bytes": 1000, "params": 10}
    dense = pt("portfolio/L00-dense-fp32", "portfolio", "dense", 0.98, 0.1, 0)
    fast = pt("portfolio/L03-pruned-fp32", "portfolio", "pruned", 0.976, 0.04, 3)
    near = pt("baseline/w0.5_e6", "baseline_e6", "dense", 0.978, 0.037)    # 0.2 pt, 1.08x
    far = pt("baseline/w0.25_e6", "baseline_e6", "dense", 0.960, 0.02)     # 2x faster
    better = pt("mct/x", "mct", "pruned+finetuned", 0.99, 0.04)            # 1.4 pt better
    assert numbers.covers(fast, near) and not numbers.covers(fast, far) and \
        not numbers.covers(fast, better)
    assert numbers.coverage([dense, fast], near) is fast
    doc = {"points": [dense, fast, near, far, better], "level_epochs": 6, "run_epochs": 54,
           "test_size": 1000, "dense": dense["id"],
           "run_levels": [{"level": 3, "density": 0.3, "test_accuracy": 0.976,
                           "zero_filters": 12}],
           "arms": {"paper": {"sets": "lottery.structure=none",
                              "levels": [{"level": 3, "density": 0.3, "test_accuracy": 0.97,
                                          "zero_filters": 0}]}}}
    text = report.render_pareto(doc, tmp_path)
    assert "Width-scaled baselines covered: **1 of 2**" in text
    assert "Not covered: baseline/w0.25_e6" in text and "Not covered: mct/x" in text
    assert "| 3 | 0.300 | 0.976 / 12 / 2.50× | 0.970 / 0 / floor |" in text
    assert (tmp_path / "plots" / "pareto.png").stat().st_size > 0


def test_pareto_recipes_side_by_side(tmp_path):
    pt = lambda i, src, kind, acc, ms, level=None, epochs=None: {  # noqa: E731
        "id": i, "source": src, "kind": kind, "accuracy": acc, "ms": ms, "level": level,
        "speedup": 0.1 / ms, "bytes": 1000, "params": 10, "macs": 2e6, "epochs": epochs,
        "train_s": 1.0}
    dense = pt("portfolio/L00-dense-fp32", "portfolio", "dense", 0.98, 0.1, 0, 6)
    cheap = pt("portfolio/L04-pruned-fp32", "portfolio", "pruned", 0.975, 0.04, 4, 10)
    long_ = pt("recipe:structured_12x/L05-pruned-fp32", "recipe:structured_12x", "pruned",
               0.982, 0.03, 5, 36)
    base = pt("baseline/w0.5_e17", "baseline_e17", "dense", 0.974, 0.042, None, 17)
    doc = {"points": [dense, cheap, long_, base], "level_epochs": 6, "run_epochs": 17,
           "test_size": 1000, "dense": dense["id"], "recipe": "cheap",
           "run_cost": {"epochs": 17, "train_s": 40.0, "levels": 11},
           "recipes": {"structured_12x": {"sets": "lottery.recipe=structured", "epochs": 72,
                                          "train_s": 150.0, "levels": 11, "levels_rows": []}}}
    text = report.render_pareto(doc, tmp_path)
    assert "### Recipes side by side" in text
    assert "| portfolio (`cheap`) | 11 | 17 | 2.8× | 40.0 | 1 | L04: 0.975 at 2.50× | 1 of 1 |" \
        in text
    assert "| structured_12x (`lottery.recipe=structured`) | 11 | 72 | 12.0× | 150.0 | 1 | " \
           "L05: 0.982 at 3.33× | 1 of 1 |" in text
    assert "| 2.00 | 10 | 1.0 |" in text         # MMACs, epochs, train s of a point


def test_archs_summary_applies_the_issue_bar(tmp_path):
    from tools.bench import archs
    pt = lambda i, src, kind, acc, ms, level=None: {  # noqa: E731
        "id": i, "source": src, "kind": kind, "accuracy": acc, "ms": ms, "level": level,
        "speedup": 0.1 / ms, "bytes": 1000, "params": 10}
    dense = pt("portfolio/L00-dense-fp32", "portfolio", "dense", 0.90, 0.1, 0)
    fast = pt("portfolio/L04-pruned-fp32", "portfolio", "pruned", 0.895, 0.04, 4)
    slow = pt("portfolio/L01-pruned-fp32", "portfolio", "pruned", 0.905, 0.08, 1)
    covered = pt("baseline/w0.5_e6", "baseline_e6", "dense", 0.897, 0.043)
    missed = pt("baseline/w0.25_e18", "baseline_e18", "dense", 0.89, 0.02)
    arm = pt("arm:filters_only/L04-pruned-fp32", "arm:filters_only", "pruned", 0.899, 0.08, 4)
    docs = {"good": [dense, fast, slow, covered, arm], "short": [dense, fast, covered, missed]}
    for name, pts in docs.items():
        folder = tmp_path / "archs" / name / "raw"
        folder.mkdir(parents=True)
        (folder / "pareto.json").write_text(json.dumps({
            "points": pts, "level_epochs": 6, "run_epochs": 18, "test_size": 100,
            "run_levels": [{"level": 4, "density": 0.13, "test_accuracy": 0.895,
                            "zero_filters": 40}],
            "arms": {"filters_only": {"sets": "lottery.structure=filters", "levels": [
                {"level": 4, "density": 0.13, "test_accuracy": 0.899, "zero_filters": 3}]}}
            if name == "good" else {}}))
    v = archs.verdict(json.loads((tmp_path / "archs/good/raw/pareto.json").read_text()))
    assert v["best"] == fast and v["passed"] and v["arm_best"] == arm
    v = archs.verdict(json.loads((tmp_path / "archs/short/raw/pareto.json").read_text()))
    assert v["missed"] == [missed] and not v["passed"]
    text = archs.render(tmp_path, ["good", "short", "absent"])
    assert "| good | 0.900 | 18 (3.0×) | L04-pruned-fp32 0.895 at 2.50× | 1 of 1 | " \
           "arm:filters_only/L04-pruned-fp32 0.899 at 1.25× | met |" in text
    assert "| short | 0.900 | 18 (3.0×) | L04-pruned-fp32 0.895 at 2.50× | 1 of 2 | — | " \
           "**not met** |" in text
    assert ("- not covered: baseline/w0.25_e18 (0.890 at 0.020 ms); no deployed variant is "
            "within 1.1× its latency; 1 SE of a difference at 100 test images: 4.4 points."
            ) in text and "absent" not in text
    better = pt("baseline/w0.5_e18", "baseline_e18", "dense", 0.91, 0.038)
    doc = json.loads((tmp_path / "archs/short/raw/pareto.json").read_text())
    doc["points"] = [dense, fast, better]
    assert archs.missed_lines(doc) == [
        "- not covered: baseline/w0.5_e18 (0.910 at 0.038 ms); nearest at ≤ 1.1× its latency: "
        "L04-pruned-fp32 0.895 (-1.5 points); 1 SE of a difference at 100 test images: "
        "4.0 points."]
    # A recipe side by side (with the run's dense model) is judged against the baselines of one
    # training and of its own total epochs only; the run's recipe is not judged against its
    # longer baselines.
    long = pt("baseline/w0.25_e72", "baseline_e72", "dense", 0.95, 0.02)
    twelve = pt("recipe:12x/L09-pruned-fp32", "recipe:12x", "pruned", 0.96, 0.019, 9)
    doc = json.loads((tmp_path / "archs/good/raw/pareto.json").read_text())
    doc["points"] += [long, twelve]
    doc["recipes"] = {"12x": {"sets": "lottery.levels=11", "epochs": 72}}
    assert archs.verdict(doc)["passed"] and archs.verdict(doc)["baselines"] == 1
    v = archs.verdict(doc, "12x")
    assert v["best"] == twelve and v["baselines"] == 2 and v["epochs"] == 72 and v["passed"]
    doc["points"].remove(twelve)
    v = archs.verdict(doc, "12x")
    assert v["best"] is None and v["missed"] == [covered, long] and not v["passed"]
    (tmp_path / "archs/good/raw/pareto.json").write_text(json.dumps(doc))
    text = archs.render(tmp_path, ["good"])
    assert "| good, recipe 12x (`lottery.levels=11`) | 0.900 | 72 (12.0×) | none | 0 of 2 | — | " \
           "**not met** |" in text
    assert "- recipe 12x: not covered: baseline/w0.25_e72 (0.950 at 0.020 ms)" in text
    assert "| 4 | 0.130 | 0.895 / 40 / 2.50× | 0.899 / 3 / 1.25× |" in text


def test_pareto_keeps_recipes_trained_before_with_their_settings(tmp_path):
    """A recipe folder deployed by an earlier invocation stays in the next one: its settings
    are read back from spec.json, or (older folders) from its config's difference to the row's."""
    from shifter_tf.config.schema import load_config, save_config
    from tools.bench import pareto
    cfg_path = str(ROOT / "configs" / "fashion_vgg.yaml")
    base = load_config(cfg_path)
    recipes = tmp_path / "recipes"
    for name, lottery in (("old", {"levels": 11, "distill": 0.7}), ("named", {"levels": 2}),
                          ("spec", {"levels": 3})):
        folder = recipes / name
        (folder / "portfolio").mkdir(parents=True)
        (folder / "portfolio" / "manifest.json").write_text("{}")
        d = base.to_dict()
        d["lottery"].update(lottery)
        d["export"]["precisions"] = ["fp32"]          # export keys are not settings
        from shifter_tf.config.schema import from_dict
        save_config(from_dict(d, name), folder / "config.yaml")
    pareto.save_spec(recipes / "spec", "recipe", "spec", ["lottery.levels=3", "train.lr=0.02"])
    (recipes / "unfinished").mkdir()                  # no portfolio: not deployed, left out
    specs = pareto.earlier_specs(cfg_path, tmp_path, "recipe", ["named"])
    assert specs == ["old=lottery.levels=11,lottery.distill=0.7",
                     "spec=lottery.levels=3,train.lr=0.02"]
