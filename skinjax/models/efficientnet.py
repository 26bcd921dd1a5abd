"""EfficientNet-B0 (torchvision) and EfficientNet-Lite0/1/2 (efficientnet-lite-pytorch), NHWC.

All share B0's seven stages of inverted-residual (MBConv) blocks. Lite, the variant for
mobile accelerators, drops squeeze-and-excitation, uses ReLU6 instead of SiLU, and keeps
the stem and head fixed in size; its PyTorch weights come from TensorFlow, so it pads
like TensorFlow ('SAME', asymmetric at stride 2) and uses TensorFlow's BatchNorm settings.
Lite1 and Lite2 scale B0's stages by EfficientNet's compound rule (more channels, more
blocks) for a larger native resolution, 240 and 260 px against Lite0's 224.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.models.layers import (
    Activation,
    ConvNorm,
    Layers,
    StemStagesHead,
)
from skinjax.models.registry import PooledClassifier, register

Array = jax.Array

# Per stage: expansion ratio, kernel size, stride of the first block, output channels, blocks.
_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_STEM_FEATURES = 32
_HEAD_FEATURES = 1280
_STOCHASTIC_DEPTH = 0.2  # Drop rate of the last block; it grows linearly from 0 at the first.
_DIVISOR = 8  # Scaled channel counts are multiples of this.


@dataclasses.dataclass(frozen=True)
class Variant:
    """What distinguishes B0 and the Lites, including how the reference names its modules."""

    activation: Activation
    squeeze_excite: bool
    same_padding: bool
    bn_momentum: float  # flax convention: 1 - torch momentum
    bn_epsilon: float
    torch_name: Callable[[EfficientNet, str], str]
    torch_head: tuple[str, ...]
    width: float = 1.0  # Compound scaling: multiplier of every stage's channels ...
    depth: float = 1.0  # ... and of its number of blocks.
    fixed_stem_head: bool = False  # Lite: stem, head, first and last stage never scale.
    dropout: float = 0.2  # Before the classifier.

    def channels(self, features: int) -> int:
        """TensorFlow's `round_filters`: scaled to a multiple of 8, never 10% below."""
        scaled = features * self.width
        rounded = max(_DIVISOR, int(scaled + _DIVISOR / 2) // _DIVISOR * _DIVISOR)
        return rounded + _DIVISOR if rounded < 0.9 * scaled else rounded

    def stages(self) -> list[tuple[int, int, int, int, int]]:
        """`_STAGES` with this variant's channels and block counts."""
        scaled = []
        for i, (expand_ratio, kernel_size, stride, features, size) in enumerate(_STAGES):
            fixed = self.fixed_stem_head and i in (0, len(_STAGES) - 1)
            size = size if fixed else math.ceil(self.depth * size)
            scaled.append((expand_ratio, kernel_size, stride, self.channels(features), size))
        return scaled

    def stem_head(self) -> tuple[int, int]:
        """Channels of the stem and of the head convolution."""
        if self.fixed_stem_head:
            return _STEM_FEATURES, _HEAD_FEATURES
        return self.channels(_STEM_FEATURES), self.channels(_HEAD_FEATURES)


class SqueezeExcite(nnx.Module):
    """Rescales channels by a gate computed from their global average (torchvision's names)."""

    def __init__(self, features: int, squeezed: int, activation: Activation, layers: Layers):
        self.fc1 = layers.conv(features, squeezed, 1, use_bias=True)
        self.fc2 = layers.conv(squeezed, features, 1, use_bias=True)
        self.activation = activation

    def __call__(self, x: Array) -> Array:
        gate = jnp.mean(x, axis=(1, 2), keepdims=True)
        gate = nnx.sigmoid(self.fc2(self.activation(self.fc1(gate))))
        return x * gate


class MBConv(nnx.Module):
    """Inverted residual: 1x1 expansion, depthwise convolution, [squeeze-excite], 1x1 projection."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        drop_rate: float,
        variant: Variant,
        layers: Layers,
    ):
        hidden = in_features * expand_ratio
        act = variant.activation
        self.expand = (
            ConvNorm(in_features, hidden, 1, activation=act, layers=layers)
            if expand_ratio != 1
            else None
        )
        self.depthwise = ConvNorm(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, activation=act, layers=layers
        )
        self.se = (
            SqueezeExcite(hidden, max(1, in_features // 4), act, layers)
            if variant.squeeze_excite
            else None
        )
        self.project = ConvNorm(hidden, out_features, 1, layers=layers)
        # Stochastic depth: drops the whole residual branch of a random subset of images.
        self.drop_path = (
            nnx.Dropout(drop_rate, broadcast_dims=(1, 2, 3), rngs=layers.rngs)
            if stride == 1 and in_features == out_features
            else None
        )

    def __call__(self, x: Array) -> Array:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return y if self.drop_path is None else x + self.drop_path(y)


class EfficientNetBackbone(StemStagesHead):
    """Stem, seven MBConv stages and the 1x1 head convolution, each exposed as a feature."""

    def __init__(self, variant: Variant, layers: Layers):
        act = variant.activation
        stem_features, head_features = variant.stem_head()
        self.stem = ConvNorm(3, stem_features, 3, stride=2, activation=act, layers=layers)
        scaled = variant.stages()
        total = sum(stage[-1] for stage in scaled)
        stages, in_features, index = [], stem_features, 0
        for expand_ratio, kernel_size, stride, out_features, size in scaled:
            blocks = []
            for j in range(size):
                blocks.append(
                    MBConv(
                        in_features,
                        out_features,
                        expand_ratio=expand_ratio,
                        kernel_size=kernel_size,
                        stride=stride if j == 0 else 1,
                        drop_rate=_STOCHASTIC_DEPTH * index / total,
                        variant=variant,
                        layers=layers,
                    )
                )
                in_features, index = out_features, index + 1
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.head = ConvNorm(in_features, head_features, 1, activation=act, layers=layers)


class EfficientNet(PooledClassifier):
    """EfficientNet classifier: backbone, global average pooling, dropout, dense ('fc')."""

    cam_layers = ("head",)

    def __init__(
        self,
        variant: Variant,
        *,
        num_classes: int,
        layers: Layers,
    ):
        layers = dataclasses.replace(
            layers,
            bn_momentum=variant.bn_momentum,
            bn_epsilon=variant.bn_epsilon,
            same_padding=variant.same_padding,
        )
        self.variant = variant
        self.torch_head = variant.torch_head
        self.backbone = EfficientNetBackbone(variant, layers)
        self.dropout = nnx.Dropout(variant.dropout, rngs=layers.rngs)
        self.fc = layers.dense(variant.stem_head()[1], num_classes)

    def torch_name(self, path: str) -> str:
        return self.variant.torch_name(self, path)


def _block_path(path: str) -> tuple[int, int, str, str]:
    """'backbone.stages.3.1.expand.conv' -> (3, 1, 'expand', 'conv')."""
    match = re.fullmatch(r"backbone\.stages\.(\d+)\.(\d+)\.(\w+)\.(\w+)", path)
    if match is None:
        raise ValueError(f"no torch name for module {path}")
    return int(match[1]), int(match[2]), match[3], match[4]


_TORCHVISION_FIXED = {
    "backbone.stem.conv": "features.0.0",
    "backbone.stem.norm": "features.0.1",
    "backbone.head.conv": f"features.{len(_STAGES) + 1}.0",
    "backbone.head.norm": f"features.{len(_STAGES) + 1}.1",
    "fc": "classifier.1",
}


def _torchvision_name(model: EfficientNet, path: str) -> str:
    """torchvision numbers a block's layers: features.<stage>.<block>.block.<layer>.<0|1>."""
    if path in _TORCHVISION_FIXED:
        return _TORCHVISION_FIXED[path]
    stage, index, layer, leaf = _block_path(path)
    block = model.backbone.stages[stage][index]
    present = [n for n in ("expand", "depthwise", "se", "project") if getattr(block, n) is not None]
    suffix = leaf if layer == "se" else {"conv": "0", "norm": "1"}[leaf]
    return f"features.{stage + 1}.{index}.block.{present.index(layer)}.{suffix}"


_LITE_FIXED = {
    "backbone.stem.conv": "_conv_stem",
    "backbone.stem.norm": "_bn0",
    "backbone.head.conv": "_conv_head",
    "backbone.head.norm": "_bn1",
    "fc": "_fc",
}
_LITE_BLOCK = {
    ("expand", "conv"): "_expand_conv",
    ("expand", "norm"): "_bn0",
    ("depthwise", "conv"): "_depthwise_conv",
    ("depthwise", "norm"): "_bn1",
    ("project", "conv"): "_project_conv",
    ("project", "norm"): "_bn2",
}


def _lite_name(model: EfficientNet, path: str) -> str:
    """efficientnet-lite-pytorch numbers blocks across stages: _blocks.<n>._<layer>."""
    if path in _LITE_FIXED:
        return _LITE_FIXED[path]
    stage, index, layer, leaf = _block_path(path)
    number = sum(len(model.backbone.stages[s]) for s in range(stage)) + index
    return f"_blocks.{number}.{_LITE_BLOCK[layer, leaf]}"


B0 = Variant(
    activation=nnx.silu,
    squeeze_excite=True,
    same_padding=False,
    bn_momentum=0.9,
    bn_epsilon=1e-5,
    torch_name=_torchvision_name,
    torch_head=("classifier.1",),
)
LITE0 = Variant(
    activation=jax.nn.relu6,
    squeeze_excite=False,
    same_padding=True,
    bn_momentum=0.99,
    bn_epsilon=1e-3,
    torch_name=_lite_name,
    torch_head=("_fc",),
    fixed_stem_head=True,
)
# efficientnet_lite_builder.py's width, depth and dropout (resolutions: at registration).
LITE1 = dataclasses.replace(LITE0, depth=1.1)
LITE2 = dataclasses.replace(LITE0, width=1.1, depth=1.2, dropout=0.3)


@register("efficientnet_b0")
def efficientnet_b0(**kwargs) -> EfficientNet:
    """torchvision's EfficientNet-B0: SiLU, squeeze-excite, torch padding."""
    return EfficientNet(B0, **kwargs)


@register("efficientnet_lite0")
def efficientnet_lite0(**kwargs) -> EfficientNet:
    """EfficientNet-Lite0 as in efficientnet-lite-pytorch: ReLU6, no squeeze-excite."""
    return EfficientNet(LITE0, **kwargs)


@register("efficientnet_lite1", image_size=240)
def efficientnet_lite1(**kwargs) -> EfficientNet:
    """EfficientNet-Lite1: Lite0 with 1.1x the blocks (21), trained at 240 px."""
    return EfficientNet(LITE1, **kwargs)


@register("efficientnet_lite2", image_size=260)
def efficientnet_lite2(**kwargs) -> EfficientNet:
    """EfficientNet-Lite2: 1.1x the channels, 1.2x the blocks (21), trained at 260 px."""
    return EfficientNet(LITE2, **kwargs)
