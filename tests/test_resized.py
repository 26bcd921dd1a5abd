import itertools
import pathlib

import numpy as np
import pytest

from configs import smoke
from skinjax.data import images, pipeline, prepare, records, resized
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import DataError


def _prepared(folder, out, image_format):
    data = smoke.get_config().data
    data.update(
        source="folders", dir=str(folder), file_cache_dir="", val_fraction=0.25, image_size=32
    )
    resized.write(data, str(out), image_format=image_format)
    copy = data.copy_and_resolve_references()
    copy.update(source="prepared", dir=str(out))
    return data, copy


@pytest.fixture(params=resized.FORMATS)
def originals_and_copy(request, real_small_folder, tmp_path):
    """Real ISIC images at 32 px and their prepared copy, in each format."""
    return _prepared(real_small_folder, tmp_path / "prepared", request.param)


@pytest.fixture
def record_copy(real_small_folder, tmp_path):
    return _prepared(real_small_folder, tmp_path / "prepared", "array_record")[1]


def _batches(collection, read):
    ds = pipeline.train_dataset(collection, read, batch_size=4, seed=3)
    return list(itertools.islice(ds, 3))


def test_the_prepared_copy_gives_the_same_splits_and_batches(originals_and_copy):
    data, copy = originals_and_copy
    originals, prepared = prepare.prepare(data).parts, prepare.prepare(copy).parts
    assert originals.keys() == prepared.keys() == {"train", "val"}
    for name in originals:
        assert originals[name].ids == prepared[name].ids
        np.testing.assert_array_equal(originals[name].labels, prepared[name].labels)
    read = ReadOptions.from_config(data)
    batches = [_batches(parts["train"], read) for parts in (originals, prepared)]
    for a, b in zip(*batches, strict=True):
        assert a["image"].shape == (4, 32, 32, 3)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_records_hold_the_png_copys_pixels(real_small_folder, tmp_path):
    _, png = _prepared(real_small_folder, tmp_path / "png", "png")
    _, array_record = _prepared(real_small_folder, tmp_path / "ar", "array_record")
    read = ReadOptions.from_config(png)
    png_paths = prepare.prepare(png).parts["val"].paths
    record_paths = prepare.prepare(array_record).parts["val"].paths
    assert all(records.parse(p) for p in record_paths)
    for a, b in zip(png_paths, record_paths, strict=True):
        np.testing.assert_array_equal(read.load(a), read.load(b))


def test_a_changed_split_setting_is_refused(originals_and_copy):
    _, copy = originals_and_copy
    copy.val_fraction = 0.3
    with pytest.raises(DataError, match=r"config.data.val_fraction=0.25, not 0.3"):
        prepare.prepare(copy)


def test_a_copy_prepared_at_another_size_is_refused(originals_and_copy):
    _, copy = originals_and_copy
    copy.image_size = 64
    with pytest.raises(DataError, match=r"prepared with config.data.image_size=32, not 64"):
        prepare.prepare(copy)


def test_a_damaged_png_is_refused(real_small_folder, tmp_path):
    _, copy = _prepared(real_small_folder, tmp_path / "png", "png")
    damaged = sorted(pathlib.Path(copy.dir, "images").iterdir())[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(DataError, match=f"{damaged.name} is missing or changed"):
        prepare.prepare(copy)


def test_a_preparation_interrupted_while_writing_its_manifest_leaves_none(
    real_small_folder, tmp_path, monkeypatch
):
    def interrupted(obj, f):
        f.write('{"format": "array_record", "settings"')
        raise KeyboardInterrupt

    monkeypatch.setattr(resized.json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _prepared(real_small_folder, tmp_path / "prepared", "array_record")
    monkeypatch.undo()
    copy = smoke.get_config().data
    copy.update(source="prepared", dir=str(tmp_path / "prepared"), image_size=32)
    with pytest.raises(DataError, match=r"manifest.json not found"):
        prepare.prepare(copy)


def test_a_truncated_record_file_is_refused(record_copy):
    file = pathlib.Path(record_copy.dir, resized.RECORDS)
    file.write_bytes(file.read_bytes()[:-1000])
    with pytest.raises(DataError, match=r"images.array_record is missing or changed.*count"):
        prepare.prepare(record_copy)


def test_a_record_file_that_does_not_match_the_manifest_is_refused(record_copy):
    file = str(pathlib.Path(record_copy.dir, resized.RECORDS))
    records.write(file, [records.encode(np.zeros((32, 32, 3), np.uint8))])
    with pytest.raises(DataError, match=r"'count': 1, .*the manifest says \{'count': 24"):
        prepare.prepare(record_copy)


def test_a_corrupt_record_fails_when_read_naming_it(record_copy):
    file = pathlib.Path(record_copy.dir, resized.RECORDS)
    data = bytearray(file.read_bytes())
    data[300] ^= 0xFF  # inside the first record, the file keeps its size
    file.write_bytes(bytes(data))
    parts = prepare.prepare(record_copy).parts  # its index still reads
    path = next(p for part in parts.values() for p in part.paths if p.endswith("#0"))
    with pytest.raises(images.ImageError, match=r"images.array_record#0: unreadable record.*hash"):
        ReadOptions.from_config(record_copy).load(path)


def test_a_record_that_is_not_an_rgb_image_is_refused(tmp_path):
    file = str(tmp_path / "x.array_record")
    records.write(file, [records.encode(np.zeros((8, 8), np.uint8)), b"\x93NUMPY" + b"\0" * 20])
    with pytest.raises(images.ImageError, match=r"x.array_record#0: .*uint8 \(8, 8\), not HxWx3"):
        images.load(records.ref(file, 0), 8)
    with pytest.raises(images.ImageError, match=r"x.array_record#1: corrupt raw-pixel record"):
        images.load(records.ref(file, 1), 8)
