"""Export, phase 4: TFLite conversion (`convert`), measurement on the interpreter (`evaluate`),
the portfolio folder (`portfolio`), TFLite Model Metadata (`metadata`), Android-ready variants
(`android`), signing (`signing`) and the run report (`report`).
May import: every phase below (config … surgery) and `edge_runtime`."""
