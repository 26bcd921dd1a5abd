"""Shared fixtures. Real dermoscopy images live in ../shared/data (never in the repo); the
tests of the loop, export, prediction and explanation run on synthetic JPEG files written
here (`skinjax.data.synthetic`), so they need no private data."""

from __future__ import annotations

import contextlib
import os
import pathlib

import pytest

from skinjax.data import synthetic

# torch's triton crashes the process if TensorFlow (clu's writers) was loaded first;
# torch is a dev extra, and the tests that need it skip without it.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[1]
# Scripts and peers run in subprocesses import this checkout's skinjax, whichever is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

SHARED_DATA = REPO.parent / "shared" / "data"
ISIC2020 = SHARED_DATA / "isic2020-part" / "train"
ISIC2017 = SHARED_DATA / "isic2017"
HAM10000 = SHARED_DATA / "ham10000"


def _require(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (see the README: getting the data)")
    return path


@pytest.fixture
def isic2020() -> pathlib.Path:
    return _require(ISIC2020)


@pytest.fixture
def isic2017() -> pathlib.Path:
    return _require(ISIC2017)


@pytest.fixture(scope="module")
def ham10000() -> pathlib.Path:
    return _require(HAM10000)


def synthetic_folder(root: pathlib.Path, per_class: int = 12) -> pathlib.Path:
    """A folder-per-class collection of ``per_class`` synthetic JPEG files per class."""
    return pathlib.Path(synthetic.write(str(root), per_class=per_class))


def synthetic_csv(root: pathlib.Path, per_class: int = 12) -> pathlib.Path:
    """The same images as an image folder plus ``labels.csv`` (image_id, file, label,
    split), with a published split: every fourth image of a class in ``val``."""
    synthetic_folder(root / "images", per_class)
    rows = ["image_id,file,label,split"]
    for name in synthetic.CLASSES:
        for k, path in enumerate(sorted((root / "images" / name).iterdir())):
            split = "val" if k % 4 == 3 else "train"
            rows.append(f"{path.stem},images/{name}/{path.name},{name},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def small_folder(tmp_path) -> pathlib.Path:
    """A folder-per-class collection of 12 synthetic images per class."""
    return synthetic_folder(tmp_path / "small")


@pytest.fixture
def real_small_folder(tmp_path, isic2020) -> pathlib.Path:
    """The first 12 real ISIC 2020 images per class, linked, not copied."""
    root = tmp_path / "real_small"
    for name in ("benign", "malignant"):
        (root / name).mkdir(parents=True)
        for f in sorted(os.listdir(isic2020 / name))[:12]:
            (root / name / f).symlink_to(isic2020 / name / f)
    return root


@pytest.fixture
def small_csv(tmp_path) -> pathlib.Path:
    """`synthetic_csv`: an image folder and a labels CSV with a published split."""
    return synthetic_csv(tmp_path / "small_csv")
