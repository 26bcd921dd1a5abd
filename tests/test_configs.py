"""Every classifier config builds, names a registered model and only known fields.

(The CycleGAN configs have another shape; tests/test_cyclegan.py covers them.)"""

import importlib
import pathlib

import pytest

from skinjax import config as base_config
from skinjax import models
from skinjax.train import build


def _load(name):
    return importlib.import_module(f"configs.{name}").get_config()


ALL = sorted(p.stem for p in pathlib.Path(__file__).parents[1].joinpath("configs").glob("*.py"))
CONFIGS = [name for name in ALL if "stages" in _load(name)]


def _fields(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items") and key not in ("options", "label_map", "stages"):
            yield from _fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
    config = _load(name)
    known = set(_fields(base_config.base()))
    assert set(_fields(config)) <= known, set(_fields(config)) - known
    stage_fields = set(base_config.stage_config().keys())
    for stage in config.stages.values():
        assert set(stage.keys()) <= stage_fields
    assert build.stage_plan(config, steps_per_epoch=10)
    assert config.model.name in models.names()


def test_every_config_is_checked_somewhere():
    assert len(CONFIGS) >= 7 and {"cyclegan", "melanet"} <= set(ALL) - set(CONFIGS)


def test_data_overrides_are_only_the_fields_set():
    # An empty label_map once counted as an override, so evaluating a run on its own
    # validation split was taken for another collection (a false copies warning).
    data = base_config.data_config()
    assert base_config.data_overrides(data) == {}
    data.dir = "/elsewhere"
    assert base_config.data_overrides(data) == {"dir": "/elsewhere"}
