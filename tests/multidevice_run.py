r"""Trains a tiny classifier a few steps under one parallel setting; prints JSON.

`tests/test_parallel.py` runs this in subprocesses, because the number of CPU devices
and the distributed runtime are fixed when JAX initialises:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 \
        python tests/multidevice_run.py --folder DIR --out OUT devices
    # one per process, all at once:
    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python tests/multidevice_run.py --folder DIR --out OUT distributed \
        --port 12345 --num_processes 2 --process_id 0

Each run trains from the same initial weights on the same fixed global batches (no
augmentation, so every strategy sees identical inputs), then predicts the validation
images. It prints ``{run name: {"loss": [...], "probs": [[...]], "state": npz path}}``
and writes the final parameters and BatchNorm statistics to the npz file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from configs import smoke
from skinjax import config as base_config
from skinjax import parallel
from skinjax.data import pipeline
from skinjax.train import classifier, evaluation, loop

NUM_STEPS = 4
GLOBAL_BATCH = 8
IMAGE_SIZE = 32


def make_config(folder: str, strategy: str) -> ml_collections.ConfigDict:
    """The smoke model (ResNet-18, width 8) at 32 px, augmentation off, one SGD stage.

    SGD, not Adam: Adam divides by the gradient's own scale, which would hide a sum
    where a mean belongs and blow rounding noise in near-zero gradients up to ~lr.
    """
    config = smoke.get_config()
    config.data.update(source="folders", dir=folder)
    config.data.image_size = IMAGE_SIZE
    config.data.val_fraction = 0.25  # 18 train and 6 validation images
    config.augment.update(hflip=False, vflip=False, rotation=0.0, translation=0.0, zoom=0.0)
    config.stages = {"stage1": base_config.stage_config(optimizer="sgd", learning_rate=1e-3)}
    config.train.batch_size = GLOBAL_BATCH
    config.parallel.strategy = strategy
    return config


def fixed_batches(trainer: loop.Trainer) -> list[dict[str, np.ndarray]]:
    """``NUM_STEPS`` global batches, the same in every process whatever its index."""
    ds = pipeline.train_dataset(trainer.train_set, trainer.read, batch_size=GLOBAL_BATCH, seed=0)
    batches = iter(ds)
    return [next(batches) for _ in range(NUM_STEPS)]


def local_part(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous share of a global batch."""
    n = GLOBAL_BATCH // jax.process_count()
    start = jax.process_index() * n
    return {k: v[start : start + n] for k, v in batch.items()}


def flatten(tree: Any) -> dict[str, np.ndarray]:
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def run(folder: str, strategy: str, devices: Sequence[jax.Device], out: str) -> dict[str, Any]:
    """Trains ``NUM_STEPS`` steps on ``devices`` the way `loop.Trainer` builds a stage."""
    config = make_config(folder, strategy)
    trainer = loop.Trainer(config, tempfile.mkdtemp(prefix="workdir", dir=out))
    placement = parallel.Placement(strategy, devices)
    trainer.placement = placement  # the Trainer's own spans every device
    step = trainer.step_for(config.stages.stage1, NUM_STEPS)
    train_fn, eval_fn = classifier.compile_steps(step, placement, flip_tta=False)
    state = placement.put_state(trainer.fresh_state(step))
    losses = []
    for batch in fixed_batches(trainer):
        state, metrics = train_fn(state, placement.put_batch(local_part(batch)))
        losses.append(float(placement.unreplicate(metrics)["loss"].compute()))
    probs = evaluation.predict(
        eval_fn,
        state,
        trainer.val_set,
        placement,
        trainer.read,
        batch_size=GLOBAL_BATCH,
    )
    host = placement.unreplicate(state)
    path = os.path.join(out, f"{strategy}{len(devices)}.npz")
    np.savez(path, **flatten({"params": host.params, "rest": host.rest}))
    return {"loss": losses, "probs": probs.tolist(), "state": path}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="folder-per-class images")
    parser.add_argument("--out", required=True, help="directory for the npz files")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("devices", help="mesh and pmap over 1 and over 4 local devices")
    dist = sub.add_parser("distributed", help="one process of a jax.distributed job")
    dist.add_argument("--port", type=int, required=True)
    dist.add_argument("--num_processes", type=int, required=True)
    dist.add_argument("--process_id", type=int, required=True)
    args = parser.parse_args(argv)
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    results = {}
    if args.mode == "devices":
        devices = jax.devices()
        for strategy in parallel.STRATEGIES:
            for n in (1, len(devices)):
                results[f"{strategy}{n}"] = run(args.folder, strategy, devices[:n], args.out)
    else:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        address = f"127.0.0.1:{args.port}"
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=args.num_processes,
            process_id=args.process_id,
            cluster_detection_method="deactivate",
            coordinator_bind_address=address,  # loopback only
            initialization_timeout=60,
        )
        results["mesh"] = run(args.folder, "mesh", jax.devices(), args.out)
        jax.distributed.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
