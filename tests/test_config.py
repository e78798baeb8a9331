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
