"""Batched augmentation on the device, inside the jitted train step.

A 2-core host cannot resample 32 images per step fast enough for an accelerator, but
the accelerator does it in well under a millisecond. Every example gets its own random
parameters drawn from the step's key. Flips, rotation, translation, shear and zoom are
composed into one affine map per image and applied in a single bilinear resample;
brightness, contrast and saturation follow torchvision's ColorJitter definitions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FILL_MODES = ("reflect", "nearest", "constant")


@dataclasses.dataclass(frozen=True)
class Augment:
    """Ranges of the random transforms; zero switches a transform off.

    Angles are in degrees, ``translation`` a fraction of the image side, ``zoom`` the
    scale range 1 +- zoom, colour strengths the factor range 1 +- strength.
    """

    hflip: bool = False
    vflip: bool = False
    rotation: float = 0.0
    translation: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    fill_mode: str = "reflect"

    def __post_init__(self):
        if self.fill_mode not in FILL_MODES:
            raise ValueError(
                f"augment.fill_mode must be one of {FILL_MODES}, not {self.fill_mode!r}"
            )

    @property
    def resamples(self) -> bool:
        return bool(self.rotation or self.translation or self.shear or self.zoom)


def _uniform(key: jax.Array, batch: int, bound: float) -> jax.Array:
    return jax.random.uniform(key, (batch,), minval=-bound, maxval=bound)


def _flip_signs(key: jax.Array, batch: int, enabled: bool) -> jax.Array:
    if not enabled:
        return jnp.ones((batch,))
    return jnp.where(jax.random.bernoulli(key, 0.5, (batch,)), -1.0, 1.0)


def invert_affine(maps: jax.Array) -> jax.Array:
    """Inverses of [..., 2, 3] affine maps (3x3 homogeneous matrices without their
    constant last row ``0 0 1``), in closed form.

    ``jnp.linalg.inv`` lowers to an LU factorisation, which on a GPU is a solver library
    call (cuSOLVER's getrf) inside every train step; a 2x2 linear part inverts by its
    adjugate over its determinant, and the translation by ``-inverse @ translation``.
    """
    a, b, c, d = maps[..., 0, 0], maps[..., 0, 1], maps[..., 1, 0], maps[..., 1, 1]
    det = a * d - b * c
    linear = jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)], -2) / det[..., None, None]
    shift = -jnp.einsum("...ij,...j->...i", linear, maps[..., 2])
    return jnp.concatenate([linear, shift[..., None]], axis=-1)


def random_affine(key: jax.Array, batch: int, aug: Augment) -> jax.Array:
    """[batch, 2, 3] maps from output to input pixel coordinates, centred on the image.

    Output point p (in (y, x) relative to the centre) samples the input at M[:, :2] @ p
    + M[:, 2] * side. M inverts the transform the image undergoes: a shift by ``shift``
    (a fraction of the side), then flip, zoom, shear and rotation about the centre.
    """
    keys = jax.random.split(key, 7)
    angle = jnp.deg2rad(_uniform(keys[0], batch, aug.rotation))
    shear = jnp.deg2rad(_uniform(keys[1], batch, aug.shear))
    scale = 1.0 + _uniform(keys[2], batch, aug.zoom)
    shift = jax.random.uniform(keys[3], (batch, 2), minval=-aug.translation, maxval=aug.translation)
    flip_y = _flip_signs(keys[4], batch, aug.vflip)
    flip_x = _flip_signs(keys[5], batch, aug.hflip)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    zeros, ones = jnp.zeros_like(angle), jnp.ones_like(angle)
    rotate = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
    shear_m = jnp.stack([jnp.stack([ones, zeros], -1), jnp.stack([jnp.tan(shear), ones], -1)], -2)
    flip_zoom = jax.vmap(jnp.diag)(jnp.stack([flip_y, flip_x], -1) * scale[:, None])
    linear = rotate @ shear_m @ flip_zoom
    forward = jnp.concatenate([linear, linear @ shift[:, :, None]], axis=2)
    return invert_affine(forward)


def _fold(coords: jax.Array, size: int, mode: str) -> jax.Array:
    if mode == "reflect":  # mirror without repeating the edge pixel: ... 2 1 0 1 2 ...
        period = 2 * (size - 1)
        coords = jnp.abs(jnp.mod(coords, period))
        return jnp.where(coords > size - 1, period - coords, coords)
    return jnp.clip(coords, 0, size - 1)


def affine_resample(images: jax.Array, affine: jax.Array, fill_mode: str = "reflect") -> jax.Array:
    """Bilinear resampling of [B, H, W, C] float images by ``random_affine`` maps."""
    batch, height, width, channels = images.shape
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2])
    grid = jnp.stack(jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij"), -1)
    points = (grid.reshape(-1, 2) - centre).astype(jnp.float32)
    side = jnp.array([height, width], jnp.float32)
    source = jnp.einsum("bij,pj->bpi", affine[:, :, :2], points)
    source = source + affine[:, None, :, 2] * side + centre  # [B, H*W, 2]
    inside = jnp.all((source >= -0.5) & (source <= side - 0.5), axis=-1, keepdims=True)
    y0, x0 = jnp.floor(source[..., 0]), jnp.floor(source[..., 1])
    wy, wx = (source[..., 0] - y0)[..., None], (source[..., 1] - x0)[..., None]
    flat = images.reshape(batch, height * width, channels)

    def gather(y: jax.Array, x: jax.Array) -> jax.Array:
        y = _fold(y, height, fill_mode).astype(jnp.int32)
        x = _fold(x, width, fill_mode).astype(jnp.int32)
        return jnp.take_along_axis(flat, (y * width + x)[..., None], axis=1)

    top = gather(y0, x0) * (1 - wx) + gather(y0, x0 + 1) * wx
    bottom = gather(y0 + 1, x0) * (1 - wx) + gather(y0 + 1, x0 + 1) * wx
    out = top * (1 - wy) + bottom * wy
    if fill_mode == "constant":
        out = jnp.where(inside, out, 0.0)
    return out.reshape(images.shape)


def _grayscale(images: jax.Array) -> jax.Array:
    return jnp.tensordot(images, jnp.array([0.299, 0.587, 0.114]), axes=[[-1], [0]])[..., None]


def colour_jitter(key: jax.Array, images: jax.Array, aug: Augment) -> jax.Array:
    """Brightness, contrast, saturation factors per image on [0, 1] float images."""
    batch = images.shape[0]
    kb, kc, ks = jax.random.split(key, 3)

    def factor(k: jax.Array, strength: float) -> jax.Array:
        return (1.0 + _uniform(k, batch, strength))[:, None, None, None]

    if aug.brightness:
        images = jnp.clip(images * factor(kb, aug.brightness), 0, 1)
    if aug.contrast:
        mean = jnp.mean(_grayscale(images), axis=(1, 2, 3), keepdims=True)
        images = jnp.clip(mean + factor(kc, aug.contrast) * (images - mean), 0, 1)
    if aug.saturation:
        grey = _grayscale(images)
        images = jnp.clip(grey + factor(ks, aug.saturation) * (images - grey), 0, 1)
    return images


def normalize(
    images: jax.Array,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """uint8 or [0, 1] float images -> (x - mean) / std in ``dtype``."""
    if images.dtype == jnp.uint8:
        images = images.astype(jnp.float32) / 255.0
    return ((images - jnp.array(mean)) / jnp.array(std)).astype(dtype)


def augment(key: jax.Array, images: jax.Array, aug: Augment) -> jax.Array:
    """uint8 [B, H, W, 3] -> augmented float32 images in [0, 1]."""
    images = images.astype(jnp.float32) / 255.0
    key_geometry, key_colour = jax.random.split(key)
    if aug.resamples:
        affine = random_affine(key_geometry, images.shape[0], aug)
        images = affine_resample(images, affine, aug.fill_mode)
    elif aug.hflip or aug.vflip:  # flips alone need no resampling
        ky, kx = jax.random.split(key_geometry)
        if aug.vflip:
            flip = jax.random.bernoulli(ky, 0.5, (images.shape[0], 1, 1, 1))
            images = jnp.where(flip, images[:, ::-1], images)
        if aug.hflip:
            flip = jax.random.bernoulli(kx, 0.5, (images.shape[0], 1, 1, 1))
            images = jnp.where(flip, images[:, :, ::-1], images)
    return colour_jitter(key_colour, images, aug)
