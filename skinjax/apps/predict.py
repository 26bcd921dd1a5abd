"""Predictions for image files: class probabilities and the predicted class per file.

The model is a training work directory's best checkpoint or an exported artifact; both
run the same function (`export.inference_functions`) on uint8 images read and resized as
in training, so they agree. A file that is not a readable image gets an error of its
own, naming it and why, and every other file is still predicted. Non-RGB images
(greyscale, RGBA, CMYK) are converted to RGB.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import jax
import numpy as np

from skinjax.apps import explain, export, isic
from skinjax.data import images
from skinjax.data.reading import ReadOptions
from skinjax.train import trained

OVERLAY_SIZE = 256  # smallest side of a Grad-CAM overlay, in pixels


@dataclasses.dataclass(frozen=True)
class Model:
    """What prediction needs of a model: both of its functions take uint8 [B, S, S, 3]."""

    classes: tuple[str, ...]
    image_size: int
    classify: Callable[[np.ndarray], tuple[Any, Any]]  # -> (logits, probabilities)
    heatmaps: Callable[[np.ndarray], Any]  # -> Grad-CAM maps [B, S, S] in [0, 1]

    @property
    def read(self) -> ReadOptions:
        """Files as training reads them, any colour model converted to RGB."""
        return ReadOptions.from_config({"image_size": self.image_size, "convert_to_rgb": True})


def from_workdir(workdir: str) -> Model:
    run = trained.load(workdir)
    classify, heatmaps = export.inference_functions(run)
    return Model(run.classes, run.image_size, jax.jit(classify), jax.jit(heatmaps))


def from_artifact(directory: str) -> Model:
    artifact = export.load(directory)
    return Model(artifact.classes, artifact.image_size, artifact, artifact.gradcam)


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


def _read(path: str, read: ReadOptions) -> tuple[np.ndarray | None, str]:
    """(pixels, '') or (None, why the file cannot be used)."""
    try:
        return read.load(path), ""
    except images.ImageError as e:
        return None, str(e)


def predict(
    model: Model, paths: Sequence[str], *, batch_size: int = 32, gradcam_dir: str | None = None
) -> list[Prediction]:
    """One `Prediction` per path, in order; with ``gradcam_dir``, overlays written there."""
    if gradcam_dir:
        os.makedirs(gradcam_dir, exist_ok=True)
        overlays = list(_overlay_paths(paths, gradcam_dir))
    size = model.image_size
    # One batch shape, so the model compiles once whatever the number of files.
    shape = (min(batch_size, len(paths)), size, size, 3)
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        read = [_read(path, model.read) for path in chunk]
        good = [i for i, (_, error) in enumerate(read) if not error]
        if good:
            batch = np.zeros(shape, np.uint8)
            batch[: len(good)] = [read[i][0] for i in good]
            probabilities = np.asarray(model.classify(batch)[1])
            heatmaps = np.asarray(model.heatmaps(batch)) if gradcam_dir else None
        row = {i: row for row, i in enumerate(good)}  # position in the chunk -> in the batch
        for i, path in enumerate(chunk):
            if read[i][1]:
                results.append(Prediction(path, error=read[i][1]))
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
    ids = [os.path.splitext(os.path.basename(p.path))[0] for p in done]
    probs = np.array([p.probabilities for p in done]).reshape(len(done), len(classes))
    isic.write_submission(out, ids, probs, classes)
