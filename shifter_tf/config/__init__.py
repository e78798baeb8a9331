"""Configuration: the YAML experiment config as dataclasses (`schema`), its rules (`rules`), the
named training recipes (`recipes`) and TF_CONFIG (`tfconfig`). Phase 0: everything reads it.
May import: `shifter_tf.errors`, `shifter_tf.util`. Never TensorFlow."""
from shifter_tf.config.recipes import RECIPES
from shifter_tf.config.schema import Config, load_config, save_config

__all__ = ["Config", "load_config", "save_config", "RECIPES"]
