"""DenseNet-121, NHWC, laid out to import torchvision weights.

Each dense layer sees the concatenation of every earlier map of its block, through
pre-activation units (BatchNorm, ReLU, convolution): a 1x1 bottleneck to 4 x 32
channels, then a 3x3 convolution adding 32 (the growth rate). Transitions between
blocks halve the channels (1x1 convolution) and the resolution (2x2 average pooling).
The concatenations are plain ones, not torchvision's memory-efficient checkpointed form
(the same function; under jit, `jax.checkpoint` would be the way to trade compute for memory).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.models.layers import ConvNorm, Layers
from skinjax.models.registry import PooledClassifier, register

Array = jax.Array

_BLOCKS = (6, 12, 24, 16)  # dense layers per block
_GROWTH = 32
_BOTTLENECK = 4  # the 1x1 convolution's width, in multiples of the growth rate
_STEM_FEATURES = 64


class DenseLayer(nnx.Module):
    """BatchNorm, ReLU, 1x1 convolution, BatchNorm, ReLU, 3x3 convolution; appends its output."""

    def __init__(self, in_features: int, layers: Layers):
        width = _BOTTLENECK * _GROWTH
        self.norm1 = layers.norm(in_features)
        self.conv1 = layers.conv(in_features, width, 1)
        self.norm2 = layers.norm(width)
        self.conv2 = layers.conv(width, _GROWTH, 3)

    def __call__(self, x: Array) -> Array:
        y = self.conv1(nnx.relu(self.norm1(x)))
        y = self.conv2(nnx.relu(self.norm2(y)))
        return jnp.concatenate([x, y], axis=-1)


class Transition(nnx.Module):
    """BatchNorm, ReLU, 1x1 convolution to half the channels, 2x2 average pooling."""

    def __init__(self, in_features: int, layers: Layers):
        self.norm = layers.norm(in_features)
        self.conv = layers.conv(in_features, in_features // 2, 1)

    def __call__(self, x: Array) -> Array:
        x = self.conv(nnx.relu(self.norm(x)))
        return nnx.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNetBackbone(nnx.Module):
    """Stem, four dense blocks with transitions between them, and the final BatchNorm.

    Features: 'stem' (after the max-pool, stride 4), 'block1' ... 'block4' (each block's
    concatenated output, before its transition) and 'head' (block4 after BatchNorm and
    ReLU, the map torchvision pools).
    """

    def __init__(self, layers: Layers):
        self.stem = ConvNorm(3, _STEM_FEATURES, 7, stride=2, activation=nnx.relu, layers=layers)
        blocks, transitions, width = [], [], _STEM_FEATURES
        for i, size in enumerate(_BLOCKS):
            block = []
            for _ in range(size):
                block.append(DenseLayer(width, layers))
                width += _GROWTH
            blocks.append(nnx.List(block))
            if i < len(_BLOCKS) - 1:
                transitions.append(Transition(width, layers))
                width //= 2
        self.blocks = nnx.List(blocks)
        self.transitions = nnx.List(transitions)
        self.norm = layers.norm(width)
        self.out_features = width

    def __call__(self, x: Array) -> dict[str, Array]:
        x = self.stem(x)
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features = {"stem": x}
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = self.transitions[i - 1](x)
            for layer in block:
                x = layer(x)
            features[f"block{i + 1}"] = x
        features["head"] = nnx.relu(self.norm(x))
        return features


# nnx module path -> torchvision module name, e.g. backbone.blocks.2.5.norm1 ->
# features.denseblock3.denselayer6.norm1, backbone.transitions.0.conv -> features.transition1.conv.
_TORCH_RULES = (
    (r"^backbone\.", "features."),
    (r"stem\.conv", "conv0"),
    (r"stem\.norm", "norm0"),
    (r"blocks\.(\d+)\.(\d+)", lambda m: f"denseblock{int(m[1]) + 1}.denselayer{int(m[2]) + 1}"),
    (r"transitions\.(\d+)", lambda m: f"transition{int(m[1]) + 1}"),
    (r"^features\.norm$", f"features.norm{len(_BLOCKS) + 1}"),
    (r"^fc$", "classifier"),
)


def torch_name(path: str) -> str:
    """The torchvision DenseNet module name of the backbone or head module at `path`."""
    for pattern, replacement in _TORCH_RULES:
        path = re.sub(pattern, replacement, path)
    return path


@register("densenet121")
class DenseNet121(PooledClassifier):
    """torchvision's DenseNet-121: backbone, global average pooling, one dense layer."""

    cam_layers = ("head",)
    torch_head = ("classifier",)

    def __init__(
        self,
        *,
        num_classes: int,
        layers: Layers,
    ):
        self.backbone = DenseNetBackbone(layers)
        self.fc = layers.dense(self.backbone.out_features, num_classes)

    def torch_name(self, path: str) -> str:
        return torch_name(path)
