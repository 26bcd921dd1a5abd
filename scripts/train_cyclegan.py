r"""Trains a CycleGAN between two classes of a collection, as a config describes.

    python scripts/train_cyclegan.py --config configs/cyclegan.py --workdir runs/cyclegan \
        [--config.train.num_epochs=0.8 ...]

Rerunning the same command in the same work directory resumes exactly where the last
checkpoint stopped; on several hosts, run it on every host with --multihost. Sample grids
are written to WORKDIR/samples every ``config.train.sample_every_steps`` steps.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from skinjax import cli
from skinjax.train import cyclegan_trainer

if __name__ == "__main__":
    cli.train(cyclegan_trainer.train_and_evaluate)
