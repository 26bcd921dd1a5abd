"""The classifier's train state and its pure, jit-compiled train and eval steps.

The Flax NNX model is split once, outside the loop, into a static graph definition and
arrays (`nnx.split`); the steps merge them back inside the compiled function, so no
Python graph traversal happens per step. The steps are written for one device's view
of the batch; ``axis_name`` (pmap only) adds the cross-device averages that the mesh
strategy gets from XLA for free.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import nnx, struct

from skinjax import parallel
from skinjax.data import augment, pipeline
from skinjax.data.reading import ReadOptions
from skinjax.parallel import Placement

LossFn = Callable[[jax.Array, jax.Array], jax.Array]  # (logits, labels) -> mean loss
BACKBONE = nnx.PathContains("backbone")


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: nnx.State  # nnx.Param leaves, float32
    rest: nnx.State  # everything else: BatchNorm statistics, RNG counters
    opt_state: optax.OptState  # over the trainable parameters only
    rng: jax.Array  # raw uint32 key data, so checkpoints stay plain arrays
    lr_scale: jax.Array  # float32 scalar, lowered by the plateau rule


@dataclasses.dataclass(frozen=True)
class Normalization:
    """uint8 images -> the model's input: ``(x / 255 - mean) / std`` in ``dtype``. Training
    and every inference of a run use the same one (`build.normalization`)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: jnp.dtype = jnp.float32

    def __call__(self, images: jax.Array) -> jax.Array:
        return augment.normalize(images, self.mean, self.std, self.dtype)


@dataclasses.dataclass(frozen=True)
class Inference:
    """What prediction closes over: the eval-mode graph, the input normalisation, and
    ``rotations``, the number of quarter turns averaged at test time (4 with flips: all
    eight views of a dermoscopic image, which has no up)."""

    graph: nnx.GraphDef
    normalize: Normalization
    rotations: int = 1


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """What a stage's train and eval steps close over: graph definitions, optimiser,
    loss, augmentation and normalisation of the uint8 batch.

    ``freeze_backbone`` trains only the head and runs the backbone in inference mode
    (running BatchNorm statistics), as Keras does for a frozen base model; the backbone
    then needs no gradient at all.
    """

    train_graph: nnx.GraphDef
    eval_graph: nnx.GraphDef
    tx: optax.GradientTransformation
    loss: LossFn
    augment: augment.Augment
    normalize: Normalization
    freeze_backbone: bool = False
    axis_name: str | None = None

    @property
    def inference(self) -> Inference:
        return Inference(self.eval_graph, self.normalize)

    @property
    def trainable(self) -> nnx.filterlib.Filter:
        return nnx.Not(BACKBONE) if self.freeze_backbone else ...


def graphs(model: nnx.Module, freeze_backbone: bool) -> tuple[nnx.GraphDef, nnx.GraphDef]:
    """Train- and eval-mode graph definitions of ``model`` (left in eval mode)."""
    model.train()
    if freeze_backbone:
        model.backbone.eval()
    train_graph = nnx.graphdef(model)
    model.eval()
    return train_graph, nnx.graphdef(model)


def split_params(params: nnx.State, trainable: nnx.filterlib.Filter) -> tuple[nnx.State, nnx.State]:
    return nnx.split_state(params, trainable, ...)


def create_train_state(
    model: nnx.Module, tx: optax.GradientTransformation, trainable: nnx.filterlib.Filter, seed: int
) -> TrainState:
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(split_params(params, trainable)[0]),
        rng=jax.random.key_data(jax.random.key(seed)),
        lr_scale=jnp.ones((), jnp.float32),
    )


def _pmean(tree, axis_name: str | None):
    """Cross-device mean of the floating leaves (integer RNG counters stay as they are)."""
    if axis_name is None:
        return tree
    average = lambda x: jax.lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(average, tree)


def _psum(tree, axis_name: str | None):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def model_inputs(batch: dict[str, jax.Array]) -> tuple[jax.Array, ...]:
    """What the model takes besides the images: the patient metadata, when the batch has it."""
    return (batch["metadata"],) if "metadata" in batch else ()


def train_step(step: StepSetup, state: TrainState, batch: dict[str, jax.Array]):
    """One optimisation step on uint8 images; returns the new state and clu metrics."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if step.axis_name is not None:  # a different augmentation on every device
        key = jax.random.fold_in(key, jax.lax.axis_index(step.axis_name))
    images = augment.augment(key, batch["image"], step.augment)
    images = step.normalize(images)
    labels = batch["label"]
    trainable, frozen = split_params(state.params, step.trainable)

    def loss_fn(trainable: nnx.State, frozen: nnx.State, rest: nnx.State):
        # Copies: BatchNorm updates its statistics in place, and NNX variables created
        # outside this trace (the non-differentiated states) must not be mutated in it.
        model = nnx.merge(step.train_graph, trainable, frozen, rest, copy=True)
        logits = model(images, *model_inputs(batch))
        _, _, rest = nnx.split(model, nnx.Param, ...)
        return step.loss(logits, labels), (logits, rest)

    (loss, (logits, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        trainable, frozen, state.rest
    )
    grads = _pmean(grads, step.axis_name)
    # The statistics already come from the global batch (the mesh) or an averaged
    # per-device batch (pmap with a BatchNorm axis name); pmean keeps replicas identical.
    rest = _pmean(rest, step.axis_name)
    updates, opt_state = step.tx.update(grads, state.opt_state, trainable)
    updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
    trainable = optax.apply_updates(trainable, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=nnx.merge_state(trainable, frozen),
        rest=rest,
        opt_state=opt_state,
    )
    count = jnp.asarray(labels.shape[0], jnp.float32)
    correct = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    totals = _psum((loss * count, correct, count), step.axis_name)
    metrics = {
        "loss": clu_metrics.Average(total=totals[0], count=totals[2]),
        "accuracy": clu_metrics.Average(total=totals[1], count=totals[2]),
    }
    return new_state, metrics


def check_rotations(rotations: int) -> None:
    if rotations not in (1, 4):
        raise ValueError(f"rotations must be 1 (none) or 4 (every quarter turn), not {rotations}")


def tta_views(images: jax.Array, rotations: int, flip: bool) -> list[jax.Array]:
    """The views of NHWC ``images`` averaged at test time: ``rotations`` quarter turns, each
    also mirrored when ``flip``. Evaluation and prediction (of a run or an artifact) both
    take them from here."""
    views = [jnp.rot90(images, k, axes=(1, 2)) for k in range(rotations)]
    return views + [view[:, :, ::-1] for view in views] if flip else views


def eval_step(inference: Inference, state: TrainState, batch: dict[str, jax.Array], flip_tta: bool):
    """Class probabilities (float32) per example, averaged over the test-time views:
    ``inference.rotations`` quarter turns, each also mirrored when ``flip_tta``."""
    model = nnx.merge(inference.graph, state.params, state.rest)
    images = inference.normalize(batch["image"])
    views = tta_views(images, inference.rotations, flip_tta)
    extra = model_inputs(batch)
    probs = sum(jax.nn.softmax(model(view, *extra)) for view in views) / len(views)
    return {"probs": probs, "label": batch["label"], "index": batch["index"], "mask": batch["mask"]}


def compile_eval(inference: Inference, placement: Placement, *, flip_tta: bool):
    """The jitted (mesh) or pmapped eval function."""
    eval_fn = functools.partial(eval_step, inference, flip_tta=flip_tta)
    if placement.strategy == "pmap":
        return jax.pmap(eval_fn, axis_name=parallel.AXIS, devices=placement.devices)
    return jax.jit(eval_fn)


def train_inputs(
    model: nnx.Module,
    step: StepSetup,
    placement: Placement,
    batch_size: int,
    image_size: int,
    metadata_size: int = 0,
) -> tuple[TrainState, dict[str, jax.ShapeDtypeStruct]]:
    """Shapes, dtypes and shardings of a (mesh) train step's state and global batch: what
    ahead-of-time compilation takes, with nothing allocated. The batch is shaped like the
    pipeline's examples (`pipeline.LoadExample`)."""
    replicated = parallel.replicated(placement.mesh)
    sharded = parallel.batch_sharded(placement.mesh)
    state = jax.eval_shape(lambda: create_train_state(model, step.tx, step.trainable, 0))
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
    )
    read = ReadOptions.from_config({"image_size": image_size})
    metadata = np.zeros((0, metadata_size), np.float32) if metadata_size else None
    example = pipeline.LoadExample((), np.zeros(0, np.int32), read, metadata)(0)  # padding
    batch = {
        k: jax.ShapeDtypeStruct((batch_size, *jnp.shape(v)), jnp.asarray(v).dtype, sharding=sharded)
        for k, v in example.items()
    }
    return state, batch


def compile_steps(step: StepSetup, placement: Placement, *, flip_tta: bool):
    """The jitted (mesh) or pmapped train and eval functions; the train state is donated."""
    train_fn = functools.partial(train_step, step)
    eval_fn = compile_eval(step.inference, placement, flip_tta=flip_tta)
    if placement.strategy == "pmap":
        if step.axis_name != parallel.AXIS:
            raise ValueError(f"a pmap StepSetup needs axis_name={parallel.AXIS!r}")
        pmapped = jax.pmap(
            train_fn, axis_name=parallel.AXIS, donate_argnums=0, devices=placement.devices
        )
        return pmapped, eval_fn
    replicated = parallel.replicated(placement.mesh)
    return jax.jit(train_fn, donate_argnums=0, out_shardings=(replicated, replicated)), eval_fn
