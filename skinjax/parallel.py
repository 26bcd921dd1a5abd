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

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
STRATEGIES = ("mesh", "pmap")


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


def local_batch_size(global_batch: int) -> int:
    """This process's share of a global batch, checked to divide evenly over devices."""
    if global_batch % jax.device_count():
        raise ValueError(
            f"batch size {global_batch} does not divide over {jax.device_count()} devices"
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
