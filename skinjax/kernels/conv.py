"""2D convolutions through oneDNN on CPU, as XLA FFI custom calls with a custom VJP.

XLA:CPU converts bfloat16 convolutions to float32 ones and runs their weight gradient
at about half a matmul's rate; oneDNN's convolutions (the ones torch runs on CPU) use
the bfloat16 dot-product instructions of AVX-512 and AMX processors, about twice as fast.
Models call `conv2d` (and for inference `conv2d_bias`, which adds a bias, a residual
and a ReLU in the same call) where `supports` holds (see `onednn.available`), elsewhere
`jax.lax.conv_general_dilated`.

Products accumulate in float32 and are rounded to the activations' dtype, as XLA's own
convolution and torch.autocast do: with bfloat16 operands, returning float32 instead
made the ResNet-50 train step 7% slower (BatchNorm then reads twice the bytes). The
kernel gradient accumulates in float32 and is returned in the kernel's dtype: a float32
kernel of bfloat16 activations gets its float32 gradient, never rounded to bfloat16.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from skinjax.kernels import onednn

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]


def supports(x: Array, w: Array, feature_group_count: int) -> bool:
    """Whether `conv2d` computes this convolution: 2D, undilated, f32/bf16, grouped or not.

    Groups (depthwise convolutions among them) follow from the shapes: an HWIO kernel of
    ``I`` input channels on ``C``-channel activations has ``C / I`` of them; oneDNN 3.2
    has no bfloat16 grouped convolution on NHWC activations, so grouped ones are float32
    only (`ops.conv2d` runs bfloat16 ones in float32). The kernel
    is in ``x``'s dtype or float32 (a float32 parameter with bfloat16 activations: oneDNN
    casts it as it reorders it, so no cast runs before).
    """
    return (
        x.ndim == 4
        and w.ndim == 4
        and feature_group_count * w.shape[2] == x.shape[-1]
        and w.shape[3] % feature_group_count == 0
        and (feature_group_count == 1 or x.dtype == jnp.float32)
        and x.dtype in onednn.dtypes()
        and w.dtype in (x.dtype, jnp.dtype(jnp.float32))
        and onednn.available()
    )


def _call(handler: str, operands, shape, dtype, strides, padding: Padding, **attrs) -> Array:
    onednn.loaded()
    (top, bottom), (left, right) = padding
    # vmap (rare for whole images) loops over the mapped axis.
    call = jax.ffi.ffi_call(
        onednn.target(handler), jax.ShapeDtypeStruct(shape, dtype), vmap_method="sequential"
    )
    return call(
        *operands,
        strides=np.asarray(strides, np.int64),
        padding=np.asarray([top, bottom, left, right], np.int64),
        **attrs,
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
    return _call("ConvForward", (x, w), shape, x.dtype, strides, padding, relu=False)


def _conv2d_fwd(x, w, strides, padding):
    return conv2d(x, w, strides, padding), (x, w)


def _conv2d_bwd(strides, padding, residuals, g):
    x, w = residuals
    dx = _call("ConvBackwardData", (g, w), x.shape, x.dtype, strides, padding)
    dw = _call("ConvBackwardWeights", (x, g), w.shape, jnp.float32, strides, padding)
    return dx, dw.astype(w.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 6))
def conv2d_bias(
    x: Array,
    w: Array,
    bias: Array,
    strides: tuple[int, int],
    padding: Padding,
    residual: Array | None = None,
    relu: bool = False,
) -> Array:
    """``conv2d(x, w) + bias (+ residual)``, then an optional ReLU, in one oneDNN call.

    The float32 ``bias`` (one per output channel), the residual (the result's shape and
    dtype) and the ReLU apply to the float32 accumulator as it is written: inference
    through a convolution, a BatchNorm folded into it and a residual block's tail is one
    pass over memory instead of three.
    """
    shape = _output_shape(x, w, strides, padding)
    operands = (x, w, bias) if residual is None else (x, w, bias, residual)
    return _call("ConvForward", operands, shape, x.dtype, strides, padding, relu=relu)


def _conv2d_bias_fwd(x, w, bias, strides, padding, residual, relu):
    y = conv2d_bias(x, w, bias, strides, padding, residual, relu)
    return y, (x, w, y, residual)


def _conv2d_bias_bwd(strides, padding, relu, residuals, g):
    x, w, y, residual = residuals
    if relu:
        g = jnp.where(y > 0, g, jnp.zeros_like(g))
    dx, dw = _conv2d_bwd(strides, padding, (x, w), g.astype(x.dtype))
    d_bias = jnp.sum(g, axis=(0, 1, 2), dtype=jnp.float32)
    return dx, dw, d_bias, None if residual is None else g.astype(residual.dtype)


conv2d_bias.defvjp(_conv2d_bias_fwd, _conv2d_bias_bwd)
