"""The channel dependency graph, phase 1.5: a tf_keras model flattened into layer calls (`ir`),
what each layer type means for channels (`layer_kinds`, `tfops`), which channels must go
together (`deps.DependencyGraph`), parameter and MAC counts (`metrics`). Training's structure step
and the rewriter both read it. May import: config, models, errors, util."""
from shifter_tf.graph.deps import ChannelGroup, DependencyGraph
from shifter_tf.graph.metrics import count_params_and_macs

__all__ = ["ChannelGroup", "DependencyGraph", "count_params_and_macs"]
