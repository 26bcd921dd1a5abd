"""Max pooling (torch's MaxPool2d(size, stride, size // 2)) through oneDNN on CPU.

XLA:CPU's `reduce_window` ran ResNet-50's 3x3/2 pool at batch 16 in 45 ms in bfloat16
and 12 ms in float32; oneDNN's pooling primitive reads the input once. Training keeps the
positions of the maxima (oneDNN's workspace), and the gradient goes to those positions,
the first of tied maxima, as torch's does. Models call `max_pool` where `supports` holds
(see `onednn.available`), elsewhere `xla.max_pool`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from skinjax.kernels import onednn

Array = jax.Array


def supports(x: Array) -> bool:
    """Whether `max_pool` pools this input: NHWC, float32 or bfloat16."""
    return onednn.takes(x)


def _output_shape(x: Array, size: int, stride: int) -> tuple[int, ...]:
    n, h, w, c = x.shape
    pad = size // 2
    return (n, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1, c)


def _forward(x: Array, size: int, stride: int, training: bool) -> tuple[Array, Array]:
    onednn.loaded()
    if size < 1 or stride < 1:
        raise ValueError(f"max pool size and stride must be positive, not {size} and {stride}")
    bfloat16 = x.dtype == jnp.bfloat16
    query = "MaxPoolWorkspaceBytes"
    workspace = onednn.workspace_bytes(query, x.shape, size, stride, bfloat16) if training else 0
    outputs = (
        jax.ShapeDtypeStruct(_output_shape(x, size, stride), x.dtype),
        jax.ShapeDtypeStruct((workspace,), jnp.uint8),
    )
    call = jax.ffi.ffi_call(onednn.target("MaxPoolForward"), outputs, vmap_method="sequential")
    return call(x, size=size, stride=stride, training=training)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: Array, size: int, stride: int) -> Array:
    """A size x size max pool of NHWC ``x`` with a stride and size // 2 padding per side."""
    return _forward(x, size, stride, training=False)[0]


def _max_pool_fwd(x, size, stride):
    y, workspace = _forward(x, size, stride, training=True)
    return y, (x, workspace)  # x for its shape and dtype


def _max_pool_bwd(size, stride, residuals, g):
    x, workspace = residuals
    call = jax.ffi.ffi_call(
        onednn.target("MaxPoolBackward"),
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        vmap_method="sequential",
    )
    return (call(g.astype(x.dtype), workspace, size=size, stride=stride),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
