"""The parallel strategies train identically on 1 and 4 devices and on 2 processes.

The number of CPU devices and the distributed runtime are fixed when JAX starts, so
every setting runs `multidevice_run.py` in its own subprocess; all start at once.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ISIC2020

HERE = pathlib.Path(__file__).resolve().parent
LOSS_RTOL = 1e-4
PARAM_ATOL = 1e-5
PROB_ATOL = 1e-5
# No LLVM optimisation: compiles twice as fast, and the sharding and collectives under
# test are decided before it, in XLA's HLO passes.
FAST_COMPILE = "--xla_backend_optimization_level=0"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    """24 real images (the first 12 of each ISIC 2020 class), once for the module."""
    if not ISIC2020.exists():
        pytest.skip(f"real data not found at {ISIC2020}")
    root = tmp_path_factory.mktemp("parallel") / "small"
    for name in ("benign", "malignant"):
        (root / name).mkdir(parents=True)
        for f in sorted(os.listdir(ISIC2020 / name))[:12]:
            (root / name / f).symlink_to(ISIC2020 / name / f)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], num_devices: int, log: pathlib.Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices} {FAST_COMPILE}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    )
    command = [sys.executable, str(HERE / "multidevice_run.py"), *args]
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=HERE.parent)


def _wait(started: dict[str, subprocess.Popen], timeout: float) -> None:
    """Waits for every process; the first failure (a peer then hangs) kills the rest."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in started.values()]
            if None not in codes or any(codes):
                break
            time.sleep(0.2)
    finally:
        for p in started.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _output(name: str, out: pathlib.Path) -> dict:
    """The JSON a run printed last (Gloo prints to stdout too)."""
    return json.loads((out / f"{name}.out").read_text().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory) -> dict[str, dict]:
    """Runs mesh1, mesh4, pmap1, pmap4 (one 4-device process) and process0, process1."""
    out = tmp_path_factory.mktemp("runs")
    distributed = ["distributed", f"--port={_free_port()}", "--num_processes=2"]
    commands = {
        "devices": (["devices"], 4),
        "process0": ([*distributed, "--process_id=0"], 2),
        "process1": ([*distributed, "--process_id=1"], 2),
    }
    started = {
        name: _start(["--folder", str(folder), "--out", str(out / name), *args], n, out / name)
        for name, (args, n) in commands.items()
    }
    _wait(started, timeout=600)
    failed = {name: p.returncode for name, p in started.items() if p.returncode}
    if failed:  # a negative code: killed after a peer failed or at the timeout
        logs = "\n".join(f"--- {n}:\n{(out / f'{n}.err').read_text()[-2000:]}" for n in failed)
        pytest.fail(f"runs failed with exit codes {failed}\n{logs}")
    results = {name: _output(name, out) for name in started}
    return {**results.pop("devices"), **{k: v["mesh"] for k, v in results.items()}}


def _assert_same_training(run: dict, ref: dict, name: str) -> None:
    np.testing.assert_allclose(run["loss"], ref["loss"], rtol=LOSS_RTOL, err_msg=f"{name} loss")
    np.testing.assert_allclose(run["probs"], ref["probs"], atol=PROB_ATOL, err_msg=f"{name} eval")
    state, expected = np.load(run["state"]), np.load(ref["state"])
    assert sorted(state.files) == sorted(expected.files)
    for leaf in expected.files:  # parameters and BatchNorm statistics
        np.testing.assert_allclose(
            state[leaf], expected[leaf], atol=PARAM_ATOL, err_msg=f"{name} {leaf}"
        )


def test_same_result_on_1_and_4_devices(runs):
    ref = runs["mesh1"]
    assert len(ref["loss"]) == 4 and len(set(ref["loss"])) == 4  # it does train
    for name in ("mesh4", "pmap1", "pmap4"):
        _assert_same_training(runs[name], ref, name)


def test_two_processes_train_in_lockstep_like_one(runs):
    first, second = runs["process0"], runs["process1"]
    assert first["loss"] == second["loss"]
    assert first["probs"] == second["probs"]  # every process gathers all predictions
    state, other = np.load(first["state"]), np.load(second["state"])
    for leaf in state.files:
        np.testing.assert_array_equal(state[leaf], other[leaf], err_msg=leaf)
    _assert_same_training(first, runs["mesh1"], "2 processes")


class _Step:
    """A stand-in for a dispatched step's outputs that records when it is waited for."""

    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def block_until_ready(self):
        self.log.append(self.name)
        return self


def test_in_flight_waits_for_the_step_beyond_its_limit():
    from skinjax.parallel import InFlight

    waited: list[str] = []
    in_flight = InFlight(limit=2)
    for name in "abcde":
        in_flight.add(_Step(waited, name))
        assert len(waited) == max(0, "abcde".index(name) - 1)
    assert waited == ["a", "b", "c"]  # oldest first; d and e may still run
    with pytest.raises(ValueError, match="at least one step"):
        InFlight(limit=0)
