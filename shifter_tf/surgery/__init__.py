"""Structured pruning by graph surgery: turn the zeros of a sparse tf_keras model into a
smaller dense model (DNNShifter, stage 2).

    from shifter_tf.surgery import prune_structured
    pruned, report = prune_structured(sparse_model, sample=x_val[:64])
    print(report.summary()); json.dump(report.to_dict(), f)

What happens:
1. `shifter_tf.graph.ir` flattens the model (Sequential, functional, nested functional models are inlined).
2. `fold` folds every BatchNormalization that directly follows a Conv/Depthwise/Separable/Dense.
3. `shifter_tf.graph` builds the channel dependency graph (`DependencyGraph`): channel positions that must go
   together form a group (residual Add, Concatenate offsets, depthwise in = out, element-wise
   layers, pooling, padding, Dropout, Flatten's H*W expansion, global pooling). Groups touching
   model inputs/outputs or layers we do not understand are frozen.
4. `analysis` pushes constants forward (an all-zero filter emits act(bias) everywhere; a filter
   reading only constant channels is constant too) and finds, by fixpoint, the groups nothing
   that stays reads, except reads of constants that can be folded into the reader's bias.
   Every tensor keeps at least one channel.
5. `rebuild` re-creates each layer from its config with fewer filters/units and numpy slices of
   its weights; `verify` compares with the sparse model on a sample batch.

Constants and exactness (`inexact=`): a removed constant channel is exact to fold into a Dense
(also after Flatten / global pooling), a 1x1 conv, a `valid` conv, or any conv whose padding is
zero at this input size. A 'same'-padded k>1 conv sees zeros, not the constant, at the borders,
so folding there is only exact for a constant of 0 (e.g. ReLU of a negative bias). Default
"keep" keeps such channels (reported per layer as `kept_for_exactness`) so the rewrite is exact
up to float rounding; "fold" removes them too, folds the interior value and marks the reader in
`report.inexact_layers` (the DNNShifter paper simply drops dead channels; "fold" is a better
approximation of the same thing). Verification with a sample decides whether "fold" is acceptable.

Also per channel: Reshape that only adds/drops unit axes (squeeze-excite), merges that broadcast
a (B, 1, 1, C) gate or a single channel, element-wise TFOpLambda ops (`graph.tfops`: x + 3.0,
tf.nn.relu6, x * scale with per-channel constants sliced), per-channel Rescaling and
Normalization, grouped convolutions (a conv group's inputs and filters go together).

Known limits: channels_first layouts, transposed convs, Reshape that moves channels, Permute,
softmax on the channel axis, LayerNormalization and attention keep their channels frozen;
Lambda, custom layer classes, subclassed models and TFOpLambda ops outside the element-wise list
are reused as they are (shared with the input model) and named in `report.unsupported`; nested
models come back inlined; a shared layer is pruned consistently across its calls but never gets
constants folded into its bias. `construct` explains how the new layers are made quickly.

Phase 3. May import: config, models, graph, errors, util (never train or export).
"""
from shifter_tf.surgery.api import build_dependency_graph, fold_batchnorm, prune_structured
from shifter_tf.graph.deps import ChannelGroup, DependencyGraph
from shifter_tf.errors import SurgeryError
from shifter_tf.graph.metrics import count_params_and_macs
from shifter_tf.surgery.report import LayerReport, SurgeryReport
from shifter_tf.surgery.verify import Verification

__all__ = ["prune_structured", "fold_batchnorm", "build_dependency_graph", "count_params_and_macs",
           "DependencyGraph", "ChannelGroup", "SurgeryReport", "LayerReport", "Verification",
           "SurgeryError"]
