r"""Evaluates a trained work directory and writes metrics.json plus ROC, PR and
confusion-matrix plots to W/eval_<split>/.

    python scripts/evaluate.py --workdir W [--split val|test] [--data.dir D ...]
    python scripts/evaluate.py --workdir W --ensemble W2,W3   # average probabilities
    python scripts/evaluate.py --workdir W --ensemble W2 --ensemble_weights 2,1 --tta_rotations 4
    python scripts/evaluate.py --workdir W --noreweight       # not reweighted by class priors

--data.* fields override the training run's data section, e.g. --data.dir for external
validation on another collection laid out the same way (fields left at their defaults
keep the training run's values).
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from absl import flags
from ml_collections import config_flags

from skinjax import cli
from skinjax import config as base_config
from skinjax.apps import report

_WORKDIR = flags.DEFINE_string("workdir", None, "Training work directory.")
_SPLIT = flags.DEFINE_string("split", "val", "Split to evaluate: train, val or test.")
_PROTOCOL = cli.define_protocol_flags()
_OUT = flags.DEFINE_string("out", None, "Output directory (default W/eval_<split>).")
_DATA = config_flags.DEFINE_config_dict("data", base_config.data_config())
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    overrides = base_config.data_overrides(_DATA.value)
    result = report.evaluate(
        [_WORKDIR.value, *_PROTOCOL.ensemble.value],
        split=_SPLIT.value,
        data_overrides=overrides,
        out_dir=_OUT.value,
        **_PROTOCOL.values(),
    )
    names = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity")
    print(" ".join(f"{n}={result[n]:.4f}" for n in names))


if __name__ == "__main__":
    cli.run(main)
