"""Export, phase 4: TFLite conversion (`convert`), measurement on the interpreter (`evaluate`),
the portfolio folder (`portfolio`), signing (`signing`) and the run report (`report`).
May import: every phase below (config … surgery) and `edge_runtime`."""
