"""ResNet-18 to ResNet-152, v1.5, NHWC, laid out to import torchvision weights.

v1.5 (torchvision's layout) strides the 3x3 convolution of a bottleneck block rather
than its first 1x1 convolution, as the original paper and Keras do. Every 1x1
convolution is a `PointwiseConv`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import jax
from flax import nnx

from skinjax.kernels import ops
from skinjax.models.layers import ConvNorm, Layers
from skinjax.models.registry import PooledClassifier, register

Array = jax.Array


class ResidualBlock(nnx.Module):
    """A basic block (two 3x3 convolutions) or a bottleneck (1x1, 3x3, 1x1 with 4x expansion)."""

    def __init__(
        self, in_features: int, features: int, *, stride: int, bottleneck: bool, layers: Layers
    ):
        if bottleneck:
            specs = ((1, 1, features), (3, stride, features), (1, 1, 4 * features))
        else:
            specs = ((3, stride, features), (3, 1, features))
        units, width = [], in_features
        for kernel_size, unit_stride, out in specs:
            units.append(
                ConvNorm(
                    width, out, kernel_size, stride=unit_stride, activation=nnx.relu, layers=layers
                )
            )
            width = out
        self.units = nnx.List(units)
        self.out_features = width
        self.downsample = (
            ConvNorm(in_features, width, 1, stride=stride, layers=layers)
            if stride != 1 or in_features != width
            else None
        )

    def __call__(self, x: Array) -> Array:
        shortcut = x if self.downsample is None else self.downsample(x)
        *first, last = self.units
        for unit in first:
            x = unit(x)
        return last(x, residual=shortcut)  # its ReLU after the addition


class ResNetBackbone(nnx.Module):
    """Stem and four stages; returns the stem output ('stage1') and each stage's output."""

    def __init__(self, stage_sizes: Sequence[int], *, bottleneck: bool, width: int, layers: Layers):
        self.stem = ConvNorm(3, width, 7, stride=2, activation=nnx.relu, layers=layers)
        stages, in_features = [], width
        for i, size in enumerate(stage_sizes):
            blocks = []
            for j in range(size):
                stride = 2 if i > 0 and j == 0 else 1
                block = ResidualBlock(
                    in_features, width * 2**i, stride=stride, bottleneck=bottleneck, layers=layers
                )
                blocks.append(block)
                in_features = block.out_features
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.out_features = in_features

    def __call__(self, x: Array) -> dict[str, Array]:
        x = self.stem(x)
        x = ops.max_pool(x)
        features = {"stage1": x}
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x)
            features[f"stage{i + 2}"] = x
        return features


# nnx module path -> torchvision module name, e.g.
# backbone.stages.0.1.units.2.norm -> layer1.1.bn3, backbone.stages.1.0.downsample.conv ->
# layer2.0.downsample.0.
_TORCH_RULES = (
    (r"^backbone\.", ""),
    (r"^stem\.conv", "conv1"),
    (r"^stem\.norm", "bn1"),
    (r"stages\.(\d+)", lambda m: f"layer{int(m[1]) + 1}"),
    (r"units\.(\d+)\.conv", lambda m: f"conv{int(m[1]) + 1}"),
    (r"units\.(\d+)\.norm", lambda m: f"bn{int(m[1]) + 1}"),
    (r"downsample\.conv", "downsample.0"),
    (r"downsample\.norm", "downsample.1"),
)


def torch_name(path: str) -> str:
    """The torchvision ResNet module name of the backbone or head module at `path`."""
    for pattern, replacement in _TORCH_RULES:
        path = re.sub(pattern, replacement, path)
    return path


class ResNet(PooledClassifier):
    """ResNet classifier: backbone, global average pooling, one dense layer ('fc').

    `width` is the channel count of the stem and first stage (64 in the paper); stages
    double it. A small width (e.g. 8) gives a tiny network for tests.
    """

    cam_layers = ("stage5",)
    torch_head = ("fc",)

    def __init__(
        self,
        stage_sizes: Sequence[int],
        bottleneck: bool,
        *,
        num_classes: int,
        width: int = 64,
        layers: Layers,
    ):
        self.backbone = ResNetBackbone(
            stage_sizes, bottleneck=bottleneck, width=width, layers=layers
        )
        self.fc = layers.dense(self.backbone.out_features, num_classes)

    def torch_name(self, path: str) -> str:
        return torch_name(path)


_DEPTHS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
    "resnet152": ((3, 8, 36, 3), True),
}
for _name, (_stage_sizes, _bottleneck) in _DEPTHS.items():
    register(_name)(functools.partial(ResNet, _stage_sizes, _bottleneck))
