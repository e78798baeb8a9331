"""Public entry points: `prune_structured`, `fold_batchnorm`, `build_dependency_graph`."""
from __future__ import annotations

import contextlib
import gc
import time

import numpy as np

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.graph import layer_kinds
from shifter_tf.surgery.analysis import analyse
from shifter_tf.surgery.fold import fold_batchnorm_calls
from shifter_tf.graph.deps import DependencyGraph, classify_calls
from shifter_tf.graph.ir import is_graph_model, trace
from shifter_tf.errors import SurgeryError
from shifter_tf.graph.metrics import count_params_and_macs
from shifter_tf.surgery.rebuild import rebuild
from shifter_tf.surgery.report import SurgeryReport, layer_reports
from shifter_tf.surgery.verify import compare
from shifter_tf.surgery.weights import read_weights


def _strip_tfmot(model, notes: list):
    """Accept an unstripped tfmot model too: strip its pruning wrappers first."""
    from shifter_tf.models import iter_layers
    if any(type(layer).__name__ == "PruneLowMagnitude" for layer in iter_layers(model)):
        import tensorflow_model_optimization as tfmot
        notes.append("stripped tfmot pruning wrappers (strip_pruning) before the rewrite")
        return tfmot.sparsity.keras.strip_pruning(model)
    return model


@contextlib.contextmanager
def _gc_paused():
    """Building Keras layers allocates many small objects; a full cyclic-GC pass over a
    TensorFlow process (~400k objects) in the middle costs tens of ms and frees nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _prepare(model, fold_bn: bool = True):
    ir = trace(model)
    kinds = classify_calls(ir)
    weights = read_weights(c.layer for c in ir.calls
                           if kinds[c.index].kind in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE, layer_kinds.CHANNELWISE))
    folded = fold_batchnorm_calls(ir, kinds, weights) if fold_bn else {}
    return ir, kinds, weights, folded


def build_dependency_graph(model, fold_bn: bool = True) -> DependencyGraph:
    """The channel dependency graph of `model` (after BN folding), for inspection."""
    ir, kinds, _, _ = _prepare(model, fold_bn)
    return DependencyGraph(ir, kinds)


def fold_batchnorm(model) -> keras.Model:
    """A copy of `model` with every BatchNormalization that directly follows a Conv/Depthwise/
    Separable/Dense (whose output nothing else reads) folded into it; other BNs stay."""
    ir, kinds, weights, _ = _prepare(model, True)
    new, _, _ = rebuild(ir, kinds, [None] * len(ir.tensors), {}, weights)
    return new


def prune_structured(model, sample=None, *, inexact: str = "keep", min_agreement: float = 0.99,
                     force: bool = False, fold_bn: bool = True,
                     batch_size: int = 64) -> tuple[keras.Model, SurgeryReport]:
    """Turn zeros into a smaller network: returns (pruned_model, SurgeryReport).

    model: tf_keras Sequential/functional model (nested ones are inlined) with zeroed kernels,
      e.g. from `tfmot.sparsity.keras.strip_pruning` (wrappers are stripped if still present);
      or a Keras 3 one, which is converted in and the pruned model converted back to Keras 3.
    sample: optional input batch; if given, the pruned model is compared with `model` and a
      SurgeryError is raised when top-1 agreement < `min_agreement`, unless `force=True`.
    inexact: what to do with a removable channel whose constant value is not zero and whose
      reader is a zero-padded conv (the border sees 0, not the constant, so a bias cannot
      absorb it exactly): "keep" (default) keeps the channel and the model stays exact;
      "fold" removes it, folds the interior value into the bias and reports the layer inexact.
    """
    from shifter_tf.models import keras3
    if keras3.is_keras3(model):
        # Keras 3 in, Keras 3 out: the rewrite itself runs on a checked tf_keras copy.
        check = sample[:batch_size] if isinstance(sample, np.ndarray) else None
        new, report = prune_structured(
            keras3.to_tf_keras(model, check), sample, inexact=inexact,
            min_agreement=min_agreement, force=force, fold_bn=fold_bn, batch_size=batch_size)
        report.notes.append("Keras 3 model: converted to tf_keras for the rewrite and back")
        return keras3.to_keras3(new, check), report
    start, cpu_start = time.perf_counter(), time.process_time()
    notes: list = []
    model = _strip_tfmot(model, notes)
    if not is_graph_model(model):
        report = SurgeryReport(getattr(model, "name", "model"), unsupported=[model.name],
                               notes=notes + ["subclassed or unbuilt model: returned unchanged"])
        report.params_before, report.params_nonzero_before, report.macs_before = \
            count_params_and_macs(model)
        report.params_after, report.params_nonzero_after, report.macs_after = \
            report.params_before, report.params_nonzero_before, report.macs_before
        return model, report

    t = {}
    with _gc_paused():
        mark = time.perf_counter()
        ir, kinds, weights, folded = _prepare(model, fold_bn)
        t["trace_fold"] = (time.perf_counter() - mark) * 1e3
        mark = time.perf_counter()
        graph = DependencyGraph(ir, kinds)
        t["graph"] = (time.perf_counter() - mark) * 1e3
        mark = time.perf_counter()
        plan = analyse(graph, weights, inexact)
        t["analysis"] = (time.perf_counter() - mark) * 1e3
        mark = time.perf_counter()
        new, times, new_layers = rebuild(ir, kinds, plan.keep, plan.bias_delta, weights)
        t["rebuild"] = (time.perf_counter() - mark) * 1e3
    rewrite_ms = (time.perf_counter() - start) * 1e3
    t["cpu"] = (time.process_time() - cpu_start) * 1e3

    report = _report(model, new, graph, plan, folded, weights, new_layers, times, inexact)
    report.rewrite_ms = round(rewrite_ms, 3)
    report.timings_ms = {k: round(v, 3) for k, v in t.items()}
    report.notes = notes + report.notes
    if sample is not None:
        report.verification = compare(model, new, sample, min_agreement, batch_size)
        if not report.verification.finite:
            raise SurgeryError(
                f"model {model.name!r} gives non-finite outputs (NaN/Inf) on the verification "
                "sample: its weights or BN statistics are broken; retrain it")
        if not report.verification.passed and not force:
            v = report.verification
            raise SurgeryError(
                f"pruned model agrees with the original on only {v.top1_agreement:.2%} of "
                f"{v.n_samples} samples (required {min_agreement:.2%}; max |dlogit| "
                f"{v.max_abs_dlogit:.3g} of scale {v.logit_scale:.3g}); use inexact='keep' for an "
                "exact rewrite, or force=True to accept it")
    return new, report


def _report(model, new, graph, plan, folded, weights, new_layers, times, inexact) -> SurgeryReport:
    ir = graph.ir
    rep = SurgeryReport(model.name, inexact_policy=inexact)
    rep.params_before, rep.params_nonzero_before, rep.macs_before = count_params_and_macs(model)
    rep.params_after, rep.params_nonzero_after, rep.macs_after = count_params_and_macs(new)
    rep.layers = layer_reports(graph, plan, folded, weights, new_layers, times)
    for r in rep.layers:
        if r.kind in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE):
            rep.channels_before += r.channels_out_before or 0
            rep.channels_after += r.channels_out_after or 0
        if r.fold_exact is False:
            rep.inexact_layers.append(r.name)
        if r.kind == layer_kinds.OPAQUE:
            rep.unsupported.append(r.name)
        elif r.kind == layer_kinds.FROZEN:
            rep.frozen_layers[r.name] = r.frozen
        rep.kept_for_exactness += r.kept_for_exactness
    rep.exact = not rep.inexact_layers
    rep.groups = graph.n_groups
    rep.groups_removed = int(plan.removed.sum())
    rep.groups_frozen = int(graph.frozen.sum())
    coupled = graph.coupled_groups()
    rep.coupled_groups_removed = int(plan.removed[coupled].sum()) if coupled else 0
    rep.fixpoint_passes = plan.passes
    rep.inlined_models = list(ir.inlined)
    if plan.forced:
        rep.notes.append(f"{len(plan.forced)} channel group(s) kept only so that no layer is "
                         "left with 0 channels")
    if rep.unsupported:
        rep.notes.append("unsupported layers are reused as they are (shared with the input "
                         "model); the channels around them are frozen")
    return rep
