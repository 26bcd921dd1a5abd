"""Throughput measurements: the input pipeline, the on-device augmentation, and the
same compiled train and eval steps that training runs.

Every timing blocks on its result and reports the median of repeated runs after a
warm-up, so compile time and first-call effects are counted apart.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from skinjax import host_memory, parallel
from skinjax.data import augment, pipeline
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection
from skinjax.kernels.flops import count as count_flops
from skinjax.train import build, classifier, memory


@dataclasses.dataclass
class Timing:
    median_s: float
    images_per_s: float
    rounds_s: list[float] = dataclasses.field(default_factory=list)  # each round's time


def _timing(times: list[float], batch: int) -> Timing:
    median = statistics.median(times)
    return Timing(median, batch / median, times)


def _time(fn: Callable[[], object], repeats: int, batch: int) -> Timing:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return _timing(times, batch)


def ratio_spread(ours: Timing, theirs: Timing) -> tuple[float, float, float]:
    """Median, lowest and highest of the per-round ratios theirs / ours (our speed over
    theirs): rounds alternate the two, so each ratio compares them under the same load."""
    ratios = sorted(t / o for o, t in zip(ours.rounds_s, theirs.rounds_s, strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]


def matmul_peak_gflops(dtype=jnp.float32, n: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of the fastest of `repeats` large square matmuls: the machine's practical peak.

    The fastest call, not the median: a peak is what the cores can do, and a median of a
    few 50 ms calls read 200 to 380 GFLOP/s on the same idle machine from run to run.
    """
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    fastest = min(_time(lambda: f(a, a), 1, 1).median_s for _ in range(repeats))
    return 2 * n**3 / fastest / 1e9


def pipeline_throughput(
    collection: Collection,
    *,
    batch_size: int,
    image_size: int,
    worker_count: int,
    read_threads: int,
    num_batches: int,
) -> tuple[float, float]:
    """Images/s of read + decode + resize + batch, from the training pipeline itself, and
    images per CPU second of this process (a core's rate even when other jobs share the
    cores; it misses worker processes' work, so only means that with ``worker_count=0``)."""
    read = ReadOptions.from_config(
        {"image_size": image_size, "worker_count": worker_count, "read_threads": read_threads}
    )
    ds = pipeline.train_dataset(collection, read, batch_size=batch_size, seed=0)
    it = iter(ds)
    next(it)  # start-up (worker processes, first reads) is not throughput
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(it)
    images = num_batches * batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu)


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


def synthetic_batches(batch: int, image_size: int, num_classes: int, seed: int = 0) -> Iterator:
    rng = np.random.default_rng(seed)
    while True:
        yield {
            "image": rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8),
            "label": rng.integers(0, num_classes, batch).astype(np.int32),
            "index": np.arange(batch, dtype=np.int32),
            "mask": np.ones(batch, bool),
        }


@dataclasses.dataclass
class CompiledSteps:
    """A config's train and eval steps, compiled as training compiles them, on one batch.

    ``train`` and ``eval`` each run one step on the resident batch and return its output
    to block on; ``train_on`` runs one on a host batch, put on the devices as training
    does. The train step carries its (donated) state from call to call.
    """

    train: Callable[[], object]
    eval: Callable[[], object]
    train_on: Callable[[Mapping[str, np.ndarray]], object]
    compile_s: float
    train_flops: float  # per step (`skinjax.kernels.flops.count`); 0 under pmap
    train_memory: memory.StepMemory | None  # XLA's figures; None under pmap
    eval_memory: memory.StepMemory | None
    # The peak resident memory of the process that runs them (this one), and its reset.
    peak_bytes: Callable[[], int] = host_memory.peak_resident_bytes
    reset_peak: Callable[[], None] = host_memory.reset_peak_resident


def build_step(
    config: ml_collections.ConfigDict, stage: str, num_classes: int, *, abstract: bool = False
) -> tuple[parallel.Placement, Any, classifier.StepSetup]:
    """The placement, model and `classifier.StepSetup` of ``config.stages[stage]``, built as
    training builds them (`build.stage_step`; any schedule: it does not change the cost).

    ``abstract``: the model's variables as shapes only (`nnx.eval_shape`), for steps that
    are lowered and never run; initialising a ResNet-50's weights costs seconds.
    """
    if abstract:
        model = nnx.eval_shape(lambda: build.model(config, num_classes))
    else:
        model = build.model(config, num_classes)
    step = build.stage_step(
        config,
        model,
        config.stages[stage],
        loss_fn=build.loss(config, np.ones(num_classes)),
        steps_per_epoch=100,
        num_steps=1000,
    )
    return parallel.Placement(config.parallel.strategy), model, step


def train_step_memory(
    config: ml_collections.ConfigDict, *, stage: str, batch_size: int, num_classes: int
) -> memory.StepMemory:
    """XLA's figures for the (mesh) train step at ``batch_size``: compiled, never run."""
    placement, model, step = build_step(config, stage, num_classes)
    state, batch = classifier.train_inputs(
        model, step, placement, batch_size, config.data.image_size
    )
    train_fn = classifier.compile_steps(step, placement, flip_tta=False)[0]
    return memory.StepMemory.of(train_fn.lower(state, batch).compile())


def max_batch_size(fits: Callable[[int], bool], *, multiple: int = 1, limit: int = 4096) -> int:
    """The largest multiple of ``multiple`` (the device count) for which ``fits``, by
    doubling then bisection; 0 where not even ``multiple`` fits."""
    if not fits(multiple):
        return 0
    low = multiple
    while low * 2 <= limit and fits(low * 2):
        low *= 2
    high = min(low * 2, limit + multiple)  # does not fit (or past the limit)
    while high - low > multiple:
        middle = (low + high) // 2 // multiple * multiple
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def compiled_steps(
    config: ml_collections.ConfigDict, *, stage: str, batch_size: int, num_classes: int
) -> CompiledSteps:
    """The train and eval steps of ``config.stages[stage]``, warmed up, on a synthetic batch.

    Both are traced and compiled here, so a context around the call (such as
    `kernels.onednn.disabled()`) decides what they run.
    """
    placement, model, step = build_step(config, stage, num_classes)
    state = placement.put_state(classifier.create_train_state(model, step.tx, step.trainable, 0))
    train_fn, eval_fn = classifier.compile_steps(step, placement, flip_tta=False)
    batch = placement.put_batch(
        next(synthetic_batches(batch_size, config.data.image_size, num_classes))
    )
    start = time.perf_counter()
    flops, train_memory, eval_memory = 0.0, None, None
    if placement.strategy == "mesh":
        # The flops of the step built anew: a trace with oneDNN's calls counts none.
        fresh_train_fn = classifier.compile_steps(step, placement, flip_tta=False)[0]
        flops = count_flops(fresh_train_fn, state, batch)
        train_fn = train_fn.lower(state, batch).compile()  # run below: one compilation
        eval_fn = eval_fn.lower(state, batch).compile()
        train_memory, eval_memory = memory.StepMemory.of(train_fn), memory.StepMemory.of(eval_fn)
    holder = {"state": jax.block_until_ready(train_fn(state, batch)[0])}
    compile_s = time.perf_counter() - start
    jax.block_until_ready(eval_fn(holder["state"], batch))  # pmap: traced here

    def train_on(device_batch):
        holder["state"], metrics = train_fn(holder["state"], device_batch)
        return metrics

    return CompiledSteps(
        train=lambda: train_on(batch),
        train_on=lambda host_batch: train_on(placement.put_batch(host_batch)),
        eval=lambda: eval_fn(holder["state"], batch),
        compile_s=compile_s,
        train_flops=flops,
        train_memory=train_memory,
        eval_memory=eval_memory,
    )


def time_alternating(
    fns: Mapping[str, Callable[[], object]], *, repeats: int, batch: int, warmup: int = 2
) -> dict[str, Timing]:
    """Each function's median over ``repeats`` rounds that call all of them in turn.

    Interleaving (A, B, A, B, ...) exposes every function to the same changes in machine
    load, so their ratio holds on a shared machine where absolute times drift. ``warmup``
    untimed rounds come first: compilation and first-call allocations, and the rounds in
    which a process that waited for the others gets its memory and threads back.
    """
    for _ in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: _timing(t, batch) for name, t in times.items()}


def end_to_end(
    steps: CompiledSteps, batches: Iterator, *, num_steps: int, rounds: int, batch: int
) -> dict[str, Timing]:
    """The training loop's throughput against its step alone, in alternating rounds.

    ``end_to_end`` feeds ``num_steps`` batches from ``batches`` (the input pipeline) as
    the loop does, one step in flight (`parallel.InFlight`), blocking at the end;
    ``step`` runs as many steps on one resident batch. Their ratio is what the input
    side costs the loop.
    """
    next(batches)  # pipeline start-up (threads, worker processes) is not throughput

    def run(step: Callable[[], object]):
        in_flight = parallel.InFlight()
        for _ in range(num_steps):
            outputs = step()
            in_flight.add(outputs)
        return outputs

    def fed():
        return run(lambda: steps.train_on(next(batches)))

    def resident():
        return run(steps.train)

    fns = {"end_to_end": fed, "step": resident}
    return time_alternating(fns, repeats=rounds, batch=batch * num_steps)


def plot_throughput(records: Sequence[Mapping], path: str) -> None:
    """Train (solid) and eval (dashed) images/s against batch size, one panel per dtype."""
    from matplotlib.figure import Figure

    dtypes = sorted({r["dtype"] for r in records})
    fig = Figure(figsize=(5 * len(dtypes), 4), dpi=120, layout="constrained")
    axes = fig.subplots(1, len(dtypes), squeeze=False, sharey=True)[0]
    names = list(dict.fromkeys(r["implementation"] for r in records))
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    for ax, dtype in zip(axes, dtypes, strict=True):
        for name in names:
            rs = sorted(
                (r for r in records if r["dtype"] == dtype and r["implementation"] == name),
                key=lambda r: r["batch_size"],
            )
            batches = [r["batch_size"] for r in rs]
            for kind, style in (("train", "-"), ("eval", "--")):
                ax.plot(
                    batches,
                    [r[f"{kind}_images_per_s"] for r in rs],
                    style,
                    marker="o",
                    color=colors[name],
                    label=f"{name} {kind}",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch_size"] for r in records}), minor=False)
        ax.xaxis.set_major_formatter("{x:.0f}")
        ax.set_xlabel("batch size")
        ax.set_title(f"{records[0]['model']}, {dtype}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("images/s")
    axes[-1].legend(fontsize="small")
    fig.savefig(path)
