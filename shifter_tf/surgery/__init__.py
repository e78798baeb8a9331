"""Structured pruning by graph surgery: turn the zeros of a sparse tf_keras model into a
smaller dense model (DNNShifter, stage 2).

    pruned, report = prune_structured(sparse_model, sample=x_val[:64])

Modules: `ir` flattens the model, `layers` knows what each layer type does to channels, `fold`
folds BatchNormalization, `graph` builds the channel dependency graph, `analysis` decides which
channel groups go, `rebuild` makes the new model, `verify`/`metrics`/`report` measure it.
"""
from shifter_tf.surgery.api import build_dependency_graph, fold_batchnorm, prune_structured
from shifter_tf.surgery.graph import ChannelGroup, DependencyGraph
from shifter_tf.surgery.ir import SurgeryError
from shifter_tf.surgery.metrics import count_params_and_macs
from shifter_tf.surgery.report import LayerReport, SurgeryReport
from shifter_tf.surgery.verify import Verification

__all__ = ["prune_structured", "fold_batchnorm", "build_dependency_graph", "count_params_and_macs",
           "DependencyGraph", "ChannelGroup", "SurgeryReport", "LayerReport", "Verification",
           "SurgeryError"]
