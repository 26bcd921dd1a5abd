"""Seeded, stratified, leak-free splits.

Byte-identical files are collapsed to one copy before splitting, and every split and
fold keeps a group of images together (near-duplicates of one picture, one lesion's
or one patient's images), so no content can sit on both sides of a split. Every draw
uses numpy's PCG64 generator, whose streams are the same on every platform, so a
(seed, collection, groups) triple always gives the same split. With every image its
own group, the splits are exactly the ungrouped stratified ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from absl import logging

from skinjax.data.near_duplicates import clusters
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


def group_ids(collection: Collection, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """A group id per example: linked pairs (i, j), e.g. near-duplicates, and examples
    sharing a non-empty value in any group column are one group."""
    links = [(i, j)]
    for column in range(len(collection.examples[0].groups) if len(collection) else 0):
        first: dict[str, int] = {}
        for k, e in enumerate(collection.examples):
            if e.groups[column]:
                links.append((np.array([first.setdefault(e.groups[column], k)]), np.array([k])))
    return clusters(len(collection), *(np.concatenate(x) for x in zip(*links, strict=True)))


def _class_groups(labels: np.ndarray, groups: np.ndarray | None):
    """(class, its groups as arrays of example indices) in class order; a group
    belongs to its most frequent label."""
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(ids), labels.max() + 1 if len(labels) else 1), np.int64)
    np.add.at(counts, (inverse, labels), 1)
    majority = counts.argmax(axis=1)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    for c in np.unique(majority):
        yield c, [members[g] for g in np.flatnonzero(majority == c)]


def _shuffled(rng: np.random.Generator, groups: list[np.ndarray]) -> list[np.ndarray]:
    """A seeded order of the groups, largest first (stable, so singletons keep theirs)."""
    order = rng.permutation(len(groups))
    order = order[np.argsort([-len(groups[g]) for g in order], kind="stable")]
    return [groups[g] for g in order]


def stratified_split(
    labels: np.ndarray,
    fractions: dict[str, float],
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Splits indices so each class is divided in the given fractions, groups whole.

    Each non-train part takes class c's groups, in a seeded order, as long as a group
    brings it closer to round(fraction * n_c) examples; train takes the rest. With
    singleton groups every proportion matches the whole within one example.
    """
    if sum(fractions.values()) >= 1:
        raise DataError(f"split fractions {fractions} leave nothing to train on.")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], **{name: [] for name in fractions}}
    for _, class_groups in _class_groups(labels, groups):
        remaining = _shuffled(rng, class_groups)
        total = sum(len(g) for g in remaining)
        for name, fraction in fractions.items():
            target, count, rest = round(fraction * total), 0, []
            for g in remaining:
                if count + len(g) / 2 < target:
                    parts[name] += g.tolist()
                    count += len(g)
                else:
                    rest.append(g)
            remaining = rest
        parts["train"] += [k for g in remaining for k in g.tolist()]
    return {name: np.array(sorted(idx), dtype=np.int64) for name, idx in parts.items()}


def kfold(
    labels: np.ndarray, num_folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Stratified fold number (0..num_folds-1) for each example, groups whole.

    Each group goes to the fold holding fewest of its class so far; ties go round-robin,
    continued across classes so that fold sizes differ by at most one for singletons.
    """
    if num_folds < 2:
        raise DataError(f"k-fold needs at least 2 folds, not {num_folds}.")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for _, class_groups in _class_groups(labels, groups):
        counts = np.zeros(num_folds, np.int64)
        for g in _shuffled(rng, class_groups):
            fold = min(range(num_folds), key=lambda f: (counts[f], (f - offset) % num_folds))
            folds[g] = fold
            counts[fold] += len(g)
        offset += counts.sum()
    return folds


def published_leaks(collection: Collection, groups: np.ndarray) -> list[list[str]]:
    """The ids of each group that a published split puts on more than one side."""
    members: dict[int, list] = {}
    for g, e in zip(groups.tolist(), collection.examples, strict=True):
        members.setdefault(g, []).append(e)
    return [
        [e.id for e in group] for group in members.values() if len({e.split for e in group}) > 1
    ]


def _resolve_leaks(collection: Collection, groups: np.ndarray, on_split_leak: str) -> Collection:
    """Applies config.data.on_split_leak to the groups a published split cuts through."""
    leaks = published_leaks(collection, groups)
    if not leaks:
        return collection
    shown = "; ".join(", ".join(ids) for ids in leaks[:5])
    message = (
        f"the published split puts {len(leaks)} group(s) of near-duplicate or same-lesion "
        f"images on both sides, e.g. {shown}"
    )
    if on_split_leak == "error":
        raise DataError(
            f"{message}. Set config.data.on_split_leak='drop' to keep only each group's "
            "test / val copies, or 'keep' to evaluate with the leak."
        )
    if on_split_leak == "keep":
        logging.warning("%s (kept: config.data.on_split_leak='keep').", message)
        return collection
    first = {}  # per group, the side that keeps it: test before val before train
    for g, e in zip(groups.tolist(), collection.examples, strict=True):
        if _EVAL_FIRST[e.split] < _EVAL_FIRST[first.get(g, "train")]:
            first[g] = e.split
    keep = [
        k
        for k, (g, e) in enumerate(zip(groups.tolist(), collection.examples, strict=True))
        if e.split == first.get(g, "train")
    ]
    logging.warning("%s; dropped %d training-side image(s).", message, len(collection) - len(keep))
    return collection.subset(keep)


def split(
    collection: Collection,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    num_folds: int = 0,
    fold: int = 0,
    groups: np.ndarray | None = None,
    on_split_leak: str = "drop",
) -> dict[str, Collection]:
    """Train / val (/ test) collections that keep every group on one side.

    A published split (examples carrying ``split``) is kept, its leaks handled by
    ``on_split_leak``. Otherwise the test part is held out first, then either a
    stratified validation fraction or, with ``num_folds``, fold ``fold`` of a
    stratified k-fold over the rest. ``groups`` defaults to one group per example.
    """
    if on_split_leak not in ("error", "drop", "keep"):
        raise DataError(
            f"config.data.on_split_leak must be 'error', 'drop' or 'keep', not {on_split_leak!r}."
        )
    groups = np.arange(len(collection)) if groups is None else np.asarray(groups)
    published = {e.split for e in collection.examples}
    if published != {None}:
        if None in published:
            raise DataError("some rows have a split and some do not; fill the split column.")
        collection = _resolve_leaks(collection, groups, on_split_leak)
        return {
            name: collection.subset(
                [i for i, e in enumerate(collection.examples) if e.split == name]
            )
            for name in sorted(published)
        }
    fractions = {"test": test_fraction} if test_fraction else {}
    if not num_folds:
        fractions["val"] = val_fraction
    parts = stratified_split(collection.labels, fractions, seed, groups)
    result = {name: collection.subset(idx) for name, idx in parts.items() if len(idx)}
    if num_folds:
        if not 0 <= fold < num_folds:
            raise DataError(f"config.data.fold must be in [0, {num_folds}), not {fold}.")
        rest = parts["train"]
        folds = kfold(collection.labels[rest], num_folds, seed, groups[rest])
        result["train"] = collection.subset(rest[folds != fold])
        result["val"] = collection.subset(rest[folds == fold])
    return result
