import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from skinjax import config as base_config
from skinjax.data import images, integrity, prepare, sources, splits, synthetic
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import DataError

READ = ReadOptions.from_config({"image_size": 32})

ISIC2017_BINARY = dict(
    classes=("other", "melanoma"),
    id_column="image_id",
    label_column="diagnosis",
    path_column="file",
    split_column="split",
    label_map={"nevus": "other", "seborrheic_keratosis": "other"},
)


def test_folder_collection_class_counts(isic2020):
    collection = sources.from_folders(str(isic2020))
    assert collection.classes == ("benign", "malignant")
    assert collection.class_counts().tolist() == [1440, 1197]
    assert len(set(collection.ids)) == len(collection)


def test_csv_collection_binary_and_published_split(isic2017):
    collection = sources.from_csv(str(isic2017), "labels.csv", **ISIC2017_BINARY)
    parts = splits.split(collection)
    assert len(parts["train"]) == 2000 and len(parts["val"]) == 150
    assert parts["train"].class_counts()[1] == 374
    assert parts["val"].class_counts()[1] == 30


def test_csv_collection_multiclass(isic2017):
    classes = ("nevus", "melanoma", "seborrheic_keratosis")
    collection = sources.from_csv(
        str(isic2017),
        "labels.csv",
        classes=classes,
        id_column="image_id",
        label_column="diagnosis",
        path_column="file",
        split_column="split",
    )
    train = splits.split(collection)["train"]
    assert train.class_counts().tolist() == [1372, 374, 254]


def test_one_hot_labels(tmp_path, isic2020):
    image = next((isic2020 / "benign").iterdir())
    (tmp_path / "a.jpg").symlink_to(image)
    (tmp_path / "b.jpg").symlink_to(image)
    (tmp_path / "gt.csv").write_text("image,MEL,NV\na,0.0,1.0\nb,1.0,0.0\n")
    collection = sources.from_csv(str(tmp_path), "gt.csv", classes=("MEL", "NV"), id_column="image")
    assert collection.labels.tolist() == [1, 0]
    (tmp_path / "gt.csv").write_text("image,MEL,NV\na,1.0,1.0\n")
    with pytest.raises(DataError, match="exactly one of the one-hot"):
        sources.from_csv(str(tmp_path), "gt.csv", classes=("MEL", "NV"), id_column="image")


def test_duplicates_never_cross_a_split(isic2017):
    collection = sources.from_csv(str(isic2017), "labels.csv", **ISIC2017_BINARY)
    scanned = integrity.scan(collection, READ)
    assert len(set(scanned.hashes)) < len(scanned.hashes)  # the collection has duplicates
    unique, dropped = splits.deduplicate(scanned.collection, scanned.hashes)
    assert dropped  # the pair that crosses train and val loses its train copy
    parts = splits.split(unique)
    assert len(parts["val"]) == 150
    hash_of = dict(zip(scanned.collection.ids, scanned.hashes, strict=True))
    train_hashes = {hash_of[i] for i in parts["train"].ids}
    assert not train_hashes & {hash_of[i] for i in parts["val"].ids}


# --- bad input: each gives a clear error naming the problem and the fix ---


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist. Set config.data.dir"):
        sources.from_folders(str(tmp_path / "nowhere"))


def test_empty_class_folder(tmp_path):
    (tmp_path / "benign").mkdir()
    (tmp_path / "malignant").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "benign" / "x.jpg")
    with pytest.raises(DataError, match="malignant' holds no images"):
        sources.from_folders(str(tmp_path))


def test_unlisted_class_folder(tmp_path):
    for name in ("benign", "malignant", "benin"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "x.jpg")
    with pytest.raises(DataError, match=r"\['benin'\].*not in config.data.classes"):
        sources.from_folders(str(tmp_path), classes=("benign", "malignant"))


def test_csv_without_named_column(isic2017):
    with pytest.raises(DataError, match="no column 'diagnosis_typo'"):
        sources.from_csv(
            str(isic2017), "labels.csv", **{**ISIC2017_BINARY, "label_column": "diagnosis_typo"}
        )


def test_label_outside_label_map(isic2017):
    with pytest.raises(DataError, match="label 'seborrheic_keratosis' is neither a class"):
        sources.from_csv(
            str(isic2017), "labels.csv", **{**ISIC2017_BINARY, "label_map": {"nevus": "other"}}
        )


def test_csv_naming_a_missing_file(tmp_path):
    (tmp_path / "labels.csv").write_text("id,label\nghost,benign\n")
    with pytest.raises(DataError, match=r"(?s)do not exist.*ghost\.jpg"):
        sources.from_csv(
            str(tmp_path), "labels.csv", classes=("benign",), id_column="id", label_column="label"
        )


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            "a,benign,a.jpg\nb,benign,b.jpg\na,malignant,a.jpg\n",
            "lines 2 and 4: id 'a' has two labels",
        ),
        (
            "a,benign,a.jpg\nb,benign,b.jpg\na,benign,b.jpg\n",
            "lines 2 and 4: id 'a' names two files",
        ),
    ],
)
def test_an_id_on_two_rows_must_name_one_file_with_one_label(tmp_path, rows, message):
    (tmp_path / "labels.csv").write_text("id,label,file\n" + rows)
    with pytest.raises(DataError, match=f"labels.csv, {message}"):
        sources.from_csv(
            str(tmp_path),
            "labels.csv",
            classes=("benign", "malignant"),
            id_column="id",
            label_column="label",
            path_column="file",
        )


def test_two_files_of_one_name_in_a_class_folder_are_refused(small_folder):
    shutil.copy(sorted((small_folder / "benign").iterdir())[0], small_folder / "benign" / "100.jpg")
    Image.new("RGB", (64, 64)).save(small_folder / "benign" / "100.png")  # beside 100.jpg
    with pytest.raises(DataError, match=r"files \['100.jpg', '100.png'\] share a name"):
        sources.from_folders(str(small_folder))


def test_images_below_the_minimum_size_are_bad(small_folder):
    Image.new("RGB", (1, 1)).save(small_folder / "benign" / "dot.png")
    collection = sources.from_folders(str(small_folder))
    with pytest.raises(images.ImageError, match="dot.png: image is 1x1 pixels, smaller than"):
        integrity.scan(collection, READ)
    skip = ReadOptions.from_config({"image_size": 32, "on_bad_image": "skip"})
    assert [p for p, _ in integrity.scan(collection, skip).skipped] == [
        str(small_folder / "benign" / "dot.png")
    ]


@pytest.fixture
def bad_images(tmp_path, isic2020):
    good = (isic2020 / "benign" / "100.jpg").read_bytes()
    files = {
        "truncated.jpg": good[: len(good) // 2],
        "corrupt.jpg": b"\xff\xd8\xff" + bytes(range(256)) * 4,
        "notanimage.jpg": b"hello",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    Image.new("L", (16, 16)).save(tmp_path / "gray.jpg")
    Image.new("RGBA", (16, 16)).save(tmp_path / "rgba.png")
    Image.new("CMYK", (16, 16)).save(tmp_path / "cmyk.jpg")
    return tmp_path


@pytest.mark.parametrize(
    "name, message",
    [
        ("truncated.jpg", "truncated.jpg: corrupt or truncated JPEG"),
        ("corrupt.jpg", "corrupt.jpg: corrupt"),
        ("notanimage.jpg", "notanimage.jpg: not a readable image"),
        ("gray.jpg", "gray.jpg: image is Gray, not RGB.*convert_to_rgb=True"),
        ("rgba.png", "rgba.png: image is RGBA, not RGB"),
        ("cmyk.jpg", "cmyk.jpg: image is CMYK, not RGB"),
    ],
)
def test_bad_image_errors(bad_images, name, message):
    with pytest.raises(images.ImageError, match=message):
        images.load(str(bad_images / name), 32)


@pytest.mark.parametrize("name", ["gray.jpg", "rgba.png", "cmyk.jpg"])
def test_convert_to_rgb(bad_images, name):
    assert images.load(str(bad_images / name), 32, convert_to_rgb=True).shape == (32, 32, 3)


def test_missing_file_error(tmp_path):
    with pytest.raises(images.ImageError, match="nothere.jpg: cannot read the file"):
        images.load(str(tmp_path / "nothere.jpg"), 32)


def test_scan_skip_policy_lists_skipped_files(small_folder, tmp_path):
    (small_folder / "benign" / "broken.jpg").write_bytes(b"\xff\xd8\xff\x00\x01")
    collection = sources.from_folders(str(small_folder))
    with pytest.raises(images.ImageError, match="(?s)broken.jpg.*on_bad_image=.skip."):
        integrity.scan(collection, READ)
    skip = ReadOptions.from_config({"image_size": 32, "on_bad_image": "skip"})
    result = integrity.scan(collection, skip)
    assert len(result.collection) == len(collection) - 1
    integrity.write_skipped(str(tmp_path), result.skipped)
    listed = (tmp_path / integrity.SKIPPED_FILE).read_text()
    assert "broken.jpg" in listed and listed.count("\n") == 1


def test_resize_and_dct_scaling_of_a_large_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1024, 768, 3), np.uint8)).save(tmp_path / "big.jpg")
    decoded = images.decode((tmp_path / "big.jpg").read_bytes(), "big.jpg", min_size=128)
    assert min(decoded.shape[:2]) >= 128 and decoded.shape[0] <= 512  # decoded at 1/4 scale
    assert images.load(str(tmp_path / "big.jpg"), 128).shape == (128, 128, 3)


def test_the_synthetic_source_is_written_once_and_read_as_folders(tmp_path):
    data = {"source": "synthetic", "dir": str(tmp_path / "synthetic")}
    first = sources.load(data)
    assert first.classes == synthetic.CLASSES
    assert first.class_counts().tolist() == [synthetic.PER_CLASS] * 2
    written = {p: os.stat(p).st_mtime_ns for p in first.paths}
    assert sources.load(data) == first  # reused, not written again
    assert {p: os.stat(p).st_mtime_ns for p in first.paths} == written
    again = synthetic.write(str(tmp_path / "again"), per_class=synthetic.PER_CLASS)
    assert (pathlib.Path(again) / "malignant" / "malignant_0007.jpg").read_bytes() == (
        pathlib.Path(data["dir"]) / "malignant" / "malignant_0007.jpg"
    ).read_bytes()  # the same seed, the same bytes
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="holds no synthetic collection"):
        sources.load({"source": "synthetic", "dir": str(tmp_path / "mine")})


def test_synthetic_images_are_no_near_duplicates_so_splits_stay_stratified(tmp_path):
    data = base_config.data_config()
    data.update(source="synthetic", dir=str(tmp_path / "synthetic"))
    parts = prepare.prepare(data).parts
    assert parts["train"].class_counts().tolist() == [48, 48]
    assert parts["val"].class_counts().tolist() == [12, 12]
