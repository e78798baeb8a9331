"""On-demand studies: questions the benchmark answered once, kept runnable but not part of
`make bench` (`python -m tools.studies.<name> --help`)."""
