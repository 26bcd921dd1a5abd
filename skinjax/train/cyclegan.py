"""CycleGAN's train state and its pure, jit-compiled train step, image pools included.

One step is one iteration of the reference's ``optimize_parameters``: the generators
are updated against the discriminators as they were before this step, then the
discriminators against this step's translations (made before the generator update),
drawn through the image pools. Both gradients therefore come from the same state, and
the step computes them from a single forward pass of the generators.

The image pools (Shrivastava et al. 2017) live on the device as arrays in the train
state, so the step stays one compiled program, checkpoints hold them, and a resumed
run continues exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics
from flax import nnx, struct

from skinjax import losses, parallel
from skinjax.data import augment
from skinjax.models.cyclegan import CycleGAN

Array = jax.Array
GENERATORS = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("g_ab"), nnx.PathContains("g_ba")))


# --- image pool -----------------------------------------------------------------


@struct.dataclass
class ImagePool:
    """Up to ``size`` past translations; slots ``[0, count)`` are filled."""

    images: Array  # [size, H, W, C] float32
    count: Array  # int32 scalar


def empty_pool(size: int, image_shape: tuple[int, ...]) -> ImagePool | None:
    """A pool of ``size`` images; None for size 0 (orbax cannot save empty arrays)."""
    if not size:
        return None
    return ImagePool(jnp.zeros((size, *image_shape), jnp.float32), jnp.zeros((), jnp.int32))


def query_pool(pool: ImagePool | None, images: Array, key: Array) -> tuple[ImagePool | None, Array]:
    """The reference's ``ImagePool.query``, one image at a time, on the device.

    While the pool fills, each image is stored and returned. Once full, each image is,
    with probability 0.5, swapped for a random stored one (which is returned and
    replaced by it), else returned as it is. Without a pool (None), the images.
    """
    if pool is None:
        return pool, images
    size = pool.images.shape[0]

    def one(carry, inputs):
        stored, count = carry
        image, key = inputs
        swap_key, slot_key = jax.random.split(key)
        filling = count < size
        swap = ~filling & jax.random.bernoulli(swap_key, 0.5)
        slot = jnp.where(filling, count, jax.random.randint(slot_key, (), 0, size))
        old = stored[slot]
        stored = stored.at[slot].set(jnp.where(filling | swap, image, old))
        return (stored, count + filling), jnp.where(swap, old, image)

    keys = jax.random.split(key, images.shape[0])
    (stored, count), out = jax.lax.scan(
        one, (pool.images, pool.count), (images.astype(jnp.float32), keys)
    )
    return ImagePool(stored, count), out.astype(images.dtype)


# --- losses -----------------------------------------------------------------------


class Networks(Protocol):
    """What the losses call: the four networks of `CycleGAN`, or stand-ins in tests."""

    def g_ab(self, x: Array) -> Array: ...
    def g_ba(self, x: Array) -> Array: ...
    def d_a(self, x: Array) -> Array: ...
    def d_b(self, x: Array) -> Array: ...


def generator_losses(
    nets: Networks, real_a: Array, real_b: Array, *, identity: bool
) -> tuple[dict[str, Array], tuple[Array, Array]]:
    """The generators' loss terms, and the translations (fake A, fake B).

    ``adversarial``: LSGAN, translations scored as real; ``cycle``: L1 of A -> B -> A
    and B -> A -> B to the input; ``identity`` (if asked): L1 of g_ab(b) to b and
    g_ba(a) to a. Each is a sum over the two directions, as the reference adds them.
    """
    fake_b, fake_a = nets.g_ab(real_a), nets.g_ba(real_b)
    terms = {
        "adversarial": losses.lsgan_loss(nets.d_b(fake_b), True)
        + losses.lsgan_loss(nets.d_a(fake_a), True),
        "cycle": losses.l1_loss(nets.g_ba(fake_b), real_a)
        + losses.l1_loss(nets.g_ab(fake_a), real_b),
    }
    if identity:
        terms["identity"] = losses.l1_loss(nets.g_ab(real_b), real_b) + losses.l1_loss(
            nets.g_ba(real_a), real_a
        )
    return terms, (fake_a, fake_b)


def generator_total(
    terms: dict[str, Array], *, cycle_weight: float, identity_weight: float
) -> Array:
    """adversarial + cycle_weight x cycle (+ identity_weight x identity)."""
    total = terms["adversarial"] + cycle_weight * terms["cycle"]
    if "identity" in terms:
        total += identity_weight * terms["identity"]
    return total


def discriminator_loss(real_scores: Array, fake_scores: Array) -> Array:
    """LSGAN for one discriminator, halved as in the reference to slow it down."""
    return 0.5 * (losses.lsgan_loss(real_scores, True) + losses.lsgan_loss(fake_scores, False))


# --- state and step -----------------------------------------------------------------


@struct.dataclass
class TrainState:
    step: Array  # int32 scalar
    generators: nnx.State  # params of g_ab and g_ba
    discriminators: nnx.State  # params of d_a and d_b
    generator_opt: optax.OptState
    discriminator_opt: optax.OptState
    pool_a: ImagePool | None  # translations into A (by g_ba), shown to d_a; None: no pool
    pool_b: ImagePool | None  # translations into B (by g_ab), shown to d_b
    rng: Array  # raw uint32 key data, so checkpoints stay plain arrays


def learning_rate(base: float, total_steps: int, decay_steps: int) -> optax.Schedule:
    """Constant, then linear decay to zero over the last ``decay_steps`` steps."""
    constant = max(total_steps - decay_steps, 0)
    return optax.join_schedules(
        [optax.constant_schedule(base), optax.linear_schedule(base, 0.0, max(decay_steps, 1))],
        [constant],
    )


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """What the train step closes over: the graph, optimisers, loss weights, input prep."""

    graph: nnx.GraphDef
    generator_tx: optax.GradientTransformation
    discriminator_tx: optax.GradientTransformation
    augment: augment.Augment
    cycle_weight: float = 10.0
    identity_weight: float = 5.0
    dtype: jnp.dtype = jnp.float32


def create_train_state(
    model: CycleGAN, step: StepSetup, *, pool_size: int, image_size: int, seed: int
) -> TrainState:
    _, generators, discriminators = nnx.split(model, GENERATORS, nnx.Param)
    pool_shape = (image_size, image_size, 3)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        generators=generators,
        discriminators=discriminators,
        generator_opt=step.generator_tx.init(generators),
        discriminator_opt=step.discriminator_tx.init(discriminators),
        pool_a=empty_pool(pool_size, pool_shape),  # two buffers: the state is donated
        pool_b=empty_pool(pool_size, pool_shape),
        rng=jax.random.key_data(jax.random.key(seed)),
    )


def to_signed(images: Array, dtype: jnp.dtype = jnp.float32) -> Array:
    """uint8 or [0, 1] float images -> [-1, 1], the generators' range."""
    return augment.normalize(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), dtype)


def to_uint8(images: Array) -> Array:
    return jnp.round((jnp.clip(images, -1, 1) + 1) * 127.5).astype(jnp.uint8)


def train_step(step: StepSetup, state: TrainState, batch: dict[str, Array]):
    """One update of both generators and both discriminators on uint8 images a and b."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    key_a, key_b, key_pool_a, key_pool_b = jax.random.split(key, 4)
    real_a = to_signed(augment.augment(key_a, batch["a"], step.augment), step.dtype)
    real_b = to_signed(augment.augment(key_b, batch["b"], step.augment), step.dtype)

    def generator_objective(generators: nnx.State):
        nets = nnx.merge(step.graph, generators, state.discriminators, copy=True)
        terms, fakes = generator_losses(nets, real_a, real_b, identity=step.identity_weight > 0)
        total = generator_total(
            terms, cycle_weight=step.cycle_weight, identity_weight=step.identity_weight
        )
        return total, (terms, fakes)

    (g_total, (terms, (fake_a, fake_b))), generator_grads = jax.value_and_grad(
        generator_objective, has_aux=True
    )(state.generators)
    pool_a, fake_a = query_pool(state.pool_a, jax.lax.stop_gradient(fake_a), key_pool_a)
    pool_b, fake_b = query_pool(state.pool_b, jax.lax.stop_gradient(fake_b), key_pool_b)

    def discriminator_objective(discriminators: nnx.State):
        nets = nnx.merge(step.graph, state.generators, discriminators, copy=True)
        d_a = discriminator_loss(nets.d_a(real_a), nets.d_a(fake_a))
        d_b = discriminator_loss(nets.d_b(real_b), nets.d_b(fake_b))
        return d_a + d_b, {"d_a": d_a, "d_b": d_b}

    (_, d_terms), discriminator_grads = jax.value_and_grad(discriminator_objective, has_aux=True)(
        state.discriminators
    )

    updates, generator_opt = step.generator_tx.update(
        generator_grads, state.generator_opt, state.generators
    )
    generators = optax.apply_updates(state.generators, updates)
    updates, discriminator_opt = step.discriminator_tx.update(
        discriminator_grads, state.discriminator_opt, state.discriminators
    )
    discriminators = optax.apply_updates(state.discriminators, updates)
    new_state = state.replace(
        step=state.step + 1,
        generators=generators,
        discriminators=discriminators,
        generator_opt=generator_opt,
        discriminator_opt=discriminator_opt,
        pool_a=pool_a,
        pool_b=pool_b,
    )
    scalars = {"g_total": g_total, **{f"g_{k}": v for k, v in terms.items()}, **d_terms}
    return new_state, {k: clu_metrics.Average.from_model_output(v) for k, v in scalars.items()}


def compile_step(step: StepSetup, placement: parallel.Placement):
    """The jitted train step over the placement's mesh; the train state is donated.

    Only the mesh strategy: under pmap each device would keep its own image pool.
    """
    if placement.strategy != "mesh":
        raise ValueError(
            f"CycleGAN trains with config.parallel.strategy='mesh' only, not "
            f"{placement.strategy!r}: its image pools are one replicated array."
        )
    replicated = parallel.replicated(placement.mesh)
    return jax.jit(
        functools.partial(train_step, step),
        donate_argnums=0,
        out_shardings=(replicated, replicated),
    )


# --- inference ------------------------------------------------------------------------


def generator_graphs(model: CycleGAN) -> dict[str, nnx.GraphDef]:
    """Graphs of the generators alone, keyed as their params in ``TrainState.generators``."""
    return {name: nnx.graphdef(getattr(model, name)) for name in ("g_ab", "g_ba")}


@functools.partial(jax.jit, static_argnums=0)
def translate(graph: nnx.GraphDef, params: nnx.State, images: Array) -> Array:
    """uint8 images -> their uint8 translations by the generator ``graph``."""
    return to_uint8(nnx.merge(graph, params)(to_signed(images)))
