"""A run built from its config, in one place: model, loss, compute dtype, a stage's step,
inference with the run's input normalisation, the run's identity and saved files.

Training (`loop`), evaluation (`apps.report`), export, CAM crops, the CycleGAN trainer
and the benchmark all build from here, so a run is evaluated, exported and measured
exactly as it was trained, and nothing needs the training loop to learn a dtype.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from skinjax import losses, models, parallel
from skinjax.data import augment, metadata
from skinjax.models.with_metadata import WithMetadata
from skinjax.train import classifier, optim

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CONFIG_FILE = "config.json"  # the run's config, for evaluation and export
RUN_FILE = "run.json"  # classes and training class counts


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
    if config.model.dtype not in DTYPES:
        raise ValueError(
            f"config.model.dtype must be one of {list(DTYPES)}, not {config.model.dtype!r}"
        )
    return DTYPES[config.model.dtype]


def normalization(config: ml_collections.ConfigDict) -> classifier.Normalization:
    """uint8 images -> the model's input, as this config trains (and so infers)."""
    return classifier.Normalization(
        tuple(config.data.mean), tuple(config.data.std), compute_dtype(config)
    )


def identity(config: ml_collections.ConfigDict, classes) -> dict[str, Any]:
    """What a checkpoint must match to be restored into this config's model."""
    return dict(
        model=config.model.name,
        num_classes=len(classes),
        classes=tuple(classes),
        image_size=config.data.image_size,
        **({"metadata": True} if config.model.get("metadata", False) else {}),
    )


def model(config: ml_collections.ConfigDict, num_classes: int) -> nnx.Module:
    """The config's model (with the patient-metadata branch where the config asks for it);
    under pmap its BatchNorm averages statistics over devices."""
    options = dict(config.model.options)
    if parallel.check_strategy(config.parallel.strategy) == "pmap":
        options["bn_axis_name"] = parallel.AXIS
    built = models.build(
        config.model.name,
        num_classes,
        seed=config.train.seed,
        dtype=compute_dtype(config),
        **options,
    )
    if config.model.pretrained:
        from skinjax import weights

        weights.load_pretrained(built, config.model.pretrained)
    encoder = metadata.encoder(config.model, config.data)
    if encoder is not None:
        built = WithMetadata(
            built,
            metadata_size=encoder.size,
            num_classes=num_classes,
            image_size=config.data.image_size,
            seed=config.train.seed,
        )
    return built


def loss(config: ml_collections.ConfigDict, class_counts: np.ndarray) -> classifier.LossFn:
    """(logits, labels) -> mean loss, with the config's class weights computed from counts."""
    cfg = config.loss
    weights = None
    if cfg.class_weights != "none":
        weights = jnp.asarray(
            losses.class_weights_from_counts(class_counts, kind=cfg.class_weights)
        )
    if cfg.name == "cross_entropy":
        return functools.partial(
            losses.cross_entropy, label_smoothing=cfg.label_smoothing, class_weights=weights
        )
    if cfg.name == "focal":
        alpha = cfg.focal_alpha if cfg.focal_alpha >= 0 else None
        return functools.partial(
            losses.focal_loss, gamma=cfg.focal_gamma, alpha=alpha, class_weights=weights
        )
    raise ValueError(f"config.loss.name must be 'cross_entropy' or 'focal', not {cfg.name!r}")


def stage_plan(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> list[tuple[str, Any, int]]:
    """(name, stage config, number of steps) for each stage: stage1, stage2, ... in order."""
    names = list(config.stages.keys())
    bad = [n for n in names if not re.fullmatch(r"stage[1-9][0-9]*", n)]
    if bad or not names:
        raise ValueError(f"config.stages must be named stage1, stage2, ...; got {names}")
    names.sort(key=lambda n: int(n[len("stage") :]))
    return [
        (n, config.stages[n], max(1, round(config.stages[n].num_epochs * steps_per_epoch)))
        for n in names
    ]


def stage_step(
    config: ml_collections.ConfigDict,
    built: nnx.Module,
    stage: ml_collections.ConfigDict,
    *,
    loss_fn: classifier.LossFn,
    steps_per_epoch: int,
    num_steps: int,
) -> classifier.StepSetup:
    """What one stage's train and eval steps close over (``built``: `model`'s result)."""
    train_graph, eval_graph = classifier.graphs(built, stage.freeze_backbone)
    learning_rate = optim.schedule(stage, steps_per_epoch, num_steps)
    return classifier.StepSetup(
        train_graph=train_graph,
        eval_graph=eval_graph,
        tx=optim.optimizer(stage, learning_rate),
        loss=loss_fn,
        augment=augment.Augment(**config.augment),
        normalize=normalization(config),
        freeze_backbone=stage.freeze_backbone,
        axis_name=parallel.AXIS if config.parallel.strategy == "pmap" else None,
    )


def inference(
    config: ml_collections.ConfigDict, graph: nnx.GraphDef, *, rotations: int = 1
) -> classifier.Inference:
    """The eval-mode ``graph`` with the run's normalisation, averaging ``rotations``
    quarter turns at test time."""
    return classifier.Inference(graph, normalization(config), rotations)


def save_run(workdir: str, config: ml_collections.ConfigDict, classes, class_counts) -> None:
    """What evaluation needs later: the config and the training class counts."""
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, RUN_FILE), "w") as f:
        json.dump({"classes": list(classes), "class_counts": np.asarray(class_counts).tolist()}, f)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training work directory?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict]:
    """The run's config and its ``run.json`` (classes, training class counts)."""
    config = load_config(workdir)
    with open(os.path.join(workdir, RUN_FILE)) as f:
        return config, json.load(f)
