"""From a config's ``data`` section to verified, de-duplicated train / val (/ test)
collections: the one place that chains sources -> integrity scan -> near-duplicate
groups -> splits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from absl import logging

from skinjax.data import file_cache, integrity, near_duplicates, sources, splits
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection


@dataclasses.dataclass(frozen=True)
class Prepared:
    parts: dict[str, Collection]  # 'train', 'val' (, 'test')
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of files on_bad_image='skip' left out


def prepare(data: Mapping) -> Prepared:
    """Reads the collection, checks every file, drops duplicate content, splits with
    near-duplicates and group columns kept together; or, for ``source='prepared'``,
    reads all that from a directory `resized.write` wrote.

    It only reads: a run writes `Prepared.skipped` (`integrity.write_skipped`) once all
    of its checks have passed.
    """
    if data.get("source") == "prepared":
        from skinjax.data import resized  # which builds on this module

        return resized.load(data)
    collection = sources.load(data)
    cache_dir = data.get("file_cache_dir", "")
    scanned = integrity.scan(collection, ReadOptions.from_config(data), cache_dir=cache_dir)
    if scanned.skipped:
        logging.warning(
            "skipped %d unusable image(s), e.g. %s", len(scanned.skipped), scanned.skipped[0]
        )
    unique, dropped = splits.deduplicate(scanned.collection, scanned.hashes)
    if dropped:
        logging.info("dropped %d byte-identical duplicate(s): %s", len(dropped), dropped[:10])
    pairs = file_cache.cached_whole(
        lambda: near_duplicates.find(
            near_duplicates.fingerprint(unique.paths, cache_dir=cache_dir)
        ).confirmed(),
        unique.paths,
        cache_dir,
        "near_duplicates",
        near_duplicates.SETTINGS,
    )
    groups = splits.group_ids(unique, pairs.i, pairs.j)
    logging.info(
        "%d near-duplicate pair(s); %d images in %d groups",
        len(pairs),
        len(unique),
        len(np.unique(groups)),
    )
    parts = splits.split(
        unique,
        val_fraction=data.get("val_fraction", 0.2),
        test_fraction=data.get("test_fraction", 0.0),
        seed=data.get("split_seed", 0),
        num_folds=data.get("num_folds", 0),
        fold=data.get("fold", 0),
        groups=groups,
        on_split_leak=data.get("on_split_leak", "drop"),
    )
    for name, part in parts.items():
        counts = dict(zip(part.classes, part.class_counts().tolist(), strict=True))
        logging.info("%s: %d images %s", name, len(part), counts)
    return Prepared(parts, scanned.skipped)
