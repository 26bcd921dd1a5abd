"""One pass over a collection's files before training: content hashes (for
de-duplication) and a full decode of every image, so that a corrupt, too small or
(unless converted) non-RGB file fails at start-up with its name rather than hours later
inside a worker process. The scan only reads; `write_skipped` records what it skipped,
once a run has passed all its checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from skinjax.data import file_cache, images
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection

SKIPPED_FILE = "skipped_files.txt"


@dataclasses.dataclass(frozen=True)
class ScanResult:
    collection: Collection  # without the skipped files
    hashes: tuple[str, ...]  # sha256 of each kept file's bytes, aligned with collection
    skipped: tuple[tuple[str, str], ...]  # (path, reason)


def _check(path: str, read: ReadOptions) -> tuple[str, str | None]:
    try:
        data = images.read_file(path)
        read.check(data, path)
    except images.ImageError as e:
        return "", str(e)
    return hashlib.sha256(data).hexdigest(), None


def scan(
    collection: Collection, read: ReadOptions, *, num_threads: int = 8, cache_dir: str = ""
) -> ScanResult:
    """Hashes and test-decodes every file not already in ``cache_dir`` (`file_cache`;
    "" reads them all).

    ``read.on_bad_image='error'`` raises on the first bad file; ``'skip'`` drops bad
    files and returns them, with the reason, as ``skipped``.
    """

    def check_all(fn, paths) -> list:
        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(fn, paths))

    settings = (read.convert_to_rgb, read.min_image_size)
    cache = cache_dir and file_cache.cache_file(cache_dir, "integrity", settings)
    results = file_cache.cached_map(
        lambda p: _check(p, read), collection.paths, check_all, cache or None
    )
    bad = [(p, reason) for p, (_, reason) in zip(collection.paths, results, strict=True) if reason]
    if bad and read.on_bad_image == "error":
        raise images.ImageError(
            f"{bad[0][1]}\n({len(bad)} bad file(s) in all; set config.data.on_bad_image='skip' "
            "to train without them and list them in the work directory.)"
        )
    keep = np.array([reason is None for _, reason in results])
    return ScanResult(
        collection=collection.subset(np.flatnonzero(keep)),
        hashes=tuple(h for (h, _), k in zip(results, keep, strict=True) if k),
        skipped=tuple(bad),
    )


def write_skipped(workdir: str, skipped: tuple[tuple[str, str], ...]) -> None:
    """Lists the skipped files, with the reason, in ``workdir/skipped_files.txt``."""
    if skipped:
        with open(os.path.join(workdir, SKIPPED_FILE), "w") as f:
            f.writelines(f"{path}\t{reason}\n" for path, reason in skipped)
