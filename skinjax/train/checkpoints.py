"""Checkpoints with orbax: the latest few for resuming, and the best by a validation metric.

A checkpoint holds the train state, the data iterator's position and a small JSON of
loop bookkeeping (stage, plateau and early-stopping counters) plus the model's identity,
so that a work directory holding another model's checkpoint is refused with a clear
error instead of failing deep inside a restore. Orbax writes each checkpoint to a
temporary directory and renames it when complete: a run killed mid-save resumes from
the last complete checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

IDENTITY_KEYS = ("model", "num_classes", "classes", "image_size")
LATEST, BEST = "checkpoints", "best"  # the work directory's two checkpoint folders


class CheckpointMismatch(ValueError):
    """The work directory's checkpoint belongs to a different model or data."""


def check_identity(saved: dict[str, Any], expected: dict[str, Any], directory: str) -> None:
    different = {
        k: (saved.get(k), expected[k]) for k in IDENTITY_KEYS if saved.get(k) != expected[k]
    }
    if different:
        details = "; ".join(
            f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in different.items()
        )
        raise CheckpointMismatch(
            f"{directory} holds a checkpoint of another model ({details}). "
            "Use a new --workdir, or the config that wrote it."
        )


def _normalise(value: Any) -> Any:
    """JSON round-trips tuples as lists; compare like with like."""
    return list(value) if isinstance(value, tuple) else value


def check_workdir(workdir: str, identity: dict[str, Any]) -> None:
    """Raises `CheckpointMismatch` if ``workdir`` holds checkpoints of another model.

    It only reads (no directory is created), so a run can be refused before it has
    written anything.
    """
    for name, items in ((LATEST, ("state", "data", "meta")), (BEST, ("state", "meta"))):
        directory = os.path.join(os.path.abspath(workdir), name)
        if not os.path.isdir(directory):
            continue
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True), item_names=items
        )
        try:
            step = manager.latest_step()
            if step is None:
                continue
            args = ocp.args.Composite(meta=ocp.args.JsonRestore())
            meta = manager.restore(step, args=args)["meta"]
        finally:
            manager.close()
        check_identity(meta, {k: _normalise(v) for k, v in identity.items()}, directory)


class Checkpoints:
    def __init__(self, workdir: str, *, keep: int, best_metric: str, identity: dict[str, Any]):
        self.identity = {k: _normalise(v) for k, v in identity.items()}
        self.best_metric = best_metric
        self.latest = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), LATEST),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "data", "meta"),
        )
        self.best = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), BEST),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode="max", create=True
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, data: dict, meta: dict) -> None:
        self.latest.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data),
                meta=ocp.args.JsonSave({**meta, **self.identity}),
            ),
        )

    def save_best(self, step: int, state: Any, meta: dict, metrics: dict[str, float]) -> None:
        self.best.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({**meta, **self.identity}),
            ),
            metrics={self.best_metric: float(metrics[self.best_metric])},
        )

    def read_meta(self, step: int | None = None, *, best: bool = False) -> dict:
        manager = self.best if best else self.latest
        step = (
            manager.best_step() if best else (step if step is not None else manager.latest_step())
        )
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        check_identity(meta, self.identity, manager.directory)
        return meta

    def restore(self, step: int, target: Any) -> tuple[Any, dict, dict]:
        """(state, data iterator state, meta) of a checkpoint, shaped like ``target``."""
        self.read_meta(step)
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"], restored["meta"]

    def restore_best(self, target: Any) -> tuple[Any, dict]:
        step = self.best.best_step()
        if step is None:
            raise FileNotFoundError(f"no best checkpoint in {self.best.directory}")
        meta = self.read_meta(best=True)
        restored = self.best.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )
        return restored["state"], meta

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
