"""Inception-v3, NHWC, laid out to import torchvision weights.

Every convolution is followed by BatchNorm (epsilon 1e-3) and ReLU. The stem's
unpadded convolutions and max-pools and the stride-2 blocks shrink 299 px to 8x8 and
need at least 75 px. Modules carry torchvision's names (``Mixed_6b``, ``branch7x7dbl_3``).

Differences from torchvision's ``Inception3``: no auxiliary classifier (torchvision
computes it only in training mode; a checkpoint's ``AuxLogits`` weights are skipped like
its classifier), and no ``transform_input``: torchvision turns it on with its ImageNet
weights, which were trained on inputs scaled to [-1, 1]; normalise with mean = std = 0.5
for them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.models.layers import ConvNorm, Layers
from skinjax.models.registry import PooledClassifier, register

Array = jax.Array

MIN_SIZE = 75
_FEATURES = 2048
_DROPOUT = 0.5
_BN_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution with BatchNorm and ReLU; padding per side, as torch's Conv2d takes it."""

    name: str  # torchvision's
    features: int
    kernel: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] = 0


@dataclasses.dataclass(frozen=True)
class Branch:
    """One path through a block: an optional 3x3 pool, convolutions in sequence, and an
    optional `split` into two convolutions of the last map whose outputs are concatenated."""

    convs: tuple[Conv, ...] = ()
    pool: Literal["avg", "max"] | None = None
    split: tuple[Conv, Conv] | None = None


def _conv_norm(in_features: int, conv: Conv, layers: Layers) -> ConvNorm:
    return ConvNorm(
        in_features,
        conv.features,
        conv.kernel,
        stride=conv.stride,
        padding=conv.padding,
        activation=nnx.relu,
        layers=layers,
    )


def _pool(x: Array, kind: Literal["avg", "max"]) -> Array:
    if kind == "avg":  # Zero padding counts towards the mean, as in torch's avg_pool2d.
        return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    return nnx.max_pool(x, (3, 3), strides=(2, 2))


class Mixed(nnx.Module):
    """An Inception block: its branches, concatenated along the channels."""

    def __init__(self, in_features: int, branches: tuple[Branch, ...], layers: Layers):
        self.branches = branches
        self.units = nnx.Dict()
        self.out_features = 0
        for branch in branches:
            width = in_features
            for conv in branch.convs:
                self.units[conv.name] = _conv_norm(width, conv, layers)
                width = conv.features
            for conv in branch.split or ():
                self.units[conv.name] = _conv_norm(width, conv, layers)
            self.out_features += sum(c.features for c in branch.split) if branch.split else width

    def __call__(self, x: Array) -> Array:
        outputs = []
        for branch in self.branches:
            y = x if branch.pool is None else _pool(x, branch.pool)
            for conv in branch.convs:
                y = self.units[conv.name](y)
            if branch.split:
                y = jnp.concatenate([self.units[c.name](y) for c in branch.split], axis=-1)
            outputs.append(y)
        return jnp.concatenate(outputs, axis=-1)


def _block_a(pool_features: int) -> tuple[Branch, ...]:
    return (
        Branch((Conv("branch1x1", 64),)),
        Branch((Conv("branch5x5_1", 48), Conv("branch5x5_2", 64, 5, padding=2))),
        Branch(
            (
                Conv("branch3x3dbl_1", 64),
                Conv("branch3x3dbl_2", 96, 3, padding=1),
                Conv("branch3x3dbl_3", 96, 3, padding=1),
            )
        ),
        Branch((Conv("branch_pool", pool_features),), pool="avg"),
    )


_BLOCK_B = (
    Branch((Conv("branch3x3", 384, 3, stride=2),)),
    Branch(
        (
            Conv("branch3x3dbl_1", 64),
            Conv("branch3x3dbl_2", 96, 3, padding=1),
            Conv("branch3x3dbl_3", 96, 3, stride=2),
        )
    ),
    Branch(pool="max"),
)


def _block_c(width: int) -> tuple[Branch, ...]:
    """Factorised 7x7 convolutions: 1x7 and 7x1 in turn, `width` channels between them."""
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    return (
        Branch((Conv("branch1x1", 192),)),
        Branch(
            (
                Conv("branch7x7_1", width),
                Conv("branch7x7_2", width, **row),
                Conv("branch7x7_3", 192, **col),
            )
        ),
        Branch(
            (
                Conv("branch7x7dbl_1", width),
                Conv("branch7x7dbl_2", width, **col),
                Conv("branch7x7dbl_3", width, **row),
                Conv("branch7x7dbl_4", width, **col),
                Conv("branch7x7dbl_5", 192, **row),
            )
        ),
        Branch((Conv("branch_pool", 192),), pool="avg"),
    )


_BLOCK_D = (
    Branch((Conv("branch3x3_1", 192), Conv("branch3x3_2", 320, 3, stride=2))),
    Branch(
        (
            Conv("branch7x7x3_1", 192),
            Conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3)),
            Conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0)),
            Conv("branch7x7x3_4", 192, 3, stride=2),
        )
    ),
    Branch(pool="max"),
)


def _split(name: str) -> tuple[Conv, Conv]:
    return (
        Conv(f"{name}a", 384, (1, 3), padding=(0, 1)),
        Conv(f"{name}b", 384, (3, 1), padding=(1, 0)),
    )


_BLOCK_E = (
    Branch((Conv("branch1x1", 320),)),
    Branch((Conv("branch3x3_1", 384),), split=_split("branch3x3_2")),
    Branch(
        (Conv("branch3x3dbl_1", 448), Conv("branch3x3dbl_2", 384, 3, padding=1)),
        split=_split("branch3x3dbl_3"),
    ),
    Branch((Conv("branch_pool", 192),), pool="avg"),
)

_STEM = (
    Conv("Conv2d_1a_3x3", 32, 3, stride=2),
    Conv("Conv2d_2a_3x3", 32, 3),
    Conv("Conv2d_2b_3x3", 64, 3, padding=1),
    Conv("Conv2d_3b_1x1", 80),
    Conv("Conv2d_4a_3x3", 192, 3),
)
_MAX_POOL_AFTER = ("Conv2d_2b_3x3", "Conv2d_4a_3x3")
_MIXED = (
    ("Mixed_5b", _block_a(32)),
    ("Mixed_5c", _block_a(64)),
    ("Mixed_5d", _block_a(64)),
    ("Mixed_6a", _BLOCK_B),
    ("Mixed_6b", _block_c(128)),
    ("Mixed_6c", _block_c(160)),
    ("Mixed_6d", _block_c(160)),
    ("Mixed_6e", _block_c(192)),
    ("Mixed_7a", _BLOCK_D),
    ("Mixed_7b", _BLOCK_E),
    ("Mixed_7c", _BLOCK_E),
)


class InceptionBackbone(nnx.Module):
    """The stem and the eleven Mixed blocks.

    Features: 'stem' (after the second max-pool, stride 8) and each block's output under
    its name in lower case, 'mixed_5b' ... 'mixed_7c' (strides 8, 16 and 32).
    """

    def __init__(self, layers: Layers):
        self.stem = nnx.Dict()
        width = 3
        for conv in _STEM:
            self.stem[conv.name] = _conv_norm(width, conv, layers)
            width = conv.features
        self.mixed = nnx.Dict()
        for name, branches in _MIXED:
            self.mixed[name] = Mixed(width, branches, layers)
            width = self.mixed[name].out_features

    def __call__(self, x: Array) -> dict[str, Array]:
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"Inception-v3 needs images of at least {MIN_SIZE} px, not {x.shape}")
        # nnx.Dict iterates in sorted order once traced; the specs hold the network's order.
        for conv in _STEM:
            x = self.stem[conv.name](x)
            if conv.name in _MAX_POOL_AFTER:
                x = _pool(x, "max")
        features = {"stem": x}
        for name, _ in _MIXED:
            x = self.mixed[name](x)
            features[name.lower()] = x
        return features


# In a torchvision checkpoint, and skipped with it: the auxiliary classifier on Mixed_6e.
_AUX_HEAD = tuple(
    f"AuxLogits.{m}" for m in ("conv0.conv", "conv0.bn", "conv1.conv", "conv1.bn", "fc")
)


def torch_name(path: str) -> str:
    """'backbone.mixed.Mixed_6b.units.branch7x7_2.norm' -> 'Mixed_6b.branch7x7_2.bn'."""
    path = re.sub(r"^backbone\.(stem|mixed)\.", "", path).replace(".units.", ".")
    return re.sub(r"\.norm$", ".bn", path)


@register("inception_v3", image_size=299)
class InceptionV3(PooledClassifier):
    """torchvision's Inception-v3: backbone, global average pooling, dropout, dense ('fc')."""

    cam_layers = ("mixed_7c",)
    torch_head = ("fc", *_AUX_HEAD)

    def __init__(
        self,
        *,
        num_classes: int,
        layers: Layers,
    ):
        layers = dataclasses.replace(layers, bn_epsilon=_BN_EPSILON)
        self.backbone = InceptionBackbone(layers)
        self.dropout = nnx.Dropout(_DROPOUT, rngs=layers.rngs)
        self.fc = layers.dense(_FEATURES, num_classes)

    def torch_name(self, path: str) -> str:
        return torch_name(path)
