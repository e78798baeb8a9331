"""keras-tuner search over the IMP recipe: a real 2-trial search on tiny settings, resume, and
the errors a bad search space must raise."""
import csv
import json
import math

import pytest
import yaml

from conftest import tiny_config
from shifter_tf.tune import search as tune
from shifter_tf.config.schema import ConfigError, load_config

SPACE = {
    "train.lr": {"min": 0.01, "max": 0.1, "sampling": "log"},
    "train.batch_size": {"values": [32, 48]},
    "lottery.rewind_epochs": {"values": [0, 0.5]},
    "lottery.prune_fraction": {"values": [0.5, 0.6]},
}


def tune_config(space=None, **tune_keys):
    # batch 32: the 512 tiny images give 16 steps per epoch, enough to learn a little
    return tiny_config(train={"batch_size": 32},
                       tune={"algorithm": "random", "max_trials": 2, "target_density": 0.5,
                             "space": SPACE if space is None else space, **tune_keys})


@pytest.fixture(scope="module")
def search(tmp_path_factory, mnist_tiny):
    out = tmp_path_factory.mktemp("tune")
    cfg = tune_config()
    best = tune.run_search(cfg, out, data=mnist_tiny, progress=False)
    return cfg, out, best


def test_search_writes_loadable_best_config_inside_the_space(search):
    cfg, out, best = search
    assert best == out / "best.yaml"
    best_cfg = load_config(best)          # what `shifter-tf train --config` does
    lr = best_cfg.train.lr
    assert 0.01 <= lr <= 0.1 and lr != cfg.train.lr
    assert best_cfg.train.batch_size in (32, 48)
    assert best_cfg.lottery.rewind_epochs in (0.0, 0.5)
    assert best_cfg.lottery.rewind_iterations is None      # tiny_config sets it; exclusive
    p = best_cfg.lottery.prune_fraction
    assert p in (0.5, 0.6)
    # levels reach the base config's own depth (2 levels at p=0.5 -> 0.25), not the search target
    assert (1 - p) ** best_cfg.lottery.levels <= 0.25 + 1e-9
    assert (1 - p) ** (best_cfg.lottery.levels - 1) > 0.25
    assert best_cfg.tune == {}
    assert best_cfg.model == cfg.model and best_cfg.data == cfg.data


def test_trial_table_and_best_is_the_argmax(search):
    cfg, out, best = search
    rows = json.loads((out / "trials.json").read_text())
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert all(r["status"] == "COMPLETED" for r in rows), [r["error"] for r in rows]
    for r in rows:
        assert 0.0 <= r["sparse_val_accuracy"] <= 1.0
        assert 0.0 <= r["dense_val_accuracy"] <= 1.0
        # one IMP level reaches 0.5 at either prune fraction; the trial's run folder holds it
        assert r["levels"] == 1 and r["density"] <= 0.5 + 2e-3
        assert (out / "trials" / r["trial"] / "levels" / "level_01" / "metrics.json").exists()
        lot = json.loads((out / "trials" / r["trial"] / "lottery.json").read_text())
        assert lot[1]["val_accuracy"] == pytest.approx(r["sparse_val_accuracy"])
        assert lot[0]["val_accuracy"] == pytest.approx(r["dense_val_accuracy"])
    assert rows[0]["train.lr"] != rows[1]["train.lr"]
    top = max(r["sparse_val_accuracy"] for r in rows)
    best_cfg = load_config(best)
    winners = [r for r in rows if r["train.lr"] == pytest.approx(best_cfg.train.lr)]
    assert len(winners) == 1 and winners[0]["sparse_val_accuracy"] == top
    assert best_cfg.lottery.prune_fraction == winners[0]["lottery.prune_fraction"]
    assert best_cfg.train.batch_size == winners[0]["train.batch_size"]
    with open(out / "trials.csv") as f:
        assert [r["trial"] for r in csv.DictReader(f)] == ["0", "1"]
    assert "sparse_val_accuracy" in (out / "trials.md").read_text()


def test_rerun_resumes_from_keras_tuner_state(search, mnist_tiny, monkeypatch):
    cfg, out, best = search
    calls = []
    monkeypatch.setattr(tune, "short_imp", lambda c, run, *a, **k: calls.append(run))
    before = best.read_text()
    again = tune.run_search(cfg, out, data=mnist_tiny, progress=False)
    assert calls == []                 # both trials are reloaded from DIR/keras_tuner, none rerun
    assert again.read_text() == before
    assert len(json.loads((out / "trials.json").read_text())) == 2


def test_rerun_with_a_different_space_is_refused(search, mnist_tiny):
    cfg, out, best = search
    changed = tune_config(space={**SPACE, "train.lr": {"min": 0.02, "max": 0.1}})
    with pytest.raises(ConfigError, match=r"search\.yaml: tune\.space\.train\.lr"):
        tune.run_search(changed, out, data=mnist_tiny, progress=False)


# ---------------------------------------------------------------- pure helpers
def test_trial_config_sets_levels_rewind_and_milestones():
    base = tiny_config(train={"epochs": 4, "milestones": [3.0]})
    cfg = tune.trial_config(base, {"train.epochs": 2, "lottery.prune_fraction": 0.4,
                                   "lottery.rewind_epochs": 0.25}, 0.13)
    assert cfg.lottery.levels == 4 and 0.6 ** 4 <= 0.13 < 0.6 ** 3
    assert cfg.lottery.target_density == 0.13
    assert cfg.lottery.rewind_epochs == 0.25 and cfg.lottery.rewind_iterations is None
    assert cfg.train.milestones == [1.5]
    assert tune.levels_for(0.5, 0.5) == 1 and tune.levels_for(0.25, 0.5) == 2
    assert tune.levels_for(0.2, 0.2) == math.ceil(math.log(0.2) / math.log(0.8))


def test_shipped_tune_config_parses():
    cfg = load_config("configs/mnist5k_vgg_tune.yaml")
    spec = tune.parse_spec(cfg, "configs/mnist5k_vgg_tune.yaml")
    assert spec.target_density == 0.13 and spec.algorithm == "random"
    assert set(spec.space) >= {"train.lr", "train.weight_decay", "lottery.prune_fraction"}
    assert tune.trial_config(cfg, {}, 0.13).lottery.levels == 4
    assert tune.best_config(cfg, {"train.lr": 0.1}).name == "mnist5k_vgg_tuned"


@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_each_algorithm_builds_an_oracle_over_the_space(algorithm):
    space = {**SPACE, "train.epochs": {"min": 1, "max": 3}}
    spec = tune.parse_spec(tune_config(space=space, algorithm=algorithm), "<t>")
    oracle = tune._oracle(spec, tune_config(), 2)
    names = {h.name for h in oracle.hyperparameters.space}
    expected = set(space) - ({"train.epochs"} if algorithm == "hyperband" else set())
    assert names == expected
    assert oracle.max_trials == 2
    if algorithm == "hyperband":
        assert oracle.max_epochs == 3
        vals = tune.trial_values(spec, tune_config(), {"train.lr": 0.02, "tuner/epochs": 9})
        assert vals["train.epochs"] == 3 and "tuner/epochs" not in vals


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("space, match", [
    ({"train.lrr": {"min": 0.1, "max": 0.2}}, r"<src>: tune\.space\.train\.lrr: unknown key"),
    ({"optim.lr": {"values": [0.1]}}, r"<src>: tune\.space\.optim\.lr: unknown key"),
    ({"train.lr": {"min": 0.2, "max": 0.1}}, r"<src>: tune\.space\.train\.lr: empty range"),
    ({"train.batch_size": {"values": []}},
     r"<src>: tune\.space\.train\.batch_size\.values: empty range"),
    ({"train.lr": {"min": 0.01, "mx": 0.1}}, r"tune\.space\.train\.lr\.mx: unknown key"),
    ({"train.lr": {"min": 0.01}}, r"tune\.space\.train\.lr\.max: missing"),
    ({"train.lr": {"min": 0.0, "max": 0.1, "sampling": "log"}},
     r"tune\.space\.train\.lr\.sampling: log sampling needs min > 0"),
    ({"train.batch_size": {"values": [32, 64.5]}},
     r"tune\.space\.train\.batch_size\.values\[1\]: expected int"),
    ({"lottery.prune_fraction": {"values": [0.5, 1.2]}},
     r"tune\.space\.lottery\.prune_fraction: value 1\.2: .*must be in \(0, 1\)"),
    ({"train.epochs": {"min": 0, "max": 2}}, r"tune\.space\.train\.epochs: value 0: .*>= 1"),
    ({"lottery.levels": {"values": [2, 3]}}, r"tune\.space\.lottery\.levels: not tunable"),
    ({"lottery.rewind_epochs": {"values": [0.5]}, "lottery.rewind_iterations": {"values": [2]}},
     r"tune\.space\.lottery\.rewind_iterations: mutually exclusive"),
    ({"lottery.rewind_epochs": {"values": [0.5, 2.0]}},
     r"tune\.space\.lottery\.rewind_epochs: rewind point 2\.0 epochs is beyond level 0"),
    ({}, r"<src>: tune\.space: empty"),
])
def test_bad_space_is_an_error_naming_source_and_key(space, match):
    with pytest.raises(ConfigError, match=match):
        tune.parse_spec(tune_config(space=space), "<src>")


@pytest.mark.parametrize("keys, match", [
    ({"algorithm": "grid"}, r"<src>: tune\.algorithm: must be one of"),
    ({"max_trials": 0}, r"<src>: tune\.max_trials"),
    ({"target_density": 1.5}, r"<src>: tune\.target_density"),
    ({"budget": 3}, r"<src>: tune\.budget: unknown key"),
])
def test_bad_tune_keys_are_errors(keys, match):
    with pytest.raises(ConfigError, match=match):
        tune.parse_spec(tune_config(**keys), "<src>")


def test_bad_space_fails_before_any_training(tmp_path):
    cfg = tune_config(space={"train.lrr": {"min": 0.1, "max": 0.2}})
    with pytest.raises(ConfigError, match=r"tune\.space\.train\.lrr: unknown key"):
        tune.run_search(cfg, tmp_path, progress=False)
    assert not (tmp_path / "trials").exists()


def test_cli_reports_a_bad_space_as_one_line(tmp_path, capsys):
    from shifter_tf.cli import main

    cfg_path = tmp_path / "c.yaml"
    d = tune_config().to_dict()
    d["tune"]["space"] = {"train.lrr": {"min": 0.1, "max": 0.2}}
    cfg_path.write_text(yaml.safe_dump(d))
    assert main(["tune", "--config", str(cfg_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tune.space.train.lrr: unknown key" in err and "Traceback" not in err


# ---------------------------------------------------------------- the search loop, no training
def fake_imp(calls):
    """A stand-in for the short IMP run: the objective is a known function of the trial config."""
    def run(cfg, run_dir, target_density, **kw):
        calls.append(cfg)
        if len(calls) == 2:
            raise RuntimeError("diverged")        # the second trial fails
        score = cfg.train.lr * cfg.train.epochs
        return {tune.OBJECTIVE: score, "dense_val_accuracy": 1.0, "density": target_density,
                "levels": float(cfg.lottery.levels)}
    return run


@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_each_algorithm_searches_and_keeps_the_best(algorithm, tmp_path, mnist_tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(tune, "short_imp", fake_imp(calls))
    space = {**SPACE, "train.epochs": {"min": 1, "max": 3}}
    cfg = tune_config(space=space, algorithm=algorithm, max_trials=6)
    best = tune.run_search(cfg, tmp_path, data=mnist_tiny, progress=False)
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert len(rows) == len(calls) == 6
    for c in calls:      # every trial config lies in the space, levels reach the target
        assert 0.01 <= c.train.lr <= 0.1 and 1 <= c.train.epochs <= 3
        assert c.train.batch_size in (32, 48) and c.lottery.rewind_epochs in (0.0, 0.5)
        assert (1 - c.lottery.prune_fraction) ** c.lottery.levels <= 0.5
    done = [r for r in rows if r["status"] == "COMPLETED"]
    failed = [r for r in rows if r["status"] == "FAILED"]
    assert [r["trial"] for r in failed] == [rows[1]["trial"]]
    assert failed[0]["error"].endswith("diverged") and failed[0]["sparse_val_accuracy"] is None
    assert len(done) == 5
    top = max(done, key=lambda r: r["sparse_val_accuracy"])
    best_cfg = load_config(best)
    assert best_cfg.train.lr * best_cfg.train.epochs == pytest.approx(top["sparse_val_accuracy"])
    if algorithm == "hyperband":     # epochs per level are its resource: budgets 1 and 3
        assert {c.train.epochs for c in calls} == {1, 3}


def test_all_trials_failing_is_a_training_error(tmp_path, mnist_tiny, monkeypatch):
    from shifter_tf.train.engine import TrainingError

    def boom(*a, **k):
        raise RuntimeError("diverged")
    monkeypatch.setattr(tune, "short_imp", boom)
    with pytest.raises(TrainingError, match="trials.csv"):
        tune.run_search(tune_config(max_trials=3), tmp_path, data=mnist_tiny, progress=False)
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert rows and all(r["status"] == "FAILED" for r in rows)
    assert not (tmp_path / "best.yaml").exists()
