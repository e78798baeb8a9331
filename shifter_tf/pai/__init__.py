"""Reconvene: structured pruning at initialisation (Eccles, Wong, Varghese, CCGrid 2024).

Score the weights at initialisation (magnitude, random, SNIP, SynFlow), keep a global density,
turn the unstructured masks of the conv layers least sensitive to it into whole-filter masks,
train once with tfmot holding the masks, then rewrite (`shifter_tf.surgery`) and export:

    from shifter_tf.pai import PaiConfig, run_pai
    print(run_pai(cfg, "runs/pai", PaiConfig(method="synflow", density=0.05, baseline=True)))

Modules: `settings` (PaiConfig), `scores` (PaI scores), `reconvene` (sensitivity, conversion,
rectifier), `run` (training, rewrite, export, the run folder).
"""
from shifter_tf.pai.reconvene import LayerDecision, PaiPlan, prune_at_init
from shifter_tf.pai.run import ArmResult, PaiResult, run_arm, run_pai, train_masked
from shifter_tf.pai.scores import PaiError, linearize, score_masks, snip_scores, synflow
from shifter_tf.pai.settings import (METHODS, PaiConfig, load_pai_config, pai_settings,
                                     settings_from)

__all__ = ["PaiConfig", "PaiPlan", "PaiResult", "ArmResult", "LayerDecision", "PaiError",
           "METHODS", "run_pai", "run_arm", "prune_at_init", "train_masked", "score_masks",
           "snip_scores", "synflow", "linearize", "load_pai_config", "pai_settings",
           "settings_from"]
