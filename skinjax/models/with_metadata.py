"""Any classifier plus a patient-metadata branch, joined before a new classifier head.

The metadata vector (`skinjax.data.metadata`) goes through a small dense layer; its
output is concatenated with the globally pooled last feature map of the wrapped
model (its first ``cam_layers`` entry) and a new dense head gives the logits. The
wrapped model's own head is left unused, so that no model file needs to know about
metadata. The interface is the registry's with one more input: ``model(x, metadata)``,
``model.features(x, metadata)``, ``model.classify(features)``; Grad-CAM differentiates
with respect to the image feature map as for the wrapped model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.models.layers import global_average_pool
from skinjax.models.registry import Classifier

Array = jax.Array
METADATA = "metadata"  # its key in the features dict
HIDDEN = 32  # width of the metadata branch
DROPOUT = 0.2


class WithMetadata(Classifier):
    def __init__(
        self, base: Classifier, *, metadata_size: int, num_classes: int, image_size: int, seed: int
    ):
        self.base = base
        self.cam_layers = base.cam_layers
        rngs = nnx.Rngs(seed)
        graph, state = nnx.split(base)
        image = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
        pooled = jax.eval_shape(
            lambda s: global_average_pool(nnx.merge(graph, s).features(image)[self.cam_layers[0]]),
            state,
        )
        self.metadata = nnx.Linear(metadata_size, HIDDEN, rngs=rngs)
        self.dropout = nnx.Dropout(DROPOUT, rngs=rngs)
        self.head = nnx.Linear(pooled.shape[-1] + HIDDEN, num_classes, rngs=rngs)

    @property
    def backbone(self) -> nnx.Module:
        """The wrapped model's: pretrained weights and freezing apply to it as before."""
        return self.base.backbone

    def features(self, x: Array, metadata: Array) -> dict[str, Array]:  # type: ignore[override]
        return {**self.base.features(x), METADATA: metadata}

    def classify(self, features: dict[str, Array]) -> Array:
        image = global_average_pool(features[self.cam_layers[0]])
        patient = nnx.relu(self.metadata(features[METADATA].astype(jnp.float32)))
        return self.head(self.dropout(jnp.concatenate([image, patient], -1)))

    def __call__(self, x: Array, metadata: Array) -> Array:  # type: ignore[override]
        return self.classify(self.features(x, metadata))
