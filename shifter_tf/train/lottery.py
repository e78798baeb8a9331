"""Sparse portfolio training: iterative magnitude pruning (IMP) with lottery-ticket rewinding.

Level 0 trains the dense model and keeps θ_k, the weights after k iterations. Level ℓ ≥ 1
allocates density (1-p)^ℓ over all prunable kernels by one global magnitude threshold on the
weights level ℓ-1 ended with, rewinds to θ_k, and trains again with tfmot's wrappers holding the
masks. In `polynomial` mode each layer starts from its previous mask and tfmot's PolynomialDecay
ramps it to its allocated sparsity during the level; in `oneshot` mode the new global masks are
set at the start and held fixed (classic IMP). Either way a weight pruned once stays pruned.

Layout of a run folder (each level written atomically, so a killed run resumes cleanly):
    RUN/config.yaml          the config the run was started with
    RUN/rewind.npz           θ_k, every weight of the model by layer
    RUN/levels/level_XX/     model.keras (tfmot stripped, zeros in place), masks.npz, metrics.json
    RUN/lottery.json         the per-level table so far
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

import shifter_tf  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tqdm.auto import tqdm

from shifter_tf.distributed import cluster
from shifter_tf.train import engine, groups, magnitude, structure, wrappers
from shifter_tf.train import steps as steps_
from shifter_tf.graph.layer_kinds import ends_with_softmax
from shifter_tf.train.rewind import (CaptureRewind, get_weights, load_weights, rewind_step,
                                     save_weights, set_weights)
from shifter_tf.train.trainer import SparseTrainer
from shifter_tf.config.schema import Config, level_lr, lottery_epochs, save_config
from shifter_tf.train.resume import check_resume as resume_check, record_changes
from shifter_tf.train.sanity import check_dense
from shifter_tf.errors import ConfigError
from shifter_tf.data.sets import Dataset, Normalization, model_normalizes
from shifter_tf.data.loaders import load_dataset
from shifter_tf.util.io import atomic_dir, atomic_write_json, run_lock
from shifter_tf.util.tables import markdown_table
from shifter_tf.models import iter_layers, model_for

sparsity = tfmot.sparsity.keras


@dataclass
class LevelResult:
    """What one IMP level produced; one row of the portfolio table."""
    level: int
    target_density: float
    density: float
    layer_density: dict[str, float]
    zero_filters: dict[str, int]
    filters: dict[str, int]
    train_seconds: float
    epochs: int
    val_accuracy: float
    test_accuracy: float
    threshold: Optional[float] = None
    # Weights tfmot re-picked that an earlier level had pruned: always 0 now that KeepPruned
    # zeroes them before tfmot ranks; kept so metrics.json of earlier runs still load.
    resurrected: int = 0
    allocated: dict[str, int] = field(default_factory=dict)   # weights the allocation gave
    killed_filters: dict[str, int] = field(default_factory=dict)   # by the structure step
    history: dict = field(default_factory=dict)


# ---------------------------------------------------------------- model and weights by name
def make_model(cfg: Config, data: Dataset) -> keras.Model:
    """The config's model checked against the data: a zoo builder, or the user's file (Lambda
    and custom objects refused unless `model.unsafe`)."""
    return model_for(cfg.model, data.input_shape, data.num_classes)


NORM_FILE = "normalization.json"


def run_data(cfg: Config, run: Path, data=None):
    """The run's data with the normalisation it trained with (recorded in NORM_FILE), so later
    phases and resumed runs need no statistics pass and normalise exactly alike."""
    path = Path(run) / NORM_FILE
    recorded = Normalization.from_dict(json.loads(path.read_text())) if path.exists() else None
    if data is None:
        return load_dataset(cfg.data, cfg.seed, recorded)
    return data if recorded is None else data.with_norm(recorded)


def _record_norm(cfg: Config, run: Path, data):
    """At a run's start: a model with its own Rescaling/Normalization takes the inputs as they
    are (`source: model`); the choice is written to the run for every later phase."""
    if not (Path(run) / NORM_FILE).exists():
        if data.norm.on_device and model_normalizes(make_model(cfg, data)):
            data = data.with_norm(Normalization.identity("model", data.input_shape[-1]))
        atomic_write_json(Path(run) / NORM_FILE, data.norm.to_dict())
    return data


def level_dir(run: Path, level: int) -> Path:
    return Path(run) / "levels" / f"level_{level:02d}"


def load_level_model(run: Path, level: int) -> keras.Model:
    """The trained (stripped, sparse) model of a finished level."""
    path = level_dir(run, level) / "model.keras"
    if not path.exists():
        raise FileNotFoundError(f"{path}: level {level} has not finished in run {run}")
    return keras.models.load_model(path, compile=False, safe_mode=False)


def finished_levels(run: Path) -> list[int]:
    root = Path(run) / "levels"
    if not root.exists():
        return []
    return sorted(int(p.name.split("_")[1]) for p in root.glob("level_*")
                  if (p / "metrics.json").exists())


def load_results(run: Path) -> list[LevelResult]:
    return [LevelResult(**json.loads((level_dir(run, l) / "metrics.json").read_text()))
            for l in finished_levels(run)]


# ---------------------------------------------------------------- one level
def prepare_level(cfg: Config, model: keras.Model, names: list[str], level: int,
                  rewind: dict, prev_model: keras.Model, prev_masks: magnitude.Masks, steps: int,
                  trainer: Optional[SparseTrainer] = None
                  ) -> tuple[keras.Model, magnitude.Masks, float, magnitude.Masks, dict]:
    """Allocate level `level`'s masks globally, rewind `model` to θ_k and wrap it with tfmot.

    Returns the wrapped model (weights θ_k * starting mask), the allocated masks, the global
    threshold, the allowed set (the weights this level may keep: the previous masks, minus the
    filters the structure step kills) and the filters killed per layer. In oneshot mode
    training starts from the allocated masks; in polynomial mode from the allowed set, and
    tfmot ramps each layer to its allocated sparsity.
    """
    target = (1.0 - cfg.lottery.prune_fraction) ** level
    prev_kernels = magnitude.kernels(prev_model, names)
    allowed, killed = prev_masks, {}
    if cfg.lottery.structure == "filters":
        graph = structure.channel_graph(model, names)
        prev_layers = {l.name: l for l in iter_layers(prev_model)}
        gammas = {p: prev_layers[bn].gamma.numpy() for p, bn in graph.bn.items()
                  if getattr(prev_layers.get(bn), "gamma", None) is not None}
        allowed, killed = structure.structured_allowed(cfg.lottery.filter_fraction, prev_kernels,
                                               prev_masks, graph, gammas,
                                               magnitude.classifier_name(model))
    elif cfg.lottery.structure == "groups":
        lt = cfg.lottery
        allowed, killed = groups.structured_allowed(model, prev_model, names, prev_masks,
                                                    lt.filter_fraction, lt.group_cost,
                                                    lt.min_width, lt.min_channels)
    new_masks, threshold = magnitude.global_allocation(prev_kernels, allowed, target, clip=True)
    # weight rewinding (the paper's): survivors restart from θ_k; learning-rate rewinding
    # (Renda et al. 2020): they keep the values the previous level trained, the LR schedule
    # restarts. Either way the masks, not the weights, are what a level inherits.
    set_weights(model, rewind if cfg.lottery.rewind == "weights" else get_weights(prev_model))
    if trainer is not None:       # `model` is the trainer's: assign the level, trace nothing
        trainer.start_level(allowed, new_masks, steps)
        return trainer.wrapped, new_masks, threshold, allowed, killed
    schedules = {n: wrappers.schedule(cfg, 1.0 - float(allowed[n].mean()),
                              1.0 - float(new_masks[n].mean()), steps) for n in names}
    wrapped = wrappers.wrap(model, schedules)
    wrappers.assign_masks(wrapped, new_masks if cfg.lottery.schedule == "oneshot" else allowed)
    return wrapped, new_masks, threshold, allowed, killed


def level_recipe(cfg: Config, level: int):
    """The training recipe of one level: level 0 `train` stretched to `lottery.dense_epochs`;
    a sparse level of `lottery.level_epochs` (or the `budget`'s share) runs the tail of the
    schedule (LR rewinding, Renda et al.) or all of it compressed (`lottery.level_lr`)."""
    ep = lottery_epochs(cfg)
    if level == 0:
        return engine.scaled(cfg.train, ep.dense)
    if level_lr(cfg.lottery) == "tail":
        return engine.tail(cfg.train, ep.level)
    return engine.scaled(cfg.train, ep.level)


def level_teacher(cfg: Config, teacher: Optional[keras.Model]) -> Optional[steps_.Teacher]:
    """What a sparse level distils from: the dense model, when `lottery.distill` > 0."""
    if not cfg.lottery.distill:
        return None
    if teacher is None:
        raise ValueError("lottery.distill: a sparse level needs the dense level as its teacher")
    return steps_.Teacher(teacher, cfg.lottery.distill, cfg.lottery.distill_temperature,
                          ends_with_softmax(teacher))


@dataclass
class LevelSetup:
    """A level ready to fit: `model` (plain), `trained` (level 0: `model`, else tfmot-wrapped;
    strip this one), `fit_model` (what fit trains: `trained` or a HookedModel over it)."""
    level: int
    recipe: Any
    names: list[str]
    model: keras.Model
    trained: keras.Model
    fit_model: keras.Model
    callbacks: list
    new_masks: magnitude.Masks
    allowed: Optional[magnitude.Masks] = None
    threshold: Optional[float] = None
    killed: dict = field(default_factory=dict)
    capture: Optional[CaptureRewind] = None
    rewind: Optional[dict] = None


def setup_level(cfg: Config, data: Dataset, level: int, rewind: Optional[dict],
                prev_model: Optional[keras.Model], prev_masks: Optional[magnitude.Masks],
                strategy: tf.distribute.Strategy, hooks_in_step: bool = True,
                cache: Optional[dict] = None, teacher: Optional[keras.Model] = None
                ) -> LevelSetup:
    """Build, wrap and compile one level; sparse holding runs in the train step (`steps`; not
    with `hooks_in_step=False`), and with a `cache` (a dict the run keeps) sparse levels reuse
    one compiled `trainer.SparseTrainer` instead of tracing a new step. A sparse level distils
    from `teacher` (the dense level) when `lottery.distill` > 0."""
    recipe = level_recipe(cfg, level)
    spe = engine.steps_per_epoch(data, recipe.batch_size)
    steps = spe * recipe.epochs
    reuse = level > 0 and cache is not None and hooks_in_step and SparseTrainer.supports(cfg)
    trainer = cache.get("trainer") if reuse else None
    trainer = trainer if trainer and trainer.matches(recipe, spe) else None
    if trainer is None:   # (reused: nothing random is built; a reseed clears TF's kernel cache)
        keras.utils.set_random_seed(cfg.seed + level)
    with strategy.scope():
        model = trainer.model if trainer else make_model(cfg, data)
        names = magnitude.prunable_layers(model, cfg.lottery.exclude_classifier,
                                  cfg.lottery.exclude_layers)
        s = LevelSetup(level, recipe, names, model, model, model, [], {}, rewind=rewind)
        if reuse and trainer is None:
            trainer = cache["trainer"] = SparseTrainer(cfg, model, names, recipe, spe, strategy,
                                                       level_teacher(cfg, teacher))
        if level == 0:
            say = cfg.lottery.structure == "filters" and structure.reach_warning(model, names)
            if say:
                warnings.warn(say, stacklevel=2)
            s.new_masks = {n: np.ones(w.shape, bool)
                           for n, w in magnitude.kernels(model, names).items()}
            k = rewind_step(cfg, data)
            if k == 0:
                s.rewind = get_weights(model)
            else:
                s.capture = CaptureRewind(model, k)
                s.callbacks.append(s.capture)
        else:
            s.trained, s.new_masks, s.threshold, s.allowed, s.killed = prepare_level(
                cfg, model, names, level, rewind, prev_model, prev_masks, steps, trainer)
            s.callbacks.append(sparsity.UpdatePruningStep())
            if trainer is not None:
                s.fit_model = trainer.fit_model       # compiled already
                return s
            keep = wrappers.KeepPruned(s.trained, s.allowed)
            hold = None
            if cfg.lottery.structure == "filters":
                dead = {n: ~structure.filter_alive(m) for n, m in s.allowed.items()}
                hold = structure.HoldDeadChannels(structure.hold_pairs(model, dead))
            elif cfg.lottery.structure == "groups":
                hold = groups.HoldDeadGroups.for_level(model, s.allowed)
            if hooks_in_step:
                if hold is not None:
                    hold.hold()   # its on_train_begin
                s.fit_model = steps_.hooked(s.trained, begin=[keep.zero_disallowed],
                                            end=[keep.and_masks] + ([hold.hold] if hold else []),
                                            teacher=level_teacher(cfg, teacher))
            else:
                s.callbacks += [keep] + ([hold] if hold else [])
                s.fit_model = steps_.hooked(s.trained, teacher=level_teacher(cfg, teacher))
        if cfg.lottery.gamma_l1:
            s.fit_model.add_loss(structure.gamma_l1_loss(model, cfg.lottery.gamma_l1))
        engine.compile_model(s.fit_model, recipe, spe)
    return s


def train_level(cfg: Config, data: Dataset, level: int, rewind: Optional[dict],
                prev_model: Optional[keras.Model], prev_masks: Optional[magnitude.Masks],
                strategy: tf.distribute.Strategy, user_callbacks: Sequence = (),
                hooks_in_step: bool = True, cache: Optional[dict] = None,
                teacher: Optional[keras.Model] = None
                ) -> tuple[keras.Model, magnitude.Masks, LevelResult, Optional[dict]]:
    """Train one IMP level; returns the stripped model, its masks, metrics and θ_k (level 0)."""
    s = setup_level(cfg, data, level, rewind, prev_model, prev_masks, strategy, hooks_in_step,
                    cache, teacher)
    target = (1.0 - cfg.lottery.prune_fraction) ** level
    fit = engine.fit(s.fit_model, data, s.recipe, seed=cfg.seed + level,
                     what=f"level {level} (density {target:.4f})",
                     callbacks=[*s.callbacks, *user_callbacks])
    model, masks, rewind = s.model, s.new_masks, s.rewind
    if level > 0:
        for name, w in wrappers.wrappers(s.trained).items():
            weight, mask, _ = w.pruning_vars[0]
            m = magnitude.finish_mask(mask.numpy().astype(bool), np.abs(weight.numpy()),
                                      s.allowed[name], int(s.new_masks[name].sum()))
            mask.assign(m.astype(np.float32))
            weight.assign(weight * mask)
        masks = {n: w.pruning_vars[0][1].numpy().astype(bool)
                 for n, w in wrappers.wrappers(s.trained).items()}
        t = (cache or {}).get("trainer")
        model = t.stripped() if t and t.wrapped is s.trained else sparsity.strip_pruning(s.trained)
    if s.capture is not None:
        if s.capture.weights is None:
            raise ConfigError(f"lottery.rewind: rewind point {rewind_step(cfg, data)} iterations "
                              f"is beyond level 0's {fit.steps} iterations")
        rewind = s.capture.weights
    engine.recalibrate_bn(model, data, s.recipe)
    result = LevelResult(
        level=level, target_density=target, density=magnitude.density(masks),
        train_seconds=fit.seconds, epochs=s.recipe.epochs,
        val_accuracy=engine.evaluate(model, data, "val"),
        test_accuracy=engine.evaluate(model, data, "test"),
        threshold=s.threshold,
        allocated={n: int(m.sum()) for n, m in s.new_masks.items()}, killed_filters=s.killed,
        history={k: [float(v) for v in vs] for k, vs in fit.history.items()},
        **magnitude.layer_stats(model, s.names, masks))
    return model, masks, result, rewind


def _save_level(run: Path, model: keras.Model, masks: magnitude.Masks, result: LevelResult) -> None:
    def fill(tmp: Path):
        model.save(tmp / "model.keras")
        magnitude.save_masks(tmp / "masks.npz", masks)
        (tmp / "metrics.json").write_text(json.dumps(asdict(result), indent=2))
    atomic_dir(level_dir(run, result.level), fill,
               what=f"level {result.level} (model.keras, masks.npz, metrics.json)")


# ---------------------------------------------------------------- the run
def run_lottery(cfg: Config, run: str | Path, resume: bool = False,
                data: Optional[Dataset] = None, progress: bool = True,
                stop_after: Optional[int] = None,
                on_level: Optional[Callable[[LevelResult], None]] = None,
                callbacks: Sequence = (), allow_changed_recipe: bool = False
                ) -> list[LevelResult]:
    """Train levels 0..cfg.lottery.levels into `run`, resuming after the last finished level.

    `stop_after` ends the run after that level (used to emulate an interruption in tests);
    `callbacks` (tf_keras) are passed to every level's fit. Resuming with a config that trains
    differently is refused unless `allow_changed_recipe` (then recorded; `train.resume`).
    A level 0 that did not learn stops the run before it is saved (`train.sanity`).
    """
    strategy = engine.make_strategy(cfg.train.strategy, cfg.train.peer_timeout)
    run = cluster.local_run(run, strategy, cfg.to_dict())   # not the chief: a temporary copy
    run.mkdir(parents=True, exist_ok=True)
    with run_lock(run):    # a second process on the same folder is refused, not interleaved
        return _run_levels(cfg, run, resume, data, progress, stop_after, on_level, callbacks,
                           allow_changed_recipe, strategy)


def _run_levels(cfg, run, resume, data, progress, stop_after, on_level, callbacks,
                allow_changed_recipe, strategy) -> list[LevelResult]:
    done = finished_levels(run)
    if done and not resume:
        raise FileExistsError(f"{run}: holds finished levels {done}; pass --resume to continue "
                              "or choose another --out")
    changes = resume_check(cfg, run, allow_changed_recipe) if resume else {}
    save_config(cfg, run / "config.yaml")
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    data = _record_norm(cfg, run, run_data(cfg, run, data))
    results = [r for r in load_results(run) if r.level in done]
    prev_model = prev_masks = rewind = None
    if done:
        last = done[-1]
        if done != list(range(last + 1)):
            raise RuntimeError(f"{run}/levels: levels {done} are not contiguous")
        prev_model = load_level_model(run, last)
        prev_masks = magnitude.load_masks(level_dir(run, last) / "masks.npz")
        rewind = load_weights(run / "rewind.npz")
    teacher = None     # lottery.distill: the dense level, what every sparse level learns from
    if done and cfg.lottery.distill:
        with strategy.scope():
            teacher = load_level_model(run, 0)
    first = (done[-1] + 1) if done else 0
    record_changes(run, changes, first, cfg.lottery.levels)
    bar = tqdm(range(first, cfg.lottery.levels + 1), desc="IMP levels", unit="level",
               initial=first, total=cfg.lottery.levels + 1, disable=not progress)
    cache: dict = {}       # the sparse levels' compiled trainer, reused (trainer.py)
    for level in bar:
        model, masks, result, rewind = train_level(cfg, data, level, rewind, prev_model,
                                                   prev_masks, strategy, callbacks, cache=cache,
                                                   teacher=teacher)
        cluster.check_identical(strategy, f"level {level}", masks=masks, threshold=result.threshold)
        if level == 0:
            check_dense(cfg, data, result.test_accuracy, run)
            save_weights(run / "rewind.npz", rewind)
            teacher = model if cfg.lottery.distill else None
        _save_level(run, model, masks, result)
        results.append(result)
        atomic_write_json(run / "lottery.json", [asdict(r) for r in results])
        bar.set_postfix(density=f"{result.density:.3f}", test=f"{result.test_accuracy:.3f}")
        if on_level:
            on_level(result)
        prev_model, prev_masks = model, masks
        if stop_after is not None and level >= stop_after:
            break
    return results


def level_table(results: list[LevelResult]) -> str:
    """The per-level table as Markdown."""
    rows = [[str(r.level), f"{r.density:.4f}", f"{r.val_accuracy:.4f}", f"{r.test_accuracy:.4f}",
             " ".join(str(v) for v in r.zero_filters.values()), f"{r.train_seconds:.1f}"]
            for r in results]
    return markdown_table(["level", "density", "val acc", "test acc", "zero filters (per conv)",
                           "train s"], rows, "rrrrlr")
