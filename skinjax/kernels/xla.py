"""Hand-written XLA forms of the ops (`kernels.ops`) where autodiff's or XLA:CPU's own is
slow: each computes the same values as the plain `jax.lax` op, on every platform.

They are what `ops` runs wherever oneDNN does not: on a CPU without the extension,
inside `onednn.disabled()`, across devices, and (matmul, BatchNorm's gradient) on GPUs
and TPUs too. Measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


@jax.custom_vjp
def matmul(x: Array, w: Array) -> Array:
    """``x @ w`` for 2D operands, accumulated and returned in float32.

    With bfloat16 operands, both passes multiply in bfloat16 and accumulate in float32,
    as torch.autocast does. XLA:CPU runs such products at twice its float32 rate, but
    converts a bfloat16 matmul with a bfloat16 result, and the float32 x bfloat16
    products that autodiff of ``preferred_element_type`` gives, to float32 matmuls: a
    ResNet-50 bfloat16 train step is 1.2x faster this way, its eval step 1.9x. The
    float32 result feeds BatchNorm, which works in float32 anyway.
    """
    return jnp.dot(x, w, preferred_element_type=jnp.float32)


def _matmul_fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
    return matmul(x, w), (x, w)


def _matmul_bwd(residuals: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    x, w = residuals
    g = g.astype(x.dtype)
    dx = jnp.dot(g, w.T, preferred_element_type=jnp.float32)
    dw = jnp.dot(x.T, g, preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def shifted_sum_depthwise(x: Array, rhs: Array, strides, padding) -> Array:
    """Accumulates in float32, returns ``x``'s dtype.

    With bfloat16 terms XLA rounds every partial sum to bfloat16 (k*k roundings per
    element in each pass, 3x slower on CPU than float32); in float32 the only casts are
    the input's and the result's, fused into the same loops.
    """
    (kh, kw, _, _), (sy, sx) = rhs.shape, strides
    dtype, rhs = x.dtype, rhs.astype(jnp.float32)
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), *padding, (0, 0)))
    out_h = (x.shape[1] - kh) // sy + 1
    out_w = (x.shape[2] - kw) // sx + 1
    total = None
    for i in range(kh):
        for j in range(kw):
            window = x[:, i : i + sy * (out_h - 1) + 1 : sy, j : j + sx * (out_w - 1) + 1 : sx]
            term = window * rhs[i, j, 0]
            total = term if total is None else total + term
    return total.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def batch_norm_train(
    x: Array,
    scale: Array,
    bias: Array,
    epsilon: float,
    relu: bool,
    axis_name: str | None,
    dtype: jnp.dtype,
) -> tuple[Array, Array, Array]:
    """Training-mode BatchNorm over the last axis, then an optional ReLU.

    Statistics are float32, over all other axes and the devices of ``axis_name``.
    Returns the output in ``dtype`` and the batch mean and (biased) variance, which
    carry no gradient. The output has nnx.BatchNorm's values; the VJP is written out
    because autodiff of BatchNorm and ReLU makes XLA write and reread several
    full-size intermediates, where this one reads the input and the output gradient
    twice: on CPU, forward and backward 1.5x faster in float32, a ResNet-50 train step
    1.2x (and the same speed in bfloat16).
    """
    return _batch_norm_fwd(x, scale, bias, epsilon, relu, axis_name, dtype)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, relu, axis_name, dtype):
    x32, axes = x.astype(jnp.float32), tuple(range(x.ndim - 1))
    mean, mean_sq = jnp.mean(x32, axes), jnp.mean(x32 * x32, axes)
    if axis_name is not None:
        mean, mean_sq = jax.lax.pmean((mean, mean_sq), axis_name)
    var = jnp.maximum(mean_sq - mean * mean, 0.0)
    inv = jax.lax.rsqrt(var + epsilon)
    y = (x32 - mean) * (inv * scale) + bias
    y = jax.nn.relu(y) if relu else y
    return (y.astype(dtype), mean, var), (x, mean, inv, scale, bias)


def _batch_norm_bwd(epsilon, relu, axis_name, dtype, residuals, cotangents):
    del epsilon, dtype
    x, mean, inv, scale, bias = residuals
    x32, axes = x.astype(jnp.float32), tuple(range(x.ndim - 1))
    g = cotangents[0].astype(jnp.float32)
    if relu:
        g = jnp.where((x32 - mean) * (inv * scale) + bias > 0, g, 0.0)
    z = (x32 - mean) * inv
    d_scale, d_bias = jnp.sum(g * z, axes), jnp.sum(g, axes)
    count = x.size // x.shape[-1]
    mean_g, mean_gz = d_bias / count, d_scale / count
    if axis_name is not None:  # the statistics, and so their gradient, span the devices
        mean_g, mean_gz = jax.lax.pmean((mean_g, mean_gz), axis_name)
    dx = (scale * inv) * (g - mean_g - z * mean_gz)
    return dx.astype(x.dtype), d_scale, d_bias


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def _max_pool_slices(x: Array, size: int, stride: int) -> Array:
    pad = size // 2
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
    for axis in (1, 2):
        limit = x.shape[axis] - size + 1
        x = functools.reduce(
            jnp.maximum,
            [jax.lax.slice_in_dim(x, i, i + limit, stride, axis) for i in range(size)],
        )
    return x


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: Array, size: int, stride: int) -> Array:
    """``nnx.max_pool`` forward; the gradient is that of the same maxima taken over strided
    slices, first along height and then along width, computed in float32, as XLA's
    gradient of the pool (select-and-scatter) is 3.6x slower on CPU in float32 (5x in
    bfloat16). Gradients differ only between tied maxima, which share the gradient here
    instead of giving it to one.
    """
    pad = size // 2
    return nnx.max_pool(x, (size, size), strides=(stride, stride), padding=((pad, pad),) * 2)


def _max_pool_fwd(x: Array, size: int, stride: int) -> tuple[Array, Array]:
    return max_pool(x, size, stride), x


def _max_pool_bwd(size: int, stride: int, x: Array, g: Array) -> tuple[Array]:
    # In float32: XLA:CPU runs this fusion 6x slower on bfloat16 values.
    f32 = jnp.float32
    _, vjp = jax.vjp(lambda x: _max_pool_slices(x, size, stride), x.astype(f32))
    (dx,) = vjp(g.astype(f32))
    return (dx.astype(x.dtype),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
