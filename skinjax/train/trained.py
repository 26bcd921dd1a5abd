"""A training work directory as a live model: the best checkpoint's weights, in eval mode,
with the run's config and classes. What prediction, explanation, CAM crops and export
start from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np
from flax import nnx

from skinjax.train import build
from skinjax.train.checkpoints import Checkpoints


@dataclasses.dataclass(frozen=True)
class Trained:
    workdir: str
    config: ml_collections.ConfigDict
    classes: tuple[str, ...]
    model: nnx.Module  # in eval mode
    step: int  # the training step of the best checkpoint
    best: float  # its value of config.train.best_metric

    @property
    def image_size(self) -> int:
        return self.config.data.image_size


def load(workdir: str) -> Trained:
    """The best checkpoint (by the run's validation metric) of ``workdir``."""
    config, run = build.load_run(workdir)
    classes = tuple(run["classes"])
    build_config = ml_collections.ConfigDict(config.to_dict())
    build_config.parallel.strategy = "mesh"  # one host-side model: no pmap BatchNorm axis
    build_config.model.pretrained = ""  # the checkpoint replaces every weight anyway
    model = build.model(build_config, len(classes))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    checkpoints = Checkpoints(
        workdir,
        keep=1,
        best_metric=config.train.best_metric,
        identity=build.identity(config, classes),
    )
    try:
        restored, meta = checkpoints.restore_best({"params": params, "rest": rest})
        step = checkpoints.best.best_step()
    finally:
        checkpoints.close()
    nnx.update(model, restored["params"], restored["rest"])
    model.eval()
    return Trained(workdir, config, classes, model, step, meta["progress"]["best"])


def ensemble_weights(workdirs: Sequence[str], weights: Sequence[float] | None) -> np.ndarray:
    """The members' weights, summing to 1; ValueError unless one non-negative per member."""
    weights = np.ones(len(workdirs)) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (len(workdirs),) or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(
            f"ensemble weights {weights.tolist()} must be {len(workdirs)} non-negative numbers "
            f"(one per work directory: {list(workdirs)}), not all zero"
        )
    return weights / weights.sum()


def check_members(runs: Sequence[Trained]) -> None:
    """ValueError unless the ensemble's members share their classes and image size."""
    for run in runs[1:]:
        if (run.classes, run.image_size) != (runs[0].classes, runs[0].image_size):
            raise ValueError(
                f"ensemble members must share classes and image size: {run.workdir} has "
                f"{run.classes} at {run.image_size} px, {runs[0].workdir} {runs[0].classes} "
                f"at {runs[0].image_size} px."
            )
