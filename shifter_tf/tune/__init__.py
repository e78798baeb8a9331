"""Hyper-parameter search over the IMP recipe with keras-tuner: the search (`search`), its space
(`space`) and distributed search (`dist`). A runner over the phases: may import config … export."""
