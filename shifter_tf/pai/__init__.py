"""Reconvene: structured pruning at initialisation (Eccles, Wong, Varghese, CCGrid 2024).

Score the weights at initialisation (magnitude, random, SNIP, SynFlow), keep a global density,
turn the unstructured masks of the conv layers least sensitive to it into whole-filter masks,
train once with tfmot holding the masks, then rewrite (`shifter_tf.surgery`) and export:

    from shifter_tf.pai import PaiConfig, run_pai
    print(run_pai(cfg, "runs/pai", PaiConfig(method="synflow", density=0.05, baseline=True)))

Modules: `settings` (PaiConfig), `scores` (PaI scores), `reconvene` (sensitivity, conversion,
rectifier), `run` (training, rewrite, export, the run folder).
May import: config, data, models, graph, train, surgery, export (a runner over the phases).
"""
from shifter_tf.pai.reconvene import PaiPlan, prune_at_init
from shifter_tf.pai.run import PaiResult, run_pai
from shifter_tf.pai.settings import METHODS, PaiConfig, load_pai_config, pai_settings

__all__ = ["PaiConfig", "PaiPlan", "PaiResult", "METHODS", "run_pai", "prune_at_init",
           "load_pai_config", "pai_settings"]
