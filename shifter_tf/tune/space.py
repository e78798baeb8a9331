"""The search space of `shifter-tf tune`: the config's `tune:` section parsed and checked, and
the config of each trial (the rules are in `shifter_tf.tune.search`'s docstring).

Plain config work: no keras-tuner or TensorFlow here.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from shifter_tf.config.schema import Config, LotteryConfig, TrainConfig, from_dict
from shifter_tf.errors import ConfigError

ALGORITHMS = ("random", "bayesian", "hyperband")
TUNE_KEYS = ("algorithm", "max_trials", "target_density", "num_initial_points",
             "hyperband_factor", "space")
SPEC_KEYS = ("min", "max", "step", "sampling", "values")
SAMPLINGS = ("linear", "log", "reverse_log")
SECTIONS = {"train": TrainConfig, "lottery": LotteryConfig}
NOT_TUNABLE = {"lottery.levels": "set per trial from tune.target_density and the prune fraction",
               "lottery.target_density": "use tune.target_density",
               "train.verbose": "not a recipe setting"}


@dataclass
class Param:
    """One dimension of the space: a config key and either a [min, max] range or values."""
    key: str
    type: type                       # int | float | str | bool: the config field's type
    values: Optional[list] = None
    min: Optional[float] = None
    max: Optional[float] = None
    step: Optional[float] = None
    sampling: str = "linear"

    def bounds(self) -> tuple[Any, Any]:
        """Smallest and largest value this dimension can take."""
        return (min(self.values), max(self.values)) if self.values is not None else \
            (self.min, self.max)


@dataclass
class TuneSpec:
    """The validated `tune:` section."""
    algorithm: str
    max_trials: int
    target_density: float
    space: dict[str, Param] = field(default_factory=dict)
    num_initial_points: Optional[int] = None
    hyperband_factor: int = 3

    def epoch_range(self, base: Config) -> tuple[int, int]:
        """Smallest and largest epochs per level a trial can get."""
        if "train.epochs" in self.space:
            lo, hi = self.space["train.epochs"].bounds()
            return int(lo), int(hi)
        if self.algorithm == "hyperband":
            return 1, base.train.epochs
        return base.train.epochs, base.train.epochs


# ---------------------------------------------------------------- parsing and validation
def _field_type(key: str) -> Optional[type]:
    """The scalar type of config field `section.name`, or None if there is no such field."""
    section, _, name = key.partition(".")
    cls = SECTIONS.get(section)
    if cls is None or not name or "." in name:
        return None
    tp = typing.get_type_hints(cls).get(name)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:           # Optional[X]
        tp = args[0] if len(args) == 1 else None
    return tp if tp in (int, float, str, bool) else None


def _number(v: Any, tp: type, where: str) -> Any:
    if tp is float and isinstance(v, str):
        try:           # YAML 1.1 reads "1e-4" as a string
            v = float(v)
        except ValueError:
            pass
    if tp is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if type(v) is not tp:
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(v).__name__} {v!r}")
    return v


def _parse_param(key: str, spec: Any, where: str) -> Param:
    if key in NOT_TUNABLE:
        raise ConfigError(f"{where}: not tunable ({NOT_TUNABLE[key]})")
    tp = _field_type(key)
    if tp is None:
        tunable = sorted(f"{s}.{n}" for s, c in SECTIONS.items()
                         for n in typing.get_type_hints(c)
                         if _field_type(f"{s}.{n}") and f"{s}.{n}" not in NOT_TUNABLE)
        raise ConfigError(f"{where}: unknown key (tunable: {', '.join(tunable)})")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping {{min, max}} or {{values: [...]}}, "
                          f"got {spec!r}")
    for k in spec:
        if k not in SPEC_KEYS:
            raise ConfigError(f"{where}.{k}: unknown key (known: {', '.join(SPEC_KEYS)})")
    if "values" in spec:
        extra = sorted(set(spec) - {"values"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: give either values or min/max, not both")
        vals = spec["values"]
        if not isinstance(vals, list):
            raise ConfigError(f"{where}.values: expected a list, got {vals!r}")
        if not vals:
            raise ConfigError(f"{where}.values: empty range (no values)")
        vals = [_number(v, tp, f"{where}.values[{i}]") for i, v in enumerate(vals)]
        return Param(key, tp, values=list(dict.fromkeys(vals)))
    if tp not in (int, float):
        raise ConfigError(f"{where}: a {tp.__name__} field takes {{values: [...]}}")
    for k in ("min", "max"):
        if k not in spec:
            raise ConfigError(f"{where}.{k}: missing (a range needs min and max, "
                              "or give values: [...])")
    lo, hi = _number(spec["min"], tp, f"{where}.min"), _number(spec["max"], tp, f"{where}.max")
    if lo > hi:
        raise ConfigError(f"{where}: empty range (min {lo} > max {hi})")
    step = None if spec.get("step") is None else _number(spec["step"], tp, f"{where}.step")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}.step: must be > 0, got {step}")
    sampling = spec.get("sampling", "linear")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"{where}.sampling: must be one of {', '.join(SAMPLINGS)}, "
                          f"got {sampling!r}")
    if sampling != "linear" and lo <= 0:
        raise ConfigError(f"{where}.sampling: {sampling} sampling needs min > 0, got {lo}")
    if sampling != "linear" and step is not None:
        raise ConfigError(f"{where}.step: not with {sampling} sampling")
    if lo == hi:
        return Param(key, tp, values=[lo])
    return Param(key, tp, min=lo, max=hi, step=step, sampling=sampling)


def parse_spec(cfg: Config, source: str = "<config>") -> TuneSpec:
    """Validate `cfg.tune`; errors name `source` and the key, e.g. `tune.space.train.lrr`."""
    t = cfg.tune or {}

    def bad(key: str, msg: str):
        raise ConfigError(f"{source}: {key}: {msg}")

    for k in t:
        if k not in TUNE_KEYS:
            bad(f"tune.{k}", f"unknown key (known: {', '.join(TUNE_KEYS)})")
    algorithm = t.get("algorithm", "random")
    if algorithm not in ALGORITHMS:
        bad("tune.algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    max_trials = t.get("max_trials", 10)
    if type(max_trials) is not int or max_trials < 1:
        bad("tune.max_trials", f"must be an integer >= 1, got {max_trials!r}")
    td = t.get("target_density")
    if td is None:
        td = final_density(cfg)
    if isinstance(td, bool) or not isinstance(td, (int, float)) or not 0.0 < td <= 1.0:
        bad("tune.target_density", f"must be a number in (0, 1], got {td!r}")
    nip = t.get("num_initial_points")
    if nip is not None and (type(nip) is not int or nip < 1):
        bad("tune.num_initial_points", f"must be an integer >= 1, got {nip!r}")
    factor = t.get("hyperband_factor", 3)
    if type(factor) is not int or factor < 2:
        bad("tune.hyperband_factor", f"must be an integer >= 2, got {factor!r}")
    space_in = t.get("space")
    if not isinstance(space_in, dict) or not space_in:
        bad("tune.space", "empty: declare at least one key, e.g. train.lr: {min: 0.01, max: 0.2}")
    space = {}
    for key, spec in space_in.items():
        where = f"tune.space.{key}"
        try:
            space[key] = _parse_param(str(key), spec, where)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    spec = TuneSpec(algorithm, max_trials, float(td), space, nip, factor)
    _check_combinations(cfg, spec, source)
    return spec


def _check_combinations(cfg: Config, spec: TuneSpec, source: str) -> None:
    """Every declared value must make a valid config, and the rewind point must fit level 0."""
    sp = spec.space
    if "lottery.rewind_epochs" in sp and "lottery.rewind_iterations" in sp:
        raise ConfigError(f"{source}: tune.space.lottery.rewind_iterations: mutually exclusive "
                          "with tune.space.lottery.rewind_epochs; declare one")
    if spec.algorithm == "hyperband" and "train.epochs" in sp and sp["train.epochs"].values \
            and len(sp["train.epochs"].values) > 1:
        raise ConfigError(f"{source}: tune.space.train.epochs: hyperband needs a {{min, max}} "
                          "range (epochs are its resource)")
    for key, p in sp.items():
        for v in (p.values if p.values is not None else [p.min, p.max]):
            try:
                trial_config(cfg, {key: v}, spec.target_density, "<check>")
            except ConfigError as e:
                msg = str(e).split(": ", 1)[-1]
                raise ConfigError(f"{source}: tune.space.{key}: value {v!r}: {msg}") from None
    rewind = sp.get("lottery.rewind_epochs")
    hi_rewind = rewind.bounds()[1] if rewind else (
        None if "lottery.rewind_iterations" in sp else cfg.lottery.rewind_epochs)
    lo_epochs = spec.epoch_range(cfg)[0]
    if hi_rewind is not None and hi_rewind > lo_epochs:
        key = "lottery.rewind_epochs" if rewind else "train.epochs"
        raise ConfigError(f"{source}: tune.space.{key}: rewind point {hi_rewind} epochs is beyond "
                          f"level 0 when a trial trains {lo_epochs} epochs per level")


# ---------------------------------------------------------------- trial configs
def final_density(cfg: Config) -> float:
    """The deepest density the config's portfolio is meant to reach."""
    lt = cfg.lottery
    return lt.target_density if lt.target_density is not None else \
        (1.0 - lt.prune_fraction) ** lt.levels


def levels_for(density: float, prune_fraction: float) -> int:
    """Fewest IMP levels with (1-p)^levels <= density."""
    if density >= 1.0:
        return 0
    return max(0, math.ceil(math.log(density) / math.log(1.0 - prune_fraction) - 1e-9))


def trial_config(base: Config, values: dict[str, Any], target_density: float,
                 source: str = "<tune trial>") -> Config:
    """`base` with `values` (dotted keys) applied and IMP levels set to reach `target_density`."""
    d = base.to_dict()
    for key, v in values.items():
        section, name = key.split(".", 1)
        d[section][name] = v
    if "lottery.rewind_epochs" in values:
        d["lottery"]["rewind_iterations"] = None
    if "lottery.rewind_iterations" in values:
        d["lottery"]["rewind_epochs"] = None
    if "train.epochs" in values and d["train"]["epochs"] != base.train.epochs:
        scale = d["train"]["epochs"] / base.train.epochs
        d["train"]["milestones"] = [m * scale for m in base.train.milestones]
    p = d["lottery"]["prune_fraction"]
    if isinstance(p, (int, float)) and 0.0 < p < 1.0:    # else from_dict names the bad value
        d["lottery"]["levels"] = levels_for(target_density, p)
    d["lottery"]["target_density"] = float(target_density)
    d["tune"] = {}
    return from_dict(d, source)


def trial_values(spec: TuneSpec, base: Config, hp_values: dict[str, Any]) -> dict[str, Any]:
    """Config values of a keras-tuner trial (hyperband's epoch budget becomes train.epochs)."""
    out = {k: v for k, v in hp_values.items() if k in spec.space}
    if "tuner/epochs" in hp_values:
        lo, hi = spec.epoch_range(base)
        out["train.epochs"] = int(min(hi, max(lo, hp_values["tuner/epochs"])))
    return out
