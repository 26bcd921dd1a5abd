"""Predictions for image files: class probabilities and the predicted class per file.

The model is one or several training work directories' best checkpoints (an ensemble)
or an exported artifact. Both give the probabilities of the evaluation protocol, from
the code `scripts/evaluate.py` runs: the test-time views (`classifier.tta_views`:
the run's flip, and ``rotations`` quarter turns), the ensemble's weighted mean and the
reweighting by inverse class frequency (`report.combine`), so a file gets the same
probabilities here as in an evaluation. Files are read and resized as in training. A
file that is not a readable image, or that has no row in the patient-metadata CSV a
metadata model needs, gets an error of its own, naming it and why, and every other file
is still predicted. Non-RGB images (greyscale, RGBA, CMYK) are converted to RGB.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import jax
import numpy as np

from skinjax.apps import explain, export, isic, report
from skinjax.data import images
from skinjax.data.metadata import Encoder
from skinjax.data.reading import ReadOptions
from skinjax.train import build, classifier, trained

OVERLAY_SIZE = 256  # smallest side of a Grad-CAM overlay, in pixels
Metadata = np.ndarray | None  # encoded patient-metadata rows [B, F], for a metadata model


@dataclasses.dataclass(frozen=True)
class Model:
    """What prediction needs of a model: both functions take uint8 [B, S, S, 3] images
    and, for a model with the patient-metadata branch (``metadata``), their rows."""

    classes: tuple[str, ...]
    image_size: int
    classify: Callable[[np.ndarray, Metadata], np.ndarray]  # -> the protocol's probabilities
    heatmaps: Callable[[np.ndarray, Metadata], Any]  # -> Grad-CAM maps [B, S, S] in [0, 1]
    metadata: Encoder | None = None

    @property
    def read(self) -> ReadOptions:
        """Files as training reads them, any colour model converted to RGB."""
        return ReadOptions.from_config({"image_size": self.image_size, "convert_to_rgb": True})


def _eval_batch(images: np.ndarray, metadata: Metadata, member: report.Member) -> dict:
    """A batch as `classifier.eval_step` takes it; the rows only for a metadata member."""
    batch = {
        "image": images,
        "label": np.zeros(len(images), np.int32),
        "index": np.arange(len(images), dtype=np.int32),
        "mask": np.ones(len(images), bool),
    }
    return batch | ({"metadata": metadata} if member.metadata is not None else {})


def from_workdirs(
    workdirs: str | Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    rotations: int = 1,
    reweight: bool | None = None,
) -> Model:
    """The work directories' best checkpoints as `scripts/evaluate.py` runs them (an
    ensemble with ``weights`` when several); ``reweight`` overrides the first run's
    ``eval.reweight_by_inverse_frequency``."""
    workdirs = [workdirs] if isinstance(workdirs, str) else list(workdirs)
    weights = trained.ensemble_weights(workdirs, weights)
    members = [report.member(w, rotations=rotations) for w in workdirs]
    runs = [m.run for m in members]
    trained.check_members(runs)
    config, run_file = build.load_run(workdirs[0])
    if reweight is None:
        reweight = config.eval.reweight_by_inverse_frequency

    def classify(batch: np.ndarray, metadata: Metadata) -> np.ndarray:
        probs = [
            np.asarray(m.eval_fn(m.state, _eval_batch(batch, metadata, m))["probs"])
            for m in members
        ]
        return report.combine(probs, weights, run_file["class_counts"], reweight=reweight)

    heatmaps = jax.jit(export.inference_functions(runs, weights.tolist())[1])
    return Model(
        runs[0].classes,
        runs[0].image_size,
        classify,
        lambda batch, metadata: heatmaps(batch, *(() if metadata is None else (metadata,))),
        export.metadata_encoder(runs),
    )


def from_artifact(directory: str, *, rotations: int = 1, reweight: bool | None = None) -> Model:
    """An exported artifact with the evaluation protocol its card records (the flip, the
    class counts), ``rotations`` quarter turns, and ``reweight`` overriding the card's."""
    classifier.check_rotations(rotations)
    artifact = export.load(directory)
    card = artifact.card
    flip = bool(card.get("validation_flip_tta", False))
    reweight = card.get("reweight_by_inverse_frequency", False) if reweight is None else reweight
    if reweight and "class_counts" not in card:
        raise ValueError(f"{directory}: its card has no class counts to reweight by; export again.")
    meta = card.get("metadata_input")
    encoder = None
    if meta:
        encoder = Encoder(
            tuple(meta["columns"]), tuple(meta["sex_values"]), tuple(meta["site_values"])
        )

    def classify(batch: np.ndarray, metadata: Metadata) -> np.ndarray:
        views = classifier.tta_views(batch, rotations, flip)
        probs = np.mean([artifact(np.asarray(v), metadata)[1] for v in views], axis=0)
        return report.combine([probs], np.ones(1), card.get("class_counts"), reweight=reweight)

    return Model(artifact.classes, artifact.image_size, classify, artifact.gradcam, encoder)


@dataclasses.dataclass(frozen=True)
class Prediction:
    path: str
    probabilities: tuple[float, ...] = ()
    predicted: str = ""
    error: str = ""  # why the file could not be predicted; '' when it was
    gradcam: str = ""  # the overlay written, if any


def list_files(inputs: Sequence[str]) -> list[str]:
    """The files named and those directly inside the folders named (hidden ones skipped).

    Every file of a folder is listed, images or not, so that a stray file gets an
    error rather than being silently left out; a folder with no files is an error.
    """
    files = []
    for path in inputs:
        if os.path.isdir(path):
            found = [
                os.path.join(path, name)
                for name in sorted(os.listdir(path))
                if not name.startswith(".") and os.path.isfile(os.path.join(path, name))
            ]
            if not found:
                raise FileNotFoundError(f"{path}: the folder holds no files to predict.")
            files += found
        else:
            files.append(path)
    return files


def _overlay_paths(paths: Sequence[str], directory: str) -> Iterator[str]:
    """One PNG name per input, from its file name, numbered when two inputs share one."""
    used: set[str] = set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        yield os.path.join(directory, f"{name}.png")


def image_id(path: str) -> str:
    """The id of an image file, as ISIC names them: its name without the extension."""
    return os.path.splitext(os.path.basename(path))[0]


def _read(path: str, read: ReadOptions, rows: Mapping[str, np.ndarray] | None) -> tuple:
    """(pixels, metadata row or None, '') or (None, None, why the file cannot be used)."""
    row = None
    if rows is not None:
        row = rows.get(image_id(path))
        if row is None:
            return None, None, f"{path}: no row for id {image_id(path)!r} in the metadata CSV."
    try:
        return read.load(path), row, ""
    except images.ImageError as e:
        return None, None, str(e)


def predict(
    model: Model,
    paths: Sequence[str],
    *,
    batch_size: int = 32,
    gradcam_dir: str | None = None,
    metadata: Mapping[str, np.ndarray] | None = None,
) -> list[Prediction]:
    """One `Prediction` per path, in order; with ``gradcam_dir``, overlays written there.

    A metadata model needs ``metadata``: encoded rows by image id (`image_id`), e.g.
    `skinjax.data.metadata.read_rows` of a test set's CSV.
    """
    if (model.metadata is None) != (metadata is None):
        raise ValueError(
            "this model takes patient metadata: give the CSV of its columns "
            f"{list(model.metadata.columns)}"
            if model.metadata
            else "this model takes no patient metadata"
        )
    if gradcam_dir:
        os.makedirs(gradcam_dir, exist_ok=True)
        overlays = list(_overlay_paths(paths, gradcam_dir))
    size = model.image_size
    # One batch shape, so the model compiles once whatever the number of files.
    shape = (min(batch_size, len(paths)), size, size, 3)
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        read = [_read(path, model.read, metadata) for path in chunk]
        good = [i for i, (*_, error) in enumerate(read) if not error]
        if good:
            batch = np.zeros(shape, np.uint8)
            batch[: len(good)] = [read[i][0] for i in good]
            rows = None
            if metadata is not None:
                rows = np.zeros((shape[0], model.metadata.size), np.float32)
                rows[: len(good)] = [read[i][1] for i in good]
            probabilities = np.asarray(model.classify(batch, rows))
            heatmaps = np.asarray(model.heatmaps(batch, rows)) if gradcam_dir else None
        row = {i: row for row, i in enumerate(good)}  # position in the chunk -> in the batch
        for i, path in enumerate(chunk):
            if read[i][2]:
                results.append(Prediction(path, error=read[i][2]))
                continue
            p, overlay = probabilities[row[i]], ""
            if gradcam_dir:
                overlay = overlays[start + i]
                shown = images.load(path, max(size, OVERLAY_SIZE), convert_to_rgb=True)
                explain.save_overlay(overlay, shown, heatmaps[row[i]])
            predicted = model.classes[int(np.argmax(p))]
            results.append(Prediction(path, tuple(float(x) for x in p), predicted, gradcam=overlay))
    return results


def write_csv(predictions: Sequence[Prediction], classes: Sequence[str], out: TextIO) -> None:
    """One row per file: path, predicted class, a probability column per class, error."""
    writer = csv.writer(out)
    writer.writerow(["path", "predicted", *(f"p_{c}" for c in classes), "gradcam", "error"])
    for p in predictions:
        probabilities = [f"{x:.6f}" for x in p.probabilities] or [""] * len(classes)
        writer.writerow([p.path, p.predicted, *probabilities, p.gradcam, p.error])


def write_json(predictions: Sequence[Prediction], classes: Sequence[str], out: TextIO) -> None:
    """A list of {path, predicted, probabilities: {class: p}[, gradcam]} or {path, error}."""
    records = []
    for p in predictions:
        if p.error:
            records.append({"path": p.path, "error": p.error})
            continue
        record = {
            "path": p.path,
            "predicted": p.predicted,
            "probabilities": dict(zip(classes, p.probabilities, strict=True)),
        }
        records.append(record | ({"gradcam": p.gradcam} if p.gradcam else {}))
    json.dump(records, out, indent=2)
    out.write("\n")


def write_isic(predictions: Sequence[Prediction], classes: Sequence[str], out: TextIO) -> None:
    """The ISIC challenge submission (`isic.write_submission`), ids from the file names.

    Files with an error get no row (the format has no place for one): the caller reports them.
    """
    done = [p for p in predictions if not p.error]
    ids = [image_id(p.path) for p in done]
    probs = np.array([p.probabilities for p in done]).reshape(len(done), len(classes))
    isic.write_submission(out, ids, probs, classes)
