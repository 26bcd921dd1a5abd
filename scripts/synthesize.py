r"""Translates images with a trained CycleGAN into a CSV collection.

    python scripts/synthesize.py --workdir runs/cyclegan --input DIR --output OUT
    python scripts/synthesize.py --workdir runs/cyclegan --input_class benign --output OUT

--input translates every image of a folder. --input_class translates one class of the
training split the CycleGAN was trained on, and also writes OUT/real.csv (that
collection with its train/val split) and OUT/combined.csv (the same plus the synthetic
images, all in train): a classifier reads either with configs/melanet_classifier.py.
OUT/labels.csv lists the synthetic images alone. Every CSV has the columns id, path,
label, split, synthetic (0/1) and source.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from absl import flags, logging

from skinjax import cli
from skinjax.apps import synthesis

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a CycleGAN run.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the images and CSV files.")
_INPUT = flags.DEFINE_string("input", None, "A folder of images to translate.")
_INPUT_CLASS = flags.DEFINE_string(
    "input_class", None, "A class of the run's training split to translate, e.g. benign."
)
_DIRECTION = flags.DEFINE_enum("direction", "ab", ["ab", "ba"], "ab: domain A -> B.")
_LABEL = flags.DEFINE_string("label", None, "Label of the output; default the target domain.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images translated at once.")
flags.mark_flags_as_required(["workdir", "output"])
flags.mark_flags_as_mutual_exclusive(["input", "input_class"], required=True)


def main(argv):
    del argv
    written = synthesis.synthesize(
        _WORKDIR.value,
        _OUTPUT.value,
        input_dir=_INPUT.value,
        input_class=_INPUT_CLASS.value,
        direction=_DIRECTION.value,
        label=_LABEL.value,
        batch_size=_BATCH_SIZE.value,
    )
    logging.info("wrote %s", ", ".join(written))


if __name__ == "__main__":
    cli.run(main)
