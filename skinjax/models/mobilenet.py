"""MobileNetV2, NHWC, laid out to import torchvision weights.

Seven stages of inverted residual blocks (1x1 expansion, 3x3 depthwise convolution,
linear 1x1 projection, ReLU6) between a stride-2 stem and a 1x1 head convolution to
1280 channels. The block is EfficientNet's `MBConv` with EfficientNet-Lite's choices,
ReLU6 and no squeeze-excite, and without stochastic depth.
"""

from __future__ import annotations

import dataclasses
import re

import jax
from flax import nnx

from skinjax.models import efficientnet
from skinjax.models.layers import ConvNorm, Layers, StemStagesHead
from skinjax.models.registry import PooledClassifier, register

Array = jax.Array

# Per stage, the paper's t, c, n, s: expansion ratio, output channels, blocks, first stride.
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_FEATURES = 32
_HEAD_FEATURES = 1280
_DROPOUT = 0.2
# The block: EfficientNet-Lite0's MBConv (ReLU6, no squeeze-excite) with torch's padding
# and BatchNorm settings, which `Layers` applies by default.
_BLOCK = dataclasses.replace(
    efficientnet.LITE0, same_padding=False, bn_momentum=0.9, bn_epsilon=1e-5
)


class MobileNetV2Backbone(StemStagesHead):
    """Stem, seven stages and the head convolution, each exposed as a feature."""

    def __init__(self, layers: Layers):
        act = _BLOCK.activation
        self.stem = ConvNorm(3, _STEM_FEATURES, 3, stride=2, activation=act, layers=layers)
        stages, in_features = [], _STEM_FEATURES
        for expand_ratio, out_features, size, stride in _STAGES:
            blocks = []
            for j in range(size):
                blocks.append(
                    efficientnet.MBConv(
                        in_features,
                        out_features,
                        expand_ratio=expand_ratio,
                        kernel_size=3,
                        stride=stride if j == 0 else 1,
                        drop_rate=0.0,
                        variant=_BLOCK,
                        layers=layers,
                    )
                )
                in_features = out_features
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.head = ConvNorm(in_features, _HEAD_FEATURES, 1, activation=act, layers=layers)


_FIXED = {
    "backbone.stem.conv": "features.0.0",
    "backbone.stem.norm": "features.0.1",
    "backbone.head.conv": f"features.{sum(s[2] for s in _STAGES) + 1}.0",
    "backbone.head.norm": f"features.{sum(s[2] for s in _STAGES) + 1}.1",
    "fc": "classifier.1",
}


@register("mobilenet_v2")
class MobileNetV2(PooledClassifier):
    """torchvision's MobileNetV2 (width 1.0): backbone, global average pooling, dropout, dense."""

    cam_layers = ("head",)
    torch_head = ("classifier.1",)

    def __init__(
        self,
        *,
        num_classes: int,
        layers: Layers,
    ):
        self.backbone = MobileNetV2Backbone(layers)
        self.dropout = nnx.Dropout(_DROPOUT, rngs=layers.rngs)
        self.fc = layers.dense(_HEAD_FEATURES, num_classes)

    def torch_name(self, path: str) -> str:
        """torchvision numbers blocks across stages, and a block's layers within it:
        features.<n>.conv.<i>.<0|1> for a convolution with BatchNorm and ReLU6, then the
        projection's convolution and BatchNorm as conv.<i + 1> and conv.<i + 2>."""
        if path in _FIXED:
            return _FIXED[path]
        match = re.fullmatch(r"backbone\.stages\.(\d+)\.(\d+)\.(\w+)\.(conv|norm)", path)
        if match is None:
            raise ValueError(f"no torch name for module {path}")
        stage, index, layer, leaf = int(match[1]), int(match[2]), match[3], match[4]
        number = 1 + sum(s[2] for s in _STAGES[:stage]) + index
        block = self.backbone.stages[stage][index]
        activated = [n for n in ("expand", "depthwise") if getattr(block, n) is not None]
        offset = {"conv": 0, "norm": 1}[leaf]
        if layer == "project":
            return f"features.{number}.conv.{len(activated) + offset}"
        return f"features.{number}.conv.{activated.index(layer)}.{offset}"
