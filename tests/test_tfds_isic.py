"""The TFDS builder stores the collections as `sources` reads them, byte for byte."""

import csv

import numpy as np
import pytest
import tensorflow_datasets as tfds

from skinjax.data import images, pipeline, sources, tfds_isic
from skinjax.data.reading import ReadOptions

READ = ReadOptions.from_config({"image_size": 64})


@pytest.fixture
def isic2017_subset(tmp_path, isic2017):
    """labels.csv cut to 3 train and 2 val rows per diagnosis, the images linked."""
    root = tmp_path / "isic2017"
    (root / "images").mkdir(parents=True)
    with open(isic2017 / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows, taken = [], {}
        for row in reader:
            key = (row["split"], row["diagnosis"])
            if taken.get(key, 0) < {"train": 3, "val": 2}[row["split"]]:
                taken[key] = taken.get(key, 0) + 1
                rows.append(row)
                (root / row["file"]).symlink_to(isic2017 / row["file"])
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_folder_collection_round_trip(real_small_folder, tmp_path):
    builder = tfds_isic.build("isic2020_part", str(real_small_folder), str(tmp_path / "tfds"))
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert builder.info.features["label"].names == ["benign", "malignant"]
    assert list(builder.info.splits) == ["train"]

    collection = sources.from_folders(str(real_small_folder))
    position = {id_: i for i, id_ in enumerate(collection.ids)}
    records = tfds_isic.data_source("isic2020_part", "train", str(tmp_path / "tfds"))
    ids = [r["id"].decode() for r in records]
    assert sorted(ids) == sorted(collection.ids)
    labels = np.array([r["label"] for r in records])
    assert labels.tolist() == [collection.labels[position[i]] for i in ids]
    assert np.bincount(labels).tolist() == [12, 12]
    for id_, record in zip(ids, records, strict=True):
        assert record["image"] == images.read_file(collection.paths[position[id_]])

    # TFDS's own decoding (Pillow) gives the pixels of the project's decoder.
    decoded = builder.as_data_source(split="train")[0]
    path = collection.paths[position[ids[0]]]
    np.testing.assert_array_equal(decoded["image"], images.load(path, 224))
    with pytest.raises(TypeError, match="data_source"):
        tfds_isic.map_dataset(builder.as_data_source(split="train"), READ)[0]

    # The grain examples are those of the file-reading pipeline, at a reduced size.
    load = pipeline.LoadExample(collection.paths, collection.labels, READ)
    for i, example in enumerate(tfds_isic.map_dataset(records, READ)):
        expected = load(position[ids[i]])
        assert {k: v.dtype for k, v in example.items()} == {k: v.dtype for k, v in expected.items()}
        np.testing.assert_array_equal(example["image"], expected["image"])
        assert (example["label"], example["index"], example["mask"]) == (expected["label"], i, True)


def test_csv_collection_published_splits(isic2017_subset, tmp_path):
    builder = tfds_isic.build("isic2017", str(isic2017_subset), str(tmp_path / "tfds"))
    assert builder.info.features["label"].names == ["other", "melanoma"]
    assert {n: s.num_examples for n, s in builder.info.splits.items()} == {
        "train": 9,
        "validation": 6,
    }
    collection = sources.load(
        {**tfds_isic.Isic.builder_configs["isic2017"].data, "dir": str(isic2017_subset)}
    )
    for split, published, melanoma in (("train", "train", 3), ("validation", "val", 2)):
        records = tfds_isic.data_source("isic2017", split, str(tmp_path / "tfds"))
        assert sum(r["label"] for r in records) == melanoma
        expected = {e.id: e.label for e in collection.examples if e.split == published}
        assert {r["id"].decode(): r["label"] for r in records} == expected
