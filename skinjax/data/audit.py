"""A data audit: exact and near-duplicate images within and across collections, label
conflicts between copies, and published splits that put one picture on both sides.

Writes a readable summary, a CSV of every duplicate pair and contact sheets (PNG) of a
sample of pairs, so that a person can check what the detector calls a copy.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw

from skinjax.data import near_duplicates, splits
from skinjax.data.sources import Collection

# Class names that mean melanoma in the ISIC collections, to compare labels across
# collections whose class names differ (benign/malignant, nevus/melanoma, nv/mel, ...).
MELANOMA = frozenset({"malignant", "melanoma", "mel", "MEL"})


@dataclasses.dataclass(frozen=True)
class Images:
    """Every image of the audited collections, flattened, with its origin."""

    collection: np.ndarray  # index into names
    names: tuple[str, ...]
    ids: tuple[str, ...]
    labels: tuple[str, ...]
    splits: tuple[str, ...]
    paths: tuple[str, ...]


def _flatten(collections: Mapping[str, Collection]) -> Images:
    rows = [
        (k, e.id, c.classes[e.label], e.split or "", e.path)
        for k, c in enumerate(collections.values())
        for e in c.examples
    ]
    columns = list(zip(*rows, strict=True))
    return Images(np.array(columns[0]), tuple(collections), *map(tuple, columns[1:]))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _exact_pairs(hashes: list[str]) -> set[tuple[int, int]]:
    same: dict[str, list[int]] = {}
    for k, h in enumerate(hashes):
        same.setdefault(h, []).append(k)
    return {p for group in same.values() for p in itertools.combinations(group, 2)}


def contact_sheet(rows: list[tuple[str, str, str]], path: str, side: int = 128) -> None:
    """Pairs side by side, three pairs per row, each captioned."""
    columns = 3
    height = side + 14
    sheet = Image.new("RGB", (columns * (2 * side + 8), height * -(-len(rows) // columns)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (a, b, caption) in enumerate(rows):
        x, y = (n % columns) * (2 * side + 8), (n // columns) * height
        for k, p in enumerate((a, b)):
            with Image.open(p) as image:
                sheet.paste(image.convert("RGB").resize((side, side)), (x + k * side, y))
        draw.text((x + 2, y + side), caption, fill="black")
    sheet.save(path)


def audit(collections: Mapping[str, Collection], out_dir: str, *, sample: int = 24) -> str:
    """Finds the duplicates, writes pairs.csv and the contact sheets; returns the summary."""
    images = _flatten(collections)
    with ThreadPoolExecutor(4) as pool:
        hashes = list(pool.map(_sha256, images.paths))
    exact = _exact_pairs(hashes)
    found = near_duplicates.find(near_duplicates.fingerprint(images.paths))
    score = {
        (a, b): (c, s)
        for a, b, c, s in zip(
            found.i.tolist(), found.j.tolist(), found.candidate, found.similarity, strict=True
        )
    }
    near = {p for p, (_, s) in score.items() if s >= near_duplicates.CONFIRM_THRESHOLD} - exact
    os.makedirs(out_dir, exist_ok=True)
    _write_pairs(os.path.join(out_dir, "pairs.csv"), images, exact, near, score)
    rng = np.random.default_rng(0)
    for name, chosen in (
        ("near_pairs.png", sorted(near)),
        ("borderline_pairs.png", sorted(p for p, (_, s) in score.items() if 0.25 <= s < 0.35)),
    ):
        picked = [chosen[k] for k in sorted(rng.permutation(len(chosen))[:sample])]
        if picked:
            contact_sheet(
                [
                    (images.paths[a], images.paths[b], _caption(images, a, b, score))
                    for a, b in picked
                ],
                os.path.join(out_dir, name),
            )
    return _summary(collections, images, exact, near)


def _caption(images: Images, a: int, b: int, score: dict) -> str:
    similarity = score.get((a, b), (0.0, 1.0))[1]
    return f"{similarity:.2f} {images.labels[a]}|{images.labels[b]}"


def _write_pairs(path: str, images: Images, exact: set, near: set, score: dict) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        side = ("collection", "id", "label", "split")
        out.writerow(
            ["kind", *(f"{c}_a" for c in side), *(f"{c}_b" for c in side), "hash", "similarity"]
        )
        for kind, pairs in (("exact", exact), ("near", near)):
            for a, b in sorted(pairs):
                c, s = score.get((a, b), (1.0, 1.0))
                out.writerow([kind, *_row(images, a), *_row(images, b), f"{c:.3f}", f"{s:.3f}"])


def _row(images: Images, k: int) -> tuple[str, str, str, str]:
    return images.names[images.collection[k]], images.ids[k], images.labels[k], images.splits[k]


def _summary(collections: Mapping[str, Collection], images: Images, exact: set, near: set) -> str:
    origin = images.collection
    lines = [
        f"{'':24s} {'images':>7s} {'exact pairs':>11s} {'near pairs':>10s} "
        f"{'with a copy':>11s} {'pictures':>8s} {'label conflicts':>15s}"
    ]

    def line(name: str, members: np.ndarray, keep) -> None:
        e = [p for p in exact if keep(*p)]
        n = [p for p in near if keep(*p)]
        both = e + n
        index = {k: m for m, k in enumerate(members.tolist())}
        local = np.array([(index[a], index[b]) for a, b in both], np.int64).reshape(-1, 2)
        groups = near_duplicates.clusters(len(members), local[:, 0], local[:, 1])
        copied = len({k for p in both for k in p})
        conflicts = sum(_conflict(images, a, b) for a, b in both)
        lines.append(
            f"{name:24s} {len(members):7d} {len(e):11d} {len(n):10d} {copied:11d} "
            f"{len(np.unique(groups)):8d} {conflicts:15d}"
        )

    for k, name in enumerate(images.names):
        members = np.flatnonzero(origin == k)
        line(name, members, lambda a, b, k=k: origin[a] == origin[b] == k)
    for k1, k2 in itertools.combinations(range(len(images.names)), 2):
        members = np.flatnonzero((origin == k1) | (origin == k2))
        line(
            f"{images.names[k1]} x {images.names[k2]}",
            members,
            lambda a, b, k1=k1, k2=k2: {origin[a], origin[b]} == {k1, k2},
        )
    if len(images.names) > 2:
        line("all together", np.arange(len(origin)), lambda a, b: True)
    lines += [
        "",
        "pairs: image pairs; with a copy: images in a pair; pictures: images left when "
        "each group of copies counts once; label conflicts: pairs whose labels differ "
        "(across collections: melanoma or not).",
    ]
    lines += _leaks(collections, images, exact | near)
    lines += _label_pairs(images, exact | near)
    return "\n".join(lines)


def _conflict(images: Images, a: int, b: int) -> bool:
    la, lb = images.labels[a], images.labels[b]
    if images.collection[a] == images.collection[b]:
        return la != lb
    return (la in MELANOMA) != (lb in MELANOMA)


def _leaks(collections: Mapping[str, Collection], images: Images, pairs: set) -> list[str]:
    """Published splits that put a group (copies, or one group-column value) on both sides."""
    lines = []
    start = 0
    for name, collection in collections.items():
        end = start + len(collection)
        if any(e.split for e in collection.examples):
            inside = np.array(
                [(a - start, b - start) for a, b in pairs if start <= a < end and start <= b < end],
                np.int64,
            ).reshape(-1, 2)
            groups = splits.group_ids(collection, inside[:, 0], inside[:, 1])
            leaks = splits.published_leaks(collection, groups)
            shown = "; ".join(", ".join(ids) for ids in leaks[:10])
            lines.append(
                f"\n{name}: the published split puts {len(leaks)} group(s) on both sides"
                + (f": {shown}" if leaks else ".")
            )
        start = end
    return lines


def _label_pairs(images: Images, pairs: set) -> list[str]:
    counts = Counter()
    for a, b in pairs:
        ka, kb = images.collection[a], images.collection[b]
        if ka != kb:
            (a, ka), (b, kb) = sorted([(a, ka), (b, kb)], key=lambda x: x[1])
            counts[(images.names[ka], images.labels[a], images.names[kb], images.labels[b])] += 1
    if not counts:
        return []
    lines = ["", "labels of copies across collections:"]
    for (n1, l1, n2, l2), c in sorted(counts.items()):
        lines.append(f"  {n1} {l1:22s} = {n2} {l2:22s} {c:6d}")
    return lines
