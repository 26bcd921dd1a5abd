r"""Trains a model as a config describes.

    python scripts/train.py --config configs/asff_resnet50.py --workdir runs/asff \
        [--config.train.batch_size=16 ...]

Rerunning the same command in the same work directory resumes exactly where the last
checkpoint stopped. On several hosts, run it on every host with --multihost.
"""

import jax
from absl import flags, logging
from ml_collections import config_flags

from skinjax import cli
from skinjax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.info("devices: %s", jax.devices())
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
