"""Training a CycleGAN between two classes of a collection, through the one loop.

Reading order: `Trainer` takes the training split of ``config.data`` and one class per
domain (``domain_a``, ``domain_b``), each with its own grain pipeline; then
`Trainer.train_and_evaluate` resumes from the work directory's latest checkpoint, if
any, and hands the compiled step to `loop.run_steps`, whose evaluate hook writes a PNG
grid of fixed validation images (input, translation, reconstruction). The validation
images are never trained on, so images translated from the training split (see
`skinjax.apps.synthesis`) cannot leak validation content into a classifier's training set.
"""

from __future__ import annotations

import os

import grain
import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from PIL import Image

from skinjax import parallel
from skinjax.data import augment, integrity, pipeline, prepare
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection, DataError
from skinjax.models.cyclegan import CycleGAN
from skinjax.train import build, cyclegan, lock, loop
from skinjax.train.checkpoints import Checkpoints, check_workdir

DOMAINS = ("a", "b")


def class_subset(collection: Collection, name: str) -> Collection:
    """The examples of class ``name``: one CycleGAN domain."""
    if name not in collection.classes:
        raise DataError(f"domain {name!r} is not a class of the collection {collection.classes}.")
    return collection.subset(np.flatnonzero(collection.labels == collection.classes.index(name)))


def build_model(config: ml_collections.ConfigDict) -> CycleGAN:
    cfg = config.model
    return CycleGAN(
        cfg.generator,
        generator_width=cfg.generator_width,
        discriminator_width=cfg.discriminator_width,
        discriminator_layers=cfg.discriminator_layers,
        dtype=build.compute_dtype(config),
        rngs=nnx.Rngs(config.train.seed),
    )


def build_step(
    config: ml_collections.ConfigDict, model: CycleGAN, learning_rate: optax.ScalarOrSchedule
) -> cyclegan.StepSetup:
    # One Adam for both generators and one for both discriminators, as the reference.
    tx = optax.adam(learning_rate, b1=config.optim.b1, b2=config.optim.b2)
    return cyclegan.StepSetup(
        graph=nnx.graphdef(model),
        generator_tx=tx,
        discriminator_tx=tx,
        augment=augment.Augment(**config.augment),
        cycle_weight=config.loss.cycle_weight,
        identity_weight=config.loss.identity_weight,
        dtype=build.compute_dtype(config),
    )


def fresh_state(
    config: ml_collections.ConfigDict, model: CycleGAN, step: cyclegan.StepSetup
) -> cyclegan.TrainState:
    return cyclegan.create_train_state(
        model,
        step,
        pool_size=config.train.pool_size,
        image_size=config.data.image_size,
        seed=config.train.seed,
    )


def identity(config: ml_collections.ConfigDict) -> dict:
    """What a checkpoint must match: it refuses a work directory of another model."""
    return dict(
        model=f"cyclegan/{config.model.generator}",
        num_classes=len(DOMAINS),
        classes=(config.data.domain_a, config.data.domain_b),
        image_size=config.data.image_size,
    )


def checkpoints(config: ml_collections.ConfigDict, workdir: str) -> Checkpoints:
    """The run's checkpoints (best/ stays empty: there is no validation metric)."""
    return Checkpoints(
        workdir, keep=config.train.keep_checkpoints, best_metric="none", identity=identity(config)
    )


def restore_generators(workdir: str) -> tuple[ml_collections.ConfigDict, CycleGAN, nnx.State]:
    """The config, model and generator params of a work directory's latest checkpoint."""
    config = build.load_config(workdir)
    model = build_model(config)
    # Any schedule will do: only the optimiser state's structure matters here.
    step = build_step(config, model, optax.constant_schedule(0.0))
    target = jax.device_get(fresh_state(config, model, step))
    manager = checkpoints(config, workdir)
    latest = manager.latest_step()
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}; train with scripts/train_cyclegan.py")
    state, _, _ = manager.restore(latest, target)
    manager.close()
    return config, model, state.generators


class PairedBatches:
    """One batch of each domain per step; its state is both pipelines' positions."""

    def __init__(self, a: grain.DatasetIterator, b: grain.DatasetIterator):
        self.iterators = {"a": a, "b": b}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return {d: next(it)["image"] for d, it in self.iterators.items()}

    def get_state(self) -> dict:
        return {d: it.get_state() for d, it in self.iterators.items()}

    def set_state(self, state: dict) -> None:
        for d, it in self.iterators.items():
            it.set_state(state[d])


def sample_grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """One uint8 image: each row's images side by side, rows stacked."""
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


class Trainer:
    """Builds everything a CycleGAN run needs once; `train_and_evaluate` drives it.

    As `loop.Trainer`: every check first, and writes to the work directory only after.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, workdir
        self.placement = parallel.Placement(config.parallel.strategy)
        self.local_batch = parallel.local_batch_size(config.train.batch_size)
        data = config.data
        self.read = ReadOptions.from_config(data)
        prepared = prepare.prepare(data)
        parts = prepared.parts
        names = {"a": data.domain_a, "b": data.domain_b}
        self.domains = {d: class_subset(parts["train"], names[d]) for d in DOMAINS}
        shown = parts.get("val", parts["train"])
        self.samples = {
            d: np.stack(
                [
                    self.read.load(path)
                    for path in class_subset(shown, names[d]).paths[: config.train.num_samples]
                ]
            )
            for d in DOMAINS
        }
        # An epoch is a pass over the larger domain, as the reference's unaligned dataset.
        self.steps_per_epoch = max(
            1, max(len(c) for c in self.domains.values()) // config.train.batch_size
        )
        self.total_steps = max(1, round(config.train.num_epochs * self.steps_per_epoch))
        self.schedule = cyclegan.learning_rate(
            config.optim.learning_rate,
            self.total_steps,
            round(config.optim.decay_epochs * self.steps_per_epoch),
        )
        self.model = build_model(config)
        self.step = build_step(config, self.model, self.schedule)
        self.generator_graphs = cyclegan.generator_graphs(self.model)
        check_workdir(workdir, identity(config))
        # Checks passed: the writes.
        os.makedirs(workdir, exist_ok=True)
        self.checkpoints = checkpoints(config, workdir)
        if jax.process_index() == 0:
            integrity.write_skipped(workdir, prepared.skipped)
            sizes = [len(self.domains[d]) for d in DOMAINS]
            build.save_run(workdir, config, names.values(), sizes)

    def batches(self) -> PairedBatches:
        seed = self.config.train.seed
        return PairedBatches(
            *(
                iter(
                    pipeline.train_dataset(
                        self.domains[d],
                        self.read,
                        batch_size=self.local_batch,
                        seed=seed + i,
                        process_index=jax.process_index(),
                        process_count=jax.process_count(),
                    )
                )
                for i, d in enumerate(DOMAINS)
            )
        )

    def write_samples(self, step: int, state: cyclegan.TrainState, writer) -> None:
        """A PNG grid: per row, A -> B -> A then B -> A -> B, of the fixed samples."""

        def cycle(real: np.ndarray, forward: str, backward: str) -> list[np.ndarray]:
            fake = cyclegan.translate(
                self.generator_graphs[forward], state.generators[forward], real
            )
            back = cyclegan.translate(
                self.generator_graphs[backward], state.generators[backward], fake
            )
            return [real, np.asarray(fake), np.asarray(back)]

        columns = cycle(self.samples["a"], "g_ab", "g_ba") + cycle(
            self.samples["b"], "g_ba", "g_ab"
        )
        count = min(len(c) for c in columns)
        grid = sample_grid([[c[i] for c in columns] for i in range(count)])
        if jax.process_index() == 0:
            os.makedirs(os.path.join(self.workdir, "samples"), exist_ok=True)
            Image.fromarray(grid).save(os.path.join(self.workdir, "samples", f"{step:08d}.png"))
            writer.write_images(step, {"samples": grid[None]})

    def train_and_evaluate(self) -> cyclegan.TrainState:
        config = self.config
        writer, hooks = loop.writer_and_hooks(self.workdir, self.total_steps)
        batches = self.batches()
        state = fresh_state(config, self.model, self.step)
        latest = self.checkpoints.latest_step()
        if latest is not None:
            state, data_state, _ = self.checkpoints.restore(latest, jax.device_get(state))
            batches.set_state(data_state)

        def evaluate(step: int, state):
            self.write_samples(step, state, writer)
            return state, False

        def save(step: int, state, done: bool) -> None:
            self.checkpoints.save(step, jax.device_get(state), batches.get_state(), {})

        state = loop.run_steps(
            cyclegan.compile_step(self.step, self.placement),
            self.placement.put_state(state),
            batches,
            self.placement,
            stage_start=0,
            end=self.total_steps,
            every=loop.Every(
                log=config.train.log_every_steps,
                evaluate=config.train.sample_every_steps,
                checkpoint=config.train.checkpoint_every_steps,
            ),
            writer=writer,
            hooks=hooks,
            evaluate=evaluate,
            save=save,
            scalars=lambda step: {"train/learning_rate": float(self.schedule(step))},
        )
        self.checkpoints.wait()
        writer.flush()
        return jax.device_get(state)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> cyclegan.TrainState:
    """Trains per ``config``, writing checkpoints, summaries and sample grids to ``workdir``."""
    with lock.hold(workdir):
        return Trainer(config, workdir).train_and_evaluate()
