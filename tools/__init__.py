"""Developer tools of shifter-tf, not installed with the package. Run from the repository root as
modules: `python -m tools.bench.all` (the benchmark suite, `make bench`), `python -m
tools.studies.simd` (an on-demand study), `python -m tools.edge_fixtures` (the edge tests'
portfolio, `make edge-fixtures`).
"""
