"""ASFF-ResNet50: adaptive fusion of ResNet-50's stride-16 and stride-32 feature maps.

Both forms first bring the coarse map f5 (stage5: 2048 channels, stride 32) to the fine
map f4 (stage4: 1024 channels, stride 16): a 1x1 convolution to 1024 channels and a
bilinear upsampling, giving f5'. They differ in the fusion weights:

- ``fusion="channel"``, the authors' code (Grapesea/ASFF-ResNet50-enhanced): one weight
  per channel and image, ``w = softmax(Dense_1024(relu(Dense_1024(GAP(concat(f4, f5'))))))``,
  a softmax over the 1024 channels, and ``fused = f4 * w + f5' * (1 - w)``. As the
  weights average 1/1024, the fused map starts out as almost f5'.
  ``features["asff_weights"]`` is w, shaped (N, 1, 1, 1024).
- ``fusion="spatial"``, the paper's text and the original ASFF (Liu et al., 2019): one
  weight per location and branch, from a 1x1 convolution of each branch to one channel,
  a softmax across the two branches at each location, and ``fused = f4 * a + f5' * b``.
  ``features["asff_weights"]`` is (a, b), shaped (N, H, W, 2).

The authors' code resizes before the 1x1 convolution; convolving first is the same
function (bilinear weights sum to one, so they commute with an affine 1x1 map) at a
quarter of the cost. Their backbone is Keras' ResNet-50 (v1); this one is torchvision's
v1.5, so torchvision weights import into `backbone`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.models.layers import Layers, global_average_pool
from skinjax.models.registry import Classifier, register
from skinjax.models.resnet import ResNetBackbone, torch_name

Array = jax.Array
Fusion = Literal["channel", "spatial"]


class AdaptiveFusion(nnx.Module):
    """Weights a fine map and an aligned coarse map and sums them; see the module docstring."""

    def __init__(self, fine_features: int, coarse_features: int, fusion: Fusion, layers: Layers):
        if fusion not in ("channel", "spatial"):
            raise ValueError(f"fusion must be 'channel' or 'spatial', got {fusion!r}")
        self.fusion = fusion
        self.align = layers.conv(coarse_features, fine_features, 1, use_bias=True)
        if fusion == "channel":
            self.hidden = layers.dense(2 * fine_features, fine_features)
            self.logits = layers.dense(fine_features, fine_features)
        else:
            # Zero kernels start from an even mix: the large activations of an untrained
            # backbone would otherwise saturate the softmax and stop its gradient.
            zero = dict(use_bias=True, kernel_init=nnx.initializers.zeros)
            self.fine_logits = layers.conv(fine_features, 1, 1, **zero)
            self.coarse_logits = layers.conv(fine_features, 1, 1, **zero)

    def __call__(self, fine: Array, coarse: Array) -> tuple[Array, Array]:
        """Returns the fused map (shaped like `fine`) and the fusion weights."""
        coarse = self.align(coarse)
        coarse = jax.image.resize(coarse, fine.shape[:3] + coarse.shape[3:], "bilinear")
        if self.fusion == "channel":
            pooled = global_average_pool(jnp.concatenate([fine, coarse], axis=-1))
            logits = self.logits(nnx.relu(self.hidden(pooled)))
            weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, None, None, :]
            w = weights.astype(fine.dtype)
            return fine * w + coarse * (1 - w), weights
        logits = jnp.concatenate([self.fine_logits(fine), self.coarse_logits(coarse)], axis=-1)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        w = weights.astype(fine.dtype)
        return fine * w[..., :1] + coarse * w[..., 1:], weights


class ASFFResNet50(Classifier):
    """ResNet-50 with adaptive fusion of stages 4 and 5, then GAP -> Dense 2048 ReLU -> Dense."""

    cam_layers = ("asff",)
    torch_head = ("fc",)

    def __init__(
        self,
        *,
        num_classes: int,
        fusion: Fusion = "channel",
        width: int = 64,
        layers: Layers,
    ):
        self.backbone = ResNetBackbone((3, 4, 6, 3), bottleneck=True, width=width, layers=layers)
        coarse = self.backbone.out_features
        self.fusion = AdaptiveFusion(coarse // 2, coarse, fusion, layers)
        self.hidden = layers.dense(coarse // 2, 2048)
        self.fc = layers.dense(2048, num_classes)

    def features(self, x: Array) -> dict[str, Array]:
        """The backbone's stages, the fused map ('asff') and its weights ('asff_weights')."""
        features = self.backbone(x)
        features["asff"], features["asff_weights"] = self.fusion(
            features["stage4"], features["stage5"]
        )
        return features

    def classify(self, features: dict[str, Array]) -> Array:
        x = nnx.relu(self.hidden(global_average_pool(features["asff"])))
        return self.fc(x).astype(jnp.float32)

    def torch_name(self, path: str) -> str | None:
        """torchvision ResNet-50 names for the backbone; the fusion head has none."""
        return torch_name(path) if path.startswith("backbone.") else None


register("asff_resnet50")(ASFFResNet50)
