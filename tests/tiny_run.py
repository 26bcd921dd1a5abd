"""A tiny trained work directory (ResNet-18 width 8, 32 px, 24 synthetic images), made once per
test session and shared by the explain, export and predict tests."""

from __future__ import annotations

import pathlib

import pytest
from conftest import synthetic_folder

from configs import smoke
from skinjax.train import loop

_RUNS: dict[str, pathlib.Path] = {}


def config(data_dir: pathlib.Path):
    config = smoke.get_config()
    config.data.update(source="folders", dir=str(data_dir))
    config.data.image_size = 32
    config.data.val_fraction = 0.25
    config.stages = {"stage1": config.stages.stage2}
    config.stages.stage1.num_epochs = 1.0
    config.train.update(batch_size=8, log_every_steps=1, eval_every_epochs=1.0)
    config.eval.batch_size = 4
    return config


def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The trained work directory; trained on first use."""
    if "run" not in _RUNS:
        root = tmp_path_factory.mktemp("tiny_run")
        loop.train_and_evaluate(config(synthetic_folder(root / "data")), str(root / "run"))
        _RUNS["run"] = root / "run"
    return _RUNS["run"]
