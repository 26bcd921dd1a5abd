"""Evaluation metrics for binary and multi-class lesion classification.

Host-side numpy, run at evaluation time on the collected probabilities. The definitions
are scikit-learn's (the tests check agreement to 1e-9), reimplemented so that sklearn
stays a test-only dependency.

Conventions:

- A ratio with a zero denominator (precision when nothing is predicted positive, ...)
  is 0, as scikit-learn's ``zero_division=0``.
- ROC-AUC needs both a positive and a negative example and PR-AUC needs a positive one;
  otherwise the curve is undefined and the value is nan, not an error. A macro average
  is nan when any class's value is, since averaging the rest would silently describe
  fewer classes.

Every metric is computed from per-example weights ``[B, n]``, the number of times each
example occurs in each of B data sets: ones for the data as given, multiplicities for
bootstrap resamples. One vectorised code path serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

PER_CLASS_METRICS = ("precision", "sensitivity", "specificity", "f1", "roc_auc", "pr_auc")
SCALAR_METRICS = ("accuracy", "balanced_accuracy", *PER_CLASS_METRICS)

# Bootstrap weights are processed in chunks of about this many entries, bounding memory.
_CHUNK_ELEMENTS = 1 << 22


def _check_probs(probs: ArrayLike) -> np.ndarray:
    """Probabilities as float64 [n, C]; raises ValueError on anything else."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(
            f"probs must be [num_examples > 0, num_classes >= 2], got shape {probs.shape}"
        )
    if not np.all(np.isfinite(probs) & (probs >= 0)):
        raise ValueError("probs must be finite and non-negative")
    if np.any(np.abs(probs.sum(axis=1) - 1.0) > 1e-3):
        raise ValueError("each row of probs must sum to 1 (within 1e-3); apply softmax first")
    return probs


def _check_labels(labels: ArrayLike, num_examples: int, num_classes: int) -> np.ndarray:
    """Integer labels [n] in [0, num_classes); raises ValueError on anything else."""
    labels = np.asarray(labels)
    if labels.shape != (num_examples,):
        raise ValueError(f"labels must have shape ({num_examples},), got {labels.shape}")
    if labels.dtype.kind not in "biu":
        raise ValueError(f"labels must be integers or booleans, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if np.any((labels < 0) | (labels >= num_classes)):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {np.unique(labels)}")
    return labels


def _check_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels as bool [n] and finite float64 scores [n]."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError(f"scores must be a non-empty 1-D finite array, got shape {scores.shape}")
    return _check_labels(labels, scores.size, 2).astype(bool), scores


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    return np.divide(numerator, denominator, out=out, where=denominator != 0)


def _predict(probs: np.ndarray, threshold: float | None, positive_class: int) -> np.ndarray:
    """Binary: positive when its probability >= threshold (0.5); multi-class: argmax."""
    if probs.shape[1] > 2:
        if threshold is not None:
            raise ValueError("threshold is for binary problems; multi-class predicts argmax")
        return probs.argmax(axis=1)
    if positive_class not in (0, 1):
        raise ValueError(f"positive_class must be 0 or 1, got {positive_class}")
    threshold = 0.5 if threshold is None else threshold
    return np.where(probs[:, positive_class] >= threshold, positive_class, 1 - positive_class)


def _confusion_matrices(
    labels: np.ndarray, preds: np.ndarray, weights: np.ndarray, num_classes: int
) -> np.ndarray:
    """[B, C, C] weighted counts, rows the true class and columns the predicted one."""
    cells = np.eye(num_classes * num_classes)[labels * num_classes + preds]
    return (weights @ cells).reshape(-1, num_classes, num_classes)


def _count_metrics(cm: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Overall metrics [B] and one-vs-rest per-class metrics [B, C] of confusion matrices."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    total = support.sum(axis=-1)
    fp, fn = predicted - tp, support - tp
    tn = total[:, None] - tp - fp - fn
    recall = _divide(tp, support)
    present = support > 0
    overall = {
        "accuracy": tp.sum(axis=-1) / total,
        # As scikit-learn: the mean recall over the classes that occur.
        "balanced_accuracy": (recall * present).sum(axis=-1) / present.sum(axis=-1),
    }
    per_class = {
        "precision": _divide(tp, predicted),
        "sensitivity": recall,
        "specificity": _divide(tn, tn + fp),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
    }
    return overall, per_class


def _curve_counts(
    is_pos: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted true and false positives [B, T] at each distinct score, highest first.

    The thresholds [T] are the distinct scores, an example counting as positive when its
    score is >= the threshold, so tied examples enter together (scikit-learn's rule).
    """
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), scores.size - 1]
    weights, is_pos = weights[:, order], is_pos[order]
    tps = np.cumsum(weights * is_pos, axis=-1)[:, ends]
    fps = np.cumsum(weights * ~is_pos, axis=-1)[:, ends]
    return tps, fps, sorted_scores[ends]


def _ranking_metrics(
    is_pos: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC (trapezoid) and average precision (step-wise) [B]; nan where undefined."""
    tps, fps, _ = _curve_counts(is_pos, scores, weights)
    with np.errstate(invalid="ignore"):  # 0/0 when a class is absent: nan, as documented.
        tpr, fpr = tps / tps[:, -1:], fps / fps[:, -1:]
    roc_auc = np.trapezoid(np.pad(tpr, ((0, 0), (1, 0))), np.pad(fpr, ((0, 0), (1, 0))))
    precision = _divide(tps, tps + fps)
    average_precision = np.sum(np.diff(tpr, axis=-1, prepend=0.0) * precision, axis=-1)
    return roc_auc, average_precision


def _weighted_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    threshold: float | None = None,
    positive_class: int = 1,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Scalar metrics [B], per-class metrics [B, C] and confusion matrices [B, C, C]."""
    num_classes = probs.shape[1]
    preds = _predict(probs, threshold, positive_class)
    cm = _confusion_matrices(labels, preds, weights, num_classes)
    overall, per_class = _count_metrics(cm)
    ranking = [_ranking_metrics(labels == c, probs[:, c], weights) for c in range(num_classes)]
    per_class["roc_auc"] = np.stack([roc_auc for roc_auc, _ in ranking], axis=-1)
    per_class["pr_auc"] = np.stack([ap for _, ap in ranking], axis=-1)
    for name, values in per_class.items():
        overall[name] = values[:, positive_class] if num_classes == 2 else values.mean(axis=-1)
    return overall, per_class, cm


def classification_metrics(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: float | None = None,
    positive_class: int = 1,
) -> dict[str, Any]:
    """Accuracy, precision, sensitivity, specificity, F1, balanced accuracy, AUCs, counts.

    Args:
      probs: [num_examples, num_classes] probabilities, rows summing to 1.
      labels: [num_examples] integer classes.
      threshold: binary only; predicts ``positive_class`` when its probability is
        >= threshold (default 0.5). Multi-class predicts the argmax.
      positive_class: binary only, the class (0 or 1) the scalar metrics describe.

    Returns:
      Python floats under ``SCALAR_METRICS``: of the positive class when binary, macro
      averages (one-vs-rest for the AUCs) when multi-class; a list per class under
      ``f"{name}_per_class"`` for each of ``PER_CLASS_METRICS``; ``"confusion_matrix"``,
      nested lists of counts (rows true, columns predicted); ``"support"``, the count of
      each true class. Only the scalars are floats, so ``np.ndim(v) == 0`` selects them.

    Raises:
      ValueError: on malformed probabilities or labels (see the module docstring for
        undefined metrics, which are nan or 0 instead).
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, *probs.shape)
    overall, per_class, cm = _weighted_metrics(
        probs, labels, np.ones((1, labels.size)), threshold=threshold, positive_class=positive_class
    )
    counts = np.rint(cm[0]).astype(int)
    return {
        **{name: float(overall[name][0]) for name in SCALAR_METRICS},
        **{f"{name}_per_class": per_class[name][0].tolist() for name in PER_CLASS_METRICS},
        "confusion_matrix": counts.tolist(),
        "support": counts.sum(axis=1).tolist(),
    }


def _resample_counts(rng: np.random.Generator, num_examples: int, size: int) -> np.ndarray:
    """[size, n] multiplicities of the examples in ``size`` resamples with replacement."""
    draws = rng.integers(0, num_examples, size=(size, num_examples))
    draws += num_examples * np.arange(size)[:, None]
    counts = np.bincount(draws.ravel(), minlength=size * num_examples)
    return counts.reshape(size, num_examples).astype(np.float64)


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of the defined (non-nan) values."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    probs: ArrayLike,
    labels: ArrayLike,
    metric_names: Sequence[str],
    *,
    num_samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    **kwargs: Any,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of scalar metrics.

    Resamples the examples with replacement ``num_samples`` times (all resamples at once,
    vectorised). Resamples on which a metric is undefined, such as an AUC of a resample
    holding one class only, are skipped for that metric; if all are, the interval is nan.

    Args:
      probs, labels: as ``classification_metrics``.
      metric_names: names from ``SCALAR_METRICS``.
      num_samples: number of resamples.
      seed: seeds the resampling.
      confidence: the central probability mass of the interval.
      **kwargs: ``threshold`` and ``positive_class``, as ``classification_metrics``.

    Returns:
      ``{name: (low, high)}``.
    """
    unknown = set(metric_names) - set(SCALAR_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {SCALAR_METRICS}")
    probs = _check_probs(probs)
    labels = _check_labels(labels, *probs.shape)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // labels.size)
    values = {name: [] for name in metric_names}
    for start in range(0, num_samples, chunk):
        weights = _resample_counts(rng, labels.size, min(chunk, num_samples - start))
        overall, _, _ = _weighted_metrics(probs, labels, weights, **kwargs)
        for name in metric_names:
            values[name].append(overall[name])
    return {
        name: _percentile_interval(np.concatenate(chunks), confidence)
        for name, chunks in values.items()
    }


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at decreasing thresholds, as ``sklearn.metrics.roc_curve``.

    Args:
      labels: [n] binary labels, 1 (or True) positive.
      scores: [n] scores of the positive class.

    Returns:
      ``(fpr, tpr, thresholds)``: one threshold per distinct score, collinear points
      dropped, and a first point (0, 0) at threshold inf. A rate is nan when labels lack
      its class (scikit-learn also warns).
    """
    is_pos, scores = _check_scores(labels, scores)
    tps, fps, thresholds = _curve_counts(is_pos, scores, np.ones((1, scores.size)))
    tps, fps = tps[0], fps[0]
    if tps.size > 2:  # Points inside a straight segment add nothing to the curve.
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    with np.errstate(invalid="ignore"):
        return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def precision_recall_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall as ``sklearn.metrics.precision_recall_curve``.

    Args:
      labels: [n] binary labels, 1 (or True) positive.
      scores: [n] scores of the positive class.

    Returns:
      ``(precision, recall, thresholds)`` at increasing thresholds (the distinct scores),
      ending with the point (precision 1, recall 0) that has no threshold. Recall is nan
      when labels hold no positive (scikit-learn sets it to 1 and warns).
    """
    is_pos, scores = _check_scores(labels, scores)
    tps, fps, thresholds = _curve_counts(is_pos, scores, np.ones((1, scores.size)))
    tps, fps = tps[0], fps[0]
    with np.errstate(invalid="ignore"):
        recall = tps / tps[-1]
    precision = _divide(tps, tps + fps)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def youden_threshold(probs_pos: ArrayLike, labels: ArrayLike) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1.

    Choose it on validation data and apply it, with ``classification_metrics``'s rule
    ``prob >= threshold``, to the test set. Of equally good thresholds it returns the
    highest.

    Raises:
      ValueError: if labels lack a class (J is then undefined).
    """
    fpr, tpr, thresholds = roc_curve(labels, probs_pos)
    if np.isnan(fpr[-1]) or np.isnan(tpr[-1]):
        raise ValueError("the Youden threshold needs both classes in labels")
    best = 1 + np.argmax(tpr[1:] - fpr[1:])  # Skip the first point, threshold inf.
    return float(thresholds[best])


def reweight_by_inverse_frequency(probs: ArrayLike, class_counts: ArrayLike) -> np.ndarray:
    """Divides each class's probability by its prior and renormalises (Steppan & Hanke).

    A classifier trained on imbalanced data carries the training priors in its outputs;
    dividing them out gives the probabilities under balanced priors, which trades
    accuracy on common classes for sensitivity on rare ones such as melanoma.

    Args:
      probs: [n, C] probabilities.
      class_counts: [C] training examples per class (the priors up to a constant).

    Returns:
      [n, C] probabilities, rows summing to 1.
    """
    probs = _check_probs(probs)
    counts = np.asarray(class_counts, np.float64)
    if counts.shape != probs.shape[1:] or np.any(counts <= 0):
        raise ValueError(f"class_counts must be {probs.shape[1]} positive numbers, got {counts}")
    scaled = probs / counts
    return scaled / scaled.sum(axis=1, keepdims=True)
