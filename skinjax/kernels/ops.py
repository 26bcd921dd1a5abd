"""The ops the models call, each choosing its form for the platform being traced.

On CPU the fast forms are oneDNN's primitives (`conv`, `batch_norm`, `pool`: XLA FFI
custom calls) where `onednn.available()`, otherwise the hand-written XLA forms of
`xla`; on GPUs and TPUs XLA's native ones (depthwise convolutions included) and no CPU
custom call. Every form computes the same values, so `skinjax.models.layers` holds
modules only and reads the same on every backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from skinjax.kernels import batch_norm, conv, platform, pool, xla

Array = jax.Array
Padding = Sequence[tuple[int, int]]  # (low, high) per spatial axis

matmul = xla.matmul  # the same form everywhere: bfloat16 products, float32 result


@dataclasses.dataclass(frozen=True)
class Epilogue:
    """``y * scale + shift (+ residual)``, then an optional ReLU, per output channel of a conv.

    What follows a convolution in inference: a BatchNorm with running averages is this
    affine map, and a residual block adds its shortcut and applies ReLU. A convolution
    folds ``scale`` into its kernel and ``shift`` into its bias (as torch.compile and
    TensorRT do for inference) and runs the rest on its accumulator: on CPU one oneDNN
    call instead of a convolution and an XLA pass over its output.
    """

    scale: Array  # float32, one per output channel
    shift: Array
    residual: Array | None = None
    relu: bool = False

    def fold(self, kernel: Array, bias: Array | None) -> tuple[Array, Array]:
        """A kernel (output channels last) and float32 bias computing ``y * scale + shift``."""
        shift = self.shift if bias is None else self.shift + bias.astype(jnp.float32) * self.scale
        return (kernel.astype(jnp.float32) * self.scale).astype(kernel.dtype), shift

    def finish(self, y: Array) -> Array:
        """Adds the residual and applies ReLU to ``y``, the folded convolution plus bias."""
        return add_relu(y, self.residual, self.relu)


def add_relu(y: Array, residual: Array | None, relu: bool) -> Array:
    """``y + residual`` (if given), then ReLU (if asked), in ``y``'s dtype."""
    y = y if residual is None else y + residual.astype(y.dtype)
    return jax.nn.relu(y) if relu else y


def conv2d(
    x: Array, kernel: Array, strides: tuple[int, int], padding: Padding, groups: int = 1
) -> Array:
    """An NHWC x HWIO convolution with explicit padding in ``x``'s dtype, on the fastest form.

    - 2D convolutions go to oneDNN where `kernels.conv.supports` them (tracing for the
      CPU; bfloat16 ones 2x faster than XLA's), which takes a float32 kernel as it is.
    - Depthwise convolutions on CPU go to oneDNN too, in float32 whatever the activations'
      dtype (it has no bfloat16 form for them): 4-5x faster to train than a sum of k*k
      shifted products and 9x less memory, as the sum's backward pass kept k*k shifted
      copies of every input alive (EfficientNet-Lite0's train step 6.2 GiB of XLA
      temporaries at batch 32, docs/benchmarks.md). On a CPU without oneDNN they are
      that sum, XLA's own depthwise convolution being 5-30x slower forward there; on
      GPUs and TPUs they are XLA's native convolution.
    - 1x1 convolutions without padding are matmuls over the channel axis,
      returned in float32 (see `xla.matmul`): XLA's own 1x1 convolution is slower than that
      matmul on CPU, most in the backward pass (a train step 1.8x), and the matmul is as
      fast on GPU and TPU.
    - The rest go to `jax.lax.conv_general_dilated`.
    """
    (kh, kw, per_group, out), channels = kernel.shape, x.shape[-1]
    padding = tuple(map(tuple, padding))
    if conv.supports(x, kernel, groups):
        return conv.conv2d(x, kernel, tuple(strides), padding)
    depthwise = groups == channels and per_group == 1 and out == channels
    if depthwise and conv.supports(jax.ShapeDtypeStruct(x.shape, jnp.float32), kernel, groups):
        y = conv.conv2d(x.astype(jnp.float32), kernel, tuple(strides), padding)
        return y.astype(x.dtype)
    if depthwise and platform.traced() == "cpu":
        return xla.shifted_sum_depthwise(x, kernel, strides, padding)
    kernel = kernel.astype(x.dtype)
    if (kh, kw, groups) == (1, 1, 1) and padding == ((0, 0), (0, 0)):
        # A strided 1x1 convolution without padding reads every stride-th pixel; a
        # 2D matmul, as a dot on the 4D array is up to 3x slower backward on CPU.
        x = x[:, :: strides[0], :: strides[1]]
        return xla.matmul(x.reshape(-1, channels), kernel[0, 0]).reshape(*x.shape[:-1], out)
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        strides,
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def conv2d_epilogue(
    x: Array,
    kernel: Array,
    bias: Array | None,
    strides: tuple[int, int],
    padding: Padding,
    groups: int,
    epilogue: Epilogue,
) -> Array:
    """`conv2d` plus ``bias``, then ``epilogue``: on oneDNN one call that applies the
    folded scale and shift, the residual and ReLU to its accumulator."""
    kernel, shift = epilogue.fold(kernel, bias)
    if conv.supports(x, kernel, groups):
        residual = epilogue.residual
        residual = None if residual is None else residual.astype(x.dtype)
        return conv.conv2d_bias(
            x, kernel, shift, tuple(strides), tuple(map(tuple, padding)), residual, epilogue.relu
        )
    y = conv2d(x, kernel, strides, padding, groups).astype(jnp.float32) + shift
    return epilogue.finish(y).astype(x.dtype)


def batch_norm_train(
    x: Array, scale: Array, bias: Array, *, epsilon: float, relu: bool, axis_name: str | None, dtype
) -> tuple[Array, Array, Array]:
    """Training-mode BatchNorm over the last axis with float32 ``scale`` and ``bias``, then
    an optional ReLU: (output in ``dtype``, batch mean, biased batch variance). oneDNN's
    primitive where `batch_norm.supports` the input (statistics within one device),
    otherwise, and across the devices of ``axis_name``, `xla.batch_norm_train`."""
    if axis_name is None and batch_norm.supports(x):
        y, mean, var = batch_norm.batch_norm(x, scale, bias, epsilon, relu)
        return y.astype(dtype), mean, var
    return xla.batch_norm_train(x, scale, bias, epsilon, relu, axis_name, dtype)


def max_pool(x: Array, size: int = 3, stride: int = 2) -> Array:
    """A size x size max pool with stride and torch's padding of size // 2, in NHWC.

    On CPU oneDNN's pooling (`kernels.pool`), forward and backward; elsewhere
    `xla.max_pool`.
    """
    if pool.supports(x):
        return pool.max_pool(x, size, stride)
    return xla.max_pool(x, size, stride)
