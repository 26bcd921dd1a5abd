"""A training work directory as a live model: the best checkpoint's weights, in eval mode,
with the run's config and classes. What prediction, explanation, CAM crops and export
start from.
"""

from __future__ import annotations

import dataclasses

import ml_collections
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
