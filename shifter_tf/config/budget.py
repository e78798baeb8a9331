"""The epoch budget of a lottery run: epochs of level 0, of each sparse level and in all
(`lottery.budget`, `lottery.level_epochs`), and the rule that checks them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Duck-typed (`Any` below is a `shifter_tf.config.schema.Config` / `LotteryConfig`): schema
# imports this module.


@dataclass(frozen=True)
class LotteryEpochs:
    """Training epochs of a lottery run: level 0, each sparse level, and the whole run."""
    dense: int
    level: int
    levels: int

    @property
    def total(self) -> int:
        return self.dense + self.level * self.levels


def lottery_epochs(cfg: Any) -> LotteryEpochs:
    """Epochs of level 0 (`lottery.dense_epochs`, else train.epochs) and of each sparse level
    (`lottery.level_epochs`, else the longest that keeps the total within `lottery.budget` x
    level 0's epochs, else train.epochs). `_validate` has checked that this is at least 1."""
    lt = cfg.lottery
    dense = lt.dense_epochs or cfg.train.epochs
    level = lt.level_epochs
    if level is None and lt.budget is not None and lt.levels > 0:
        level = int((lt.budget * dense - dense) // lt.levels + 1e-9)
    return LotteryEpochs(dense, cfg.train.epochs if level is None else level, lt.levels)


def level_lr(lt: Any) -> str:
    """`lottery.level_lr`, or its default for the rewind mode."""
    return lt.level_lr or ("tail" if lt.rewind == "lr" else "scaled")


def validate_budget(cfg: Any, bad) -> None:
    """`lottery.budget` must leave each sparse level at least one epoch."""
    lt = cfg.lottery
    if not lt.budget >= 1.0:
        bad("lottery.budget", f"must be >= 1 (total epochs as a multiple of level 0's), "
                              f"got {lt.budget}")
    ep = lottery_epochs(cfg)
    cap = lt.budget * ep.dense
    where = f"{lt.budget:g} x {ep.dense} dense epochs = {cap:g} epochs"
    if lt.level_epochs is None and lt.levels > 0 and ep.level < 1:
        bad("lottery.budget", f"{where} leave {cap - ep.dense:g} for {lt.levels} sparse levels, "
                              "less than 1 epoch each; lower lottery.levels or raise the budget")
    if ep.total > cap + 1e-9:
        bad("lottery.level_epochs", f"{ep.dense} + {lt.levels} levels x {ep.level} epochs = "
                                    f"{ep.total} epochs is over lottery.budget's {where}; lower "
                                    "lottery.level_epochs or lottery.levels, or unset "
                                    "level_epochs to fit the budget")
