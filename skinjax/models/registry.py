"""Name -> model constructor, so that configs can name any model.

Every classifier built here follows one interface, relied on by training (freezing),
weight import and explanation:

- ``model(x)``: float NHWC images (already normalised) -> float32 logits.
- ``model.features(x)``: an ordered dict of named feature maps (NHWC).
- ``model.classify(features)``: logits from that dict; it reads only the entries named
  in ``model.cam_layers``, so a gradient with respect to them is well defined.
- ``model.backbone``: the submodule that pretrained weights load into; everything else
  is the head, trained from scratch and the only part trained while the backbone is frozen.
- ``model.train()`` / ``model.eval()`` switch BatchNorm and dropout (Flax NNX).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.models.layers import Layers, global_average_pool

_REGISTRY: dict[str, Callable[..., nnx.Module]] = {}
_IMAGE_SIZES: dict[str, int] = {}


class Classifier(nnx.Module):
    """The interface above; subclasses define ``backbone``, ``classify`` and ``cam_layers``."""

    cam_layers: tuple[str, ...]

    def features(self, x: jax.Array) -> dict[str, jax.Array]:
        return self.backbone(x)

    def classify(self, features: dict[str, jax.Array]) -> jax.Array:
        raise NotImplementedError

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classify(self.features(x))


class PooledClassifier(Classifier):
    """The head most classifiers share: global average pooling of the ``cam_layers[0]``
    map, the model's ``dropout`` where it has one, the dense layer ``fc``, float32 logits.

    Subclasses build ``fc`` (and ``dropout``) themselves, in their constructor's order, so
    parameter names, initial values and imported weights stay as they were.
    """

    dropout: nnx.Dropout | None = None

    def classify(self, features: dict[str, jax.Array]) -> jax.Array:
        x = global_average_pool(features[self.cam_layers[0]])
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x).astype(jnp.float32)


def register(
    name: str, *, image_size: int = 224
) -> Callable[[Callable[..., nnx.Module]], Callable[..., nnx.Module]]:
    """Decorator adding a model constructor under ``name``.

    ``image_size`` is the native resolution: the one its pretrained weights were trained at.
    """

    def wrap(constructor: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = constructor
        _IMAGE_SIZES[name] = image_size
        return constructor

    return wrap


def _load_all() -> None:
    """Imports every module of this package, which runs their ``@register`` decorators."""
    import skinjax.models as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _check(name: str) -> None:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")


def native_image_size(name: str) -> int:
    """The resolution model ``name``'s pretrained weights were trained at (in pixels)."""
    _check(name)
    return _IMAGE_SIZES[name]


def build(
    name: str,
    num_classes: int,
    *,
    seed: int = 0,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    bn_axis_name: str | None = None,
    **options: Any,
) -> nnx.Module:
    """Builds model ``name`` with ``num_classes`` outputs and fresh weights from ``seed``.

    Every constructor takes ``num_classes``, a ``Layers`` factory carrying the options
    all models share (compute and parameter dtypes, the BatchNorm device axis), and its
    own ``options`` (e.g. a ResNet's ``width``).
    """
    _check(name)
    layers = Layers(nnx.Rngs(seed), dtype=dtype, param_dtype=param_dtype, bn_axis_name=bn_axis_name)
    return _REGISTRY[name](num_classes=num_classes, layers=layers, **options)
