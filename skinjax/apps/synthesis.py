"""Synthetic training images from a trained CycleGAN, written as CSV collections.

MelaNet's second stage trains a classifier on real images plus benign images translated
into melanoma-like ones. This module writes what the data layer reads as it is: JPEG
files and CSV files for `sources.from_csv` (columns ``COLUMNS``; paths relative to the
output directory). Translating a class of the CycleGAN's own training split leaves its
validation images untouched, and the real + synthetic CSV keeps that same split, so
classifiers trained with and without the synthetic images are validated on the same
real images, none of which any synthetic image was made from.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from skinjax.data import pipeline, prepare
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import IMAGE_EXTENSIONS, Collection, DataError, Example
from skinjax.train import cyclegan, cyclegan_trainer

COLUMNS = ("id", "path", "label", "split", "synthetic", "source")
SYNTHETIC_CSV = "labels.csv"  # the synthetic images alone
REAL_CSV = "real.csv"  # the real collection, with its split
COMBINED_CSV = "combined.csv"  # both; the synthetic images in train
IMAGE_DIR = "images"
JPEG_QUALITY = 95  # JPEG like the real images, so the file format is no cue to the class


def folder_collection(root: str) -> Collection:
    """Every image file directly in ``root``, as a one-class collection."""
    if not os.path.isdir(root):
        raise DataError(f"input folder {root!r} does not exist.")
    files = sorted(f for f in os.listdir(root) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DataError(f"{root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    name = os.path.basename(os.path.normpath(root))
    return Collection(
        (name,),
        tuple(Example(os.path.splitext(f)[0], os.path.join(root, f), 0) for f in files),
    )


def translate_collection(
    collection: Collection,
    translate: Callable[[np.ndarray], jax.Array],
    out_dir: str,
    read: ReadOptions,
    *,
    label: str,
    batch_size: int,
) -> list[dict]:
    """Writes the translation of every image to ``out_dir``; returns their CSV rows."""
    os.makedirs(os.path.join(out_dir, IMAGE_DIR), exist_ok=True)
    rows = []
    batches = pipeline.eval_dataset(collection, read, batch_size=batch_size)
    for batch in batches:
        real = batch["mask"]
        translated = np.asarray(translate(batch["image"]))[real]
        for image, index in zip(translated, batch["index"][real], strict=True):
            example = collection.examples[index]
            id_ = "synthetic_" + example.id.replace("/", "_")
            path = os.path.join(IMAGE_DIR, f"{id_}.jpg")
            Image.fromarray(image).save(os.path.join(out_dir, path), quality=JPEG_QUALITY)
            source = os.path.relpath(example.path, out_dir)
            rows.append(
                dict(id=id_, path=path, label=label, split="train", synthetic=1, source=source)
            )
    return rows


def real_rows(parts: Mapping[str, Collection], out_dir: str) -> list[dict]:
    """CSV rows of the real images of every split, paths relative to ``out_dir``."""
    return [
        dict(
            id=e.id,
            path=os.path.relpath(e.path, out_dir),
            label=part.classes[e.label],
            split=split,
            synthetic=0,
            source="",
        )
        for split, part in parts.items()
        for e in part.examples
    ]


def write_csv(path: str, rows: Sequence[Mapping]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def synthesize(
    workdir: str,
    out_dir: str,
    *,
    input_dir: str | None = None,
    input_class: str | None = None,
    direction: str = "ab",
    label: str | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Translates a folder or a class of the run's training split; returns the CSVs written.

    ``direction`` 'ab' uses the generator from domain A to B. ``label`` (default: the
    target domain's class) is the class the synthetic images are given.
    """
    if (input_dir is None) == (input_class is None):
        raise ValueError("give exactly one of input_dir and input_class")
    if direction not in ("ab", "ba"):
        raise ValueError(f"direction must be 'ab' or 'ba', not {direction!r}")
    config, model, generators = cyclegan_trainer.restore_generators(workdir)
    name = f"g_{direction}"
    translate = functools.partial(
        cyclegan.translate,
        cyclegan.generator_graphs(model)[name],
        jax.device_put(generators[name]),
    )
    label = label or (config.data.domain_b if direction == "ab" else config.data.domain_a)
    if input_class is not None:
        parts = prepare.prepare(config.data).parts
        collection = cyclegan_trainer.class_subset(parts["train"], input_class)
    else:
        collection = folder_collection(input_dir)
    rows = translate_collection(
        collection,
        translate,
        out_dir,
        ReadOptions.from_config(config.data),
        label=label,
        batch_size=batch_size,
    )
    written = [os.path.join(out_dir, SYNTHETIC_CSV)]
    write_csv(written[0], rows)
    if input_class is not None:
        real = real_rows(parts, out_dir)
        written += [os.path.join(out_dir, REAL_CSV), os.path.join(out_dir, COMBINED_CSV)]
        write_csv(written[1], real)
        write_csv(written[2], real + rows)
    return written
