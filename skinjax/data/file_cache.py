"""Per-file results of the start-up passes, remembered by file identity.

Every run checks and fingerprints every file of its collection (`integrity.scan`,
`near_duplicates.fingerprint`): two decodes per file, minutes for the 25-33 thousand
multi-megapixel JPEGs of a full ISIC archive, on every run. A file whose path, size
and modification time are unchanged gives the same results, so `cached_map` keeps them
in one file per pass and settings under ``config.data.file_cache_dir`` and computes
only the files it has not seen (or that changed). `cached_whole` keeps a result about a
whole collection (its near-duplicate pairs) until any of its files changes.

The cache is a pickle of plain values, read only from the directory the config names:
the same trust as a checkpoint directory.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

VERSION = 1  # bumped when a cached pass changes what it computes

Identity = tuple[str, int, int]  # absolute path, size in bytes, mtime in nanoseconds


def identity(path: str) -> Identity:
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


def cache_file(directory: str, name: str, settings: Any) -> str:
    """The cache of pass ``name`` under ``settings`` (a repr-able value) in ``directory``."""
    key = hashlib.sha256(repr((VERSION, name, settings)).encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser(directory), f"{name}-{key}.pkl")


def cached_map(
    fn: Callable[[str], Any],
    paths: Sequence[str],
    map_fn: Callable[[Callable[[str], Any], Sequence[str]], list],
    cache: str | None,
) -> list:
    """``map_fn(fn, paths)``, with results for unchanged files taken from ``cache`` (a
    `cache_file` path; None: no cache) and the cache updated with the new ones."""
    if not cache:
        return map_fn(fn, paths)
    known: dict[Identity, Any] = {}
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            known = pickle.load(f)
    keys = [identity(p) for p in paths]
    missing = [i for i, key in enumerate(keys) if key not in known]
    if missing:
        fresh = map_fn(fn, [paths[i] for i in missing])
        known.update((keys[i], result) for i, result in zip(missing, fresh, strict=True))
        _write(cache, known)
    return [known[key] for key in keys]


def cached_whole(
    compute: Callable[[], Any], paths: Sequence[str], directory: str, name: str, settings: Any
) -> Any:
    """``compute()``, a result about all of ``paths`` together (such as the near-duplicate
    pairs among them), kept in ``directory`` ("" for none) until any file changes."""
    if not directory:
        return compute()
    files = hashlib.sha256(repr([identity(p) for p in paths]).encode()).hexdigest()
    cache = cache_file(directory, name, (settings, files))
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            return pickle.load(f)
    result = compute()
    _write(cache, result)
    return result


def _write(cache: str, value: Any) -> None:
    """Atomically: a run killed while writing leaves the previous cache."""
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    partial = f"{cache}.{os.getpid()}.tmp"
    with open(partial, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, cache)
