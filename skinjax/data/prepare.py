"""From a config's ``data`` section to verified, de-duplicated train / val (/ test)
collections: the one place that chains sources -> integrity scan -> splits.
"""

from __future__ import annotations

from collections.abc import Mapping

from absl import logging

from skinjax.data import integrity, sources, splits
from skinjax.data.sources import Collection


def prepare(data: Mapping, workdir: str | None = None) -> dict[str, Collection]:
    """Reads the collection, checks every file, drops duplicate content, splits."""
    collection = sources.load(data)
    scanned = integrity.scan(
        collection,
        on_bad_image=data.get("on_bad_image", "error"),
        convert_to_rgb=data.get("convert_to_rgb", False),
        workdir=workdir,
    )
    if scanned.skipped:
        logging.warning(
            "skipped %d unreadable image(s); see %s", len(scanned.skipped), integrity.SKIPPED_FILE
        )
    unique, dropped = splits.deduplicate(scanned.collection, scanned.hashes)
    if dropped:
        logging.info("dropped %d byte-identical duplicate(s): %s", len(dropped), dropped[:10])
    parts = splits.split(
        unique,
        val_fraction=data.get("val_fraction", 0.2),
        test_fraction=data.get("test_fraction", 0.0),
        seed=data.get("split_seed", 0),
        num_folds=data.get("num_folds", 0),
        fold=data.get("fold", 0),
    )
    for name, part in parts.items():
        counts = dict(zip(part.classes, part.class_counts().tolist(), strict=True))
        logging.info("%s: %d images %s", name, len(part), counts)
    return parts
