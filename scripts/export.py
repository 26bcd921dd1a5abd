r"""Exports a trained work directory, or an ensemble of several, as a directory that runs
without skinjax.

    python scripts/export.py --workdir W --out A [--platforms cpu,cuda,tpu] [--noonnx] \
        [--overwrite]
    python scripts/export.py --workdir W --ensemble W2,W3 --ensemble_weights 2,1,1 --out A

An ensemble is one function averaging its members' probabilities with the weights
(equal by default); the model card lists the members and weights.

A holds model.stablehlo and gradcam.stablehlo (jax.export, any batch size),
model.onnx (jax2onnx), weights.safetensors, model_card.json and MODEL_CARD.md; see
skinjax/apps/export.py and docs/explain_export.md. The exported files are checked against
the live model (logits within --tolerance at batch sizes 1 and 5), or nothing is
written. A non-empty A is refused unless --overwrite, which replaces it whole.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from absl import flags

from skinjax import cli
from skinjax.apps import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Training work directory.")
_ENSEMBLE, _WEIGHTS = cli.define_ensemble_flags()
_OUT = flags.DEFINE_string("out", None, "Directory to write the artifact to.")
_PLATFORMS = flags.DEFINE_list(
    "platforms", list(export.PLATFORMS), "Platforms the StableHLO files are lowered for."
)
_ONNX = flags.DEFINE_bool("onnx", True, "Also write model.onnx (needs jax2onnx).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a non-empty --out directory whole (default: refuse it)."
)
_TOLERANCE = flags.DEFINE_float(
    "tolerance", 1e-4, "Largest allowed logit difference from the live model."
)
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    del argv
    card = export.export(
        [_WORKDIR.value, *_ENSEMBLE.value],
        _OUT.value,
        weights=cli.float_list(_WEIGHTS),
        platforms=_PLATFORMS.value,
        onnx=_ONNX.value,
        tolerance=_TOLERANCE.value,
        overwrite=_OVERWRITE.value,
    )
    checks = card["export_check"]["max_abs_logit_difference"]
    steps = ", ".join(str(m["checkpoint_step"]) for m in card["ensemble"]["members"])
    print(
        f"wrote {_OUT.value} (checkpoint step {steps}; largest logit "
        f"difference {', '.join(f'{k} {v:.1e}' for k, v in checks.items())})"
    )


if __name__ == "__main__":
    cli.run(main)
