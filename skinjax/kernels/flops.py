"""FLOP counts that see all the work, whichever kernels run.

XLA's cost analysis counts the operations of the HLO it is given, and oneDNN's kernels
(`skinjax.kernels.onednn`) are custom calls in it, which count as nothing:
asff_resnet50's forward pass read 0.04 GFLOPs per 224 px image with them and 8.2
without. Every FLOP figure skinjax shows (scripts/summary.py, the exported model card,
the benchmark) is counted here, on a trace with XLA's own kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.kernels import onednn


def count(fn: Callable, *args: Any) -> float:
    """FLOPs of one call of ``fn`` on ``args`` (arrays or `jax.ShapeDtypeStruct`s), a
    multiply-add counting two, as XLA's cost analysis counts the lowered program.

    ``fn`` is traced here with oneDNN disabled. A function jitted and called before
    keeps its cached trace (with oneDNN's calls) for the same shapes, so pass a plain
    function or one jitted anew; a trace that still holds oneDNN calls raises rather
    than report a figure that misses them.
    """
    with onednn.disabled():
        lowered = jax.jit(lambda *a: fn(*a)).lower(*args)
    if onednn.target("") in lowered.as_text():
        raise RuntimeError(
            "the FLOP count would miss oneDNN's kernels: the function was traced before "
            "with them; count a function jitted anew"
        )
    cost = lowered.cost_analysis()
    return float(cost.get("flops", 0.0)) if cost else 0.0


def forward(model: nnx.Module, image_size: int) -> float:
    """FLOPs of ``model``'s forward pass (as it is: train or eval mode) on one image.

    The state is an argument, not a constant of the trace, so a model of abstract
    arrays (`nnx.eval_shape`) serves, and no weights are copied into the program.
    """
    graphdef, state = nnx.split(model)
    image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return count(lambda state, x: nnx.merge(graphdef, state)(x), state, image)
