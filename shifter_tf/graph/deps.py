"""The channel dependency graph: which channel positions of which tensors must be removed
together (a *group*), and which groups may never be removed (frozen), with the reason.

A channel group is what Torch-Pruning's DependencyGraph calls a pruning group: producers whose
filters make the channel, pass-through layers that carry it (activations, BN, pooling, Add,
Concatenate slices, depthwise convs) and readers whose kernels consume it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shifter_tf.graph import layer_kinds
from shifter_tf.graph import tfops
from shifter_tf.graph.ir import ModelIR, trace


def connected_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (0..k-1) of each of n items joined by edges a[i]--b[i] (vectorised)."""
    parent = np.arange(n)
    if len(a):
        while True:
            pa, pb = parent[a], parent[b]
            low = np.minimum(pa, pb)
            if np.array_equal(pa, pb):
                break
            np.minimum.at(parent, pa, low)
            np.minimum.at(parent, pb, low)
            while True:  # pointer jumping: every item points at its root again
                nxt = parent[parent]
                if np.array_equal(nxt, parent):
                    break
                parent = nxt
    return np.unique(parent, return_inverse=True)[1]


@dataclass
class ChannelGroup:
    """One group, for inspection: where its channels live and who makes / reads them."""
    id: int
    members: list = field(default_factory=list)    # (layer name, output channel) per tensor slot
    producers: list = field(default_factory=list)  # (layer name, filter index)
    readers: list = field(default_factory=list)    # (layer name, input position)
    frozen: str = ""                                # why it can never go ('' if it can)

    def to_dict(self) -> dict:
        return {"id": self.id, "members": self.members, "producers": self.producers,
                "readers": self.readers, "frozen": self.frozen}


class DependencyGraph:
    """Channel groups of a traced model.

    `tensor_groups[t][i]` is the group of channel i of tensor t (None for tensors without a
    channel axis). `frozen[g]` marks groups tied to model inputs/outputs or to layers we do not
    rewrite; `frozen_reason(g)` says which.
    """

    def __init__(self, ir: ModelIR, kinds: list):
        self.ir = ir
        self.kinds = kinds
        raw: list = [None] * len(ir.tensors)
        count = 0
        edges: list = []
        reasons: list[str] = []
        freeze_list: list = []
        first_call: dict = {}

        def fresh(k: int) -> np.ndarray:
            nonlocal count
            ids = np.arange(count, count + k)
            count += k
            return ids

        def freeze(ids, why: str) -> None:
            if ids is not None and len(ids):
                if why not in reasons:
                    reasons.append(why)
                freeze_list.append((ids, reasons.index(why)))

        def union(x, y) -> None:
            if x is not None and y is not None and len(x) == len(y):
                edges.append((x, y))

        for call in ir.calls:
            kind = kinds[call.index]
            ins = [raw[t] for t in call.inputs]
            outs = [ir.tensors[t] for t in call.outputs]
            shared = first_call.setdefault(id(call.layer), call)
            shared_ins = [raw[t] for t in shared.inputs] if shared is not call else None
            k = kind.kind
            if k == layer_kinds.INPUT:
                c = outs[0].channels
                raw[call.outputs[0]] = fresh(c) if c is not None else None
                freeze(raw[call.outputs[0]], "model input")
            elif k == layer_kinds.PRODUCER:
                if shared_ins is not None:
                    raw[call.outputs[0]] = raw[shared.outputs[0]]
                    union(ins[0], shared_ins[0])
                else:
                    raw[call.outputs[0]] = fresh(outs[0].channels)
                    groups = getattr(call.layer, "groups", 1)
                    if groups > 1:  # a conv group's inputs and filters go together or stay
                        out_ids = raw[call.outputs[0]]
                        reps = out_ids[::len(out_ids) // groups]
                        union(ins[0], np.repeat(reps, len(ins[0]) // groups))
                        union(out_ids, np.repeat(reps, len(out_ids) // groups))
                if not layer_kinds.elementwise_activation(call.layer):
                    freeze(raw[call.outputs[0]], f"{call.name}: activation mixes channels")
            elif k == layer_kinds.DEPTHWISE:
                mult = outs[0].channels // len(ins[0])
                raw[call.outputs[0]] = np.repeat(ins[0], mult)
                if shared_ins is not None:
                    union(ins[0], shared_ins[0])
                if not layer_kinds.elementwise_activation(call.layer):
                    freeze(raw[call.outputs[0]], f"{call.name}: activation mixes channels")
            elif k in (layer_kinds.CHANNELWISE, layer_kinds.FOLDED):
                raw[call.outputs[0]] = ins[0]
                if shared_ins is not None and call.layer.weights:
                    union(ins[0], shared_ins[0])
            elif k == layer_kinds.FLATTEN:
                spatial = int(np.prod(ir.tensors[call.inputs[0]].shape[1:-1]))
                raw[call.outputs[0]] = np.tile(ins[0], spatial)
            elif k == layer_kinds.MERGE:
                n = outs[0].channels
                full = [ids for ids in ins if len(ids) == n]
                for ids in ins:
                    if len(ids) != n:   # one channel broadcast over all: read by every channel
                        freeze(ids, f"{call.name}: broadcast over channels")
                for other in full[1:]:
                    union(full[0], other)
                raw[call.outputs[0]] = full[0]
            elif k == layer_kinds.CONCAT:
                rank = len(outs[0].shape)
                if layer_kinds.concat_axis(call.layer, rank) == rank - 1:
                    raw[call.outputs[0]] = np.concatenate(ins)
                else:
                    for other in ins[1:]:
                        union(ins[0], other)
                    raw[call.outputs[0]] = ins[0]
            else:  # FROZEN / OPAQUE: nothing crosses it
                why = f"next to {call.name} ({kind.why})"
                for ids in ins:
                    freeze(ids, why)
                for t in call.outputs:
                    c = ir.tensors[t].channels
                    raw[t] = fresh(c) if c is not None else None
                    freeze(raw[t], why)
        for t in ir.outputs:
            freeze(raw[t], "model output")

        a = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, int)
        b = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, int)
        label = connected_labels(count, a, b)
        self.n_groups = int(label.max()) + 1 if count else 0
        self.tensor_groups = [label[r] if r is not None else None for r in raw]
        code = np.full(self.n_groups, -1)
        for ids, why in reversed(freeze_list):  # first reason wins
            code[label[ids]] = why
        self._reason_code = code
        self._reasons = reasons
        self.frozen = code >= 0

    # ---- inspection ------------------------------------------------------------------------
    def frozen_reason(self, group: int) -> str:
        c = self._reason_code[group]
        return self._reasons[c] if c >= 0 else ""

    def _call(self, layer_name: str):
        for call in self.ir.calls:
            if call.name == layer_name or call.layer.name == layer_name:
                return call
        raise KeyError(f"no layer named '{layer_name}' in the graph")

    def groups_of(self, layer_name: str, output: int = 0) -> np.ndarray:
        """Group id of each output channel of (the first call of) a layer."""
        return self.tensor_groups[self._call(layer_name).outputs[output]]

    def group(self, group_id: int) -> ChannelGroup:
        """Everything tied to one group: tensor slots, producing filters, reading kernels."""
        g = ChannelGroup(group_id, frozen=self.frozen_reason(group_id))
        for t, ids in enumerate(self.tensor_groups):
            if ids is None:
                continue
            pos = np.flatnonzero(ids == group_id)
            if not len(pos):
                continue
            call = self.ir.calls[self.ir.tensors[t].producer]
            g.members.extend((call.name, int(p)) for p in pos)
            if self.kinds[call.index].kind in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE):
                g.producers.extend((call.name, int(p)) for p in pos)
            for r in self.ir.tensors[t].consumers:
                if self.kinds[r].kind == layer_kinds.PRODUCER:
                    g.readers.extend((self.ir.calls[r].name, int(p)) for p in pos)
        return g

    def group_of(self, layer_name: str, channel: int) -> ChannelGroup:
        """The group of output `channel` of a layer."""
        return self.group(int(self.groups_of(layer_name)[channel]))

    def coupled_groups(self) -> list:
        """Groups made by more than one producer filter (residual Add ties and the like)."""
        count = np.zeros(self.n_groups, int)
        for call in self.ir.calls:
            if self.kinds[call.index].kind == layer_kinds.PRODUCER and call is self.ir.calls_of(call.layer)[0]:
                np.add.at(count, self.tensor_groups[call.outputs[0]], 1)
        return [int(g) for g in np.flatnonzero(count > 1)]

    def summary(self) -> dict:
        return {"groups": self.n_groups, "frozen": int(self.frozen.sum()),
                "coupled": len(self.coupled_groups()), "tensors": len(self.ir.tensors),
                "frozen_reasons": list(self._reasons)}


def classify_calls(ir: ModelIR) -> list:
    """The Kind of every call of the traced model."""
    kinds = []
    for call in ir.calls:
        ins = [ir.tensors[t].shape for t in call.inputs]
        outs = [ir.tensors[t].shape for t in call.outputs]
        if tfops.is_tfop(call.layer) and call.node is not None:
            kind = tfops.classify(call, ins, outs)
        else:
            kind = layer_kinds.classify(call.layer, ins, outs)
        single = kind.kind in (layer_kinds.PRODUCER, layer_kinds.DEPTHWISE, layer_kinds.CHANNELWISE, layer_kinds.FLATTEN)
        if single and (len(ins) != 1 or len(outs) != 1):
            kind = layer_kinds.Kind(layer_kinds.FROZEN, "called on several tensors")
        kinds.append(kind)
    return kinds


def model_graph(model) -> DependencyGraph:
    """The dependency graph of a tf_keras model as it is (BatchNormalization not folded: BN
    layers are channel-wise members of the groups they scale). The training side's structure
    steps use this; the rewriter builds its graph after folding (`surgery.build_dependency_graph`)."""
    ir = trace(model)
    return DependencyGraph(ir, classify_calls(ir))
