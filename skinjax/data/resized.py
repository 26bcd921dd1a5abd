"""A collection prepared once: checked, de-duplicated, split and resized to the
training size, then read like any collection (``config.data.source='prepared'``).

Decoding a multi-megapixel original costs milliseconds; the resized copy is what the
pipeline would make of it, stored losslessly (PNG), so a run on the copy sees the same
pixels, splits and batches as a run on the originals (`tests/test_resized.py`), and its
start-up neither scans nor splits again. ``manifest.json`` holds what a run needs: the
size, classes, each split's ids, labels and files (with their byte counts, checked at
load) and the files the scan skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from skinjax.data import prepare
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection, DataError, Example

MANIFEST = "manifest.json"
# The config.data fields the stored splits and pixels follow: a run must ask for the same.
SETTINGS = (
    "image_size",
    "convert_to_rgb",
    "min_image_size",
    "on_bad_image",
    "val_fraction",
    "test_fraction",
    "split_seed",
    "num_folds",
    "fold",
    "on_split_leak",
)


def write(data: Mapping, out_dir: str, *, num_threads: int = 4) -> dict:
    """Prepares ``data`` (a config's data section of the originals) into ``out_dir`` at
    ``data['image_size']``; returns the manifest."""
    read = ReadOptions.from_config(data)
    prepared = prepare.prepare(data)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    jobs = [
        (name, example, f"images/{name}-{i:06d}.png")
        for name, part in prepared.parts.items()
        for i, example in enumerate(part.examples)
    ]

    def save(job: tuple[str, Example, str]) -> int:
        _, example, file = job
        path = os.path.join(out_dir, file)
        Image.fromarray(read.load(example.path)).save(path, compress_level=1)
        return os.path.getsize(path)

    with ThreadPoolExecutor(num_threads) as pool:
        sizes = list(pool.map(save, jobs))
    parts: dict[str, list] = {name: [] for name in prepared.parts}
    for (name, e, file), size in zip(jobs, sizes, strict=True):
        parts[name].append([e.id, file, e.label, size, e.path])
    manifest = {
        "settings": {key: data[key] for key in SETTINGS},
        "classes": list(prepared.parts["train"].classes),
        "parts": parts,  # [id, file, label, bytes, original path] per example
        "skipped": [list(s) for s in prepared.skipped],
    }
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f)
    return manifest


def load(data: Mapping) -> prepare.Prepared:
    """The splits stored in ``data['dir']``, checked against the config (`SETTINGS`) and
    the files."""
    directory = data["dir"]
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise DataError(
            f"{path} not found: config.data.source='prepared' reads a directory that "
            "scripts/prepare_data.py wrote"
        )
    with open(path) as f:
        manifest = json.load(f)
    for key, value in manifest["settings"].items():
        if data[key] != value:
            raise DataError(
                f"{directory} was prepared with config.data.{key}={value!r}, not "
                f"{data[key]!r}: prepare the originals again with the new setting"
            )
    classes = tuple(manifest["classes"])
    parts = {}
    for name, rows in manifest["parts"].items():
        examples = []
        for id_, file, label, size, _ in rows:
            file = os.path.join(directory, file)
            if not os.path.exists(file) or os.path.getsize(file) != size:
                raise DataError(f"{file} is missing or changed since it was prepared")
            examples.append(Example(id_, file, label, split=name))
        parts[name] = Collection(classes, tuple(examples))
    skipped = tuple((p, reason) for p, reason in manifest["skipped"])
    return prepare.Prepared(parts, skipped)
