"""Images as raw uint8 pixels in one ArrayRecord file: a prepared copy that costs no
decode to read (`skinjax/data/resized.py`).

A PNG copy at the training size decodes only about 1.3x faster than 1024 px JPEGs;
raw pixels cost a read and a copy. One record per image, written with ``group_size:1``
so that a random read touches one record; each record is the image as a ``.npy``
(numpy's own format: dtype and shape, then the pixels), which `images.decode` knows by
its magic bytes. Riegeli, under ArrayRecord, hashes every chunk, so a damaged record
fails when read instead of giving wrong pixels.

A record is named like a file, ``<dir>/images.array_record#<index>``, so that an
`Example` points at it as at any image and every reader (pipeline, scans, CAM crops,
CycleGAN samples) goes through `images.read_file` unchanged.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable

import grain
import numpy as np
from array_record.python import array_record_module

SUFFIX = ".array_record"
_REF = re.compile(rf"(.+\{SUFFIX})#(\d+)")
_OPTIONS = "group_size:1,uncompressed"  # pixels barely compress; one record per chunk
NPY_MAGIC = b"\x93NUMPY"

# Readers of this process, opened on first use (grain worker processes open their own).
_sources: dict[tuple[int, str], grain.sources.ArrayRecordDataSource] = {}


def ref(file: str, index: int) -> str:
    """The path-like name of record ``index`` of ``file``."""
    return f"{file}#{index}"


def parse(path: str) -> tuple[str, int] | None:
    """(file, index) when ``path`` names a record (`ref`), else None."""
    match = _REF.fullmatch(path)
    return (match[1], int(match[2])) if match else None


def encode(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, image, allow_pickle=False)
    return buffer.getvalue()


def write(file: str, records: Iterable[bytes]) -> list[int]:
    """Writes ``records`` in order into a new ``file``; returns their byte counts."""
    writer = array_record_module.ArrayRecordWriter(file, _OPTIONS)
    try:
        sizes = []
        for record in records:
            writer.write(record)
            sizes.append(len(record))
    finally:
        writer.close()
    return sizes


def count(file: str) -> int:
    """The number of records in ``file`` (0 for a file cut short before its index)."""
    reader = array_record_module.ArrayRecordReader(file)
    try:
        return reader.num_records()
    finally:
        reader.close()


def read(file: str, index: int) -> bytes:
    """Record ``index`` of ``file``; raises RuntimeError (damaged) or ValueError (no such
    record)."""
    key = (os.getpid(), file)
    if key not in _sources:
        _sources[key] = grain.sources.ArrayRecordDataSource(file)
    return _sources[key][index]
