r"""Trains a CycleGAN between two classes of a collection, as a config describes.

    python scripts/train_cyclegan.py --config configs/cyclegan.py --workdir runs/cyclegan \
        [--config.train.num_epochs=0.8 ...]

Rerunning the same command in the same work directory resumes exactly where the last
checkpoint stopped; on several hosts, run it on every host with --multihost. Sample grids
are written to WORKDIR/samples every ``config.train.sample_every_steps`` steps.
"""

import jax
from absl import flags, logging
from ml_collections import config_flags

from skinjax import cli
from skinjax.train import cyclegan_trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "CycleGAN config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.info("devices: %s", jax.devices())
    cyclegan_trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
