"""Every classifier config's train and eval steps, each stage, in float32 and bfloat16,
lower for GPUs and TPUs on this CPU host (`jax.export`): no CPU-only or solver call in
them, and the op census of tests/lowering_census.json, so a change in the lowered
program shows in review. After a deliberate change, rewrite the census with

    SKINJAX_UPDATE_CENSUS=1 python -m pytest tests/test_lowering.py
"""

import importlib
import json
import os
import pathlib

import pytest
from test_configs import CONFIGS

from skinjax.tools import lowering

CENSUS = pathlib.Path(__file__).with_name("lowering_census.json")
IMAGE_SIZE = 32  # the ops are the same at any size; tracing is faster on small ones


def _census(name: str) -> dict:
    config = importlib.import_module(f"configs.{name}").get_config()
    config.data.image_size = IMAGE_SIZE
    return lowering.config_census(config)


@pytest.mark.parametrize("name", CONFIGS)
def test_steps_lower_for_gpus_and_tpus_as_recorded(name):
    census = _census(name)
    calls = {step: lowering.forbidden(c) for step, c in census.items() if lowering.forbidden(c)}
    assert not calls, f"CPU-only or solver calls in {name}'s GPU/TPU steps: {calls}"
    recorded = json.loads(CENSUS.read_text()) if CENSUS.exists() else {}
    if os.environ.get("SKINJAX_UPDATE_CENSUS") == "1":
        recorded[name] = census
        CENSUS.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    assert census == recorded.get(name), f"{name}'s lowered steps changed; see the docstring"


def test_the_cpu_forms_stay_on_the_cpu():
    """The same steps traced for the CPU hold oneDNN's calls (which jax.export refuses
    to serialise): what keeps them out above is the platform traced for."""
    config = importlib.import_module("configs.smoke").get_config()
    config.data.image_size = IMAGE_SIZE
    with pytest.raises(ValueError, match="skinjax_onednn"):
        lowering.export_steps(config, platforms=("cpu",))
