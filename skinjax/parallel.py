"""Devices and data placement for the two parallel strategies.

``mesh`` (the default): one `jax.jit` program over a 1-D device mesh; the batch is
sharded on the 'data' axis and the train state replicated. XLA inserts the gradient
all-reduce and computes BatchNorm statistics over the global batch, so the result does
not depend on the number of devices. It scales to many hosts after
`jax.distributed.initialize()`.

``pmap``: the classic per-device program; gradients and BatchNorm statistics are
averaged explicitly over the named axis ``AXIS``.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
STRATEGIES = ("mesh", "pmap")


class InFlight:
    """Lets the host run at most ``limit`` dispatched steps ahead of the devices.

    JAX returns from a step as soon as it is enqueued. A host that never waits enqueues
    steps, and puts their batches on the devices, faster than they run: on CPU each
    queued step takes its memory while it waits, and a long run grows until the OS
    kills it (EfficientNet-Lite0 at batch 32: past 20 GiB in a minute). Waiting for the
    step ``limit`` back keeps the devices fed, as the next step is queued while one
    runs, and moves no data to the host.
    """

    def __init__(self, limit: int = 1):
        if limit < 1:
            raise ValueError(f"at least one step must be allowed in flight, not {limit}")
        self.limit = limit
        self._pending: collections.deque = collections.deque()

    def add(self, outputs: Any) -> None:
        """Registers a just-dispatched step's outputs; waits for the oldest beyond the limit."""
        self._pending.append(outputs)
        while len(self._pending) > self.limit:
            jax.block_until_ready(self._pending.popleft())


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"config.parallel.strategy must be one of {STRATEGIES}, not {strategy!r}")
    return strategy


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    devices = list(devices or jax.devices())
    return jax.make_mesh(
        (len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def local_batch_size(global_batch: int, name: str = "config.train.batch_size") -> int:
    """This process's share of a global batch, checked to divide evenly over devices."""
    if global_batch <= 0 or global_batch % jax.device_count():
        raise ValueError(
            f"{name}={global_batch} does not divide over {jax.device_count()} devices; "
            "make it a positive multiple of the device count"
        )
    return global_batch // jax.process_count()


class Placement:
    """Moves host batches and states onto the devices for one strategy."""

    def __init__(self, strategy: str, devices: Sequence[jax.Device] | None = None):
        self.strategy = check_strategy(strategy)
        self.mesh = make_mesh(devices)
        self.devices = list(self.mesh.devices.flat)

    def put_state(self, state: Any) -> Any:
        if self.strategy == "pmap":
            # One copy per device, placed as pmap places its outputs: a state passed
            # from the host would make the second step compile again.
            n = len(self.devices)
            copies = jax.tree.map(
                lambda x: np.broadcast_to(x, (n, *np.shape(x))), jax.device_get(state)
            )
            return jax.device_put(copies, batch_sharded(self.mesh))
        # A copy: the train step donates its state, which must not free the model's arrays.
        return jax.device_put(state, replicated(self.mesh), may_alias=False)

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        if self.strategy == "pmap":
            n = len(self.devices)
            return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)
        sharding = batch_sharded(self.mesh)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    def unreplicate(self, tree: Any) -> Any:
        """A replicated state or metric, as one host copy (pmap: device 0's)."""
        if self.strategy == "pmap":
            tree = jax.tree.map(lambda x: x[0], tree)
        return jax.device_get(tree)

    def gather(self, tree: Any) -> Any:
        """Per-example outputs of every process as numpy arrays in global batch order."""
        if self.strategy == "pmap":
            tree = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)
            if jax.process_count() > 1:
                return multihost_utils.process_allgather(tree, tiled=True)
            return jax.device_get(tree)
        return multihost_utils.process_allgather(tree, tiled=True)
