"""Experiment configuration: YAML files loaded into dataclasses, strictly.

An unknown key, a value of the wrong type or a missing file is a `ConfigError` that names the
file and the dotted key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from shifter_tf.config import recipes, rules
from shifter_tf.config.budget import (LotteryEpochs, level_lr, lottery_epochs,  # noqa: F401
                                      validate_budget)
from shifter_tf.errors import ConfigError  # noqa: F401 (raised here)

_PAPER = recipes.RECIPES["paper"]   # the dataclass defaults are the paper's recipe



@dataclass
class DataConfig:
    """Which data set, how it is split and augmented."""
    name: str = "mnist5k"            # mnist5k | mnist | fashion_mnist | cifar10 | cifar100 | image_folder
    path: Optional[str] = None       # image_folder root, or a local copy of a keras.datasets file
    image_size: Optional[list[int]] = None   # image_folder only: [height, width]
    val_fraction: float = 0.1
    test_fraction: float = 0.2       # mnist5k / image_folder only: others ship their test split
    augment: bool = False            # random crop (pad 4) + horizontal flip, the CIFAR standard
    flip: bool = True                # horizontal flip when augmenting (off for digits)
    normalize: bool = True           # per-channel mean/std from the training split
    limit_train: Optional[int] = None   # take only the first N training examples (tests, smoke)


@dataclass
class ModelConfig:
    """A zoo model by name, or a user's .keras/.h5 file."""
    name: str = "vgg_small"
    path: Optional[str] = None
    unsafe: bool = False             # allow Lambda layers / custom_objects (runs their code)
    kwargs: dict[str, Any] = field(default_factory=dict)   # builder keywords (config_rules)
    custom_objects: list[str] = field(default_factory=list)  # ["my_pkg.layers:Scale"]; unsafe


@dataclass
class TrainConfig:
    """Optimiser and schedule of one training run (one IMP level)."""
    optimizer: str = "sgd"           # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    epochs: int = 5
    batch_size: int = 128
    warmup_epochs: float = 0.0
    milestones: list[float] = field(default_factory=list)   # epochs where lr *= gamma
    gamma: float = 0.1
    label_smoothing: float = 0.0
    # After training, every trainable BatchNormalization's moving mean/variance is recomputed as
    # the plain average over this many training images (0 = keep Keras' running averages).
    bn_recalibration: int = 1024
    strategy: str = "default"        # default | mirrored | multi_worker
    peer_timeout: float = 300.0      # multi_worker: seconds to wait for a peer (join, collective)
    verbose: int = 1                 # Keras progress: 0 silent, 1 bar, 2 line per epoch
    # A user's own compile() (set by the Python API from a compiled model): optimizer, loss and
    # metrics as plain Keras config, rebuilt fresh for each level instead of the recipe above
    # (optimizer, lr, momentum, weight decay, warm-up, milestones, label smoothing).
    compiled: Optional[dict[str, Any]] = None


@dataclass
class LotteryConfig:
    """Iterative magnitude pruning with lottery-ticket rewinding."""
    levels: int = 8                  # sparse levels after the dense level 0
    prune_fraction: float = 0.2      # of the remaining weights, per level
    rewind_iterations: Optional[int] = None   # θ_k: iterations into level 0 ...
    rewind_epochs: Optional[float] = None     # ... or epochs (exactly one may be set; both unset = 0)
    schedule: str = "polynomial"     # polynomial (tfmot PolynomialDecay ramp inside a level) | oneshot
    ramp_fraction: float = 0.5       # polynomial: part of the level's steps over which sparsity ramps
    ramp_frequency: int = 10         # polynomial: steps between mask updates
    exclude_classifier: bool = False
    exclude_layers: list[str] = field(default_factory=list)
    target_density: Optional[float] = None    # error before training if levels/p cannot reach it
    # Structure-inducing sparse training (ours, not the paper's): `filters` removes, at the start
    # of each level, `filter_fraction` of the surviving filters with the lowest layer-relative
    # score (|γ| of the BN after the conv, else the filter's L2 norm) before the global magnitude
    # allocation; their BN γ and β are held at zero so the channel is exactly removable.
    recipe: str = "paper"            # the named recipe the keys below start from (config.recipes)
    rewind: str = _PAPER["rewind"]   # weights (θ_k, the paper's) | lr (keep weights, restart LR)
    dense_epochs: Optional[int] = None   # level 0's epochs (default train.epochs)
    # Short levels (the `cheap` recipe): each sparse level trains `level_epochs` (default
    # train.epochs) with the LR cycle scaled to it; `budget` caps the run's total epochs, dense
    # level included, at budget x level 0's epochs and, without level_epochs, picks the longest
    # level that fits (see `lottery_epochs`).
    level_epochs: Optional[int] = None
    budget: Optional[float] = None
    # A short level's LR: `tail` (the last level_epochs epochs of train's schedule: LR rewinding,
    # Renda et al. 2020) or `scaled` (the whole schedule compressed); default tail with
    # rewind: lr, scaled with rewind: weights (θ_k needs the whole cycle).
    level_lr: Optional[str] = None
    structure: str = _PAPER["structure"]   # none (the paper's plain IMP) | filters
    filter_fraction: float = _PAPER["filter_fraction"]   # structure=filters: per level
    # structure=groups (shifter_tf.train.groups): whole channel groups of the rewriter's dependency
    # graph (residual Add chains, Concatenate, depthwise, Flatten->Dense) are ranked and killed.
    # filter_fraction is then the share of the surviving groups' MACs each level frees.
    group_cost: float = 1.0          # score / (MACs the group frees / mean) ** group_cost
    min_width: float = 0.2           # no layer keeps fewer than this share of its channels...
    min_channels: int = 4            # ... nor fewer than this many (or all it has)
    gamma_l1: float = 0.0            # L1 penalty on BN γ during training (network slimming)
    # Knowledge distillation on sparse levels (Hinton et al. 2015): the loss is (1 - distill) x
    # the recipe's loss + distill x T² x KL(teacher || student) at temperature T, the teacher
    # being the dense level 0. 0 = off.
    distill: float = 0.0
    distill_temperature: float = 4.0


@dataclass
class SurgeryConfig:
    """Structured pruning of each level."""
    min_agreement: float = 0.99      # top-1 agreement pruned vs sparse on the sample batch
    sample_size: int = 256
    force: bool = False
    # > 0: also train each pruned model this many epochs more and deploy it as kind `finetuned`
    # (not lossless, so reported apart from the pruned variants).
    finetune_epochs: int = 0
    finetune_lr: Optional[float] = None   # default: the recipe's final learning rate
    # true: `prune` also writes each pruned model as a Keras 3 file,
    # pruned/level_XX/model_keras3.keras (export keeps reading the tf_keras model.keras).
    keras3: bool = False


@dataclass
class ExportConfig:
    """TFLite conversion and measurement."""
    precisions: list[str] = field(default_factory=lambda: ["fp32"])  # fp32 fp16 int8_dynamic int8
    kinds: list[str] = field(default_factory=lambda: ["dense", "sparse", "pruned"])
    representative_samples: int = 200
    latency_runs: int = 50
    latency_warmup: int = 5
    threads: list[int] = field(default_factory=lambda: [1, 0])  # 0 = all cores
    eval_limit: Optional[int] = None  # evaluate on the first N test examples only
    # Pruned fp32/fp16 variants also get the converter's EXPERIMENTAL_SPARSITY encoding for the
    # zeros the rewrite leaves inside kept filters: a smaller file, the same outputs and speed
    # (the interpreter densifies at load). Not for int8: ai-edge-litert cannot load sparse int8.
    sparse_encoding: bool = True
    # TFLite Model Metadata in every file (name, version, normalisation in raw-pixel units, colour
    # space, output meaning, labels.txt): what Android's Task Library and ML Model Binding read.
    metadata: bool = True
    # Android-ready variants: raw RGB pixels in (a luma front for 1-channel models), the
    # normalisation and a softmax inside the model, uint8 (not int8) in/out of full-integer int8.
    android: bool = False


@dataclass
class PortfolioConfig:
    """What is deployed into RUN/portfolio/ (every level stays in the run either way)."""
    # A level whose test accuracy is more than this below dense, or within noise of chance, is
    # kept in the run and listed in the report as not deployed; null deploys every level.
    max_accuracy_drop: Optional[float] = 0.01
    # Level 0 (dense) below this test accuracy stops the run (training) and the export; a dense
    # model within noise of chance always does (shifter_tf.train.sanity), and no level whose
    # accuracy is within noise of chance is deployed.
    min_dense_accuracy: Optional[float] = None
    # false: a smoke run on too little data carries on with a dense level at chance (tests).
    stop_at_chance: bool = True


@dataclass
class PaiConfig:
    """Structured pruning at initialisation (Reconvene): score, convert, train once."""
    method: str = "synflow"        # magnitude | random | snip | synflow
    density: float = 0.05          # fraction of prunable weights kept, globally
    structured: bool = True        # Reconvene conversion; false = plain unstructured PaI
    sensitivity: str = "mass"      # mass (score per kept weight) | loss (data batch)
    budget: float = 0.5            # at most this fraction of the conv layers is converted
    max_sensitivity: Optional[float] = None   # ... and only layers at or below this
    rectify: bool = True           # repair masks around dead channels, re-init those layers
    rounds: int = 100              # SynFlow iterations (exponential density schedule)
    samples: int = 256             # SNIP / loss-sensitivity batch, from the training split
    exclude_classifier: bool = False
    exclude_layers: list[str] = field(default_factory=list)
    baseline: bool = False         # also train plain unstructured PaI at the same density
    export: bool = True            # TFLite portfolio of the result (cfg.export settings)


PAI_METHODS = ("magnitude", "random", "snip", "synflow")
PAI_SENSITIVITIES = ("mass", "loss")


@dataclass
class Config:
    """One experiment: data -> model -> training -> lottery -> surgery -> export."""
    name: str = "experiment"
    seed: int = 0
    deterministic: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lottery: LotteryConfig = field(default_factory=LotteryConfig)
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    portfolio: PortfolioConfig = field(default_factory=PortfolioConfig)
    pai: PaiConfig = field(default_factory=PaiConfig)
    tune: dict[str, Any] = field(default_factory=dict)   # keras-tuner search space (shifter_tf.tune.search)

    def to_dict(self) -> dict:
        return asdict(self)


def _check(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:   # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where and not where.endswith(":") else where
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in values.items():
        key = f"{where}.{k}" if where and not where.endswith(":") else f"{where}{k}"
        kwargs[k] = _check(v, hints[k], key)
    return cls(**kwargs)


def from_dict(values: dict, source: str = "<dict>") -> Config:
    """Build a Config from a plain mapping; errors name `source` and the dotted key."""
    cfg = _build(Config, recipes.expand(values or {}, f"{source}:"), f"{source}:")
    _validate(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: Optional[dict] = None) -> Config:
    """Load a YAML config file. Relative `data.path` / `model.path` stay relative to the CWD."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    rules.apply_overrides(values, overrides or {})
    return from_dict(values, str(path))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write `cfg` as YAML that `load_config` reads back to an equal Config."""
    from shifter_tf.util.io import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _validate(cfg: Config, source: str) -> None:
    def bad(key, msg):
        raise ConfigError(f"{source}: {key}: {msg}")

    lt = cfg.lottery
    if not 0.0 < lt.prune_fraction < 1.0:
        bad("lottery.prune_fraction", f"must be in (0, 1), got {lt.prune_fraction}")
    if lt.levels < 0:
        bad("lottery.levels", f"must be >= 0, got {lt.levels}")
    if lt.schedule not in ("polynomial", "oneshot"):
        bad("lottery.schedule", f"must be polynomial or oneshot, got {lt.schedule!r}")
    if lt.rewind_iterations is not None and lt.rewind_epochs is not None:
        bad("lottery.rewind_iterations", "set rewind_iterations or rewind_epochs, not both")
    if not 0.0 < lt.ramp_fraction <= 1.0:
        bad("lottery.ramp_fraction", f"must be in (0, 1], got {lt.ramp_fraction}")
    if lt.dense_epochs is not None and lt.dense_epochs < 1:
        bad("lottery.dense_epochs", f"must be >= 1, got {lt.dense_epochs}")
    if lt.level_epochs is not None and lt.level_epochs < 1:
        bad("lottery.level_epochs", f"must be >= 1, got {lt.level_epochs}")
    if lt.budget is not None:
        validate_budget(cfg, bad)
    if lt.level_lr not in (None, "tail", "scaled"):
        bad("lottery.level_lr", f"must be tail or scaled, got {lt.level_lr!r}")
    if level_lr(lt) == "tail" and lottery_epochs(cfg).level > cfg.train.epochs:
        bad("lottery.level_lr", f"tail: a level of {lottery_epochs(cfg).level} epochs is longer "
                                f"than the schedule (train.epochs {cfg.train.epochs}); use "
                                "level_lr: scaled or shorter levels")
    if lt.rewind not in ("weights", "lr"):
        bad("lottery.rewind", f"must be weights or lr, got {lt.rewind!r}")
    if lt.structure not in ("none", "filters", "groups"):
        bad("lottery.structure", f"must be none, filters or groups, got {lt.structure!r}")
    if lt.group_cost < 0:
        bad("lottery.group_cost", f"must be >= 0, got {lt.group_cost}")
    if not 0.0 <= lt.min_width <= 1.0:
        bad("lottery.min_width", f"must be in [0, 1], got {lt.min_width}")
    if lt.min_channels < 1:
        bad("lottery.min_channels", f"must be >= 1, got {lt.min_channels}")
    if not 0.0 <= lt.filter_fraction < 1.0:
        bad("lottery.filter_fraction", f"must be in [0, 1), got {lt.filter_fraction}")
    drop = cfg.portfolio.max_accuracy_drop
    if drop is not None and not 0.0 <= drop <= 1.0:
        bad("portfolio.max_accuracy_drop", f"must be in [0, 1] (a fraction: 0.01 = 1 point), "
                                           f"got {drop}")
    floor = cfg.portfolio.min_dense_accuracy
    if floor is not None and not 0.0 <= floor <= 1.0:
        bad("portfolio.min_dense_accuracy", f"must be in [0, 1] (a fraction: 0.9 = 90 %), "
                                            f"got {floor}")
    if lt.gamma_l1 < 0:
        bad("lottery.gamma_l1", f"must be >= 0, got {lt.gamma_l1}")
    if not 0 <= lt.distill < 1:
        bad("lottery.distill", f"must be in [0, 1) (the distillation term's weight), got {lt.distill}")
    if not lt.distill_temperature > 0:
        bad("lottery.distill_temperature", f"must be > 0, got {lt.distill_temperature}")
    if lt.target_density is not None:
        reachable = (1 - lt.prune_fraction) ** lt.levels
        if reachable > lt.target_density + 1e-12:
            bad("lottery.target_density",
                f"{lt.target_density} is below what {lt.levels} levels at prune_fraction "
                f"{lt.prune_fraction} reach (density {reachable:.4f}); raise lottery.levels or "
                "lottery.prune_fraction")
    tr = cfg.train
    if tr.strategy not in ("default", "mirrored", "multi_worker"):
        bad("train.strategy", f"must be default, mirrored or multi_worker, got {tr.strategy!r}")
    if not tr.peer_timeout > 0:
        bad("train.peer_timeout", f"must be > 0 seconds, got {tr.peer_timeout}")
    if tr.optimizer not in ("sgd", "adam"):
        bad("train.optimizer", f"must be sgd or adam, got {tr.optimizer!r}")
    if tr.epochs < 1:
        bad("train.epochs", f"must be >= 1, got {tr.epochs}")
    if tr.batch_size < 1:
        bad("train.batch_size", f"must be >= 1, got {tr.batch_size}")
    for p in cfg.export.precisions:
        if p not in ("fp32", "fp16", "int8_dynamic", "int8"):
            bad("export.precisions", f"unknown precision {p!r} (fp32, fp16, int8_dynamic, int8)")
    for k in cfg.export.kinds:
        if k not in ("dense", "sparse", "pruned", "finetuned"):
            bad("export.kinds", f"unknown kind {k!r} (dense, sparse, pruned, finetuned)")
    if cfg.surgery.finetune_epochs < 0:
        bad("surgery.finetune_epochs", f"must be >= 0, got {cfg.surgery.finetune_epochs}")
    rules.validate_data(cfg.data, bad)
    rules.validate_model(cfg.model, bad)
    validate_pai(cfg.pai, source)


def validate_pai(s: PaiConfig, source: str) -> None:
    """Raise ConfigError naming `pai.<key>` for a value that cannot be used."""
    def bad(key: str, msg: str):
        raise ConfigError(f"{source}: pai.{key}: {msg}")

    if s.method not in PAI_METHODS:
        bad("method", f"unknown method {s.method!r} ({', '.join(PAI_METHODS)})")
    if not 0.0 < s.density <= 1.0:
        bad("density", f"must be in (0, 1], got {s.density}")
    if s.sensitivity not in PAI_SENSITIVITIES:
        bad("sensitivity", f"unknown sensitivity {s.sensitivity!r} "
                           f"({', '.join(PAI_SENSITIVITIES)})")
    if not 0.0 <= s.budget <= 1.0:
        bad("budget", f"must be in [0, 1] (a fraction of the conv layers), got {s.budget}")
    if s.rounds < 1:
        bad("rounds", f"must be >= 1, got {s.rounds}")
    if s.samples < 1:
        bad("samples", f"must be >= 1, got {s.samples}")
