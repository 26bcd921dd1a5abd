"""2D convolutions through oneDNN on CPU, as XLA FFI custom calls with a custom VJP.

XLA:CPU converts bfloat16 convolutions to float32 ones and runs their weight gradient
at about half a matmul's rate; oneDNN's convolutions (the ones torch runs on CPU) use
the bfloat16 dot-product instructions of AVX-512 and AMX processors, about twice as fast.
Models call `conv2d` where `supports` holds (see `onednn.available`), elsewhere
`jax.lax.conv_general_dilated`.

Products accumulate in float32 and are rounded to the operands' dtype, as XLA's own
convolution and torch.autocast do: with bfloat16 operands, returning float32 instead
made the ResNet-50 train step 7% slower (BatchNorm then reads twice the bytes). The
kernel gradient accumulates in float32 before it is cast to the kernel's dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skinjax.kernels import onednn

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]

_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def supports(x: Array, w: Array, feature_group_count: int, dilations: Sequence) -> bool:
    """Whether `conv2d` computes this convolution: 2D, no groups or dilation, f32/bf16."""
    return (
        x.ndim == 4
        and w.ndim == 4
        and feature_group_count == 1
        and all(d in (None, (1, 1)) for d in dilations)
        and x.dtype == w.dtype
        and x.dtype in _DTYPES
        and onednn.available()
    )


def _call(handler: str, a: Array, b: Array, shape, dtype, strides, padding: Padding) -> Array:
    onednn.loaded()
    (top, bottom), (left, right) = padding
    # vmap (rare for whole images) loops over the mapped axis.
    call = jax.ffi.ffi_call(
        onednn.target(handler), jax.ShapeDtypeStruct(shape, dtype), vmap_method="sequential"
    )
    return call(
        a,
        b,
        strides=np.asarray(strides, np.int64),
        padding=np.asarray([top, bottom, left, right], np.int64),
    )


def _output_shape(x: Array, w: Array, strides, padding: Padding) -> tuple[int, ...]:
    (kh, kw, _, out), (sh, sw) = w.shape, strides
    (top, bottom), (left, right) = padding
    height = (x.shape[1] + top + bottom - kh) // sh + 1
    width = (x.shape[2] + left + right - kw) // sw + 1
    return (x.shape[0], height, width, out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: Array, w: Array, strides: tuple[int, int], padding: Padding) -> Array:
    """NHWC input, HWIO kernel, explicit ((top, bottom), (left, right)) padding."""
    shape = _output_shape(x, w, strides, padding)
    return _call("ConvForward", x, w, shape, x.dtype, strides, padding)


def _conv2d_fwd(x, w, strides, padding):
    return conv2d(x, w, strides, padding), (x, w)


def _conv2d_bwd(strides, padding, residuals, g):
    x, w = residuals
    dx = _call("ConvBackwardData", g, w, x.shape, x.dtype, strides, padding)
    dw = _call("ConvBackwardWeights", x, g, w.shape, jnp.float32, strides, padding)
    return dx, dw.astype(w.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
