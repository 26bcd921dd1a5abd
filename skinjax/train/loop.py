"""The one training loop: stages, evaluation, checkpoints, logging, exact resume.

Reading order: `train_and_evaluate` prepares data, model and checkpoints, then runs
each stage of the config (`_run_stage`) from wherever the work directory's latest
checkpoint stopped. Inside a stage the host only enqueues work; it waits for the
device at logging, evaluation and checkpoint steps alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from skinjax import metrics, parallel
from skinjax.data import integrity, metadata, pipeline, prepare
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection
from skinjax.train import build, checkpoints, classifier, evaluation, lock, memory, optim


@dataclasses.dataclass
class Progress:
    """Loop bookkeeping saved with every checkpoint."""

    stage: int = 0
    stage_start: int = 0
    plateau: dict | None = None
    best: float = -math.inf
    stage_done: bool = False


def writer_and_hooks(workdir: str, total_steps: int, profile: bool = False):
    """clu's TensorBoard + console writer, and progress (and profiling) hooks for run_steps.

    clu's writers import TensorFlow, which is imported here, when a run starts, and not
    with this module: TensorFlow loaded before torch's triton crashes the process, and
    nothing but training needs it.
    """
    from clu import metric_writers, periodic_actions

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=True
    )
    hooks = []
    if jax.process_index() == 0:
        hooks.append(periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer))
        if profile:
            hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=5))
    return writer, hooks


@dataclasses.dataclass(frozen=True)
class Every:
    """How many steps apart the loop stops to talk to the host."""

    log: int
    evaluate: int
    checkpoint: int


def run_steps(
    train_fn: Callable,
    state,
    batches: Iterator[dict[str, np.ndarray]],
    placement: parallel.Placement,
    *,
    stage_start: int,
    end: int,
    every: Every,
    writer: Any,  # a clu MetricWriter
    hooks: Sequence[Callable[[int], None]],
    evaluate: Callable[[int, Any], tuple[Any, bool]],
    save: Callable[[int, Any, bool], None],
    scalars: Callable[[int], dict[str, float]] = lambda step: {},
):
    """The one loop: steps from the state's step to ``end``, for every model and task.

    ``train_fn(state, batch) -> (state, {name: clu metric})`` is enqueued one step
    ahead (`parallel.InFlight`): the host prepares the next batch while a step runs. It
    reads results back only when it logs the accumulated metrics (every ``every.log``
    steps), evaluates (``evaluate(step, state) -> (state, stop)``) or saves
    (``save(step, state, done)``), and always at the end or an early stop.
    """
    step = int(placement.unreplicate(state.step))
    accumulated, in_flight = None, parallel.InFlight()
    while step < end:
        state, step_metrics = train_fn(state, placement.put_batch(next(batches)))
        in_flight.add(step_metrics)
        step += 1
        accumulated = (
            step_metrics
            if accumulated is None
            else {k: accumulated[k].merge(v) for k, v in step_metrics.items()}
        )
        for hook in hooks:
            hook(step)
        done = step == end
        if step % every.log == 0 or done:
            host = placement.unreplicate(accumulated)
            writer.write_scalars(
                step, {f"train/{k}": float(v.compute()) for k, v in host.items()} | scalars(step)
            )
            accumulated = None
        stop = False
        if (step - stage_start) % every.evaluate == 0 or done:
            state, stop = evaluate(step, state)
        if done or stop or step % every.checkpoint == 0:
            save(step, state, done or stop)
        if stop:
            break
    return state


class Trainer:
    """Builds everything a run needs once; `train_and_evaluate` drives it.

    Construction is checks, then writes: `check` raises on anything that refuses the
    run (config, data, the work directory's checkpoints) and writes nothing; `start`
    writes to the work directory only after. A refused run leaves the directory as it
    was, but for the lock file of `train_and_evaluate`.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, workdir
        self.check()
        self.start()

    def check(self) -> None:
        """Every check that can refuse the run; reads and builds, writes nothing."""
        config = self.config
        self.read = ReadOptions.from_config(config.data)
        self.placement = parallel.Placement(config.parallel.strategy)
        self.global_batch = config.train.batch_size
        self.local_batch = parallel.local_batch_size(self.global_batch)
        parallel.local_batch_size(config.eval.batch_size, "config.eval.batch_size")
        prepared = prepare.prepare(config.data)
        self.skipped = prepared.skipped
        self.train_set: Collection = prepared.parts["train"]
        self.val_set: Collection | None = prepared.parts.get(config.eval.split)
        self.classes = self.train_set.classes
        indices = np.arange(len(self.train_set))
        if config.data.oversample_ratio:
            indices = pipeline.oversample(
                self.train_set.labels, config.data.oversample_ratio, config.train.seed
            )
        self.steps_per_epoch = max(1, len(indices) // self.global_batch)
        self.class_counts = np.bincount(self.train_set.labels[indices], minlength=len(self.classes))
        self.metadata = metadata.encoder(config.model, config.data)
        if self.metadata is not None:  # every bad value named before anything compiles
            for part in prepared.parts.values():
                self.metadata.encode(part)
        self.model = build.model(config, len(self.classes))
        self.loss = build.loss(config, self.class_counts)
        self.plan = build.stage_plan(config, self.steps_per_epoch)
        self.total_steps = sum(n for _, _, n in self.plan)
        self.identity = build.identity(config, self.classes)
        checkpoints.check_workdir(self.workdir, self.identity)
        self.compiled = self.compile_and_check_memory()

    def start(self) -> None:
        """The writes, once every check has passed: checkpoint folders, config and run files."""
        config = self.config
        os.makedirs(self.workdir, exist_ok=True)
        self.checkpoints = checkpoints.Checkpoints(
            self.workdir,
            keep=config.train.keep_checkpoints,
            best_metric=config.train.best_metric,
            identity=self.identity,
        )
        if jax.process_index() == 0:
            integrity.write_skipped(self.workdir, self.skipped)
            build.save_run(self.workdir, config, self.classes, self.class_counts)

    # --- pieces -----------------------------------------------------------------

    def train_iterator(self):
        return iter(
            pipeline.train_dataset(
                self.train_set,
                self.read,
                batch_size=self.local_batch,
                seed=self.config.train.seed,
                oversample_ratio=self.config.data.oversample_ratio,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                metadata=self.metadata,
            )
        )

    def step_for(self, stage: ml_collections.ConfigDict, num_steps: int) -> classifier.StepSetup:
        return build.stage_step(
            self.config,
            self.model,
            stage,
            loss_fn=self.loss,
            steps_per_epoch=self.steps_per_epoch,
            num_steps=num_steps,
        )

    def compile_and_check_memory(self) -> dict[str, Any]:
        """Each stage's train step compiled ahead of time and checked to fit (`memory`).

        The loop runs these executables, so the check costs no second compilation. Under
        the pmap strategy the steps compile when they first run, unchecked.
        """
        if self.placement.strategy != "mesh":
            return {}
        config, compiled = self.config, {}
        for name, stage, num_steps in self.plan:
            step = self.step_for(stage, num_steps)
            state, batch = classifier.train_inputs(
                self.model,
                step,
                self.placement,
                self.global_batch,
                config.data.image_size,
                self.metadata.size if self.metadata else 0,
            )
            train_fn = classifier.compile_steps(step, self.placement, flip_tta=False)[0]
            compiled[name] = train_fn.lower(state, batch).compile()
            memory.check_fits(
                memory.StepMemory.of(compiled[name]),
                what=f"the {name} train step ({config.model.name}, batch {self.global_batch}, "
                f"{config.data.image_size} px, {config.model.dtype})",
                limit_gib=config.train.memory_limit_gib,
                advice="Lower config.train.batch_size or config.data.image_size, or train in "
                "config.model.dtype='bfloat16', or free memory.",
            )
        return compiled

    def fresh_state(self, step: classifier.StepSetup) -> classifier.TrainState:
        return classifier.create_train_state(
            self.model, step.tx, step.trainable, self.config.train.seed
        )

    def validate(self, eval_fn, state) -> dict[str, float]:
        probs = evaluation.predict(
            eval_fn,
            state,
            self.val_set,
            self.placement,
            self.read,
            batch_size=self.config.eval.batch_size,
            metadata=self.metadata,
        )
        labels = self.val_set.labels
        reweight = self.config.eval.reweight_by_inverse_frequency
        result = metrics.classification_metrics(
            evaluation.scored(probs, self.class_counts, reweight=reweight), labels
        )
        scalars = {k: float(v) for k, v in result.items() if np.ndim(v) == 0}
        scalars["loss"] = evaluation.log_loss(probs, labels)  # of the model's own outputs
        return scalars

    def host(self, tree):
        """A host-side view of a replicated tree (pmap keeps one copy per device)."""
        return self.placement.unreplicate(tree) if self.placement.strategy == "pmap" else tree

    # --- the loop ---------------------------------------------------------------

    def train_and_evaluate(self) -> dict[str, float]:
        writer, hooks = writer_and_hooks(self.workdir, self.total_steps, self.config.train.profile)
        train_iter = self.train_iterator()
        progress, resume_step, carry = Progress(), self.checkpoints.latest_step(), None
        if resume_step is not None:
            progress = Progress(**self.checkpoints.read_meta(resume_step)["progress"])
        last_val: dict[str, float] = {}
        for index, (name, stage, num_steps) in enumerate(self.plan):
            if index < progress.stage:
                continue
            step = self.step_for(stage, num_steps)
            state = self.fresh_state(step)
            if resume_step is not None:  # the checkpoint holds this stage's state
                state, data_state, _ = self.checkpoints.restore(resume_step, jax.device_get(state))
                train_iter.set_state(data_state)
                logging.info("resumed at step %d in stage %r", resume_step, name)
                resume_step = None
            elif carry is not None:  # a new stage continues from the last one's weights
                state = state.replace(params=carry.params, rest=carry.rest, step=carry.step)
                progress = Progress(stage=index, stage_start=int(carry.step), best=progress.best)
            if not progress.stage_done:
                train_fn, eval_fn = classifier.compile_steps(
                    step, self.placement, flip_tta=self.config.eval.flip_tta
                )
                train_fn = self.compiled.pop(name, train_fn)  # compiled by the memory check
                state, last_val = self._run_stage(
                    name,
                    stage,
                    num_steps,
                    train_fn,
                    eval_fn,
                    state,
                    train_iter,
                    progress,
                    writer,
                    hooks,
                )
            carry = state
        self.checkpoints.wait()
        writer.flush()
        return last_val

    def _run_stage(
        self, name, stage, num_steps, train_fn, eval_fn, state, train_iter, progress, writer, hooks
    ):
        """Runs one stage to its end or early stop; returns the host state and last val metrics."""
        config = self.config
        plateau = (
            optim.Plateau(**progress.plateau)
            if progress.plateau
            else optim.Plateau(
                stage.plateau_factor, stage.plateau_patience, stage.early_stopping_patience
            )
        )
        lr_schedule = optim.schedule(stage, self.steps_per_epoch, num_steps)
        last_val: dict[str, float] = {}

        def learning_rate(step: int) -> dict[str, float]:
            return {
                "train/learning_rate": float(lr_schedule(step - progress.stage_start))
                * plateau.scale
            }

        def evaluate(step: int, state):
            nonlocal last_val
            if self.val_set is None:
                return state, False
            last_val = self.validate(eval_fn, state)
            writer.write_scalars(step, {f"val/{k}": v for k, v in last_val.items()})
            stop = plateau.update(last_val["loss"])
            state = state.replace(lr_scale=jnp.full_like(state.lr_scale, plateau.scale))
            if last_val[config.train.best_metric] > progress.best:
                progress.best = last_val[config.train.best_metric]
                host = self.host(state)
                self.checkpoints.save_best(
                    step,
                    {"params": host.params, "rest": host.rest},
                    {"progress": dataclasses.asdict(progress)},
                    last_val,
                )
            if stop:
                logging.info("stage %r: early stop at step %d", name, step)
            return state, stop

        def save(step: int, state, done: bool) -> None:
            progress.plateau = dataclasses.asdict(plateau)
            progress.stage_done = done
            self.checkpoints.save(
                step,
                self.host(state),
                train_iter.get_state(),
                {"progress": dataclasses.asdict(progress)},
            )

        logging.info(
            "stage %r: steps %d to %d", name, progress.stage_start, progress.stage_start + num_steps
        )
        state = self.placement.put_state(state.replace(lr_scale=np.float32(plateau.scale)))
        state = run_steps(
            train_fn,
            state,
            train_iter,
            self.placement,
            stage_start=progress.stage_start,
            end=progress.stage_start + num_steps,
            every=Every(
                log=config.train.log_every_steps,
                evaluate=max(1, round(config.train.eval_every_epochs * self.steps_per_epoch)),
                checkpoint=config.train.checkpoint_every_steps,
            ),
            writer=writer,
            hooks=hooks,
            evaluate=evaluate,
            save=save,
            scalars=learning_rate,
        )
        return jax.device_get(self.host(state)), last_val


def use_compilation_cache(directory: str) -> None:
    """Keeps compiled programs in ``directory`` ('' leaves JAX's setting as it is), so a
    relaunch (a resume, a preempted TPU slice, the same config on another host) loads
    its steps instead of compiling them again: JAX's persistent compilation cache."""
    if directory:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        compilation_cache.reset_cache()  # takes effect even after a first compilation


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains per ``config``, writing checkpoints and summaries to ``workdir``.

    The work directory is locked first (`lock.hold`): a second process is refused
    before it reads anything the first is writing.
    """
    use_compilation_cache(config.train.get("compilation_cache_dir", ""))
    with lock.hold(workdir):
        return Trainer(config, workdir).train_and_evaluate()
