"""CIFAR-style VGG (conv-BN-ReLU blocks, one classifier layer), as in open_lth's cifar_vgg."""
from __future__ import annotations

from typing import Sequence

import shifter_tf  # noqa: F401
import tf_keras as keras

L = keras.layers

CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512],
    # The embedded default: 6 convs, small enough to train an IMP portfolio in minutes on a CPU.
    "vgg_small": [16, 16, "M", 32, 32, "M", 64, 64],
}


# PyTorch's BatchNorm defaults (momentum 0.1 there = 0.9 here): Keras' 0.99 leaves the moving
# statistics far from the batch statistics after the few hundred steps of a short level.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def kaiming():
    """Kaiming-normal, fan-in, untruncated: PyTorch's `kaiming_normal_` default."""
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def build_vgg(cfg: Sequence, input_shape, num_classes: int, name: str = "vgg",
              width: float = 1.0) -> keras.Model:
    """Stack conv3x3-BN-ReLU per int in `cfg`, 2x2 max-pool per "M", global average pool, fc.

    `width` multiplies every conv's filters (rounded, at least 1): 0.5 is the half-width net.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    block, conv = 1, 1
    for v in cfg:
        if v == "M":
            x = L.MaxPooling2D(2, name=f"block{block}_pool")(x)
            block, conv = block + 1, 1
            continue
        x = L.Conv2D(max(1, round(v * width)), 3, padding="same", use_bias=False, kernel_initializer=kaiming(),
                     name=f"block{block}_conv{conv}")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                 name=f"block{block}_bn{conv}")(x)
        x = L.ReLU(name=f"block{block}_relu{conv}")(x)
        conv += 1
    # open_lth averages the final 2x2 map of a 32x32 input; global pooling generalises that.
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, kernel_initializer=kaiming(), name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def _make(name):
    def builder(input_shape, num_classes, width: float = 1.0):
        return build_vgg(CFGS[name], input_shape, num_classes, name=name, width=width)
    builder.__name__ = name
    builder.__doc__ = f"{name}: {CFGS[name]}, conv filters × `width`"
    return builder


vgg11 = _make("vgg11")
vgg13 = _make("vgg13")
vgg16 = _make("vgg16")
vgg19 = _make("vgg19")
vgg_small = _make("vgg_small")
