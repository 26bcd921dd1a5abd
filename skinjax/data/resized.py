"""A collection prepared once: checked, de-duplicated, split and resized to the
training size, then read like any collection (``config.data.source='prepared'``).

Decoding a multi-megapixel original costs milliseconds; the resized copy is what the
pipeline would make of it, stored losslessly, so a run on the copy sees the same
pixels, splits and batches as a run on the originals (`tests/test_resized.py`), and its
start-up neither scans nor splits again. Two formats: ``array_record`` (the default:
raw pixels in one ArrayRecord file, `records.py`, read without a decode) and ``png``
(one file per image, a third of the bytes, viewable). ``manifest.json`` holds what a
run needs: the format, size, classes, each split's ids, labels and files or records
(with their byte counts; files and the record file are checked at load) and the files
the scan skipped.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from skinjax.data import prepare, records
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection, DataError, Example

MANIFEST = "manifest.json"
FORMATS = ("array_record", "png")
RECORDS = "images" + records.SUFFIX  # the array_record format's one file
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


def _encoded(
    read: ReadOptions, paths: Sequence[str], image_format: str, num_threads: int
) -> Iterator[bytes]:
    """Each image at the training size, encoded, in order; a bounded number in flight."""

    def encode(path: str) -> bytes:
        image = read.load(path)
        if image_format == "array_record":
            return records.encode(image)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()

    with ThreadPoolExecutor(num_threads) as pool:
        for start in range(0, len(paths), 256):
            yield from pool.map(encode, paths[start : start + 256])


def write(
    data: Mapping, out_dir: str, *, image_format: str = "array_record", num_threads: int = 4
) -> dict:
    """Prepares ``data`` (a config's data section of the originals) into ``out_dir`` at
    ``data['image_size']``, as ``image_format`` (`FORMATS`); returns the manifest."""
    if image_format not in FORMATS:
        raise ValueError(f"image format must be one of {FORMATS}, not {image_format!r}")
    read = ReadOptions.from_config(data)
    prepared = prepare.prepare(data)
    examples = [(name, e) for name, part in prepared.parts.items() for e in part.examples]
    blobs = _encoded(read, [e.path for _, e in examples], image_format, num_threads)
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"format": image_format, "settings": {key: data[key] for key in SETTINGS}}
    if image_format == "array_record":
        sizes = records.write(os.path.join(out_dir, RECORDS), blobs)
        files = [records.ref(RECORDS, i) for i in range(len(examples))]
        manifest["records"] = {
            "count": len(sizes),
            "bytes": os.path.getsize(os.path.join(out_dir, RECORDS)),
        }
    else:
        os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
        files, sizes = [], []
        for i, blob in enumerate(blobs):
            files.append(f"images/{examples[i][0]}-{i:06d}.png")
            sizes.append(len(blob))
            with open(os.path.join(out_dir, files[-1]), "wb") as f:
                f.write(blob)
    parts: dict[str, list] = {name: [] for name in prepared.parts}
    for (name, e), file, size in zip(examples, files, sizes, strict=True):
        parts[name].append([e.id, file, e.label, size, e.path])
    manifest.update(
        classes=list(prepared.parts["train"].classes),
        parts=parts,  # [id, file or record, label, bytes, original path] per example
        skipped=[list(s) for s in prepared.skipped],
    )
    # Written last and whole (a rename): a copy interrupted while it was written has no
    # manifest, and `load` refuses it instead of reading part of it.
    partial = os.path.join(out_dir, MANIFEST + ".partial")
    with open(partial, "w") as f:
        json.dump(manifest, f)
    os.replace(partial, os.path.join(out_dir, MANIFEST))
    return manifest


def _check_records(directory: str, manifest: Mapping) -> None:
    """The record file is the one written with the manifest: same size, same count."""
    file, expected = os.path.join(directory, RECORDS), manifest["records"]
    try:
        found = {"count": records.count(file), "bytes": os.path.getsize(file)}
    except (OSError, RuntimeError) as e:  # missing, or damaged beyond reading its index
        found = f"unreadable: {e}"
    if found != expected:
        raise DataError(
            f"{file} is missing or changed since it was prepared ({found}, the manifest "
            f"says {expected}): prepare the originals again"
        )


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
    image_format = manifest.get("format", "png")  # copies written before array_record
    if image_format not in FORMATS:
        raise DataError(f"{path}: unknown format {image_format!r}, not one of {FORMATS}")
    if image_format == "array_record":
        _check_records(directory, manifest)
    classes = tuple(manifest["classes"])
    parts = {}
    for name, rows in manifest["parts"].items():
        examples = []
        for id_, file, label, size, _ in rows:
            file = os.path.join(directory, file)
            if image_format == "png" and (
                not os.path.exists(file) or os.path.getsize(file) != size
            ):
                raise DataError(f"{file} is missing or changed since it was prepared")
            examples.append(Example(id_, file, label, split=name))
        parts[name] = Collection(classes, tuple(examples))
    skipped = tuple((p, reason) for p, reason in manifest["skipped"])
    return prepare.Prepared(parts, skipped)
