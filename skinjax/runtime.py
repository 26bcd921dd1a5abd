"""How an entry point's process starts: logging, host memory, several hosts.

`start` is what `cli.run` does before every script's ``main``: library INFO chatter
dropped from the log, freed host memory kept where ``SKINJAX_KEEP_FREED_MEMORY=1`` asks,
and, with ``--multihost``, `jax.distributed.initialize` before anything touches a device.
None of it changes how a model computes.
"""

from __future__ import annotations

import logging as py_logging

import jax
from absl import flags, logging

from skinjax import host_memory

_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (one process per host)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, where no cluster manager tells jax."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --coordinator_address.")

# Orbax logs several INFO lines per array per checkpoint; grain and jax add their own.
_CHATTY = ("/orbax/", "/jax/_src/", "/grain/")


class _DropLibraryInfo(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno > py_logging.INFO or not any(s in record.pathname for s in _CHATTY)


def quiet_libraries() -> None:
    """Keeps the libraries' warnings and errors, drops their INFO lines: a run's log reads
    as steps, metrics and events."""
    logging.get_absl_handler().addFilter(_DropLibraryInfo())


def start() -> None:
    """The set-up of every entry point, after flag parsing and before its ``main``."""
    quiet_libraries()
    host_memory.keep_freed_memory()  # before the backend starts its threads
    if _MULTIHOST.value:
        # With no arguments, jax asks SLURM, Open MPI, Kubernetes or Cloud TPU.
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
