"""Settings of a Reconvene / pruning-at-initialisation run: the `pai:` section of a config
(`shifter_tf.config.schema.PaiConfig`), checked with the same messages as a config file."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from shifter_tf.config.schema import (PAI_METHODS as METHODS, Config, PaiConfig, _build,
                                      load_config, validate_pai)
from shifter_tf.errors import ConfigError

__all__ = ["METHODS", "PaiConfig", "check_settings", "pai_settings", "settings_from",
           "load_pai_config"]


def check_settings(s: PaiConfig, source: str = "<pai>") -> PaiConfig:
    """Raise ConfigError naming `pai.<key>` for a value that cannot be used; return `s`."""
    validate_pai(s, source)
    return s


def pai_settings(values: Any, source: str = "<pai>") -> PaiConfig:
    """A checked PaiConfig from a mapping, a PaiConfig or None (defaults)."""
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
    """The run's PaI settings (`cfg.pai`)."""
    return cfg.pai


def load_pai_config(path: str | Path, overrides: Optional[dict] = None
                    ) -> tuple[Config, PaiConfig]:
    """Load a YAML config and return it with its `pai:` section."""
    cfg = load_config(path, overrides)
    return cfg, cfg.pai
