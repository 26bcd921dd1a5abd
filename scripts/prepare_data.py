r"""Prepares a collection once: checked, de-duplicated, split and resized to the config's
image size (`skinjax/data/resized.py`; raw pixels in one ArrayRecord file, or
``--format=png`` for one lossless PNG per image), for runs that then read neither the originals
nor scan them again.

    python scripts/prepare_data.py --config configs/smoke.py --out /data/isic2020-64px \
        --config.data.source=folders --config.data.dir=../shared/data/isic2020-part/train
    python scripts/train.py --config configs/smoke.py --workdir runs/smoke \
        --config.data.source=prepared --config.data.dir=/data/isic2020-64px
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from absl import flags, logging
from ml_collections import config_flags

from skinjax import cli
from skinjax.data import resized

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_OUT = flags.DEFINE_string("out", None, "Directory to write the prepared collection to.")
_FORMAT = flags.DEFINE_enum(
    "format", "array_record", resized.FORMATS, "How the resized images are stored."
)
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    del argv
    manifest = resized.write(_CONFIG.value.data, _OUT.value, image_format=_FORMAT.value)
    counts = {name: len(rows) for name, rows in manifest["parts"].items()}
    logging.info("prepared %s in %s (%d skipped)", counts, _OUT.value, len(manifest["skipped"]))


if __name__ == "__main__":
    cli.run(main)
