"""Flatten a tf_keras model (Sequential, functional, nested functional) into one list of layer
calls in topological order, so analysis and rebuilding never have to recurse into sub-models.

Nested Sequential/functional models called on plain tensors are inlined; subclassed models and
models called in ways we cannot map (extra tensor kwargs, dict inputs) stay as single opaque calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import shifter_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras
from shifter_tf.errors import SurgeryError  # noqa: F401 (raised here)



@dataclass
class TensorRef:
    """One symbolic tensor of the flattened graph."""
    index: int
    shape: tuple            # static shape with batch dim (None for unknown dims)
    dtype: str
    producer: int           # index of the LayerCall that outputs it
    consumers: list = field(default_factory=list)   # LayerCall indices reading it

    @property
    def channels(self) -> int | None:
        """Size of the last (channel) axis, or None when there is no static channel axis."""
        if len(self.shape) < 2 or self.shape[-1] is None:
            return None
        return int(self.shape[-1])


@dataclass
class LayerCall:
    """One call of a layer in the flattened graph (a shared layer has several calls)."""
    index: int
    layer: Any
    name: str               # unique name the rebuilt layer gets
    inputs: list            # tensor indices, in the order of the call's flat Keras inputs
    outputs: list           # tensor indices, in the order of the call's flat outputs
    node: Any = None        # the tf_keras Node, to replay the call's argument structure
    scope: str = ""         # path of the inlined sub-models this call came from

    @property
    def is_input(self) -> bool:
        return self.node is None


@dataclass
class ModelIR:
    """The flattened graph of a model: calls in topological order and the tensors between them."""
    model: Any
    calls: list
    tensors: list
    inputs: list            # tensor indices of the model inputs (flattened)
    outputs: list           # tensor indices of the model outputs (flattened)
    inlined: list           # names of the sub-models that were inlined

    def calls_of(self, layer) -> list:
        """All calls of one layer object."""
        index = self.__dict__.get("_by_layer")
        if index is None or index[0] != len(self.calls):   # (re)made once the trace is done
            by_layer: dict = {}
            for c in self.calls:
                by_layer.setdefault(id(c.layer), []).append(c)
            index = self.__dict__["_by_layer"] = (len(self.calls), by_layer)
        return list(index[1].get(id(layer), ()))


def is_graph_model(layer) -> bool:
    """True for Sequential/functional models whose node graph we can walk."""
    return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def _shape_of(kt) -> tuple:
    shape = kt.shape
    return tuple(shape.as_list()) if shape.rank is not None else ()


def _inlinable(node, layer) -> bool:
    """A nested graph model can be inlined when it is called on plain tensors matching its inputs."""
    if not is_graph_model(layer):
        return False
    first = node.call_args[0] if node.call_args else None
    if isinstance(first, dict) or len(node.flat_input_ids) != len(layer.inputs):
        return False
    kwargs_tensors = tf.nest.flatten(list(node.call_kwargs.values()))
    return not any(keras.backend.is_keras_tensor(t) for t in kwargs_tensors)


def trace(model) -> ModelIR:
    """Flatten `model` into a `ModelIR`; raises SurgeryError for an unbuilt or subclassed model."""
    if not is_graph_model(model):
        raise SurgeryError(
            f"model '{getattr(model, 'name', model)}' is not a built Sequential/functional "
            "tf_keras model (subclassed or unbuilt); nothing can be rewritten")
    ir = ModelIR(model=model, calls=[], tensors=[], inputs=[], outputs=[], inlined=[])
    used_names: dict[int, str] = {}
    taken: set[str] = set()

    def unique_name(layer, scope: str) -> str:
        if id(layer) in used_names:
            return used_names[id(layer)]
        name = layer.name
        if name in taken:
            name = (scope.replace("/", "_") + layer.name) if scope else layer.name
            base, k = name, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
        taken.add(name)
        used_names[id(layer)] = name
        return name

    def new_tensor(kt, producer: int) -> int:
        ref = TensorRef(len(ir.tensors), _shape_of(kt), kt.dtype.name, producer)
        ir.tensors.append(ref)
        return ref.index

    # Top-level names first, so inlined layers never steal a top-level name.
    for layer in model.layers:
        if not (is_graph_model(layer)):
            unique_name(layer, "")

    for kt in model.inputs:
        layer = kt._keras_history.layer
        call = LayerCall(len(ir.calls), layer, unique_name(layer, ""), [], [])
        ir.calls.append(call)
        call.outputs.append(new_tensor(kt, call.index))
        ir.inputs.append(call.outputs[0])

    def walk(sub, scope: str, in_keys: list) -> list:
        kt_map = {str(id(kt)): key for kt, key in zip(sub.inputs, in_keys)}
        for depth in sorted(sub._nodes_by_depth, reverse=True):
            for node in sub._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                layer = node.layer
                ins = [kt_map[i] for i in node.flat_input_ids]
                if _inlinable(node, layer):
                    ir.inlined.append(scope + layer.name)
                    outs = walk(layer, scope + layer.name + "/", ins)
                    for oid, key in zip(node.flat_output_ids, outs):
                        kt_map[oid] = key
                    continue
                call = LayerCall(len(ir.calls), layer, unique_name(layer, scope), ins, [],
                                 node=node, scope=scope)
                ir.calls.append(call)
                for t in ins:
                    ir.tensors[t].consumers.append(call.index)
                for oid, kt in zip(node.flat_output_ids, tf.nest.flatten(node.outputs)):
                    kt_map[oid] = new_tensor(kt, call.index)
                    call.outputs.append(kt_map[oid])
        return [kt_map[str(id(kt))] for kt in sub.outputs]

    ir.outputs = walk(model, "", ir.inputs)
    return ir


def replay_arguments(call: LayerCall, new_tensors: dict) -> tuple:
    """The (args, kwargs) of `call` with its Keras inputs replaced by `new_tensors[index]`."""
    node = call.node
    if getattr(node, "_single_positional_tensor_passed", False):   # layer(x): most calls
        return (new_tensors[call.inputs[0]],), {}
    flat = list(node._flat_arguments)
    for (_, pos), t in zip(node._keras_inputs_ids_and_indices, call.inputs):
        flat[pos] = new_tensors[t]
    args, kwargs = tf.nest.pack_sequence_as((node.call_args, list(node.call_kwargs.values())), flat)
    return tuple(args), dict(zip(node.call_kwargs.keys(), kwargs))
