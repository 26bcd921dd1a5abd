"""Flax NNX models. Modules only: no training logic lives here."""

from skinjax.models.registry import build, names, register

__all__ = ["build", "names", "register"]
