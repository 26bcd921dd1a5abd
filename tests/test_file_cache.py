import pathlib
import re
import shutil

import pytest

from skinjax import config as base_config
from skinjax.data import file_cache, images, integrity, near_duplicates, prepare, sources
from skinjax.data.reading import ReadOptions


def test_only_new_or_changed_files_are_computed_again(tmp_path):
    paths = [str(tmp_path / name) for name in ("a", "b")]
    for path in paths:
        pathlib.Path(path).write_text(path)
    calls = []

    def length(path):
        calls.append(path)
        return len(pathlib.Path(path).read_text())

    cache = file_cache.cache_file(str(tmp_path / "cache"), "length", ())
    run = lambda: file_cache.cached_map(length, paths, lambda fn, ps: list(map(fn, ps)), cache)
    assert run() == [len(paths[0]), len(paths[1])] and calls == paths
    assert run() == [len(paths[0]), len(paths[1])] and calls == paths  # nothing read
    pathlib.Path(paths[1]).write_text("changed")
    assert run() == [len(paths[0]), 7] and calls == [*paths, paths[1]]


@pytest.fixture
def copied_folder(tmp_path, isic2020):
    """Real images, copied (so that a test may change them), 4 per class."""
    for name in ("benign", "malignant"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for f in sorted((isic2020 / name).iterdir())[:4]:
            shutil.copy(f, tmp_path / "data" / name / f.name)
    return tmp_path / "data"


def test_a_file_damaged_after_a_clean_scan_fails_the_next(copied_folder, tmp_path):
    read = ReadOptions.from_config({"image_size": 32})
    cache_dir = str(tmp_path / "cache")
    collection = sources.from_folders(str(copied_folder))
    integrity.scan(collection, read, cache_dir=cache_dir)
    damaged = pathlib.Path(collection.paths[3])
    damaged.write_bytes(damaged.read_bytes()[:2000])
    with pytest.raises(images.ImageError, match=re.escape(damaged.name)):
        integrity.scan(collection, read, cache_dir=cache_dir)


def test_a_cached_start_up_decodes_nothing_and_prepares_the_same_splits(
    copied_folder, tmp_path, monkeypatch
):
    data = base_config.data_config()
    data.update(dir=str(copied_folder), val_fraction=0.25, file_cache_dir="")
    expected = prepare.prepare(data).parts
    data.file_cache_dir = str(tmp_path / "cache")
    prepare.prepare(data)

    def no_decoding(*_):
        raise AssertionError("decoded a file the cache holds")

    monkeypatch.setattr(integrity, "_check", no_decoding)
    monkeypatch.setattr(near_duplicates, "_read", no_decoding)
    monkeypatch.setattr(near_duplicates, "find", no_decoding)
    parts = prepare.prepare(data).parts
    assert parts.keys() == expected.keys()
    for name, part in parts.items():
        assert part.paths == expected[name].paths
        assert part.labels.tolist() == expected[name].labels.tolist()
