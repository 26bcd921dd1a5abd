"""The ISIC collections as a TFDS dataset, built from the folders as published.

An alternative to reading the image files directly: one build packs a collection into
array_record files, which grain reads by random access through `tfds.data_source`, a
better fit than thousands of small files for remote storage and many hosts. The
builder enumerates examples with `skinjax.data.sources` and stores each file's
original bytes; `map_dataset` decodes them with `skinjax.data.images`. So both ways
of reading see the same ids, labels, splits and pixels.

The splits are stored as published: de-duplication and held-out validation splits
(`skinjax.data.prepare`) are not applied here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import grain
import numpy as np
import tensorflow_datasets as tfds

from skinjax.data import images, sources
from skinjax.data.reading import ReadOptions

# Split of a collection's example (None: the collection publishes none) -> TFDS split.
_TFDS_SPLITS = {None: "train", "train": "train", "val": "validation", "test": "test"}


@dataclasses.dataclass(eq=False, kw_only=True)
class IsicConfig(tfds.core.BuilderConfig):
    """One collection: its layout as the fields of a config's ``data`` section, less ``dir``."""

    data: Mapping[str, Any]


class Isic(tfds.core.GeneratorBasedBuilder):
    """ISIC dermoscopy collections, read from their published layout in ``manual_dir``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir is the collection's folder as published: for isic2020_part the folder
    holding benign/ and malignant/ (../shared/data/isic2020-part/train), for isic2017
    the folder holding labels.csv and images/ (../shared/data/isic2017).
    """
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        IsicConfig(
            name="isic2020_part",
            description="Training part of the ASFF paper's ISIC 2020 subset (folder per class).",
            data=dict(source="folders", classes=("benign", "malignant")),
        ),
        IsicConfig(
            name="isic2017",
            description=(
                "ISIC 2017 Part 3, melanoma vs other (nevus, seborrheic keratosis), "
                "official train and validation splits."
            ),
            data=dict(
                source="csv",
                csv="labels.csv",
                classes=("other", "melanoma"),
                id_column="image_id",
                label_column="diagnosis",
                path_column="file",
                split_column="split",
                label_map={"nevus": "other", "seborrheic_keratosis": "other"},
            ),
        ),
    ]

    def __init__(self, *, file_format: str | tfds.core.FileFormat = "array_record", **kwargs):
        # grain needs random access, which TFDS's default format (tfrecord) lacks.
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    # Given file paths, TFDS stores the files' bytes: nothing is re-encoded.
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=self.builder_config.data["classes"]),
                    "id": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://www.isic-archive.com",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        data = {**self.builder_config.data, "dir": str(dl_manager.manual_dir)}
        splits: dict[str, list[sources.Example]] = {}
        for example in sources.load(data).examples:
            splits.setdefault(_TFDS_SPLITS[example.split], []).append(example)
        return {name: self._generate_examples(examples) for name, examples in splits.items()}

    def _generate_examples(self, examples: Sequence[sources.Example]) -> Iterator[tuple[str, dict]]:
        for e in examples:
            yield e.id, {"image": e.path, "label": e.label, "id": e.id}


def build(config: str, manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Builds a config from its collection folder, once; ``tfds build`` would need Beam."""
    builder = tfds.builder(f"{Isic.name}/{config}", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def data_source(config: str, split: str, data_dir: str) -> Sequence[dict[str, Any]]:
    """A built split, random access, with the images left encoded for `map_dataset`."""
    return tfds.data_source(
        f"{Isic.name}/{config}",
        split=split,
        data_dir=data_dir,
        download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )


@dataclasses.dataclass(frozen=True)
class DecodeRecord:
    """(index, record) -> the example dict of `pipeline.LoadExample`. Picklable."""

    read: ReadOptions

    def __call__(self, index: int, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        data, name = record["image"], record["id"].decode()
        if not isinstance(data, bytes):
            raise TypeError(
                f"{name}: the image is already decoded; open the split with "
                "skinjax.data.tfds_isic.data_source, which leaves it as the JPEG bytes."
            )
        read = self.read
        image = images.decode(
            data,
            name,
            convert_to_rgb=read.convert_to_rgb,
            min_size=read.image_size,
            min_side=read.min_image_size,
        )
        return {
            "image": images.resize(image, read.image_size),
            "label": np.int32(record["label"]),
            "index": np.int32(index),
            "mask": np.bool_(True),
        }


def map_dataset(source: Sequence[Mapping[str, Any]], read: ReadOptions) -> grain.MapDataset:
    """The records of `data_source` as the example dicts the grain pipelines batch."""
    return grain.MapDataset.source(source).map_with_index(DecodeRecord(read))
