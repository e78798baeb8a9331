"""`shifter-tf`: the host-side command line. Each subcommand is one phase of the pipeline.

    shifter-tf train  --config C --out RUN [--resume]   phase 1: IMP portfolio training
                      [--allow-changed-recipe]          ... resume with another recipe
                      [--workers N]                     ... as N multi-worker processes here
    shifter-tf prune  RUN                               phase 2: structured pruning of each level
    shifter-tf export RUN [--private-key KEY]           phase 3: TFLite portfolio + manifest
    shifter-tf report RUN                               report.md and plots
    shifter-tf run    --config C --out RUN [--resume]   phases 1-3 and the report in one go
    shifter-tf pai    --config C --out RUN              Reconvene: structured pruning at init
    shifter-tf tune   --config C --out DIR              keras-tuner search over the recipe
    shifter-tf keygen KEY                               Ed25519 key pair to sign portfolios
    shifter-tf sign   PORTFOLIO --private-key KEY       sign an existing portfolio's manifest

Bad input exits non-zero with one readable line, never a TensorFlow traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

import shifter_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def _config(args):
    """Read and check the config (and TF_CONFIG) before TensorFlow loads: a typo costs < 2 s."""
    from shifter_tf.config.schema import load_config
    from shifter_tf.errors import ConfigError
    from shifter_tf.config.rules import check_tf_config, parse_overrides

    cfg = load_config(args.config, parse_overrides(args.set))
    if cfg.train.strategy == "multi_worker":
        if args.command in ("run", "pai"):
            raise ConfigError("train.strategy: multi_worker is for `train` and `tune`; run "
                              "`shifter-tf train` on every worker, then `prune` and `export` "
                              "on the chief")
        check_tf_config()
    if getattr(args, "resume", False):   # a changed recipe is refused before TensorFlow loads
        from shifter_tf.train.resume import check_resume
        check_resume(cfg, Path(args.out), args.allow_changed_recipe)
    return cfg


def _prepare(cfg):
    """Load the data and check the model against it (file, custom objects, input and output
    shapes) before anything is written; returns the data for the phase to reuse."""
    from shifter_tf.data.loaders import load_dataset

    if cfg.train.strategy == "multi_worker":   # before anything starts TensorFlow's runtime
        from shifter_tf.distributed.cluster import strategy
        strategy(cfg.train.peer_timeout)
    data = load_dataset(cfg.data, cfg.seed)
    if cfg.model.path or cfg.model.custom_objects:
        from shifter_tf.models import model_for
        model_for(cfg.model, data.input_shape, data.num_classes)
    return data


def _run_overrides(args, section: str) -> dict:
    """--set for a phase over an existing run: only `section.*` keys, checked before TensorFlow."""
    from shifter_tf.config.schema import load_config
    from shifter_tf.errors import ConfigError
    from shifter_tf.config.rules import parse_overrides

    overrides = parse_overrides(args.set)
    for key in overrides:
        if not key.startswith(section + "."):
            raise ConfigError(f"--set {key}: `{args.command}` accepts only {section}.* keys "
                              "(the rest is fixed by the run's config.yaml)")
    path = Path(args.run) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{args.run}: not a run folder (no config.yaml); "
                                "create one with `shifter-tf train`")
    load_config(path, overrides)
    return overrides


def cmd_train(args) -> int:
    cfg = _config(args)
    data = _prepare(cfg)
    from shifter_tf.train import lottery
    results = lottery.run_lottery(cfg, args.out, resume=args.resume, data=data,
                                  allow_changed_recipe=args.allow_changed_recipe)
    print(lottery.level_table(results))
    return 0


def cmd_prune(args) -> int:
    overrides = _run_overrides(args, "surgery")
    from shifter_tf import pipeline
    print(pipeline.prune_run(Path(args.run), force=args.force, overrides=overrides))
    return 0


def cmd_export(args) -> int:
    overrides = _run_overrides(args, "export")
    key = None
    if args.private_key:                       # a bad key fails now, not after the export
        from shifter_tf.export.signing import load_private_key
        key = load_private_key(args.private_key)
    from shifter_tf import pipeline
    print(pipeline.export_run(Path(args.run), overrides=overrides))
    if key is not None:
        from shifter_tf.export.signing import sign_portfolio
        print(f"signed: {sign_portfolio(Path(args.run) / 'portfolio', key)}")
    return 0


def cmd_keygen(args) -> int:
    from shifter_tf.export.signing import generate_keypair
    priv, pub, kid = generate_keypair(args.key, force=args.force)
    print(f"private key {priv} (keep it secret), public key {pub} (copy it to the device), "
          f"key id {kid}")
    return 0


def cmd_sign(args) -> int:
    from shifter_tf.export.signing import sign_portfolio
    print(f"signed: {sign_portfolio(Path(args.portfolio), args.private_key)}")
    return 0


def cmd_report(args) -> int:
    from shifter_tf.export import report
    path = report.write_report(Path(args.run))
    print(f"wrote {path}")
    return 0


def cmd_run(args) -> int:
    cfg = _config(args)
    data = _prepare(cfg)
    from shifter_tf import pipeline
    print(pipeline.run_all(cfg, Path(args.out), resume=args.resume, data=data,
                           allow_changed_recipe=args.allow_changed_recipe))
    return 0


def cmd_pai(args) -> int:
    cfg = _config(args)
    data = _prepare(cfg)
    from shifter_tf import pai
    print(pai.run_pai(cfg, Path(args.out), overwrite=args.overwrite, data=data))
    return 0


def cmd_tune(args) -> int:
    from shifter_tf.tune.dist import role
    role()                                   # KERASTUNER_* checked before TensorFlow loads
    cfg = _config(args)
    data = _prepare(cfg)
    from shifter_tf.tune import search as tune
    best = tune.run_search(cfg, Path(args.out), max_trials=args.trials, source=args.config,
                           data=data)
    print(f"best config written to {best}" if best else
          "trials done; the chief (KERASTUNER_TUNER_ID=chief) writes best.yaml")
    return 0


COMMANDS: dict[str, tuple[Callable, str]] = {
    "train": (cmd_train, "phase 1: iterative magnitude pruning with lottery-ticket rewinding; "
                         "one sparse model per level in RUN/levels/"),
    "prune": (cmd_prune, "phase 2: rebuild every level of RUN without its all-zero filters "
                         "(RUN/pruned/)"),
    "export": (cmd_export, "phase 3: convert dense, sparse and pruned models to TFLite, measure "
                           "them and write RUN/portfolio/manifest.json"),
    "report": (cmd_report, "write RUN/report.md with the portfolio table and PNG plots"),
    "run": (cmd_run, "phases 1-3 and the report in one go"),
    "pai": (cmd_pai, "Reconvene: structured pruning at initialisation, one training run, "
                     "then prune and export"),
    "tune": (cmd_tune, "keras-tuner search over the training recipe declared in the config's "
                       "`tune:` section; writes the best config as YAML"),
    "keygen": (cmd_keygen, "make an Ed25519 key pair (KEY private, KEY.pub public) for signing "
                           "portfolios"),
    "sign": (cmd_sign, "sign PORTFOLIO/manifest.json with a private key (manifest.json.sig)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shifter-tf", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (fn, help_) in COMMANDS.items():
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(fn=fn)
        if name in ("train", "run", "pai", "tune"):
            s.add_argument("--config", required=True, help="YAML experiment config (configs/)")
            s.add_argument("--out", required=True,
                           help="output folder" + (" (multi_worker: the same on every worker; "
                                                   "only the chief writes it)"
                                                   if name in ("train", "tune") else ""))
            s.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help="override a config key, e.g. --set train.epochs=2 (repeatable)")
        if name in ("train", "run"):
            s.add_argument("--resume", action="store_true",
                           help="continue a killed run at its first unfinished level")
            s.add_argument("--allow-changed-recipe", action="store_true",
                           help="with --resume: accept a config that trains differently from "
                                "the run's (seed, data, model, train, lottery keys); recorded "
                                "in OUT/recipe_changes.json")
        if name == "train":
            s.add_argument("--workers", type=int, metavar="N",
                           help="try multi-worker training on this machine: run N workers on "
                                "127.0.0.1 (train.strategy multi_worker, TF_CONFIG set for "
                                "each); all share --out, the chief (worker 0) writes it")
        if name in ("prune", "export", "report"):
            s.add_argument("run", help="run folder written by `shifter-tf train`")
        if name in ("prune", "export"):
            section = "surgery" if name == "prune" else "export"
            s.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help=f"override a {section}.* key of the run's config for this "
                                f"{name} only, e.g. --set " + ("surgery.min_agreement=0.98"
                                if name == "prune" else "export.latency_runs=10"))
        if name == "prune":
            s.add_argument("--force", action="store_true",
                           help="keep a pruned model even if it disagrees with the sparse one")
        if name == "pai":
            s.add_argument("--overwrite", action="store_true",
                           help="replace an earlier pai result in --out")
        if name == "tune":
            s.add_argument("--trials", type=int, default=None, help="override max trials")
        if name in ("export", "sign"):
            s.add_argument("--private-key", metavar="KEY", required=name == "sign",
                           help="sign the manifest with this Ed25519 key (`shifter-tf keygen`)")
        if name == "sign":
            s.add_argument("portfolio", help="portfolio folder (manifest.json + variants/)")
        if name == "keygen":
            s.add_argument("key", help="private key file to write; the public key goes to "
                                       "KEY.pub")
            s.add_argument("--force", action="store_true", help="replace existing key files")
    return p


def _user_error(e: BaseException) -> bool:
    """A mistake the user can fix (printed as one line)? `errors` is a leaf: no TensorFlow."""
    from shifter_tf.errors import USER_ERRORS
    return isinstance(e, USER_ERRORS)


def _launch(args, argv: list[str]) -> int:
    """`--workers N`: the same command as N multi-worker processes on this machine."""
    from shifter_tf.distributed.cluster import launch_local
    from shifter_tf.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    args.set = [*(args.set or []), "train.strategy=multi_worker"]
    from shifter_tf.config.schema import load_config
    from shifter_tf.config.rules import parse_overrides
    load_config(args.config, parse_overrides(args.set))      # a typo: one line, not N
    rest, skip = [], False
    for a in argv:
        if skip or a == "--workers":
            skip = not skip
        elif not a.startswith("--workers="):
            rest.append(a)
    return launch_local(rest, args.workers)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "workers", None) is not None:
            return _launch(args, argv)
        return args.fn(args)
    except Exception as e:
        from shifter_tf.distributed.cluster import abandon, as_cluster_error
        lost = as_cluster_error(e)
        if lost is not None:    # os._exit: TF would wait for the dead peer at shutdown
            abandon(f"shifter-tf {args.command}: error: {lost}", 1)
        if not _user_error(e):
            from shifter_tf.util.io import storage_error
            e = storage_error(e)          # a write refused outside the atomic writers
            if e is None:
                raise
        print(f"shifter-tf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shifter-tf {args.command}: interrupted; finished levels are kept "
              "(continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
