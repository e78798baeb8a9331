"""ResNets: CIFAR ResNet-20/32/56 (He et al. 2016, 3 stages of basic blocks) and ImageNet-style
ResNet-18/50 with configurable input size and classes."""
from __future__ import annotations

import shifter_tf  # noqa: F401
import tf_keras as keras

from shifter_tf.models.vgg import BN_EPSILON, BN_MOMENTUM, kaiming

L = keras.layers


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                 kernel_initializer=kaiming(), name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x) if relu else x


def _shortcut(x, filters, stride, name):
    """Identity when shapes agree, else a 1x1 projection (option B, as in open_lth)."""
    if stride == 1 and x.shape[-1] == filters:
        return x
    return _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)


def basic_block(x, filters, stride, name):
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False)
    y = L.Add(name=f"{name}_add")([_shortcut(x, filters, stride, name), y])
    return L.ReLU(name=f"{name}_out")(y)


def bottleneck_block(x, filters, stride, name):
    y = _conv_bn(x, filters, 1, 1, f"{name}_a")
    y = _conv_bn(y, filters, 3, stride, f"{name}_b")
    y = _conv_bn(y, filters * 4, 1, 1, f"{name}_c", relu=False)
    y = L.Add(name=f"{name}_add")([_shortcut(x, filters * 4, stride, name), y])
    return L.ReLU(name=f"{name}_out")(y)


def cifar_resnet(depth: int, input_shape, num_classes: int, width: int = 16) -> keras.Model:
    """CIFAR ResNet-(6n+2): 3 stages of n basic blocks, widths w, 2w, 4w."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn(inputs, width, 3, 1, "stem")
    for stage, filters in enumerate([width, 2 * width, 4 * width]):
        for i in range(n):
            x = basic_block(x, filters, 2 if (stage > 0 and i == 0) else 1, f"s{stage + 1}b{i + 1}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, kernel_initializer=kaiming(), name="fc")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def imagenet_resnet(blocks, block_fn, input_shape, num_classes: int, name: str,
                    small_input: bool = False) -> keras.Model:
    """ImageNet ResNet; `small_input` swaps the 7x7/2 stem + max-pool for a 3x3/1 conv (64x64)."""
    inputs = keras.Input(shape=input_shape, name="input")
    if small_input:
        x = _conv_bn(inputs, 64, 3, 1, "stem")
    else:
        x = _conv_bn(inputs, 64, 7, 2, "stem")
        x = L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (count, filters) in enumerate(zip(blocks, [64, 128, 256, 512])):
        for i in range(count):
            x = block_fn(x, filters, 2 if (stage > 0 and i == 0) else 1, f"s{stage + 1}b{i + 1}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, kernel_initializer=kaiming(), name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def cifar_resnet20(input_shape, num_classes, width: int = 16):
    return cifar_resnet(20, input_shape, num_classes, width=width)


def cifar_resnet32(input_shape, num_classes, width: int = 16):
    return cifar_resnet(32, input_shape, num_classes, width=width)


def cifar_resnet56(input_shape, num_classes, width: int = 16):
    return cifar_resnet(56, input_shape, num_classes, width=width)


def resnet18(input_shape, num_classes, small_input: bool = False):
    return imagenet_resnet([2, 2, 2, 2], basic_block, input_shape, num_classes, "resnet18",
                           small_input=small_input)


def resnet50(input_shape, num_classes, small_input: bool = False):
    return imagenet_resnet([3, 4, 6, 3], bottleneck_block, input_shape, num_classes, "resnet50",
                           small_input=small_input)
