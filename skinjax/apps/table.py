"""A markdown table of evaluations, one row per ``metrics.json`` that `report.evaluate` wrote.

A study such as docs/reproduction.md's HAM10000 table is one `scripts/evaluate.py`
command per row (a backbone, with or without reweighting or metadata, an ensemble),
each with its own ``--out``; `scripts/table.py` collects them. The columns are the ISIC
2018 Task 3 figures: balanced accuracy (mean per-class recall) with its 95% bootstrap
interval, each class's recall, the mean one-vs-rest ROC-AUC. A row's default label
says what it evaluated (members, metadata, reweighting, test-time views), read from its
metrics file, so that a mislabelled row cannot happen. Rows that scored other images
than the first row (another split, collection or class list) are refused, naming the
file: a table comparing them would be silently wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from skinjax.apps.report import METRICS_FILE as METRICS
from skinjax.apps.report import PREDICTIONS_FILE as PREDICTIONS

_NEEDED = ("balanced_accuracy", "sensitivity_per_class", "roc_auc", "classes", "split")


@dataclasses.dataclass(frozen=True)
class Row:
    path: str  # the metrics file
    metrics: dict[str, Any]
    ids: tuple[str, ...]  # the images scored, in order ('' if predictions.npz is missing)


def _metrics_file(path: str) -> str:
    """``path`` itself, or the metrics file in it (an evaluation's --out) or in its eval_val/
    (a work directory evaluated with the defaults)."""
    candidates = [os.path.join(path, METRICS), os.path.join(path, "eval_val", METRICS)]
    if path.endswith(".json"):
        candidates = [path]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"{path}: no {' nor '.join(candidates)}; run scripts/evaluate.py (--out) first"
    )


def read(path: str) -> Row:
    """The evaluation at ``path`` (a metrics.json, an evaluation directory or a work directory)."""
    file = _metrics_file(path)
    with open(file) as f:
        metrics = json.load(f)
    missing = [k for k in _NEEDED if k not in metrics]
    if missing:
        raise ValueError(f"{file}: no {missing}; is it a metrics file of scripts/evaluate.py?")
    predictions = os.path.join(os.path.dirname(file), PREDICTIONS)
    ids = ()
    if os.path.isfile(predictions):
        ids = tuple(str(i) for i in np.load(predictions)["ids"])
    return Row(file, metrics, ids)


def check_comparable(rows: Sequence[Row]) -> None:
    """ValueError unless every row scored the first row's images, split and classes."""
    first = rows[0]
    for row in rows[1:]:
        for key in ("split", "classes", "num_examples"):
            if row.metrics.get(key) != first.metrics.get(key):
                raise ValueError(
                    f"{row.path} has {key} {row.metrics.get(key)!r}, {first.path} "
                    f"{first.metrics.get(key)!r}: rows of one table must score the same images"
                )
        if row.ids and first.ids and row.ids != first.ids:
            raise ValueError(
                f"{row.path} scored other images than {first.path} (ids in {PREDICTIONS} "
                "differ): rows of one table must score the same images"
            )


def describe(metrics: Mapping[str, Any]) -> str:
    """What a metrics file evaluated: e.g. 'efficientnet_lite0 224 px + metadata,
    reweighted, 2 views'; an ensemble's members are joined by '+' with their weights."""
    members = metrics.get("ensemble_members") or [{"workdir": w} for w in metrics["workdirs"]]
    weights = metrics.get("ensemble_weights") or [1.0] * len(members)
    names = []
    for member, weight in zip(members, weights, strict=True):
        name = member["workdir"]
        if "model" in member:  # older metrics files name the work directories only
            name = f"{member['model']} {member['image_size']} px"
            name += " + metadata" if member["metadata"] else ""
        names.append(name if len(members) == 1 else f"{weight:.2f} x {name}")
    parts = [" + ".join(names)]
    if "reweighted_by_inverse_frequency" in metrics:  # older metrics files lack these two
        parts.append(("" if metrics["reweighted_by_inverse_frequency"] else "not ") + "reweighted")
    if "test_time_views" in metrics:
        views = metrics["test_time_views"]
        count = views["rotations"] * (2 if views["flip"] else 1)
        parts.append(f"{count} view{'s' * (count > 1)}")
    return ", ".join(parts)


def _interval(metrics: Mapping[str, Any], name: str) -> str:
    low, high = (metrics.get("intervals_95") or {}).get(name, (float("nan"),) * 2)
    return "" if np.isnan(low) else f" ({low:.3f}-{high:.3f})"


def markdown(rows: Sequence[Row], labels: Sequence[str] | None = None) -> str:
    """The table, one line per row (``labels``, default `describe`), after `check_comparable`."""
    if not rows:
        raise ValueError("no evaluations to tabulate")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} evaluations")
    check_comparable(rows)
    first = rows[0].metrics
    classes = [c.upper() for c in first["classes"]]
    header = [
        f"{first['split']} ({first.get('num_examples', '?')} images)",
        "balanced accuracy (95% CI)",
        *(f"recall {c}" for c in classes),
        "mean ROC-AUC",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k, row in enumerate(rows):
        m = row.metrics
        cells = [
            labels[k] if labels is not None else describe(m),
            f"{m['balanced_accuracy']:.3f}{_interval(m, 'balanced_accuracy')}",
            *(f"{r:.3f}" for r in m["sensitivity_per_class"]),
            f"{m['roc_auc']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
