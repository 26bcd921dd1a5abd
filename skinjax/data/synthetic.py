"""Synthetic lesion images written as real JPEG files: a collection that needs no download.

`config.data.source="synthetic"` trains on them (the smoke config does), so the README's
commands run on a fresh clone, and the tests of the loop, export, prediction and
explanation run without ../shared/data. The images are drawn, not photographed: a
skin-toned, shaded and mottled background, and one lesion; ``benign`` lesions are round
and evenly brown, ``malignant`` ones have an irregular border, darker and blue-grey
patches, so a model can learn something. Numbers from them say nothing about dermoscopy.

They go through everything real files do (the integrity scan, near-duplicate search,
splits, decoding): each image has its own background, lesion shape, position and noise,
so none is a near-duplicate of another. The same ``seed`` writes the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from scipy import ndimage

CLASSES = ("benign", "malignant")
PER_CLASS = 60  # the default collection: 120 images, enough for a 20% validation split
IMAGE_SIZE = 96
MARKER = "SYNTHETIC.json"  # what was written, so a folder is reused only as it was made


def _mottle(rng: np.random.Generator, size: int, scales, amplitudes) -> np.ndarray:
    """Smoothed white noise at several scales: a texture no two images share, which is
    what tells images apart to the near-duplicate search (`near_duplicates`)."""
    field = np.zeros((size, size))
    for sigma, amplitude in zip(scales, amplitudes, strict=True):
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma)
        field += amplitude * noise / noise.std()
    return field


def draw(rng: np.random.Generator, malignant: bool, size: int = IMAGE_SIZE) -> np.ndarray:
    """One uint8 RGB image [size, size, 3]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    skin = np.array([0.85, 0.65, 0.55]) + rng.uniform(-0.12, 0.08, 3)
    shade = 1 + 0.25 * (rng.uniform(-1, 1) * (xx - 0.5) + rng.uniform(-1, 1) * (yy - 0.5))
    texture = _mottle(rng, size, (1.0, 3.0, 8.0), (0.06, 0.05, 0.05))
    image = skin * (shade + texture)[..., None]
    # The lesion: an ellipse whose radius varies with the angle (irregular when malignant).
    cy, cx = rng.uniform(0.35, 0.65, 2)
    radius = rng.uniform(0.15, 0.3)
    angle = np.arctan2(yy - cy, (xx - cx) * rng.uniform(0.7, 1.3))
    harmonics = 0.25 if malignant else 0.08
    for k in (3, 5, 7):
        radius = radius * (
            1 + harmonics * rng.uniform(-1, 1) * np.cos(k * angle + rng.uniform(0, 6))
        )
    inside = np.hypot(yy - cy, xx - cx) < radius
    brown = np.array([0.45, 0.28, 0.18]) * rng.uniform(0.8, 1.1)
    lesion = np.broadcast_to(brown, image.shape).copy()
    if malignant:  # darker and blue-grey patches
        for _ in range(rng.integers(2, 5)):
            py, px = rng.uniform(cy - 0.15, cy + 0.15), rng.uniform(cx - 0.15, cx + 0.15)
            patch = np.hypot(yy - py, xx - px) < rng.uniform(0.04, 0.1)
            lesion[patch] = rng.choice([[0.2, 0.12, 0.1], [0.35, 0.4, 0.5]])
    pigment = 1 + _mottle(rng, size, (1.0, 2.0), (0.15, 0.1))  # a network of its own
    image = np.where(inside[..., None], lesion * pigment[..., None], image)
    image = image + rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write(
    directory: str, *, per_class: int = PER_CLASS, size: int = IMAGE_SIZE, seed: int = 0
) -> str:
    """Writes ``per_class`` JPEG files per class into ``directory/<class>/``; returns it."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        for i in range(per_class):
            buffer = io.BytesIO()
            Image.fromarray(draw(rng, bool(label), size)).save(buffer, "JPEG", quality=90)
            with open(os.path.join(directory, name, f"{name}_{i:04d}.jpg"), "wb") as f:
                f.write(buffer.getvalue())
    return directory


def ensure(directory: str, *, per_class: int = PER_CLASS, size: int = IMAGE_SIZE) -> str:
    """``directory`` holding the default synthetic collection: written on first use (all
    at once, so an interrupted write leaves nothing), reused after. A folder that exists
    but was not written here is refused, never written into."""
    expected = {"classes": list(CLASSES), "per_class": per_class, "size": size, "seed": 0}
    marker = os.path.join(directory, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == expected:
                return directory
    if os.path.exists(directory):
        raise FileExistsError(
            f"{directory!r} exists but holds no synthetic collection as written by skinjax "
            f"({MARKER} missing or different): point config.data.dir at a new folder."
        )
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        write(staging, per_class=per_class, size=size)
        with open(os.path.join(staging, MARKER), "w") as f:
            json.dump(expected, f)
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
