"""Throughput measurements: the input pipeline, the on-device augmentation, and the
same compiled train and eval steps that training runs.

Every timing blocks on its result and reports the median of repeated runs after a
warm-up, so compile time and first-call effects are counted apart.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from skinjax import parallel
from skinjax.data import augment, pipeline
from skinjax.data.sources import Collection
from skinjax.train import classifier, loop, optim


@dataclasses.dataclass
class Timing:
    median_s: float
    images_per_s: float


def _time(fn: Callable[[], object], repeats: int, batch: int) -> Timing:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return Timing(median, batch / median)


def matmul_peak_gflops(dtype=jnp.float32, n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a large square matmul: the machine's practical peak."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    return 2 * n**3 / _time(lambda: f(a, a), repeats, 1).median_s / 1e9


def pipeline_throughput(
    collection: Collection,
    *,
    batch_size: int,
    image_size: int,
    worker_count: int,
    read_threads: int,
    num_batches: int,
) -> float:
    """Images/s of read + decode + resize + batch, from the training pipeline itself."""
    ds = pipeline.train_dataset(
        collection,
        batch_size=batch_size,
        image_size=image_size,
        seed=0,
        worker_count=worker_count,
        read_threads=read_threads,
    )
    it = iter(ds)
    next(it)  # start-up (worker processes, first reads) is not throughput
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    return num_batches * batch_size / (time.perf_counter() - start)


def pil_loop_throughput(collection: Collection, *, image_size: int, num_images: int) -> float:
    """The baseline: one process, one image at a time, Pillow decode and resize."""
    from PIL import Image

    paths = [collection.paths[i % len(collection)] for i in range(num_images)]
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((image_size, image_size), Image.BILINEAR))
    return num_images / (time.perf_counter() - start)


def augment_cost(aug: augment.Augment, batch: int, image_size: int, repeats: int = 10) -> float:
    """Seconds per batch of the jitted on-device augmentation alone."""
    x = jnp.zeros((batch, image_size, image_size, 3), jnp.uint8)
    f = jax.jit(augment.augment, static_argnums=2)
    f(jax.random.key(0), x, aug).block_until_ready()
    return _time(lambda: f(jax.random.key(1), x, aug), repeats, batch).median_s


@dataclasses.dataclass
class StepReport:
    batch_size: int
    dtype: str
    strategy: str
    train_images_per_s: float
    eval_images_per_s: float
    train_compile_s: float
    train_gflops_per_image: float
    train_gflops_per_s: float
    temp_memory_mb: float


def synthetic_batches(batch: int, image_size: int, num_classes: int, seed: int = 0) -> Iterator:
    rng = np.random.default_rng(seed)
    while True:
        yield {
            "image": rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8),
            "label": rng.integers(0, num_classes, batch).astype(np.int32),
            "index": np.arange(batch, dtype=np.int32),
            "mask": np.ones(batch, bool),
        }


def step_throughput(
    config: ml_collections.ConfigDict, *, batch_size: int, num_classes: int, repeats: int
) -> StepReport:
    """Train and eval step images/s for ``config``'s model, built as training builds it."""
    placement = parallel.Placement(config.parallel.strategy)
    model = loop.build_model(config, num_classes)
    stage = next(iter(config.stages.values()))
    train_graph, eval_graph = classifier.graphs(model, stage.freeze_backbone)
    step = classifier.Step(
        train_graph=train_graph,
        eval_graph=eval_graph,
        tx=optim.optimizer(stage, optim.schedule(stage, 100, 1000)),
        loss=loop.build_loss(config, np.ones(num_classes)),
        augment=augment.Augment(**config.augment),
        mean=tuple(config.data.mean),
        std=tuple(config.data.std),
        dtype=loop.compute_dtype(config),
        freeze_backbone=stage.freeze_backbone,
        axis_name=parallel.AXIS if placement.strategy == "pmap" else None,
    )
    state = placement.put_state(classifier.create_train_state(model, step.tx, step.trainable, 0))
    train_fn, eval_fn = classifier.compile_steps(step, placement, flip_tta=False)
    batches = synthetic_batches(batch_size, config.data.image_size, num_classes)
    batch = placement.put_batch(next(batches))
    start = time.perf_counter()
    if placement.strategy == "mesh":
        compiled = train_fn.lower(state, batch).compile()
        cost = compiled.cost_analysis()
        flops = float(cost.get("flops", 0.0)) if cost else 0.0
        memory = compiled.memory_analysis()
        temp_mb = (memory.temp_size_in_bytes / 2**20) if memory else float("nan")
    else:
        flops, temp_mb = 0.0, float("nan")
    state, _ = train_fn(state, batch)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start

    holder = {"state": state}

    def one_train_step():
        holder["state"], metrics = train_fn(holder["state"], batch)
        return metrics

    train = _time(one_train_step, repeats, batch_size)
    jax.block_until_ready(eval_fn(holder["state"], batch))
    evaluation = _time(lambda: eval_fn(holder["state"], batch), repeats, batch_size)
    return StepReport(
        batch_size=batch_size,
        dtype=config.model.dtype,
        strategy=placement.strategy,
        train_images_per_s=train.images_per_s,
        eval_images_per_s=evaluation.images_per_s,
        train_compile_s=compile_s,
        train_gflops_per_image=flops / batch_size / 1e9,
        train_gflops_per_s=flops / train.median_s / 1e9,
        temp_memory_mb=temp_mb,
    )
