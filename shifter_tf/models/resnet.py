"""ResNets: CIFAR ResNet-20/32/56 (He et al. 2016, 3 stages of basic blocks) and ImageNet-style
ResNet-18/50 with configurable input size and classes.

`width` multiplies every stage's filters, as everywhere in the zoo (1.0 = the paper's network);
the CIFAR ResNets' base filter count (16: stages of 16, 32, 64) is `base_filters`. Before this,
`width` was that base count: an integer width of 8 or more is refused with the new spelling.

`zero_init_residual` (off by default, as in torchvision): the last BN of every residual branch
starts with γ = 0, so each block starts as the identity (Goyal et al. 2017); deep residual nets
then train faster on short recipes (MobileNetV2 on Fashion-MNIST, 6 epochs: +1.3 points dense,
two seeds).
"""
from __future__ import annotations

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.models.vgg import BN_EPSILON, BN_MOMENTUM, kaiming

L = keras.layers


def _conv_bn(x, filters, kernel, stride, name, relu=True, zero_gamma=False):
    x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                 kernel_initializer=kaiming(), name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn",
                             gamma_initializer="zeros" if zero_gamma else "ones")(x)
    return L.ReLU(name=f"{name}_relu")(x) if relu else x


def _shortcut(x, filters, stride, name):
    """Identity when shapes agree, else a 1x1 projection (option B, as in open_lth)."""
    if stride == 1 and x.shape[-1] == filters:
        return x
    return _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)


def basic_block(x, filters, stride, name, zero_init=False):
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False, zero_gamma=zero_init)
    y = L.Add(name=f"{name}_add")([_shortcut(x, filters, stride, name), y])
    return L.ReLU(name=f"{name}_out")(y)


def bottleneck_block(x, filters, stride, name, zero_init=False):
    y = _conv_bn(x, filters, 1, 1, f"{name}_a")
    y = _conv_bn(y, filters, 3, stride, f"{name}_b")
    y = _conv_bn(y, filters * 4, 1, 1, f"{name}_c", relu=False, zero_gamma=zero_init)
    y = L.Add(name=f"{name}_add")([_shortcut(x, filters * 4, stride, name), y])
    return L.ReLU(name=f"{name}_out")(y)


OLD_WIDTH = 8   # an integer `width` at least this large is the old base-filter count


def check_width(width: float, name: str) -> float:
    """`width` as a multiplier; the old meaning (base filters, an int like 16) is an error."""
    if isinstance(width, int) and not isinstance(width, bool) and width >= OLD_WIDTH:
        raise ValueError(
            f"{name}: width is a multiplier of every stage's filters now (1.0 = the paper's "
            f"network); width={width} looks like the old base-filter count: write "
            f"base_filters: {width} (and width: 1.0, the default) instead")
    if not width > 0:
        raise ValueError(f"{name}: width must be > 0, got {width}")
    return float(width)


def scaled(filters: int, width: float) -> int:
    return max(1, int(round(filters * width)))


def cifar_resnet(depth: int, input_shape, num_classes: int, width: float = 1.0,
                 base_filters: int = 16, zero_init_residual: bool = False) -> keras.Model:
    """CIFAR ResNet-(6n+2): 3 stages of n basic blocks, filters b, 2b, 4b (b = base_filters)
    times `width`. `zero_init_residual`: see the module doc."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    width = check_width(width, f"resnet{depth}")
    n = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape, name="input")
    stages = [scaled(base_filters * k, width) for k in (1, 2, 4)]
    x = _conv_bn(inputs, stages[0], 3, 1, "stem")
    for stage, filters in enumerate(stages):
        for i in range(n):
            x = basic_block(x, filters, 2 if (stage > 0 and i == 0) else 1, f"s{stage + 1}b{i + 1}",
                            zero_init_residual)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, kernel_initializer=kaiming(), name="fc")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def imagenet_resnet(blocks, block_fn, input_shape, num_classes: int, name: str,
                    small_input: bool = False, width: float = 1.0,
                    zero_init_residual: bool = False) -> keras.Model:
    """ImageNet ResNet; `small_input` swaps the 7x7/2 stem + max-pool for a 3x3/1 conv (64x64);
    `width` multiplies every stage's filters."""
    width = check_width(width, name)
    inputs = keras.Input(shape=input_shape, name="input")
    stem = scaled(64, width)
    if small_input:
        x = _conv_bn(inputs, stem, 3, 1, "stem")
    else:
        x = _conv_bn(inputs, stem, 7, 2, "stem")
        x = L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    stages = [scaled(f, width) for f in (64, 128, 256, 512)]
    for stage, (count, filters) in enumerate(zip(blocks, stages)):
        for i in range(count):
            x = block_fn(x, filters, 2 if (stage > 0 and i == 0) else 1, f"s{stage + 1}b{i + 1}",
                         zero_init_residual)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, kernel_initializer=kaiming(), name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def cifar_resnet20(input_shape, num_classes, width: float = 1.0, base_filters: int = 16,
                   zero_init_residual: bool = False):
    return cifar_resnet(20, input_shape, num_classes, width=width, base_filters=base_filters,
                        zero_init_residual=zero_init_residual)


def cifar_resnet32(input_shape, num_classes, width: float = 1.0, base_filters: int = 16,
                   zero_init_residual: bool = False):
    return cifar_resnet(32, input_shape, num_classes, width=width, base_filters=base_filters,
                        zero_init_residual=zero_init_residual)


def cifar_resnet56(input_shape, num_classes, width: float = 1.0, base_filters: int = 16,
                   zero_init_residual: bool = False):
    return cifar_resnet(56, input_shape, num_classes, width=width, base_filters=base_filters,
                        zero_init_residual=zero_init_residual)


def resnet18(input_shape, num_classes, small_input: bool = False, width: float = 1.0,
             zero_init_residual: bool = False):
    return imagenet_resnet([2, 2, 2, 2], basic_block, input_shape, num_classes, "resnet18",
                           small_input=small_input, width=width,
                           zero_init_residual=zero_init_residual)


def resnet50(input_shape, num_classes, small_input: bool = False, width: float = 1.0,
             zero_init_residual: bool = False):
    return imagenet_resnet([3, 4, 6, 3], bottleneck_block, input_shape, num_classes, "resnet50",
                           small_input=small_input, width=width,
                           zero_init_residual=zero_init_residual)
