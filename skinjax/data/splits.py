"""Seeded, stratified, leak-free splits.

Byte-identical files are collapsed to one copy before splitting, so no content can
sit on both sides of a split. Every draw uses numpy's PCG64 generator, whose streams
are the same on every platform, so a (seed, collection) pair always gives the same
split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skinjax.data.sources import Collection, DataError

_EVAL_FIRST = {"test": 0, "val": 1, "train": 2, None: 3}


def deduplicate(collection: Collection, hashes: Sequence[str]) -> tuple[Collection, list[str]]:
    """Keeps one copy of each content hash; returns it and the ids dropped.

    With a published split, the copy kept is the one in test, else val, so that the
    evaluation sets stay whole and the training copy is the one dropped.
    """
    order = sorted(range(len(collection)), key=lambda i: _EVAL_FIRST[collection.examples[i].split])
    seen: set[str] = set()
    keep = []
    for i in order:
        if hashes[i] not in seen:
            seen.add(hashes[i])
            keep.append(i)
    kept = sorted(keep)
    dropped = sorted(set(range(len(collection))) - set(kept))
    return collection.subset(kept), [collection.examples[i].id for i in dropped]


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Splits indices so each class is divided in the given fractions.

    Each non-train part takes round(fraction * n_c) examples of class c, so its class
    proportions match the whole within one example; train takes the rest.
    """
    if sum(fractions.values()) >= 1:
        raise DataError(f"split fractions {fractions} leave nothing to train on.")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], **{name: [] for name in fractions}}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, fraction in fractions.items():
            count = round(fraction * len(members))
            parts[name] += members[start : start + count].tolist()
            start += count
        parts["train"] += members[start:].tolist()
    return {name: np.array(sorted(idx), dtype=np.int64) for name, idx in parts.items()}


def kfold(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Stratified fold number (0..num_folds-1) for each example."""
    if num_folds < 2:
        raise DataError(f"k-fold needs at least 2 folds, not {num_folds}.")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        # Continue the round-robin across classes so fold sizes differ by at most one.
        folds[members] = (np.arange(len(members)) + offset) % num_folds
        offset += len(members)
    return folds


def split(
    collection: Collection,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    num_folds: int = 0,
    fold: int = 0,
) -> dict[str, Collection]:
    """Train / val (/ test) collections.

    A published split (examples carrying ``split``) is kept as it is. Otherwise the
    test part is held out first, then either a stratified validation fraction or, with
    ``num_folds``, fold ``fold`` of a stratified k-fold over the rest.
    """
    published = {e.split for e in collection.examples}
    if published != {None}:
        if None in published:
            raise DataError("some rows have a split and some do not; fill the split column.")
        return {
            name: collection.subset(
                [i for i, e in enumerate(collection.examples) if e.split == name]
            )
            for name in sorted(published)
        }
    fractions = {"test": test_fraction} if test_fraction else {}
    if not num_folds:
        fractions["val"] = val_fraction
    parts = stratified_split(collection.labels, fractions, seed)
    result = {name: collection.subset(idx) for name, idx in parts.items() if len(idx)}
    if num_folds:
        if not 0 <= fold < num_folds:
            raise DataError(f"config.data.fold must be in [0, {num_folds}), not {fold}.")
        rest = result["train"]
        folds = kfold(rest.labels, num_folds, seed)
        result["train"] = rest.subset(np.flatnonzero(folds != fold))
        result["val"] = rest.subset(np.flatnonzero(folds == fold))
    return result
