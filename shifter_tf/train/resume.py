"""Resuming a run: the config it trained with against the one given now.

RUN/config.yaml is the config the run trains with. `--resume` with a config that changes how a
level trains (seed, data, model, recipe, lottery) is refused in one line naming the keys, since
the remaining levels would not be comparable with the finished ones. `--allow-changed-recipe`
(API: `allow_changed_recipe=True`) accepts it and records it in RUN/recipe_changes.json: which
keys, their old and new values, and the first level trained with them.

Keys that do not change what a level learns may change freely: how it is run and shown
(`train.verbose`, `train.strategy`, `train.peer_timeout`), how far the run goes
(`lottery.levels`, `lottery.target_density`), and everything after training (surgery, export,
portfolio, pai, tune, name).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from shifter_tf.config.schema import Config, load_config
from shifter_tf.errors import ConfigError

TRAINING = ("seed", "deterministic", "data", "model", "train", "lottery")
FREE = {"train.verbose", "train.strategy", "train.peer_timeout", "lottery.levels",
        "lottery.target_density"}
CHANGES_FILE = "recipe_changes.json"
FLAG = "--allow-changed-recipe"


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v and key not in ("model.kwargs", "train.compiled"):
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def training_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} for every key that alters how a level trains."""
    a = {k: v for s in TRAINING for k, v in _flat(old.get(s), s).items()}
    b = {k: v for s in TRAINING for k, v in _flat(new.get(s), s).items()}
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in FREE and a.get(k) != b.get(k)}


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def check_resume(cfg: Config, run: Path, allow: bool = False) -> dict[str, tuple[Any, Any]]:
    """The training changes against RUN/config.yaml; ConfigError unless `allow`. A run with no
    finished level has nothing to compare with: it starts over with the new config."""
    saved = Path(run) / "config.yaml"
    if not saved.exists() or not any((Path(run) / "levels").glob("level_*/metrics.json")):
        return {}
    changes = training_changes(load_config(saved).to_dict(), cfg.to_dict())
    if changes and not allow:
        keys = ", ".join(f"{k} ({_short(a)} -> {_short(b)})" for k, (a, b) in changes.items())
        raise ConfigError(f"{saved}: --resume with a changed recipe: {keys} differ from the "
                          "config this run trained with, so its remaining levels would not be "
                          "comparable; resume with the same config, use a new --out, or pass "
                          f"{FLAG} (recorded in {CHANGES_FILE})")
    return changes


def record_changes(run: Path, changes: dict[str, tuple[Any, Any]], first_level: int,
                   last_level: int) -> Optional[Path]:
    """Append an accepted change to RUN/recipe_changes.json; returns its path."""
    if not changes:
        return None
    import json

    from edge_runtime.manifest import utc_now
    from shifter_tf.util.io import atomic_write_json

    path = Path(run) / CHANGES_FILE
    log = json.loads(path.read_text()) if path.exists() else []
    log.append({"time": utc_now(), "allowed_by": FLAG, "from_level": first_level,
                "levels": list(range(first_level, last_level + 1)),   # this resume trains
                "changes": {k: {"was": a, "now": b} for k, (a, b) in changes.items()}})
    atomic_write_json(path, log)
    return path


def load_changes(run: Path) -> list[dict]:
    """What RUN/recipe_changes.json records (empty if the recipe never changed)."""
    import json

    path = Path(run) / CHANGES_FILE
    return json.loads(path.read_text()) if path.exists() else []
