"""Flax NNX models. Modules only: no training logic lives here."""

from skinjax.models.registry import build, names, native_image_size, register

__all__ = ["build", "names", "native_image_size", "register"]
