r"""Plots metrics of several training runs against the step, from their TensorBoard logs.

    python scripts/plot_runs.py --workdir runs/asff_resnet50 --workdir runs/resnet50 \
        --metrics val/roc_auc,train/loss --out curves.png [--labels ASFF,ResNet-50]

Any scalar a run logged can be named (`train/loss`, `val/roc_auc`, `steps_per_sec`, ...);
a run that did not log a metric is left out of its panel.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

import os

from absl import app, flags

from skinjax import cli, plots
from skinjax.tools import scalars

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "A training work directory.")
_METRICS = flags.DEFINE_list("metrics", ["val/roc_auc", "train/loss"], "Scalars to plot.")
_LABELS = flags.DEFINE_list("labels", None, "Legend labels (default: the workdir names).")
_OUT = flags.DEFINE_string("out", None, "PNG file to write.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    del argv
    labels = _LABELS.value or [os.path.basename(os.path.normpath(w)) for w in _WORKDIRS.value]
    if len(labels) != len(_WORKDIRS.value):
        raise app.UsageError(f"{len(labels)} labels for {len(_WORKDIRS.value)} work directories")
    logged = {label: scalars.read(w) for label, w in zip(labels, _WORKDIRS.value, strict=True)}
    runs = {
        metric: {label: run[metric] for label, run in logged.items() if metric in run}
        for metric in _METRICS.value
    }
    missing = [metric for metric, series in runs.items() if not series]
    if missing:
        raise app.UsageError(f"no run logged {', '.join(missing)}")
    plots.plot_runs(runs, _OUT.value)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    cli.run(main)
