"""Android-ready variants (`export.android`): files the Task Library's `ImageClassifier` and
Android Studio's ML Model Binding accept as they are.

They need a 1 x H x W x 3 RGB input, float32 or uint8 (never int8) in and out, and metadata
(`shifter_tf.export.metadata`). So with `export.android: true` every variant of the portfolio
takes raw RGB pixels (0..255) and does its own preprocessing:

- a 1-channel model gets a fixed **luma front**: a 1x1 convolution with weights
  (612, 1202, 234) / 2048 = (0.29883, 0.58691, 0.11426), BT.601's 0.299 / 0.587 / 0.114 within
  3e-4. They sum to exactly 1 and are exact in float16 and float32, and every partial sum of
  w * pixel is exact for integer pixels, so a grey image (R = G = B) comes out of it as exactly
  its grey value: the model sees what it was trained on. (The converter folds this layer and the
  normalisation into one convolution; the file then agrees to float rounding. In the
  full-integer variant the layer is quantised like every other, within one quantisation step.)
- the training normalisation, x * scale / std - mean / std, as a `Rescaling` layer;
- a softmax at the end (unless the model has one), so scores are probabilities;
- the full-integer variant has uint8 input and output; its input quantisation is scale 1,
  zero point 0, so the uint8 values the Task Library passes are the pixels themselves.

The manifest then describes the task as the device sees it: input (H, W, 3) raw pixels,
`normalization_source: model`, `output: probabilities`, and `android` with the front's details.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

import shifter_tf  # noqa: F401  (before TensorFlow)
import tf_keras as keras
from shifter_tf.errors import ExportError
from shifter_tf.graph.layer_kinds import ends_with_softmax

LUMA = (612 / 2048, 1202 / 2048, 234 / 2048)


def check_android(input_shape, norm) -> None:
    """ExportError unless the task can become an Android image classifier."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise ExportError(f"export.android needs an image input (height, width, 1 or 3 "
                          f"channels); this model takes {list(shape)}")
    if norm.source == "caller":
        raise ExportError("export.android needs the input normalisation (the model must take "
                          "raw pixels), but the data come already preprocessed by the caller "
                          "(normalization source `caller`); pass a Normalization with the "
                          "statistics, or set export.android: false")


def android_model(model: keras.Model, norm) -> keras.Model:
    """`model` behind the luma front and normalisation, with a softmax (module docstring)."""
    L = keras.layers
    h, w, c = model.input_shape[1:]
    inp = keras.Input((h, w, 3), name="image")
    x = inp
    if c == 1:
        kernel = np.asarray(LUMA, np.float32).reshape(1, 1, 3, 1)
        luma = L.Conv2D(1, 1, use_bias=False, trainable=False, name="android_luma",
                        kernel_initializer=keras.initializers.Constant(kernel.tolist()))
        x = luma(x)
        luma.set_weights([kernel])
    if norm.on_device:
        std = np.asarray(norm.std, np.float64)
        x = L.Rescaling((norm.scale / std).tolist(),
                        (-np.asarray(norm.mean, np.float64) / std).tolist(),
                        name="android_normalize")(x)
    x = model(x)
    if not ends_with_softmax(model):
        x = L.Softmax(name="probability")(x)
    return keras.Model(inp, x, name=f"{model.name}_android")


def to_rgb(x: np.ndarray) -> np.ndarray:
    """Grey images (..., 1) as RGB (..., 3) with R = G = B; RGB images as they are."""
    x = np.asarray(x, np.float32)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def raw_pixels(data, split: str, n: int, seed: Optional[int] = None):
    """`n` examples of `split` as the Android variants take them: raw RGB pixels, float32."""
    from shifter_tf.data.sets import Normalization

    raw = data.with_norm(Normalization.identity("model", data.input_shape[-1]))
    x, y = raw.sample(split, n, seed=seed)
    return to_rgb(x), y


def denormalize(x: np.ndarray, norm) -> np.ndarray:
    """Normalised inputs back to raw pixels (user-given representative data)."""
    if not norm.on_device:
        return np.asarray(x, np.float32)
    return ((np.asarray(x, np.float64) * np.asarray(norm.std) + np.asarray(norm.mean))
            / norm.scale).astype(np.float32)


def android_task(task: dict, norm, softmax: bool) -> dict:
    """The manifest's task for Android variants (module docstring)."""
    h, w, c = task["input_shape"]
    out = dict(task)
    out.update({"input_shape": [h, w, 3], "input_dtype": "float32", "normalization": None,
                "normalization_source": "model", "output": "probabilities",
                "android": {"luma": list(LUMA) if c == 1 else None,
                            "trained_normalization": norm.to_dict(),
                            "softmax_added": softmax}})
    return out


def pixel_input(model: bytes) -> bytes:
    """A uint8-input model whose input quantisation is exactly scale 1, zero point 0.

    The converter takes the input range from the representative data: images that never reach
    0 or 255 give another scale. The input only feeds QUANTIZE ops (uint8 to the int8 the model
    computes in), which requantise from whatever the input's parameters are, so setting them to
    (1, 0) makes the uint8 input mean raw pixels without changing anything else.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    m = fb.Model.GetRootAs(model, 0)
    g = m.Subgraphs(0)
    t = g.Tensors(g.Inputs(0))
    q = t.Quantization()
    if t.Type() != fb.TensorType.UINT8 or (q is not None and q.ScaleLength() == 1 and
                                            q.Scale(0) == 1.0 and q.ZeroPoint(0) == 0):
        return model
    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    sg = obj.subgraphs[0]
    idx = sg.inputs[0]
    for op in sg.operators:
        if idx in list(op.inputs):
            code = obj.operatorCodes[op.opcodeIndex]
            if flatbuffer_utils.get_builtin_code_from_operator_code(code) != \
                    fb.BuiltinOperator.QUANTIZE:
                raise ExportError("internal: the uint8 input feeds an operator other than "
                                  "QUANTIZE; cannot make it take raw pixels")
    qp = sg.tensors[idx].quantization
    qp.scale, qp.zeroPoint = [1.0], [0]
    qp.min, qp.max = [0.0], [255.0]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
