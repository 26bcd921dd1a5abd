"""The ISIC challenges' classification CSV format: submissions and ground truth.

A submission has an ``image`` column (the image id, without ``.jpg``) and one
probability column per diagnosis, named as the challenge names them; the ground truth
has the same shape with one-hot rows. The challenge's own scorer
(``isic-challenge-scoring classification TRUTH.csv SUBMISSION.csv``) reads both.
Class names match the challenge's columns whatever their case (HAM10000's ``akiec`` is
ISIC 2018's ``AKIEC``), and the columns come out in the challenge's order.
"""

from __future__ import annotations

import collections
import csv
from collections.abc import Sequence
from typing import TextIO

import numpy as np
from numpy.typing import ArrayLike

# ISIC 2018 Task 3 (HAM10000's seven diagnoses), in the order of its ground-truth file.
ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def column_order(classes: Sequence[str], columns: Sequence[str] = ISIC2018_COLUMNS) -> list[int]:
    """For each challenge column, the index of its class; ValueError if the sets differ."""
    upper = [c.upper() for c in classes]
    missing = [c for c in columns if c not in upper]
    extra = [c for c, u in zip(classes, upper, strict=True) if u not in columns]
    if missing or extra or len(set(upper)) != len(upper):
        raise ValueError(
            f"classes {list(classes)} do not match the challenge's columns {list(columns)} "
            f"(case aside): missing {missing}, extra {extra}"
        )
    return [upper.index(c) for c in columns]


def matches(classes: Sequence[str], columns: Sequence[str] = ISIC2018_COLUMNS) -> bool:
    """Whether ``classes`` are the challenge's diagnoses (any order, any case)."""
    return sorted(c.upper() for c in classes) == sorted(columns)


def _write(out: TextIO, ids: Sequence[str], rows: np.ndarray, columns: Sequence[str]) -> None:
    if len(ids) != len(rows):
        raise ValueError(f"{len(ids)} image ids for {len(rows)} rows")
    repeated = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"image ids must be unique in a challenge CSV; repeated: {repeated[:5]}")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", *columns])
    for image, row in zip(ids, rows, strict=True):
        # repr: the shortest text that reads back as the same float, so the scorer ranks
        # and arg-maxes exactly the numbers skinjax scored (no ties made by rounding).
        writer.writerow([image, *(repr(float(x)) for x in row)])


def write_submission(
    out: TextIO,
    ids: Sequence[str],
    probs: ArrayLike,
    classes: Sequence[str],
    columns: Sequence[str] = ISIC2018_COLUMNS,
) -> None:
    """One row per image: its id and each diagnosis's probability, in the challenge's order."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must be [n, {len(classes)}], got shape {probs.shape}")
    if not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError("probabilities must lie in [0, 1], as the challenge requires")
    _write(out, ids, probs[:, column_order(classes, columns)], columns)


def write_truth(
    out: TextIO,
    ids: Sequence[str],
    labels: ArrayLike,
    classes: Sequence[str],
    columns: Sequence[str] = ISIC2018_COLUMNS,
) -> None:
    """The ground truth of ``ids`` (integer labels indexing ``classes``) as one-hot rows."""
    one_hot = np.eye(len(classes))[np.asarray(labels)]
    _write(out, ids, one_hot[:, column_order(classes, columns)], columns)
