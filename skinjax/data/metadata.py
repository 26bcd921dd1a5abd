"""Patient metadata (age, sex, anatomical site) as a fixed-width float vector per image.

The ISIC 2019 and 2020 winners fed these to their networks beside the image. The
vector is [age / 100, age missing, sex one-hot (listed values, then unknown), site
one-hot (listed values, then unknown)]: a missing value (empty, 'unknown', 'nan', ...)
is a state of its own, never a guess, and a value that is neither listed nor missing
raises `DataError` naming the column, the image and the config key to extend, so that
a collection coded differently cannot silently become all-unknown.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from skinjax.data.sources import METADATA_COLUMN_KEYS, Collection, DataError

MISSING = frozenset({"", "unknown", "nan", "na", "n/a", "none", "?"})
AGE_SCALE = 100.0  # years -> about [0, 1]


@dataclasses.dataclass(frozen=True)
class Encoder:
    columns: tuple[str, str, str]  # the CSV's age, sex and site columns
    sexes: tuple[str, ...]
    sites: tuple[str, ...]

    @property
    def size(self) -> int:
        return 2 + len(self.sexes) + 1 + len(self.sites) + 1

    def _one_hot(self, value: str, known: tuple[str, ...], column: str, where: str) -> np.ndarray:
        hot = np.zeros(len(known) + 1, np.float32)
        value = value.strip().lower()
        if value in MISSING:
            hot[-1] = 1
        elif value in known:
            hot[known.index(value)] = 1
        else:
            key = "sex_values" if column == self.columns[1] else "site_values"
            raise DataError(
                f"{where}: column {column!r} has value {value!r}, which is neither one of "
                f"config.data.{key} {list(known)} nor a missing value {sorted(MISSING)}. "
                f"Add it to config.data.{key}."
            )
        return hot

    def _age(self, value: str, where: str) -> tuple[float, float]:
        """(scaled age, missing indicator)."""
        if value.strip().lower() in MISSING:
            return 0.0, 1.0
        try:
            age = float(value)
        except ValueError:
            age = math.nan
        if not 0 <= age < 150:
            raise DataError(
                f"{where}: column {self.columns[0]!r} has value {value!r}, not an age in years "
                "(or a missing value: empty, 'unknown', 'nan')."
            )
        return age / AGE_SCALE, 0.0

    def encode_row(self, values: Sequence[str], where: str) -> np.ndarray:
        """One image's (age, sex, site) strings -> its float32 vector of `size`."""
        age, sex, site = values
        return np.concatenate(
            [
                np.float32(self._age(age, where)),
                self._one_hot(sex, self.sexes, self.columns[1], where),
                self._one_hot(site, self.sites, self.columns[2], where),
            ]
        )

    def encode(self, collection: Collection) -> np.ndarray:
        """[len(collection), size] float32, in the collection's order."""
        rows = []
        for example in collection.examples:
            where = f"image {example.id!r} ({example.path})"
            if len(example.metadata) != 3:
                raise DataError(
                    f"{where} carries no patient metadata: config.model.metadata needs a CSV "
                    f"collection with {', '.join(f'config.data.{k}' for k in METADATA_COLUMN_KEYS)}"
                    " set."
                )
            rows.append(self.encode_row(example.metadata, where))
        return np.stack(rows) if rows else np.zeros((0, self.size), np.float32)


def read_rows(csv_path: str, encoder: Encoder, id_column: str) -> dict[str, np.ndarray]:
    """Encoded rows of a metadata CSV (e.g. a test set's) by image id, for prediction."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for name in (id_column, *encoder.columns):
            if name not in header:
                raise DataError(f"{csv_path}: no column {name!r}; the columns are {header}.")
        return {
            row[id_column].strip(): encoder.encode_row(
                [row[c] for c in encoder.columns], f"{csv_path}, line {line}"
            )
            for line, row in enumerate(reader, start=2)
        }


def encoder(model_config: Mapping, data_config: Mapping) -> Encoder | None:
    """The run's encoder, or None when ``config.model.metadata`` is off (older runs too)."""
    if not model_config.get("metadata", False):
        return None
    columns = tuple(data_config.get(k, "") for k in METADATA_COLUMN_KEYS)
    if not all(columns):
        raise DataError(
            "config.model.metadata needs the metadata columns: set "
            + ", ".join(
                f"config.data.{k}"
                for k, c in zip(METADATA_COLUMN_KEYS, columns, strict=True)
                if not c
            )
        )
    normal = lambda values: tuple(str(v).strip().lower() for v in values)
    return Encoder(columns, normal(data_config["sex_values"]), normal(data_config["site_values"]))
