"""A config's train and eval steps lowered for GPUs and TPUs, on any host, and what is in them.

The steps are the ones training compiles (`classifier.compile_steps`), traced for the
target platform (`kernels.platform.tracing_for`) and exported with `jax.export`, which
needs no accelerator. `forbidden_calls` finds what must never run inside a step there:
oneDNN's CPU-only kernels, and solver (LU, Cholesky) library calls, which an innocent
`jnp.linalg` call brings in. `census` counts the ops that carry the work, so a change in
the lowered program shows as a changed count (tests/lowering_census.json).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence

import jax
import ml_collections

from skinjax.kernels import platform
from skinjax.tools import benchmark
from skinjax.train import build, classifier

PLATFORMS = ("cuda", "tpu")
# Substrings of custom-call targets that are CPU-only or a solver library's.
FORBIDDEN = ("onednn", "cpu", "lapack", "solver", "getrf", "potrf", "geqrf", "lu_pivots")
COUNTED = ("convolution", "dot_general")


def export_steps(
    config: ml_collections.ConfigDict,
    *,
    platforms: Sequence[str] = PLATFORMS,
    batch_size: int = 2,
    num_classes: int = 2,
) -> dict[str, jax.export.Exported]:
    """``{"cuda/stage1/train": ..., "cuda/eval": ..., "tpu/stage1/train": ...}``: every
    stage's train step and the eval step (the same in every stage), exported for each of
    ``platforms`` at the config's image size and dtype, from weights that are shapes only
    (``pretrained`` is not read).

    Each step is traced once, for the first platform, and lowered for each: the
    platforms must pick the same forms (GPUs and TPUs do). One module per platform, as a
    multi-platform module holds every op once per platform.
    """
    config = config.copy_and_resolve_references()
    config.model.pretrained = ""
    exported = {}
    with platform.tracing_for(platforms[0]):
        for stage, _, _ in build.stage_plan(config, steps_per_epoch=1):
            placement, model, step = benchmark.build_step(
                config, stage, num_classes, abstract=True
            )
            state, batch = classifier.train_inputs(
                model, step, placement, batch_size, config.data.image_size
            )
            train_fn, eval_fn = classifier.compile_steps(
                step, placement, flip_tta=config.eval.flip_tta
            )
            for target in platforms:
                export = functools.partial(jax.export.export, platforms=[target])
                exported[f"{target}/{stage}/train"] = export(train_fn)(state, batch)
                if f"{target}/eval" not in exported:
                    exported[f"{target}/eval"] = export(eval_fn)(state, batch)
    return exported


def custom_calls(module_text: str) -> dict[str, int]:
    """The custom-call targets in a lowered module's text, with their counts."""
    return dict(sorted(Counter(re.findall(r"custom_call @([\w.$-]+)", module_text)).items()))


def census(exported: jax.export.Exported) -> dict:
    """Convolutions, dot_generals and custom calls (by target) in the lowered module's
    text: an op in a function called twice counts once, as this tracks the program, not
    its FLOPs."""
    text = exported.mlir_module()  # deserialised from bytecode: once per module
    counts: dict = {op: len(re.findall(rf"stablehlo\.{op}\b", text)) for op in COUNTED}
    counts["custom_calls"] = custom_calls(text)
    return counts


def forbidden(census: dict) -> list[str]:
    """The custom-call targets of a `census` that must not run in a GPU or TPU step."""
    return [t for t in census["custom_calls"] if any(f in t.lower() for f in FORBIDDEN)]


def config_census(
    config: ml_collections.ConfigDict, dtypes: Sequence[str] = tuple(build.DTYPES), **kwargs
) -> dict[str, dict]:
    """``{"float32/cuda/stage1/train": census, ...}``: `export_steps` in each of ``dtypes``."""
    result = {}
    for dtype in dtypes:
        config = config.copy_and_resolve_references()
        config.model.dtype = dtype
        for name, exported in export_steps(config, **kwargs).items():
            result[f"{dtype}/{name}"] = census(exported)
    return result
