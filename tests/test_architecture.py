"""The import graph keeps its floors (skinjax.tools.imports): the library core never
imports the applications or the developer tools, no arrow runs back up, and nothing but
the trainers imports the training loop."""

import pytest

from skinjax.tools import imports

CORE = {"config", "data", "kernels", "losses", "metrics", "models", "parallel", "plots"}
CORE |= {"runtime", "train", "weights"}


def test_rooms_form_floors_with_the_core_below_applications_and_tools():
    rooms = imports.rooms(imports.module_imports())
    floors = imports.floors(rooms)  # raises on a cycle: an arrow running back up
    assert set(rooms) >= CORE | {"apps", "tools"}
    for room in CORE:
        assert not rooms[room] & {"apps", "tools", "cli"}, (room, rooms[room])
    assert "tools" not in rooms["apps"]
    assert max(floors[room] for room in CORE) < min(floors["apps"], floors["tools"])


def test_models_import_only_kernels_and_the_training_loop_only_trainers():
    graph = imports.module_imports()
    for module, targets in graph.items():
        if module.startswith("models."):
            assert all(t.startswith(("models", "kernels")) for t in targets), (module, targets)
    assert {m for m, targets in graph.items() if "train.loop" in targets} == {
        "train.cyclegan_trainer"
    }


def test_a_cycle_is_reported_with_its_path():
    with pytest.raises(ValueError, match="a -> b -> c -> a"):
        imports.floors({"a": {"b"}, "b": {"c"}, "c": {"a"}})
