"""The benchmark suite: `make bench` = `.venv/bin/python -m tools.bench.all --out bench`, which
writes bench/results.json, bench/RESULTS.md, bench/PARETO.md and the plots.

Every module is run from the repository root as `python -m tools.bench.<name>` (its --help says
what it does) and imports its siblings as package modules. `all` runs the heavy steps each in a
child process, in the environment the step needs:

    .venv (host, TensorFlow)   all, deploy, surgery, baselines, pareto, export_data, report
    .venv-edge (no TensorFlow) latency, switcher   (also run in .venv)
    .venv-mct (TF 2.15)        mct                 (never imports shifter_tf)

so `common` (paths, commands, logging, percentiles, variant labels) imports only the standard
library and numpy, and `latency`, `switcher` and `mct` import nothing that is missing from their
environment. `numbers` assembles results.json from the steps' files; `report` is the one
renderer of RESULTS.md and PARETO.md (`sections` and `plots` behind it).
"""
