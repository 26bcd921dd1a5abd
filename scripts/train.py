r"""Trains a model as a config describes.

    python scripts/train.py --config configs/asff_resnet50.py --workdir runs/asff \
        [--config.train.batch_size=16 ...]

Rerunning the same command in the same work directory resumes exactly where the last
checkpoint stopped. On several hosts, run it on every host with --multihost.
"""

import os
import sys

# Configs import each other as `configs.x`: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
from absl import flags, logging
from ml_collections import config_flags

from skinjax import cli, cpu, logs
from skinjax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (one process per host)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, where no cluster manager tells jax."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --coordinator_address.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logs.quiet_libraries()
    cpu.keep_freed_memory()  # before the backend starts its threads
    if _MULTIHOST.value:
        # With no arguments, jax asks SLURM, Open MPI, Kubernetes or Cloud TPU.
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("devices: %s", jax.devices())
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
