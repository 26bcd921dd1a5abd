"""How image files become pixels, as one object: the integrity scan, the training and
evaluation pipelines, reports, CAM crops, the CycleGAN trainer, prediction and TFDS
decoding all take a `ReadOptions`, built once from ``config.data``. Copied field by
field to each call site, ``convert_to_rgb`` once reached the scan but not training;
one object means no reader can drop a setting that another honours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from skinjax import config
from skinjax.data import images

BAD_IMAGE_POLICIES = ("error", "skip")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """Reading settings (see `skinjax.config.data_config`); picklable, so grain worker
    processes get them whole."""

    image_size: int  # files are resized to image_size x image_size
    convert_to_rgb: bool  # greyscale, RGBA, CMYK converted rather than refused
    on_bad_image: str  # what the scan does with an unusable file: error | skip
    min_image_size: int  # images with a smaller side (in pixels) are unusable
    read_threads: int
    worker_count: int  # grain worker processes for decoding

    def __post_init__(self):
        if self.image_size <= 0:
            raise ValueError(f"config.data.image_size must be positive, not {self.image_size}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(
                f"config.data.on_bad_image must be one of {BAD_IMAGE_POLICIES}, "
                f"not {self.on_bad_image!r}"
            )
        if self.min_image_size < 1:
            raise ValueError(
                f"config.data.min_image_size must be at least 1, not {self.min_image_size}"
            )
        if self.read_threads < 1 or self.worker_count < 0:
            raise ValueError(
                "config.data.read_threads must be at least 1 and config.data.worker_count "
                f"at least 0, not {self.read_threads} and {self.worker_count}"
            )

    @classmethod
    def from_config(cls, data: Mapping) -> ReadOptions:
        """From a config's ``data`` section; a field it lacks (a run's config written by an
        older skinjax, a partial dict) takes the base config's default."""
        defaults = config.data_config()
        return cls(**{f.name: data.get(f.name, defaults[f.name]) for f in dataclasses.fields(cls)})

    def load(self, path: str) -> np.ndarray:
        """One file as image_size x image_size x 3 uint8."""
        return images.load(
            path,
            self.image_size,
            convert_to_rgb=self.convert_to_rgb,
            min_side=self.min_image_size,
        )

    def check(self, data: bytes, path: str) -> None:
        """Raises `images.ImageError` unless ``data`` decodes fully, at least the minimum size."""
        # Decoding at 1/8 scale still entropy-decodes the whole stream: truncation shows.
        images.decode(
            data, path, convert_to_rgb=self.convert_to_rgb, min_size=1, min_side=self.min_image_size
        )
