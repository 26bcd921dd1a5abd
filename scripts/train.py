r"""Trains a model as a config describes.

    python scripts/train.py --config configs/asff_resnet50.py --workdir runs/asff \
        [--config.train.batch_size=16 ...]

Rerunning the same command in the same work directory resumes exactly where the last
checkpoint stopped. On several hosts, run it on every host with --multihost.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from skinjax import cli
from skinjax.train import loop

if __name__ == "__main__":
    cli.train(loop.train_and_evaluate)
