"""Phone/edge families: MobileNetV2 (inverted residuals, Sandler et al. 2018) and a
MobileNetV3-small-like net (squeeze-excite, hard-swish; Howard et al. 2019), for any input of at
least 28x28 with 1 or 3 channels.

`width` is the width multiplier of every builder in the zoo (Keras' `alpha`, accepted as an
alias): channel counts are width x the paper's, rounded to multiples of 8 as Keras does. The
downsampling adapts to the input: of the paper's five stride-2 places (stem and four stages),
the first k stay stride-2, where k is the most that keeps the final feature map at least 4 pixels
wide (28 and 32 -> 3, 64 -> 4, >= 128 -> 5: the paper's network at 224). Keeping the early strides
keeps small inputs cheap to train and run: mobilenet_v2 at width 0.5 on 28x28 is 11 M MACs.

Hard-swish is built from plain layers, x * clip(x/6 + 1/2, 0, 1) = Multiply([x, ReLU(1)(
Rescaling(1/6, 1/2)(x))]), so the graph rewriter prunes through it and no Lambda is needed.
"""
from __future__ import annotations

import math
from typing import Optional

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.models.vgg import BN_EPSILON, BN_MOMENTUM, kaiming

L = keras.layers

# MobileNetV2: (expansion t, channels c, repeats n, stride s)
V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]
# MobileNetV3-small: (kernel, expanded, out, squeeze-excite, hard-swish, stride)
V3_SMALL_BLOCKS = [(3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2),
                   (3, 88, 24, False, False, 1), (5, 96, 40, True, True, 2),
                   (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
                   (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1),
                   (5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1),
                   (5, 576, 96, True, True, 1)]


def make_divisible(v: float, divisor: int = 8, minimum: Optional[int] = None) -> int:
    """Keras/TF-slim rounding of a channel count to a multiple of `divisor` (never more than
    10 % below `v`)."""
    minimum = minimum or divisor
    new = max(minimum, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _width(width: float, alpha: Optional[float]) -> float:
    if alpha is not None:
        if width != 1.0 and width != alpha:
            raise ValueError(f"alpha is an alias of width; got width={width} and alpha={alpha}")
        width = alpha
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return float(width)


def _strides(input_shape, stages: int = 5) -> list[int]:
    """Strides of the paper's `stages` stride-2 places for this input (see the module doc)."""
    h, w, c = (tuple(input_shape) + (None,) * 3)[:3]
    if h is None or w is None or min(h, w) < 28:
        raise ValueError(f"MobileNets here take inputs of at least 28x28 pixels, got {input_shape}")
    if c not in (1, 3):
        raise ValueError(f"MobileNets here take 1 or 3 channels, got {c}")
    k = 0
    while k < stages and math.ceil(min(h, w) / 2 ** (k + 1)) >= 4:
        k += 1
    return [2] * k + [1] * (stages - k)


def _bn(x, name, zero_gamma=False):
    return L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name,
                                gamma_initializer="zeros" if zero_gamma else "ones")(x)


def _conv(x, filters, kernel, stride, name, act):
    x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                 kernel_initializer=kaiming(), name=name)(x)
    return act(_bn(x, f"{name}_bn"), name)


def relu6(x, name):
    return L.ReLU(6.0, name=f"{name}_relu6")(x)


def relu(x, name):
    return L.ReLU(name=f"{name}_relu")(x)


def hard_sigmoid(x, name):
    """clip(x/6 + 1/2, 0, 1) = relu6(x + 3) / 6."""
    x = L.Rescaling(1.0 / 6.0, offset=0.5, name=f"{name}_hsig_scale")(x)
    return L.ReLU(1.0, name=f"{name}_hsig")(x)


def hard_swish(x, name):
    return L.Multiply(name=f"{name}_hswish")([x, hard_sigmoid(x, name)])


def inverted_residual(x, hidden: int, filters: int, stride: int, name: str,
                      kernel: int = 3, act=relu6, se: bool = False, zero_init: bool = False):
    """1x1 expand to `hidden` (none when it equals the input's channels) -> kxk depthwise ->
    (squeeze-excite) -> 1x1 project to `filters`, + x when the shapes match (then with the
    project BN's γ starting at 0 if `zero_init`)."""
    cin = x.shape[-1]
    y = x
    if hidden != cin:
        y = _conv(y, hidden, 1, 1, f"{name}_expand", act)
    y = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                          depthwise_initializer=kaiming(), name=f"{name}_dw")(y)
    y = act(_bn(y, f"{name}_dw_bn"), f"{name}_dw")
    if se:
        y = squeeze_excite(y, f"{name}_se")
    y = L.Conv2D(filters, 1, use_bias=False, kernel_initializer=kaiming(),
                 name=f"{name}_project")(y)
    residual = stride == 1 and cin == filters
    y = _bn(y, f"{name}_project_bn", zero_gamma=zero_init and residual)
    if residual:
        y = L.Add(name=f"{name}_add")([x, y])
    return y


def squeeze_excite(x, name, ratio: float = 0.25):
    """Global pool -> 1x1 reduce (ReLU) -> 1x1 expand -> hard-sigmoid -> scale the channels."""
    c = x.shape[-1]
    s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = L.Conv2D(make_divisible(c * ratio), 1, kernel_initializer=kaiming(),
                 name=f"{name}_reduce")(s)
    s = L.ReLU(name=f"{name}_relu")(s)
    s = L.Conv2D(c, 1, kernel_initializer=kaiming(), name=f"{name}_expand")(s)
    return L.Multiply(name=f"{name}_scale")([x, hard_sigmoid(s, name)])


def mobilenet_v2(input_shape, num_classes, width: float = 1.0, alpha: Optional[float] = None,
                 last_channels: int = 1280, dropout: float = 0.0,
                 zero_init_residual: bool = False) -> keras.Model:
    """MobileNetV2: stem 3x3/2 conv, 17 inverted-residual blocks, 1x1 conv to `last_channels`
    (x width when width > 1, as Keras), global average pool, (dropout), dense classifier.
    `zero_init_residual`: see `shifter_tf.models.resnet`."""
    width = _width(width, alpha)
    strides = iter(_strides(input_shape))
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv(inputs, make_divisible(32 * width), 3, next(strides), "stem", relu6)
    block = 0
    for t, c, n, s in V2_BLOCKS:
        stage_stride = next(strides) if s == 2 else 1
        for i in range(n):
            block += 1
            x = inverted_residual(x, x.shape[-1] * t, make_divisible(c * width),
                                  stage_stride if i == 0 else 1, f"block{block}",
                                  zero_init=zero_init_residual)
    last = make_divisible(last_channels * width) if width > 1.0 else int(last_channels)
    x = _conv(x, last, 1, 1, "head", relu6)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    outputs = L.Dense(num_classes, kernel_initializer=kaiming(), name="fc")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def mobilenet_v3_small(input_shape, num_classes, width: float = 1.0,
                       alpha: Optional[float] = None, last_channels: int = 1024,
                       dropout: float = 0.0, zero_init_residual: bool = False) -> keras.Model:
    """MobileNetV3-small-like: stem 3x3/2 conv (hard-swish), 11 inverted-residual blocks with
    squeeze-excite and hard-swish where the paper has them, 1x1 conv to 576 x width
    (hard-swish), global average pool, dense `last_channels` (hard-swish), dense classifier."""
    width = _width(width, alpha)
    strides = iter(_strides(input_shape))
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv(inputs, make_divisible(16 * width), 3, next(strides), "stem", hard_swish)
    for i, (k, exp, out, se, hs, s) in enumerate(V3_SMALL_BLOCKS, start=1):
        stride = next(strides) if s == 2 else 1
        x = inverted_residual(x, make_divisible(exp * width), make_divisible(out * width), stride,
                              f"block{i}", kernel=k, act=hard_swish if hs else relu, se=se,
                              zero_init=zero_init_residual)
    x = _conv(x, make_divisible(576 * width), 1, 1, "head", hard_swish)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(int(last_channels), kernel_initializer=kaiming(), name="head_fc")(x)
    x = hard_swish(x, "head_fc")
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    outputs = L.Dense(num_classes, kernel_initializer=kaiming(), name="fc")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v3_small")
