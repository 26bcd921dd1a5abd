"""Where a classifier looked: CAM, Grad-CAM, heat-map overlays and crops to the activation.

Both maps work for any registry classifier through its interface: ``model.features(x)``
names the feature maps and ``model.classify(features)`` reads only those in
``model.cam_layers``, so one vector-Jacobian product of the chosen logit with respect to
such a map A (N, h, w, K) gives everything either method needs:

- Grad-CAM (Selvaraju et al., 2017) weights each channel A_k by its gradient averaged over
  the positions and keeps the positive part of the sum.
- CAM (Zhou et al., 2016) weights each channel by the final dense layer's weight for the
  class. A GAP + linear head makes the logit linear in A, with the same gradient at every
  position: that weight divided by h * w. So CAM = h * w * sum_k grad_k * A_k, found
  without knowing what a model calls its dense layer. Where the maps do not add up to
  the logit minus the bias, the head is not GAP + linear, and `cam` refuses the model
  rather than return something else.

Maps come back at the input's resolution, scaled to [0, 1] per image.

A model with the patient-metadata branch (`WithMetadata`) needs each image's encoded row
(``metadata=``): the map is over the image's feature map, and the row adds its term to
the logit explained. Its head is linear in both, so for a given class the map is the
same whatever the row; the row decides which class is predicted, and so which map is
drawn by default, and CAM counts its term with the bias.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx
from PIL import Image
from scipy import ndimage

from skinjax.models.with_metadata import WithMetadata

Array = jax.Array
Method = Literal["cam", "gradcam"]
METHODS = ("cam", "gradcam")


class Maps(NamedTuple):
    heatmaps: Array  # (N, H, W) float32 in [0, 1], at the input's resolution
    logits: Array  # (N, num_classes) float32
    targets: Array  # (N,) int32: the class each map explains


def _layer(model: nnx.Module, layer: str | None) -> str:
    if layer is None:
        return model.cam_layers[0]
    if layer not in model.cam_layers:
        # classify() reads no other map, so the gradient elsewhere would be zero.
        raise ValueError(
            f"layer {layer!r} is not one of {type(model).__name__}.cam_layers {model.cam_layers}"
        )
    return layer


def activation_maps(
    model: nnx.Module,
    images: Array,
    targets: Array,
    *,
    method: Method,
    layer: str,
    inputs: tuple[Array, ...] = (),
) -> tuple[Maps, Array]:
    """Maps of ``targets`` (-1: the predicted class) and, for CAM, what they leave unexplained.

    ``inputs`` are the model's other inputs (patient metadata), passed to ``model.features``.

    Pure and traceable (jit it or `jax.export` it); ``images`` are normalised NHWC. The
    second output is, per image, the logit minus the head's bias minus the CAM's mean:
    zero for a GAP + linear head.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    features = model.features(images, *inputs)
    fmap = features[layer]
    logits, vjp = jax.vjp(lambda a: model.classify({**features, layer: a}), fmap)
    targets = jnp.where(targets < 0, jnp.argmax(logits, -1), targets).astype(jnp.int32)
    (grads,) = vjp(jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype))
    fmap, grads = fmap.astype(jnp.float32), grads.astype(jnp.float32)
    n, h, w, _ = fmap.shape
    if method == "gradcam":
        raw = jnp.einsum("nhwk,nk->nhw", fmap, grads.mean(axis=(1, 2)))
        unexplained = jnp.zeros((n,), jnp.float32)
    else:
        raw = (fmap * grads).sum(-1) * (h * w)
        bias = model.classify({**features, layer: jnp.zeros_like(features[layer])})
        chosen = lambda x: jnp.take_along_axis(x, targets[:, None], axis=1)[:, 0]
        unexplained = chosen(logits) - chosen(bias) - raw.mean(axis=(1, 2))
    maps = jax.image.resize(nnx.relu(raw), (n, *images.shape[1:3]), "bilinear")
    maps = maps / jnp.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)
    return Maps(maps, logits, targets), unexplained


def _inputs(model: nnx.Module, images: Array, metadata: Array | None) -> tuple[Array, ...]:
    """The model's inputs besides the images: the metadata rows, for a metadata model only."""
    name = type(model).__name__
    if not isinstance(model, WithMetadata):
        if metadata is not None:
            raise ValueError(f"{name} has no patient-metadata branch: pass no metadata")
        return ()
    expected = (images.shape[0], model.metadata.in_features)
    if metadata is None:
        raise ValueError(
            f"{name} takes patient metadata: pass metadata=, the images' encoded rows "
            f"{list(expected)} (skinjax.data.metadata)"
        )
    if tuple(metadata.shape) != expected:
        raise ValueError(
            f"metadata has shape {list(metadata.shape)}, not {list(expected)}: one encoded "
            "row per image, as the model's training run encoded them"
        )
    return (jnp.asarray(metadata, jnp.float32),)


@functools.partial(jax.jit, static_argnames=("graph", "method", "layer"))
def _jitted(graph, state, images, targets, inputs, *, method, layer):
    model = nnx.merge(graph, state)
    return activation_maps(model, images, targets, method=method, layer=layer, inputs=inputs)


def _explain(
    model: nnx.Module,
    images: Array,
    targets: Array | None,
    method: Method,
    layer: str | None,
    metadata: Array | None,
) -> Maps:
    model.eval()
    layer = _layer(model, layer)
    inputs = _inputs(model, images, metadata)
    if targets is None:
        targets = jnp.full((images.shape[0],), -1, jnp.int32)
    graph, state = nnx.split(model)
    maps, unexplained = _jitted(graph, state, images, targets, inputs, method=method, layer=layer)
    if method == "cam":
        # 1% of the logits: above bfloat16 rounding, far below a non-linear head's gap.
        scale = 1.0 + float(jnp.abs(maps.logits).max())
        if float(jnp.abs(unexplained).max()) > 1e-2 * scale:
            raise ValueError(
                f"CAM needs a GAP + linear head after {layer!r}, and "
                f"{type(model).__name__}'s is not one; use Grad-CAM."
            )
    return maps


def cam(
    model: nnx.Module,
    images: Array,
    targets: Array | None = None,
    *,
    layer: str | None = None,
    metadata: Array | None = None,
) -> Maps:
    """CAM of ``targets`` (default: the predicted classes) at ``layer`` (default: the first
    of ``model.cam_layers``), jit-compiled; ``images`` are normalised NHWC, ``metadata``
    their encoded rows for a metadata model. Puts the model in eval mode."""
    return _explain(model, images, targets, "cam", layer, metadata)


def grad_cam(
    model: nnx.Module,
    images: Array,
    targets: Array | None = None,
    *,
    layer: str | None = None,
    metadata: Array | None = None,
) -> Maps:
    """Grad-CAM of ``targets`` (default: the predicted classes) at ``layer`` (default: the
    first of ``model.cam_layers``), jit-compiled; ``images`` are normalised NHWC,
    ``metadata`` their encoded rows for a metadata model. Puts the model in eval mode."""
    return _explain(model, images, targets, "gradcam", layer, metadata)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45, colormap: str = "jet"
) -> np.ndarray:
    """The RGB uint8 image with the [0, 1] heat map, resized to it, blended over it."""
    height, width = image.shape[:2]
    heat = Image.fromarray(np.asarray(heatmap, np.float32)).resize((width, height), Image.BILINEAR)
    colours = matplotlib.colormaps[colormap](np.clip(np.asarray(heat), 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255 + alpha * colours
    return np.round(blended * 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: np.ndarray, heatmap: np.ndarray) -> None:
    """Writes `overlay` as a PNG file."""
    Image.fromarray(overlay(image, heatmap)).save(path, format="PNG")


@dataclasses.dataclass(frozen=True)
class Box:
    """A crop as fractions of the image's height and width, so it applies at any size."""

    top: float
    left: float
    bottom: float
    right: float

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The box's pixels of an HxWxC image, at that image's resolution."""
        height, width = image.shape[:2]
        top, bottom = int(np.floor(self.top * height)), int(np.ceil(self.bottom * height))
        left, right = int(np.floor(self.left * width)), int(np.ceil(self.right * width))
        return image[top:bottom, left:right]


def crop_box(heatmap: np.ndarray, *, threshold: float, margin: float) -> Box:
    """The box around the region of highest activation, grown by ``margin`` on every side.

    The region is the connected set of positions at or above ``threshold`` times the
    map's maximum that holds the maximum (the CAM paper's localisation); ``margin`` is a
    fraction of the image side, and the box is clipped to the image. A map without any
    activation gives the whole image.
    """
    heatmap = np.asarray(heatmap, np.float32)
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    regions, _ = ndimage.label(heatmap >= threshold * heatmap[peak])
    rows, cols = np.nonzero(regions == regions[peak])
    height, width = heatmap.shape
    return Box(
        top=max(0.0, rows.min() / height - margin),
        left=max(0.0, cols.min() / width - margin),
        bottom=min(1.0, (rows.max() + 1) / height + margin),
        right=min(1.0, (cols.max() + 1) / width + margin),
    )
