"""Collections of labelled images as they are published: one folder per class, or an
image folder plus a labels CSV. Both become a `Collection` of `Example` records.

Records hold paths, not pixels: reading and decoding happen later, in the grain
workers. Every problem found here (a missing folder, file or column, an empty class,
an unknown label) raises `DataError` naming what is wrong and how to fix it.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# config.data keys naming the patient metadata columns, in `Example.metadata` order
METADATA_COLUMN_KEYS = ("age_column", "sex_column", "site_column")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class DataError(ValueError):
    """A collection that cannot be read as configured."""


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    path: str
    label: int
    split: str | None = None
    groups: tuple[str, ...] = ()  # values of config.data.group_columns, e.g. the lesion id
    metadata: tuple[str, ...] = ()  # raw patient metadata (age, sex, site), `data.metadata`


@dataclasses.dataclass(frozen=True)
class Collection:
    """Labelled image files; ``label`` indexes ``classes``."""

    classes: tuple[str, ...]
    examples: tuple[Example, ...]

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples], dtype=np.int32)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(e.path for e in self.examples)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.examples)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, indices: Sequence[int] | np.ndarray) -> Collection:
        return Collection(self.classes, tuple(self.examples[i] for i in indices))


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DataError(
            f"{what} {path!r} does not exist. Set config.data.dir to the collection's folder "
            "(the README says how to get the ISIC data)."
        )


def _check_files_exist(examples: Sequence[Example], origin: str) -> None:
    missing = [e.path for e in examples if not os.path.isfile(e.path)]
    if missing:
        shown = "\n  ".join(missing[:5])
        raise DataError(
            f"{len(missing)} image file(s) named in {origin} do not exist, e.g.:\n  {shown}\n"
            "Fix the paths, or remove those entries."
        )


def from_folders(root: str, classes: Sequence[str] | None = None) -> Collection:
    """One sub-folder per class; the folder names are the class names.

    ``classes`` fixes the class order (label i is classes[i]); by default the folders
    sorted by name. Every listed class must have a non-empty folder, and no image
    folder may be left unlisted, so that a typo cannot silently drop a class.
    """
    _require_dir(root, "data directory")
    folders = sorted(
        d
        for d in os.listdir(root)
        if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
    )
    if not folders:
        raise DataError(f"{root!r} has no class sub-folders; expected one folder per class.")
    classes = tuple(classes) if classes else tuple(folders)
    unknown = [c for c in classes if c not in folders]
    if unknown:
        raise DataError(f"class folder(s) {unknown} not found in {root!r}; found {folders}.")
    unlisted = [d for d in folders if d not in classes]
    if unlisted:
        raise DataError(
            f"folder(s) {unlisted} in {root!r} are not in config.data.classes {list(classes)}; "
            "add them to the classes or move them out of the data directory."
        )
    examples = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(
                f"class folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
            )
        stems = collections.Counter(os.path.splitext(f)[0] for f in files)
        twins = [f for f in files if stems[os.path.splitext(f)[0]] > 1]
        if twins:  # an id (class/stem) would name two files
            raise DataError(
                f"{folder!r}: files {twins} share a name, and so an id; rename or remove one."
            )
        examples += [
            Example(
                id=f"{name}/{os.path.splitext(f)[0]}", path=os.path.join(folder, f), label=label
            )
            for f in files
        ]
    return Collection(classes, tuple(examples))


def _check_repeated_id(
    csv_path: str,
    classes: Sequence[str],
    first: tuple[int, Example],
    again: tuple[int, Example],
) -> None:
    """An id on two rows must name one image with one label: anything else is ambiguous."""
    (line_a, a), (line_b, b) = first, again
    where = f"{csv_path}, lines {line_a} and {line_b}: id {a.id!r}"
    if a.label != b.label:
        raise DataError(
            f"{where} has two labels, {classes[a.label]!r} and {classes[b.label]!r}. "
            "Keep the row with the right label."
        )
    if a.path != b.path:
        raise DataError(
            f"{where} names two files, {a.path!r} and {b.path!r}. Give each its own id."
        )


def _column(row: Mapping[str, str], name: str) -> str:
    return row[name].strip()


def from_csv(
    root: str,
    csv_file: str,
    *,
    classes: Sequence[str],
    id_column: str,
    label_column: str = "",
    path_column: str = "",
    path_template: str = "{id}.jpg",
    split_column: str = "",
    label_map: Mapping[str, str] | None = None,
    group_columns: Sequence[str] = (),
    metadata_columns: Sequence[str] = (),
) -> Collection:
    """An image folder plus a CSV with one row per image.

    The label is either one column (``label_column``, its raw values mapped through
    ``label_map`` onto class names) or, when ``label_column`` is empty, one-hot columns
    named after the classes (the ISIC 2019 ground-truth layout). Paths come from
    ``path_column`` or from ``path_template`` formatted with the id; both are relative
    to ``root``. ``split_column`` keeps a published split (train / val / test).
    ``group_columns`` (e.g. lesion_id, patient_id) name images that splits keep together.
    ``metadata_columns`` (age, sex, site) are kept raw; `skinjax.data.metadata` encodes them.
    """
    _require_dir(root, "data directory")
    csv_path = os.path.join(root, csv_file)
    if not os.path.isfile(csv_path):
        raise DataError(f"labels file {csv_path!r} does not exist; set config.data.csv.")
    classes = tuple(classes)
    if not classes:
        raise DataError("a CSV collection needs config.data.classes (the class names, in order).")
    label_map = dict(label_map or {})
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        label_columns = [label_column] if label_column else list(classes)
        columns = (id_column, path_column, split_column, *label_columns, *group_columns)
        for name in (*columns, *metadata_columns):
            if name and name not in header:
                raise DataError(f"{csv_path}: no column {name!r}; the columns are {header}.")
        examples, first = [], {}  # first: id -> (line, example) of its first row
        for line, row in enumerate(reader, start=2):
            id_ = _column(row, id_column)
            if label_column:
                raw = _column(row, label_column)
                name = label_map.get(raw, raw)
                if name not in classes:
                    raise DataError(
                        f"{csv_path}, line {line} (id {id_}): label {raw!r} is neither a class "
                        f"{list(classes)} nor a key of config.data.label_map {label_map}."
                    )
                label = classes.index(name)
            else:
                hot = [i for i, c in enumerate(classes) if float(_column(row, c) or 0) == 1.0]
                if len(hot) != 1:
                    raise DataError(
                        f"{csv_path}, line {line} (id {id_}): expected exactly one of the one-hot "
                        f"columns {list(classes)} to be 1, found {len(hot)}."
                    )
                label = hot[0]
            split = None
            if split_column:
                raw_split = _column(row, split_column).lower()
                if raw_split not in SPLIT_NAMES:
                    raise DataError(
                        f"{csv_path}, line {line} (id {id_}): split {raw_split!r} is not one of "
                        f"{sorted(SPLIT_NAMES)}."
                    )
                split = SPLIT_NAMES[raw_split]
            rel = _column(row, path_column) if path_column else path_template.format(id=id_)
            groups = tuple(_column(row, name) for name in group_columns)
            metadata = tuple(_column(row, name) for name in metadata_columns)
            example = Example(id_, os.path.join(root, rel), label, split, groups, metadata)
            if id_ in first:
                _check_repeated_id(csv_path, classes, first[id_], (line, example))
            first.setdefault(id_, (line, example))
            examples.append(example)
    if not examples:
        raise DataError(f"{csv_path} has no rows.")
    _check_files_exist(examples, csv_path)
    return Collection(classes, tuple(examples))


def load(data_config: Mapping) -> Collection:
    """Builds the collection described by a config's ``data`` section."""
    kind = data_config["source"]
    metadata_columns = tuple(data_config.get(k, "") for k in METADATA_COLUMN_KEYS)
    metadata_columns = metadata_columns if any(metadata_columns) else ()
    for key in ("group_columns", *METADATA_COLUMN_KEYS):
        if kind in ("folders", "synthetic") and data_config.get(key):
            raise DataError(
                f"config.data.{key} needs a CSV collection (source='csv'); a folder-per-class "
                "collection has no columns."
            )
    missing = [k for k, c in zip(METADATA_COLUMN_KEYS, metadata_columns, strict=False) if not c]
    if missing:
        raise DataError(
            f"config.data.{missing[0]} is empty: patient metadata needs all of "
            f"{', '.join(f'config.data.{k}' for k in METADATA_COLUMN_KEYS)}."
        )
    if kind == "folders":
        return from_folders(data_config["dir"], data_config.get("classes") or None)
    if kind == "synthetic":  # drawn lesions, written to the folder on first use
        from skinjax.data import synthetic

        return from_folders(
            synthetic.ensure(data_config["dir"]), data_config.get("classes") or None
        )
    if kind == "csv":
        return from_csv(
            data_config["dir"],
            data_config["csv"],
            classes=data_config["classes"],
            id_column=data_config["id_column"],
            label_column=data_config.get("label_column", ""),
            path_column=data_config.get("path_column", ""),
            path_template=data_config.get("path_template", "{id}.jpg"),
            split_column=data_config.get("split_column", ""),
            label_map=data_config.get("label_map") or {},
            group_columns=tuple(data_config.get("group_columns") or ()),
            metadata_columns=metadata_columns,
        )
    raise DataError(f"config.data.source must be 'folders', 'csv' or 'synthetic', not {kind!r}.")
