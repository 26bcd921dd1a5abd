"""Shared fixtures. Real dermoscopy images live in ../shared/data (never in the repo)."""

from __future__ import annotations

import contextlib
import os
import pathlib

import pytest

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


@pytest.fixture
def small_folder(tmp_path, isic2020) -> pathlib.Path:
    """A folder-per-class collection of 12 real images per class, linked, not copied."""
    root = tmp_path / "small"
    for name in ("benign", "malignant"):
        (root / name).mkdir(parents=True)
        for f in sorted(os.listdir(isic2020 / name))[:12]:
            (root / name / f).symlink_to(isic2020 / name / f)
    return root
