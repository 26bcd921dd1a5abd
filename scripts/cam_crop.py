r"""Writes the CAM crops of a trained run's data: stage 2 of the CAM-crop method.

    python scripts/cam_crop.py --workdir runs/cam_crop/full --out runs/cam_crop/crops \
        [--cam_crop.threshold=0.3 --cam_crop.margin=0.05 --cam_crop.method=gradcam]

Every split of the run's data (as the run split it) is cropped with the run's best
checkpoint and written to --out as images/ plus labels.csv, with the original labels
and splits. --cam_crop.* fields override the run's config.cam_crop (fields left at
their defaults keep the run's values). Then train on the crops:

    python scripts/train.py --config configs/cam_crop.py:crops --workdir runs/cam_crop/crop \
        --config.data.dir=runs/cam_crop/crops
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

import os

from absl import flags, logging
from ml_collections import config_flags

from skinjax import cli
from skinjax import config as base_config
from skinjax.apps import cam_crop
from skinjax.train import trained

_WORKDIR = flags.DEFINE_string("workdir", None, "Stage-1 training work directory.")
_OUT = flags.DEFINE_string("out", None, "Directory for the cropped collection.")
_CAM_CROP = config_flags.DEFINE_config_dict("cam_crop", base_config.base().cam_crop)
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    del argv
    run = trained.load(_WORKDIR.value)
    defaults = base_config.base().cam_crop
    settings = dict(run.config.get("cam_crop", defaults))
    settings.update({k: v for k, v in _CAM_CROP.value.items() if v != defaults[k]})
    logging.info("cropping with %s", settings)
    data = cam_crop.write_crops(run, _OUT.value, settings)
    print(f"wrote {os.path.join(data['dir'], cam_crop.CSV_FILE)}")


if __name__ == "__main__":
    cli.run(main)
