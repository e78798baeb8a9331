from pathlib import Path

import pytest

from shifter_tf.config.schema import Config, ConfigError, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.name == path.stem


def test_paper_vgg16_setting():
    cfg = load_config(CONFIGS / "cifar10_vgg16.yaml")
    t, lt = cfg.train, cfg.lottery
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (t.epochs, t.batch_size, t.milestones, t.gamma) == (160, 128, [80, 120], 0.1)
    assert (lt.levels, lt.prune_fraction, lt.rewind_iterations) == (25, 0.2, 2000)
    assert lt.exclude_classifier is True


def test_tinyimagenet_setting():
    cfg = load_config(CONFIGS / "tinyimagenet_resnet50.yaml")
    assert cfg.data.image_size == [64, 64] and cfg.model.name == "resnet50"
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr) == (200, 256, 0.2)
    assert (cfg.train.warmup_epochs, cfg.train.milestones) == (5, [100, 150])


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, "train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*train\.epocs.*unknown key"):
        load_config(p)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="trian"):
        load_config(write(tmp_path, "trian:\n  epochs: 3\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs.*expected int"):
        load_config(write(tmp_path, "train:\n  epochs: three\n"))
    with pytest.raises(ConfigError, match=r"export\.precisions.*expected a list"):
        load_config(write(tmp_path, "export:\n  precisions: fp32\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml.*not found"):
        load_config(tmp_path / "nope.yaml")


def test_unreachable_target_density(tmp_path):
    p = write(tmp_path, "lottery:\n  levels: 3\n  prune_fraction: 0.2\n  target_density: 0.02\n")
    with pytest.raises(ConfigError, match=r"lottery\.target_density"):
        load_config(p)


def test_bad_values(tmp_path):
    with pytest.raises(ConfigError, match=r"lottery\.prune_fraction"):
        load_config(write(tmp_path, "lottery:\n  prune_fraction: 1.5\n"))
    with pytest.raises(ConfigError, match=r"train\.strategy"):
        load_config(write(tmp_path, "train:\n  strategy: tpu\n"))
    with pytest.raises(ConfigError, match=r"export\.precisions.*int4"):
        load_config(write(tmp_path, "export:\n  precisions: [int4]\n"))


def test_round_trip_and_overrides(tmp_path):
    cfg = load_config(CONFIGS / "mnist5k_vgg.yaml", {"train.epochs": 2, "lottery.levels": 3,
                                                     "lottery.target_density": None})
    assert cfg.train.epochs == 2 and cfg.lottery.levels == 3
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


# ---------------------------------------------------------------- short levels, epoch budget
def _lottery(**lot):
    from shifter_tf.config.schema import from_dict
    return from_dict({"train": {"epochs": 6},
                      "lottery": {"levels": 11, "prune_fraction": 0.3, **lot}}, "c.yaml")


def test_budget_gives_each_level_the_longest_share_that_fits():
    from shifter_tf.config.schema import lottery_epochs
    ep = lottery_epochs(_lottery(budget=3))
    assert (ep.dense, ep.level, ep.total) == (6, 1, 17)            # 6 + 11 x 1 <= 18
    ep = lottery_epochs(_lottery(budget=3, levels=4))
    assert (ep.level, ep.total) == (3, 18)
    ep = lottery_epochs(_lottery(budget=3, dense_epochs=10, levels=5))
    assert (ep.dense, ep.level, ep.total) == (10, 4, 30)
    ep = lottery_epochs(_lottery(level_epochs=2))                  # explicit, no budget
    assert (ep.level, ep.total) == (2, 28)
    ep = lottery_epochs(_lottery())                                # the 12x default
    assert (ep.level, ep.total) == (6, 72)


def test_named_cheap_recipe_fits_three_dense_trainings():
    from shifter_tf.config.schema import lottery_epochs
    cfg = _lottery(recipe="cheap")
    ep = lottery_epochs(cfg)
    assert ep.total <= 3 * ep.dense and ep.level >= 1
    assert cfg.lottery.structure == "filters" and cfg.lottery.rewind == "lr"
    # a key the config gives wins over the recipe
    assert lottery_epochs(_lottery(recipe="cheap", budget=None)).total == 72


@pytest.mark.parametrize("lot,key,words", [
    ({"level_epochs": 0}, "lottery.level_epochs", "must be >= 1"),
    ({"budget": 0.5}, "lottery.budget", "must be >= 1"),
    ({"budget": 3, "levels": 13}, "lottery.budget",
     "leave 12 for 13 sparse levels, less than 1 epoch each"),
    ({"budget": 3, "level_epochs": 2}, "lottery.level_epochs",
     "6 + 11 levels x 2 epochs = 28 epochs is over lottery.budget's 3 x 6"),
    ({"budget": "three"}, "lottery.budget", "expected float"),
])
def test_short_level_keys_are_checked(lot, key, words):
    with pytest.raises(ConfigError) as e:
        _lottery(**lot)
    assert str(e.value).replace("c.yaml: ", "c.yaml:").startswith(f"c.yaml:{key}: ")
    assert words in str(e.value)
