"""Helpers every phase uses (atomic writes, text tables). Phase: none, the bottom layer.
May import: `shifter_tf.errors` and `edge_runtime` (the device package's file helpers)."""
