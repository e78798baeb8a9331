"""Settings of a Reconvene / pruning-at-initialisation run (the `pai:` section of a config).

`PaiConfig` is meant to move into `shifter_tf.config` as `Config.pai`; until it does, a config
file's `pai:` section is read here (`load_pai_config`), strictly, with the same error messages.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from shifter_tf.config import Config, ConfigError, _build, from_dict

METHODS = ("magnitude", "random", "snip", "synflow")
SENSITIVITIES = ("mass", "loss")


try:   # once `shifter_tf.config` has the `pai` section, its dataclass is the one used
    from shifter_tf.config import PaiConfig  # type: ignore[attr-defined]
except ImportError:
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


def check_settings(s: PaiConfig, source: str = "<pai>") -> PaiConfig:
    """Raise ConfigError naming `pai.<key>` for a value that cannot be used; return `s`."""
    def bad(key: str, msg: str):
        raise ConfigError(f"{source}: pai.{key}: {msg}")

    if s.method not in METHODS:
        bad("method", f"unknown method {s.method!r} ({', '.join(METHODS)})")
    if not 0.0 < s.density <= 1.0:
        bad("density", f"must be in (0, 1], got {s.density}")
    if s.sensitivity not in SENSITIVITIES:
        bad("sensitivity", f"unknown sensitivity {s.sensitivity!r} ({', '.join(SENSITIVITIES)})")
    if not 0.0 <= s.budget <= 1.0:
        bad("budget", f"must be in [0, 1] (a fraction of the conv layers), got {s.budget}")
    if s.rounds < 1:
        bad("rounds", f"must be >= 1, got {s.rounds}")
    if s.samples < 1:
        bad("samples", f"must be >= 1, got {s.samples}")
    return s


def pai_settings(values: Any, source: str = "<pai>") -> PaiConfig:
    """A checked PaiConfig from a mapping, a PaiConfig-like dataclass or None (defaults)."""
    if values is None:
        return PaiConfig()
    if isinstance(values, PaiConfig):
        return check_settings(values, source)
    if dataclasses.is_dataclass(values):
        values = dataclasses.asdict(values)
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: pai: expected a mapping, got {type(values).__name__}")
    return check_settings(_build(PaiConfig, values, f"{source}: pai"), source)


def settings_from(cfg: Config) -> PaiConfig:
    """The run's PaI settings: `cfg.pai` once Config has that section, else the defaults."""
    return pai_settings(getattr(cfg, "pai", None))


def load_pai_config(path: str | Path, overrides: Optional[dict] = None
                    ) -> tuple[Config, PaiConfig]:
    """Load a YAML config and its `pai:` section (works before and after Config gains `pai`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for dotted, v in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    if "pai" in {f.name for f in dataclasses.fields(Config)}:
        cfg = from_dict(values, str(path))
        return cfg, settings_from(cfg)
    pai = values.pop("pai", None)
    return from_dict(values, str(path)), pai_settings(pai, str(path))
