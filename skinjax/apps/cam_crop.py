"""The CAM-crop two-stage method: retrain on crops around each image's class activation.

Stage 1 is an ordinary training run on whole images. `write_crops` runs its best
checkpoint over every split of that run's data, crops each original image to the box
around its region of highest activation (`explain.crop_box`, with the threshold and
margin of ``config.cam_crop``) and writes the crops as a CSV collection that keeps the
original labels and splits. Stage 2 is an ordinary training run on that collection
(`data_config`); evaluating it on the validation crops is classifying the crop at test
time.

Boxes come from the map of the predicted class, for training and validation images
alike: both are cropped the same way, and no label reaches a validation crop. A run with
the patient-metadata branch predicts that class from each image's metadata row too,
and the crops keep the run's group and metadata columns, so that stage 2 can use them.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from skinjax.apps import explain
from skinjax.data import images, metadata, pipeline, prepare
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import METADATA_COLUMN_KEYS, Collection
from skinjax.train import build
from skinjax.train.trained import Trained

CSV_FILE = "labels.csv"
_BOX_FIELDS = tuple(f.name for f in dataclasses.fields(explain.Box))


def data_config(
    directory: str,
    classes: Sequence[str],
    *,
    group_columns: Sequence[str] = (),
    metadata_columns: Sequence[str] = ("", "", ""),
) -> dict[str, Any]:
    """The ``config.data`` fields that read a collection written by `write_crops`, with
    the stage-1 run's group and (age, sex, site) metadata columns, if it had any."""
    return dict(
        source="csv",
        dir=directory,
        csv=CSV_FILE,
        classes=tuple(classes),
        id_column="image_id",
        label_column="label",
        path_column="file",
        split_column="split",
        label_map={},
        group_columns=tuple(group_columns),
        **dict(zip(METADATA_COLUMN_KEYS, metadata_columns, strict=True)),
    )


def boxes(run: Trained, collection: Collection, settings: Mapping[str, Any]) -> list[explain.Box]:
    """The crop box of every image of ``collection``, in order, from the run's model."""
    data = run.config.data
    method = explain.cam if settings["method"] == "cam" else explain.grad_cam
    normalize = build.normalization(run.config)
    batches = pipeline.eval_dataset(
        collection,
        ReadOptions.from_config(data),
        batch_size=run.config.eval.batch_size,
        metadata=metadata.encoder(run.config.model, data),
    )
    found: dict[int, explain.Box] = {}
    for batch in batches:
        maps = method(
            run.model,
            normalize(batch["image"]),
            layer=settings["layer"] or None,
            metadata=batch.get("metadata"),
        )
        for index, heatmap in zip(batch["index"], np.asarray(maps.heatmaps), strict=True):
            if index >= 0:  # not padding
                found[int(index)] = explain.crop_box(
                    heatmap, threshold=settings["threshold"], margin=settings["margin"]
                )
    return [found[i] for i in range(len(collection))]


def write_crops(
    run: Trained, out_dir: str, settings: Mapping[str, Any], *, quality: int = 95
) -> dict[str, Any]:
    """Writes every split's crops (JPEG, at the original's resolution) and labels.csv.

    Returns the ``config.data`` fields that read them (`data_config`). The crops are
    resized to the stage-2 image size when read, like any collection.
    """
    data = run.config.data
    parts = prepare.prepare(data).parts
    read = ReadOptions.from_config(data)
    groups = tuple(data.get("group_columns") or ())
    columns = tuple(data.get(k, "") for k in METADATA_COLUMN_KEYS)
    kept = groups + (columns if any(columns) else ())  # the raw values of each example
    own = ["image_id", "file", "split", "label", *_BOX_FIELDS]
    if clash := sorted(set(kept) & set(own)):
        raise ValueError(
            f"{run.workdir}: its group or metadata columns {clash} would clash with the crops' "
            f"own columns {own} in {CSV_FILE}; rename them in the run's CSV."
        )
    rows = []
    for split, part in sorted(parts.items()):
        for example, box in zip(part.examples, boxes(run, part, settings), strict=True):
            original = images.decode(
                images.read_file(example.path),
                example.path,
                convert_to_rgb=read.convert_to_rgb,
            )
            file = os.path.join("images", f"{example.id}.jpg")
            os.makedirs(os.path.dirname(os.path.join(out_dir, file)), exist_ok=True)
            Image.fromarray(box.crop(original)).save(os.path.join(out_dir, file), quality=quality)
            rows.append(
                dict(
                    image_id=example.id,
                    file=file,
                    split=split,
                    label=part.classes[example.label],
                    **dataclasses.asdict(box),
                    **dict(zip(kept, example.groups + example.metadata, strict=True)),
                )
            )
    with open(os.path.join(out_dir, CSV_FILE), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*own, *kept])
        writer.writeheader()
        writer.writerows(rows)
    return data_config(out_dir, run.classes, group_columns=groups, metadata_columns=columns)
