"""A tiny model trained for 24 steps on 64 real HAM10000 images (half of them held out
for validation) through configs/ham10000.py's data section; made once per test session
and shared by the ISIC-format and ensemble tests."""

from __future__ import annotations

import csv
import pathlib

import pytest
from conftest import SHARED_DATA

from configs import ham10000
from skinjax.train import loop

HAM10000 = SHARED_DATA / "ham10000"
# Real images of each diagnosis: nevi twice as many, so that reweighting changes something.
COUNTS = {name: 16 if name == "nv" else 8 for name in ham10000.HAM10000_CLASSES}

_RUNS: dict[str, pathlib.Path] = {}


def _small_collection(root: pathlib.Path) -> None:
    """The first COUNTS rows of each diagnosis of labels.csv, and the images linked."""
    with open(HAM10000 / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows, taken = [], dict.fromkeys(COUNTS, 0)
        for row in reader:
            if taken[row["dx"]] < COUNTS[row["dx"]]:
                taken[row["dx"]] += 1
                rows.append(row)
        with open(root / "labels.csv", "w", newline="") as out:
            writer = csv.DictWriter(out, reader.fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    (root / "images").symlink_to(HAM10000 / "images")


def workdir(tmp_path_factory: pytest.TempPathFactory, *, metadata: bool = False) -> pathlib.Path:
    """The trained work directory (with the patient-metadata branch if ``metadata``);
    trained on first use."""
    if not HAM10000.exists():
        pytest.skip(f"real data not found at {HAM10000}")
    name = "metadata" if metadata else "run"
    if name not in _RUNS:
        root = tmp_path_factory.mktemp(f"ham10000_small_{name}")
        _small_collection(root)
        config = ham10000.get_config()
        config.model.update(name="resnet18", options={"width": 8}, pretrained="", metadata=metadata)
        config.data.update(dir=str(root), image_size=32, val_fraction=0.5)
        config.stages.stage1.update(num_epochs=6.0, warmup_epochs=0.0, learning_rate=1e-3)
        config.train.update(batch_size=8, log_every_steps=1)
        config.eval.update(batch_size=8, bootstrap_samples=10)
        loop.train_and_evaluate(config, str(root / "run"))
        _RUNS[name] = root / "run"
    return _RUNS[name]
