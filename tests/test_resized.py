import itertools
import pathlib

import numpy as np
import pytest

from configs import smoke
from skinjax.data import pipeline, prepare, resized
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import DataError


@pytest.fixture
def originals_and_copy(small_folder, tmp_path):
    data = smoke.get_config().data
    data.update(source="folders", dir=str(small_folder), file_cache_dir="", val_fraction=0.25)
    resized.write(data, str(tmp_path / "prepared"))
    copy = data.copy_and_resolve_references()
    copy.update(source="prepared", dir=str(tmp_path / "prepared"))
    return data, copy


def test_the_prepared_copy_gives_the_same_splits_and_batches(originals_and_copy):
    data, copy = originals_and_copy
    originals, prepared = prepare.prepare(data).parts, prepare.prepare(copy).parts
    assert originals.keys() == prepared.keys() == {"train", "val"}
    for name in originals:
        assert originals[name].ids == prepared[name].ids
        np.testing.assert_array_equal(originals[name].labels, prepared[name].labels)
    read = ReadOptions.from_config(data)
    batches = [
        list(
            itertools.islice(pipeline.train_dataset(parts["train"], read, batch_size=4, seed=3), 3)
        )
        for parts in (originals, prepared)
    ]
    for a, b in zip(*batches, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_a_changed_split_setting_is_refused(originals_and_copy):
    _, copy = originals_and_copy
    copy.val_fraction = 0.3
    with pytest.raises(DataError, match=r"config.data.val_fraction=0.25, not 0.3"):
        prepare.prepare(copy)


def test_a_damaged_prepared_file_is_refused(originals_and_copy):
    _, copy = originals_and_copy
    damaged = sorted(pathlib.Path(copy.dir, "images").iterdir())[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(DataError, match=f"{damaged.name} is missing or changed"):
        prepare.prepare(copy)
