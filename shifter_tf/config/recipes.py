"""The named training recipes (`lottery.recipe`): the one place the defaults of the lottery phase
come from. A recipe is a set of `lottery:` keys; keys a config gives explicitly win over it.

- `paper`: DNNShifter's plain global-magnitude IMP with weight rewinding to θ_k (the paper's
  recipe; also what a config without `recipe:` gets from the dataclass defaults).
- `structured`: ours, chosen by the Pareto benchmark (`make bench`, bench/RESULTS.md): the filter
  step (15 % of the surviving filters go at each level, so whole filters die from level 1 on) and
  learning-rate rewinding (Renda et al., ICLR 2020). Every level is a whole training: with the
  config's 11 levels, 12x the dense model's epochs. The embedded default and the Python API's
  default for plain chains.
- `groups`: `structured` with the group-level step (`train.groups`): whole channel groups of the
  dependency graph die, so residual, inverted-residual and concatenating networks shed width too
  (the Python API's default for a model whose filters the filter step mostly cannot reach).
  No layer keeps fewer than 20 % of its channels: with 10 % the cost weighting squeezed
  residual streams and VGG's second block to 4 channels behind wide layers, and the deep levels
  lost to narrow models trained from scratch (bench/ARCHS.md, rows g12 and g12w).
- `cheap`: `structured`'s mechanisms at most 3x the dense epochs (`budget`), opt-in until the
  Pareto benchmark has compared it: 4 levels of 40 % with 20 % of the filters each, each level
  the last half of the schedule (budget 3 leaves 2 dense trainings for 4 levels: 3 of 6 epochs,
  LR rewinding to epoch 3; `level_lr: tail`), all levels on one compiled model
  (`train.trainer`). Measured against `structured` and width baselines at equal epochs in
  bench/PARETO.md.
- `cheap_groups`: `cheap`'s budget with the group step, each level freeing 25 % of the
  surviving MACs: the one recipe of the per-architecture benchmark (`tools.bench.archs`,
  bench/ARCHS.md: VGG, ResNet, MobileNetV2 on mnist5k and Fashion-MNIST). It keeps the 10 %
  floor its cached benchmark rows were trained with (4 levels barely reach it).
"""
from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"structure": "none", "filter_fraction": 0.2, "rewind": "weights"},
    "structured": {"structure": "filters", "filter_fraction": 0.15, "rewind": "lr"},
    "cheap": {"structure": "filters", "filter_fraction": 0.2, "rewind": "lr", "budget": 3.0,
              "levels": 4, "prune_fraction": 0.4},
    "groups": {"structure": "groups", "filter_fraction": 0.15, "rewind": "lr", "group_cost": 1.0,
               "min_width": 0.2, "min_channels": 4},
    "cheap_groups": {"structure": "groups", "filter_fraction": 0.25, "rewind": "lr",
                     "group_cost": 1.0, "min_width": 0.1, "min_channels": 4, "budget": 3.0,
                     "levels": 4, "prune_fraction": 0.4},
}
DEFAULT_RECIPE = "structured"   # `shifter_tf.train_portfolio` without a config (plain chains)


def expand(values: dict, source: str) -> dict:
    """`values` (a config mapping) with `lottery.recipe`'s keys filled in where not given."""
    lot = values.get("lottery")
    if not isinstance(lot, dict) or "recipe" not in lot:
        return values
    name = lot["recipe"]
    if name not in RECIPES:
        from shifter_tf.errors import ConfigError
        raise ConfigError(f"{source} lottery.recipe: unknown recipe {name!r} "
                          f"(known: {', '.join(RECIPES)})")
    return {**values, "lottery": {**RECIPES[name], **lot}}
