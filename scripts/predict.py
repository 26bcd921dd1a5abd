r"""Predicts image files with trained work directories or an exported artifact.

    python scripts/predict.py --workdir W IMAGE_OR_DIR... [--gradcam OUT] [--format csv|json]
    python scripts/predict.py --artifact A IMAGE_OR_DIR... [--gradcam OUT] [--output FILE]
    python scripts/predict.py --workdir W --format isic --output submission.csv TEST_DIR
    python scripts/predict.py --workdir W --ensemble W2 --ensemble_weights 2,1 \
        --tta_rotations 4 --metadata test_metadata.csv TEST_DIR

Prints, per file, the probability of every class and the predicted class (the most
probable one), as CSV (default) or JSON; a folder stands for the files directly in it.
--format isic writes the ISIC 2018 Task 3 submission CSV (`image`, then MEL, NV, BCC,
AKIEC, BKL, DF, VASC; the model's classes must be those diagnoses). The probabilities
are those of the evaluation protocol, as `evaluate.py` computes them, with the same
flags: the run's flip and --tta_rotations quarter turns averaged, the --ensemble
averaged with --ensemble_weights, and divided by the training class frequencies unless
--noreweight (default: the run's eval.reweight_by_inverse_frequency; an artifact's card
records both). A model with the patient-metadata branch needs --metadata, a CSV with an
--metadata_id_column (the file names without extension) and the training run's age,
sex and site columns.
--gradcam writes a Grad-CAM overlay per image to OUT/<file name>.png. A file that cannot
be read as an image, or has no metadata row, gets an error (in its row, and on stderr)
and the others still run; the exit status is then 1. A folder with no files is an error
(exit status 1).
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

import sys

from absl import app, flags

from skinjax import cli
from skinjax.apps import isic, predict
from skinjax.data import metadata

_WORKDIR = flags.DEFINE_string("workdir", None, "Training work directory (best checkpoint).")
_PROTOCOL = cli.define_protocol_flags()
_METADATA = flags.DEFINE_string("metadata", None, "Patient-metadata CSV, for a metadata model.")
_METADATA_ID = flags.DEFINE_string(
    "metadata_id_column", "image_id", "The --metadata column of image ids (file names)."
)
_ARTIFACT = flags.DEFINE_string("artifact", None, "Directory written by scripts/export.py.")
_GRADCAM = flags.DEFINE_string("gradcam", None, "Directory for Grad-CAM overlays (PNG).")
_WRITERS = {"csv": predict.write_csv, "json": predict.write_json, "isic": predict.write_isic}
_FORMAT = flags.DEFINE_enum("format", "csv", list(_WRITERS), "Output format.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the results here instead of stdout.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per model call.")
flags.mark_flags_as_mutual_exclusive(["workdir", "artifact"], required=True)


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("name at least one image file or folder")
    files = predict.list_files(argv[1:])  # an empty folder is an error: before the model
    protocol = _PROTOCOL.values()
    if _WORKDIR.value:
        model = predict.from_workdirs([_WORKDIR.value, *_PROTOCOL.ensemble.value], **protocol)
    elif _PROTOCOL.ensemble.value or protocol["weights"]:
        raise app.UsageError("--ensemble and --ensemble_weights need --workdir")
    else:
        del protocol["weights"]
        model = predict.from_artifact(_ARTIFACT.value, **protocol)
    if _FORMAT.value == "isic":
        isic.column_order(model.classes)  # a model of other classes fails before predicting
    rows = None
    if model.metadata is not None and not _METADATA.value:
        raise app.UsageError("this model takes patient metadata: give --metadata CSV")
    if _METADATA.value:
        if model.metadata is None:
            raise app.UsageError("--metadata: this model takes no patient metadata")
        rows = metadata.read_rows(_METADATA.value, model.metadata, _METADATA_ID.value)
    results = predict.predict(
        model,
        files,
        batch_size=_BATCH_SIZE.value,
        gradcam_dir=_GRADCAM.value,
        metadata=rows,
    )
    write = _WRITERS[_FORMAT.value]
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w", newline="") as f:
            write(results, model.classes, f)
    else:
        write(results, model.classes, sys.stdout)
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
