"""VGG-16 (torchvision's layout) and VGG16-GAP (the CAM paper's network), NHWC.

Both share VGG-16's thirteen 3x3 convolutions (torchvision's ``features``), exposed as the
last map of each block before its max-pooling: ``conv1_2`` ... ``conv5_3``.

- ``vgg16`` is torchvision's: pool5, an adaptive average pool to 7x7, then fc6 and fc7
  (4096 units, ReLU, dropout 0.5) and fc8. fc6 and fc7 belong to the backbone, as
  ImageNet features: fine-tuning replaces fc8 only, torchvision's ``classifier.6``.
- ``vgg16_gap`` is the CAM paper's VGGnet-GAP (Zhou et al., 2016), as released in
  zhoubolei/CAM, ``models/deploy_vgg16CAM.prototxt``: no pool5 (conv5_3 stays at stride
  16, 14x14 at 224 px), then a 3x3 convolution to 1024 channels in two groups with ReLU
  (``cam_conv``), global average pooling, dropout 0.5 and one dense layer. Its class
  activation maps are ``cam_conv`` weighted by that dense kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from skinjax.models.layers import Layers
from skinjax.models.registry import Classifier, PooledClassifier, register

Array = jax.Array

_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convolutions)
_POOLED = 7  # torchvision's adaptive pooling size before fc6
_HIDDEN = 4096
_DROPOUT = 0.5
_CAM_FEATURES, _CAM_GROUPS = 1024, 2
_CLASSIFIER = ("classifier.0", "classifier.3", "classifier.6")  # fc6, fc7, fc8


def _pooling_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) weights of torch's adaptive average pooling along one axis.

    Bin i averages positions floor(i * size / out) to ceil((i + 1) * size / out): when
    `out` divides `size` that is plain average pooling (the identity when they are
    equal), otherwise the bins differ in size or overlap, e.g. when upsampling.
    """
    weights = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = i * size // out, -(-(i + 1) * size // out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def adaptive_average_pool(x: Array, out: int) -> Array:
    """torch's AdaptiveAvgPool2d((out, out)) on NHWC input, exact for every input size."""
    _, height, width, _ = x.shape
    if height == width == out:
        return x
    rows = jnp.asarray(_pooling_matrix(height, out), x.dtype)
    cols = jnp.asarray(_pooling_matrix(width, out), x.dtype)
    return jnp.einsum("nhwc,ih,jw->nijc", x, rows, cols)


def _max_pool(x: Array) -> Array:
    return nnx.max_pool(x, (2, 2), strides=(2, 2))


class VGGBackbone(nnx.Module):
    """VGG-16's convolutions with ReLU, and with `fully_connected` fc6 and fc7.

    Calling it gives the convolution maps; `fc6` and `fc7` are applied by the classifier
    that owns the dropout between them.
    """

    def __init__(self, layers: Layers, *, fully_connected: bool):
        blocks, in_features = [], 3
        for features, size in _BLOCKS:
            convs = []
            for _ in range(size):
                convs.append(layers.conv(in_features, features, 3, use_bias=True))
                in_features = features
            blocks.append(nnx.List(convs))
        self.blocks = nnx.List(blocks)
        self.out_features = in_features
        self.fc6 = layers.dense(in_features * _POOLED**2, _HIDDEN) if fully_connected else None
        self.fc7 = layers.dense(_HIDDEN, _HIDDEN) if fully_connected else None

    def __call__(self, x: Array) -> dict[str, Array]:
        features = {}
        for i, convs in enumerate(self.blocks):
            if i > 0:
                x = _max_pool(x)
            for conv in convs:
                x = nnx.relu(conv(x))
            features[f"conv{i + 1}_{len(convs)}"] = x
        return features


def torch_name(path: str) -> str | None:
    """torchvision's name for a backbone module (features.<index>, classifier.<0|3>)."""
    parts = path.split(".")
    if parts[:2] == ["backbone", "blocks"]:
        block, conv = int(parts[2]), int(parts[3])
        # Each block is conv, ReLU pairs then a max-pool: 2 * size + 1 modules.
        return f"features.{sum(2 * n + 1 for _, n in _BLOCKS[:block]) + 2 * conv}"
    return {"backbone.fc6": _CLASSIFIER[0], "backbone.fc7": _CLASSIFIER[1]}.get(path)


class _VGG(Classifier):
    """What both networks share: the backbone, the dropout, and `features` then `classify`."""

    def __init__(self, layers: Layers, *, fully_connected: bool):
        self.backbone = VGGBackbone(layers, fully_connected=fully_connected)
        self.dropout = nnx.Dropout(_DROPOUT, rngs=layers.rngs)


@register("vgg16")
class VGG16(_VGG):
    """torchvision's VGG-16: pool5, 7x7 adaptive average pool, fc6, fc7, fc8."""

    cam_layers = ("conv5_3",)
    torch_head = (_CLASSIFIER[2],)

    def __init__(
        self,
        *,
        num_classes: int,
        layers: Layers,
    ):
        super().__init__(layers, fully_connected=True)
        self.fc8 = layers.dense(_HIDDEN, num_classes)

    def classify(self, features: dict[str, Array]) -> Array:
        x = adaptive_average_pool(_max_pool(features["conv5_3"]), _POOLED)
        # torch flattens channels first (NCHW); doing the same keeps fc6's kernel as it is.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = self.dropout(nnx.relu(self.backbone.fc6(x)))
        x = self.dropout(nnx.relu(self.backbone.fc7(x)))
        return self.fc8(x).astype(jnp.float32)

    def torch_name(self, path: str) -> str | None:
        return _CLASSIFIER[2] if path == "fc8" else torch_name(path)


@register("vgg16_gap")
class VGG16GAP(_VGG, PooledClassifier):
    """The CAM paper's VGGnet-GAP: conv5_3 without pool5, cam_conv, GAP, dropout, dense."""

    cam_layers = ("cam_conv",)
    torch_head = _CLASSIFIER  # A torchvision VGG-16's classifier has no place here.

    def __init__(
        self,
        *,
        num_classes: int,
        layers: Layers,
    ):
        super().__init__(layers, fully_connected=False)
        self.cam_conv = layers.conv(
            self.backbone.out_features,
            _CAM_FEATURES,
            3,
            groups=_CAM_GROUPS,
            use_bias=True,
            kernel_init=nnx.initializers.normal(0.01),  # The released model's filler.
        )
        self.fc = layers.dense(_CAM_FEATURES, num_classes)

    def features(self, x: Array) -> dict[str, Array]:
        features = self.backbone(x)
        return {**features, "cam_conv": nnx.relu(self.cam_conv(features["conv5_3"]))}

    def torch_name(self, path: str) -> str | None:
        return torch_name(path)  # None for cam_conv and fc: trained from scratch.
