"""Tests of skinjax.metrics against scikit-learn and hand-computed values, and of plots."""

import struct

import numpy as np
import pytest
from sklearn import metrics as skm

from skinjax import metrics, plots

ATOL = 1e-9


def _data(seed: int, num_classes: int, *, ties: bool, num_examples: int = 300):
    """Random probabilities loosely correlated with the labels; ``ties`` repeats scores."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_examples)
    logits = rng.normal(size=(num_examples, num_classes))
    logits[np.arange(num_examples), labels] += 1.0
    if ties:  # Few distinct rows, hence many tied scores in every column.
        logits = np.round(logits)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


def _sklearn_metrics(probs, labels, preds, positive_class=1):
    """The reference values: scalars as ``classification_metrics`` and per-class lists."""
    num_classes = probs.shape[1]
    classes = np.arange(num_classes)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, preds, labels=classes, zero_division=0
    )
    specificity = [skm.recall_score(labels != c, preds != c) for c in classes]
    roc_auc = [skm.roc_auc_score(labels == c, probs[:, c]) for c in classes]
    pr_auc = [skm.average_precision_score(labels == c, probs[:, c]) for c in classes]
    per_class = {
        "precision": precision,
        "sensitivity": recall,
        "specificity": specificity,
        "f1": f1,
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
    }
    if num_classes == 2:
        scalars = {name: values[positive_class] for name, values in per_class.items()}
    else:
        scalars = {
            "precision": skm.precision_score(labels, preds, average="macro", zero_division=0),
            "sensitivity": skm.recall_score(labels, preds, average="macro"),
            "specificity": np.mean(specificity),
            "f1": skm.f1_score(labels, preds, average="macro"),
            "roc_auc": skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"),
            "pr_auc": skm.average_precision_score(labels, probs, average="macro"),
        }
    scalars["accuracy"] = skm.accuracy_score(labels, preds)
    scalars["balanced_accuracy"] = skm.balanced_accuracy_score(labels, preds)
    return scalars, per_class, skm.confusion_matrix(labels, preds, labels=classes), support


def _assert_matches_sklearn(result, probs, labels, preds, positive_class=1):
    scalars, per_class, confusion, support = _sklearn_metrics(probs, labels, preds, positive_class)
    for name, expected in scalars.items():
        np.testing.assert_allclose(result[name], expected, rtol=0, atol=ATOL, err_msg=name)
    for name, expected in per_class.items():
        np.testing.assert_allclose(
            result[f"{name}_per_class"], expected, rtol=0, atol=ATOL, err_msg=name
        )
    assert result["confusion_matrix"] == confusion.tolist()
    assert result["support"] == support.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("ties", [False, True])
def test_classification_metrics_match_sklearn(seed, num_classes, ties):
    probs, labels = _data(seed, num_classes, ties=ties)
    # Binary: class 1 when its probability >= 0.5 (a tie goes to 1, unlike argmax).
    preds = (probs[:, 1] >= 0.5).astype(int) if num_classes == 2 else probs.argmax(axis=1)
    result = metrics.classification_metrics(probs, labels)
    _assert_matches_sklearn(result, probs, labels, preds)


def test_only_scalar_metrics_are_scalars():
    probs, labels = _data(0, 4, ties=False)
    result = metrics.classification_metrics(probs, labels)
    assert {k for k, v in result.items() if np.ndim(v) == 0} == set(metrics.SCALAR_METRICS)
    assert all(isinstance(result[name], float) for name in metrics.SCALAR_METRICS)


@pytest.mark.parametrize(("threshold", "positive_class"), [(0.3, 1), (0.7, 1), (0.4, 0)])
def test_binary_threshold_and_positive_class_match_sklearn(threshold, positive_class):
    probs, labels = _data(3, 2, ties=True)
    preds = np.where(probs[:, positive_class] >= threshold, positive_class, 1 - positive_class)
    result = metrics.classification_metrics(
        probs, labels, threshold=threshold, positive_class=positive_class
    )
    _assert_matches_sklearn(result, probs, labels, preds, positive_class)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_curves_equal_sklearn(seed, ties):
    probs, labels = _data(seed, 2, ties=ties)
    for ours, theirs in [
        (metrics.roc_curve, skm.roc_curve),
        (metrics.precision_recall_curve, skm.precision_recall_curve),
    ]:
        for got, expected in zip(
            ours(labels, probs[:, 1]), theirs(labels, probs[:, 1]), strict=True
        ):
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_absent_class_gives_nan_auc():
    probs, labels = _data(0, 4, ties=False)
    present = labels != 3
    result = metrics.classification_metrics(probs[present], labels[present])
    assert np.isnan(result["roc_auc_per_class"][3])
    assert np.isnan(result["pr_auc_per_class"][3])
    assert np.all(np.isfinite(result["roc_auc_per_class"][:3]))
    assert np.isnan(result["roc_auc"]) and np.isnan(result["pr_auc"])
    assert np.isfinite(result["accuracy"])


def test_binary_without_negatives_has_nan_roc_auc_and_defined_pr_auc():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    result = metrics.classification_metrics(probs, [1, 1])
    assert np.isnan(result["roc_auc"])
    assert result["pr_auc"] == 1.0
    assert result["sensitivity"] == 0.5
    assert result["specificity"] == 0.0  # 0/0, scikit-learn's zero_division=0.


@pytest.mark.parametrize(
    ("probs", "labels", "kwargs", "match"),
    [
        (np.array([0.2, 0.8]), [1], {}, "shape"),
        (np.array([[0.2, 0.7]]), [1], {}, "sum to 1"),
        (np.array([[-0.2, 1.2]]), [1], {}, "non-negative"),
        (np.array([[0.2, 0.8]]), [2], {}, r"\[0, 2\)"),
        (np.array([[0.2, 0.8]]), [1, 0], {}, "shape"),
        (np.array([[0.2, 0.8]]), [1.0], {}, "integers"),
        (np.full((1, 3), 1 / 3), [1], {"threshold": 0.5}, "binary"),
    ],
)
def test_malformed_inputs_raise(probs, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.classification_metrics(probs, labels, **kwargs)


def test_youden_threshold_hand_example():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    labels = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    # At 0.6: sensitivity 3/4, specificity 1 -> J = 0.75; at 0.3: 1 + 2/4 - 1 = 0.5.
    threshold = metrics.youden_threshold(scores, labels)
    assert threshold == 0.6
    result = metrics.classification_metrics(
        np.stack([1 - scores, scores], axis=1), labels, threshold=threshold
    )
    assert (result["sensitivity"], result["specificity"]) == (0.75, 1.0)


def test_youden_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        metrics.youden_threshold([0.2, 0.9], [1, 1])


def test_weighted_metrics_equal_metrics_of_explicit_resamples():
    probs, labels = _data(4, 4, ties=True, num_examples=60)
    rng = np.random.default_rng(0)
    indices = rng.integers(0, labels.size, size=(5, labels.size))
    weights = np.stack([np.bincount(row, minlength=labels.size) for row in indices])
    overall, _, _ = metrics._weighted_metrics(probs, labels, weights.astype(float))
    for b, row in enumerate(indices):
        expected = metrics.classification_metrics(probs[row], labels[row])
        for name in metrics.SCALAR_METRICS:
            np.testing.assert_allclose(overall[name][b], expected[name], atol=ATOL, err_msg=name)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_bootstrap_contains_estimate_and_narrows_with_more_data(num_classes):
    names = ("accuracy", "roc_auc", "f1")
    widths = []
    for num_examples in (100, 1600):
        probs, labels = _data(5, num_classes, ties=False, num_examples=num_examples)
        point = metrics.classification_metrics(probs, labels)
        intervals = metrics.bootstrap_intervals(probs, labels, names, num_samples=300)
        for name, (low, high) in intervals.items():
            assert low <= point[name] <= high, name
        widths.append([high - low for low, high in intervals.values()])
    assert np.all(np.array(widths[1]) < 0.5 * np.array(widths[0]))


def test_bootstrap_is_seeded_and_independent_of_chunking(monkeypatch):
    probs, labels = _data(6, 2, ties=True, num_examples=50)
    names = ("roc_auc", "balanced_accuracy")
    first = metrics.bootstrap_intervals(probs, labels, names, num_samples=64, seed=3)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 50 * 10)
    assert metrics.bootstrap_intervals(probs, labels, names, num_samples=64, seed=3) == first


def test_bootstrap_skips_resamples_without_a_positive():
    # One positive in 20: about a third of the resamples lack it and have no AUC.
    probs = np.stack([np.linspace(0.9, 0.1, 20), np.linspace(0.1, 0.9, 20)], axis=1)
    labels = np.zeros(20, int)
    labels[10] = 1
    (low, high) = metrics.bootstrap_intervals(probs, labels, ["roc_auc"], num_samples=200)[
        "roc_auc"
    ]
    assert 0.0 <= low <= high <= 1.0


def test_bootstrap_rejects_unknown_metric():
    probs, labels = _data(0, 2, ties=False)
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.bootstrap_intervals(probs, labels, ["auc"])


def test_reweight_by_inverse_frequency_hand_example():
    probs = np.array([[0.5, 0.5], [0.8, 0.2]])
    # Divided by counts (3, 1): (1/6, 1/2) -> (1/4, 3/4); (0.8/3, 0.2) -> (4/7, 3/7).
    reweighted = metrics.reweight_by_inverse_frequency(probs, [3, 1])
    np.testing.assert_allclose(reweighted, [[0.25, 0.75], [4 / 7, 3 / 7]], rtol=1e-12)


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_plots_write_pngs_of_the_requested_size(tmp_path):
    probs, labels = _data(0, 2, ties=False)
    fpr, tpr, _ = metrics.roc_curve(labels, probs[:, 1])
    precision, recall, _ = metrics.precision_recall_curve(labels, probs[:, 1])
    result = metrics.classification_metrics(probs, labels)
    plots.plot_roc({"model (AUC 0.80)": (fpr, tpr)}, tmp_path / "roc.png", size=(4, 3), dpi=50)
    plots.plot_pr({"model": (recall, precision)}, tmp_path / "pr.png")
    plots.plot_confusion(
        result["confusion_matrix"], ["benign", "melanoma"], tmp_path / "cm.png", dpi=80
    )
    assert _png_size(tmp_path / "roc.png") == (200, 150)
    assert _png_size(tmp_path / "pr.png") == (500, 500)
    assert _png_size(tmp_path / "cm.png") == (480, 400)
