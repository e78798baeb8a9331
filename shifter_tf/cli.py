"""`shifter-tf`: the host-side command line. Each subcommand is one phase of the pipeline.

    shifter-tf train  --config C --out RUN [--resume]   phase 1: IMP portfolio training
    shifter-tf prune  RUN                               phase 2: structured pruning of each level
    shifter-tf export RUN                               phase 3: TFLite portfolio + manifest
    shifter-tf report RUN                               report.md and plots
    shifter-tf run    --config C --out RUN [--resume]   phases 1-3 and the report in one go
    shifter-tf pai    --config C --out RUN              Reconvene: structured pruning at init
    shifter-tf tune   --config C --out DIR              keras-tuner search over the recipe

Bad input exits non-zero with one readable line, never a TensorFlow traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

import shifter_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def _overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ValueError(f"--set {p!r}: expected key=value, e.g. train.epochs=2")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _config(args):
    from shifter_tf.config import load_config
    return load_config(args.config, _overrides(args.set))


def cmd_train(args) -> int:
    from shifter_tf import lottery

    cfg = _config(args)
    results = lottery.run_lottery(cfg, args.out, resume=args.resume)
    print(lottery.format_table(results))
    return 0


def cmd_prune(args) -> int:
    from shifter_tf import pipeline
    print(pipeline.prune_run(Path(args.run), force=args.force))
    return 0


def cmd_export(args) -> int:
    from shifter_tf import pipeline
    print(pipeline.export_run(Path(args.run)))
    return 0


def cmd_report(args) -> int:
    from shifter_tf import report
    path = report.write_report(Path(args.run))
    print(f"wrote {path}")
    return 0


def cmd_run(args) -> int:
    from shifter_tf import pipeline
    cfg = _config(args)
    print(pipeline.run_all(cfg, Path(args.out), resume=args.resume))
    return 0


def cmd_pai(args) -> int:
    from shifter_tf import pai
    cfg = _config(args)
    print(pai.run_pai(cfg, Path(args.out), overwrite=args.overwrite))
    return 0


def cmd_tune(args) -> int:
    from shifter_tf import tune
    cfg = _config(args)
    best = tune.run_search(cfg, Path(args.out), max_trials=args.trials, source=args.config)
    print(f"best config written to {best}")
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
            s.add_argument("--out", required=True, help="output folder")
            s.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help="override a config key, e.g. --set train.epochs=2 (repeatable)")
        if name in ("train", "run"):
            s.add_argument("--resume", action="store_true",
                           help="continue a killed run at its first unfinished level")
        if name in ("prune", "export", "report"):
            s.add_argument("run", help="run folder written by `shifter-tf train`")
        if name == "prune":
            s.add_argument("--force", action="store_true",
                           help="keep a pruned model even if it disagrees with the sparse one")
        if name == "pai":
            s.add_argument("--overwrite", action="store_true",
                           help="replace an earlier pai result in --out")
        if name == "tune":
            s.add_argument("--trials", type=int, default=None, help="override max trials")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from shifter_tf.errors import USER_ERRORS

    try:
        return args.fn(args)
    except USER_ERRORS as e:
        print(f"shifter-tf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shifter-tf {args.command}: interrupted; finished levels are kept "
              "(continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
