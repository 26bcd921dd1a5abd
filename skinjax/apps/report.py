"""Evaluating a trained work directory: metrics.json and ROC / PR / confusion plots.

Reads the run's saved config and its best checkpoint (chosen on validation only),
predicts a split, and reports what the papers report. With several work directories
it averages their probabilities (an ensemble). For ISIC 2018's seven diagnoses it also
writes the split in the challenge's CSV format, submission and ground truth.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging
from flax import nnx

from skinjax import metrics, parallel, plots
from skinjax.apps import isic
from skinjax.data import metadata, near_duplicates, prepare, sources
from skinjax.data.metadata import Encoder
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection
from skinjax.train import build, classifier, evaluation, trained

METRICS_FILE = "metrics.json"  # an evaluation and its protocol; apps/table.py reads it
PREDICTIONS_FILE = "predictions.npz"  # beside it: probabilities, labels and ids of the images


def inference_state(
    run: trained.Trained, *, rotations: int = 1
) -> tuple[classifier.Inference, classifier.TrainState]:
    """The run's model as `classifier.eval_step` takes it, averaging ``rotations`` quarter
    turns at test time."""
    graph, params, rest = nnx.split(run.model, nnx.Param, ...)
    inference = build.inference(run.config, graph, rotations=rotations)
    state = classifier.TrainState(
        step=np.int32(0),
        params=params,
        rest=rest,
        opt_state=(),
        rng=np.zeros(2, np.uint32),
        lr_scale=np.float32(1),
    )
    return inference, state


@dataclasses.dataclass(frozen=True)
class Member:
    """One work directory as the evaluation protocol runs it: ``eval_fn(state, batch)``
    averages the test-time views (`classifier.eval_step`)."""

    run: trained.Trained
    eval_fn: Callable
    state: classifier.TrainState
    metadata: Encoder | None  # the training run's categories


def member(workdir: str, *, rotations: int = 1) -> Member:
    """``workdir``'s best checkpoint, averaging ``rotations`` quarter turns (and their
    mirrors, when the run flips at test time)."""
    classifier.check_rotations(rotations)
    run = trained.load(workdir)
    inference, state = inference_state(run, rotations=rotations)
    placement = parallel.Placement("mesh")
    eval_fn = classifier.compile_eval(inference, placement, flip_tta=run.config.eval.flip_tta)
    encoder = metadata.encoder(run.config.model, run.config.data)
    return Member(run, eval_fn, placement.put_state(state), encoder)


def predict_workdir(
    workdir: str, collection: Collection, read: ReadOptions, *, rotations: int = 1
) -> np.ndarray:
    """Probabilities of the work directory's best checkpoint on ``collection`` (`member`)."""
    m = member(workdir, rotations=rotations)
    return evaluation.predict(
        m.eval_fn,
        m.state,
        collection,
        parallel.Placement("mesh"),
        read,
        batch_size=m.run.config.eval.batch_size,
        metadata=m.metadata,
    )


def member_summary(workdir: str) -> dict:
    """What a metrics file or model card records of an ensemble member."""
    config, _ = build.load_run(workdir)
    return {
        "workdir": os.path.abspath(workdir),
        "model": config.model.name,
        "image_size": config.data.image_size,
        "metadata": bool(config.model.get("metadata", False)),
    }


def combine(
    members: Sequence[np.ndarray], weights: np.ndarray, class_counts, *, reweight: bool
) -> np.ndarray:
    """The protocol's probabilities from its members': weighted mean, then reweighted by
    inverse class frequency when ``reweight``. Evaluation and prediction both end here."""
    probs = np.tensordot(weights, members, axes=1)
    return evaluation.scored(probs, class_counts, reweight=reweight)


def evaluate(
    workdirs: Sequence[str],
    *,
    split: str,
    data_overrides: dict | None = None,
    out_dir: str | None = None,
    reweight: bool | None = None,
    weights: Sequence[float] | None = None,
    rotations: int = 1,
) -> dict:
    """Writes metrics.json and plots for ``split`` into ``out_dir``; returns the metrics.

    ``reweight`` overrides the run's ``eval.reweight_by_inverse_frequency``. An ensemble
    averages its members' probabilities with ``weights`` (equal by default); with
    ``rotations`` 4, each member averages the four quarter turns of every image (eight
    views with its flip test-time augmentation). Members, weights and views are recorded.
    """
    weights = trained.ensemble_weights(workdirs, weights)
    classifier.check_rotations(rotations)
    config, run = build.load_run(workdirs[0])
    training_data = config.data.to_dict()
    if data_overrides:
        config.data.update(data_overrides)
    if reweight is not None:
        config.eval.reweight_by_inverse_frequency = reweight
    parts = prepare.prepare(config.data).parts
    read = ReadOptions.from_config(config.data)  # the run's, with the overrides
    if split not in parts:
        raise ValueError(f"split {split!r} not in this collection's splits {sorted(parts)}")
    if tuple(parts[split].classes) != tuple(run["classes"]):
        raise ValueError(f"classes {parts[split].classes} differ from training's {run['classes']}")
    collection = parts[split]
    if data_overrides:  # another collection: does it hold copies of training images?
        shared = near_duplicates.shared(collection.paths, sources.load(training_data).paths)
        if len(shared):
            logging.warning(
                "%d of the %d %s images are copies or near-duplicates of the run's training "
                "collection (%s), e.g. %s: their scores are not external validation.",
                len(shared),
                len(collection),
                split,
                training_data["dir"],
                [collection.ids[k] for k in shared[:5]],
            )

    def probabilities(part: Collection) -> np.ndarray:
        members = [predict_workdir(w, part, read, rotations=rotations) for w in workdirs]
        reweight = config.eval.reweight_by_inverse_frequency
        return combine(members, weights, run["class_counts"], reweight=reweight)

    probs, labels = probabilities(collection), collection.labels
    binary = probs.shape[1] == 2
    threshold = None
    if binary and config.eval.threshold == "youden":  # chosen on validation, never on test
        val = parts["val"]
        threshold = metrics.youden_threshold(probabilities(val)[:, 1], val.labels)
    result = metrics.classification_metrics(probs, labels, threshold=threshold)
    result["threshold"] = 0.5 if threshold is None and binary else threshold
    result["intervals_95"] = metrics.bootstrap_intervals(
        probs,
        labels,
        list(metrics.SCALAR_METRICS),
        num_samples=config.eval.bootstrap_samples,
        threshold=threshold,
    )
    result.update(
        split=split,
        num_examples=len(collection),
        classes=list(collection.classes),
        reweighted_by_inverse_frequency=bool(config.eval.reweight_by_inverse_frequency),
        workdirs=list(workdirs),
        ensemble_weights=weights.tolist(),
        ensemble_members=[member_summary(w) for w in workdirs],
        test_time_views={"rotations": rotations, "flip": bool(config.eval.flip_tta)},
        data_dir=config.data.dir,
    )
    out_dir = out_dir or os.path.join(workdirs[0], f"eval_{split}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, METRICS_FILE), "w") as f:
        json.dump(result, f, indent=2, default=float)
    np.savez(
        os.path.join(out_dir, PREDICTIONS_FILE),
        probs=probs,
        labels=labels,
        ids=np.array(collection.ids),
    )
    if isic.matches(collection.classes):  # ISIC 2018's diagnoses: files its scorer reads
        with open(os.path.join(out_dir, "isic_submission.csv"), "w") as f:
            isic.write_submission(f, collection.ids, probs, collection.classes)
        with open(os.path.join(out_dir, "isic_truth.csv"), "w") as f:
            isic.write_truth(f, collection.ids, labels, collection.classes)
    _plot(probs, labels, collection.classes, result["confusion_matrix"], out_dir)
    return result


def _plot(probs, labels, classes: Sequence[str], confusion, out_dir: str) -> None:
    positives = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    roc, pr = {}, {}
    for c in positives:
        is_c = (labels == c).astype(int)
        if 0 < is_c.sum() < len(is_c):
            fpr, tpr, _ = metrics.roc_curve(is_c, probs[:, c])
            precision, recall, _ = metrics.precision_recall_curve(is_c, probs[:, c])
            roc[classes[c]], pr[classes[c]] = (fpr, tpr), (recall, precision)
    plots.plot_roc(roc, os.path.join(out_dir, "roc.png"), title="ROC")
    plots.plot_pr(pr, os.path.join(out_dir, "pr.png"), title="Precision-recall")
    plots.plot_confusion(np.array(confusion), list(classes), os.path.join(out_dir, "confusion.png"))
