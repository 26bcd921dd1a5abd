"""Layers shared by the classifiers, built to match their torchvision counterparts.

A classifier builds every layer through one `Layers` factory, so the options every model
accepts (compute dtype, parameter dtype, the BatchNorm axis name) reach every layer, and
BatchNorm and initialisation follow torchvision, whose weights the models import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
Activation = Callable[[Array], Array]

_DRAW = 1 << 18  # normals drawn per random call in `conv_init`


def conv_init(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    """torchvision's convolution init, kaiming_normal_(mode="fan_out", nonlinearity="relu").

    Normals are drawn in fixed-size blocks so that one random kernel compiles for every
    shape: drawing each shape directly compiles a threefry kernel per parameter shape
    (0.2-1.5 s each on CPU), which made building a model 5x slower.
    """
    size = math.prod(shape)
    draws = [
        jax.random.normal(jax.random.fold_in(key, i), (_DRAW,), dtype)
        for i in range(-(-size // _DRAW))
    ]
    fan_out = shape[-1] * math.prod(shape[:-2])  # HWIO kernels, or (in, out) for 1x1.
    return jnp.concatenate(draws)[:size].reshape(shape) * math.sqrt(2.0 / fan_out)


def _to_float32(args: tuple, /, **_) -> tuple:
    """BatchNorm's dtype promotion, fixed to float32: bf16 statistics lose too much."""
    return tuple(None if a is None else jnp.asarray(a, jnp.float32) for a in args)


class PointwiseConv(nnx.Linear):
    """A 1x1 convolution as a matmul over the channel axis of NHWC input.

    On CPU, XLA's 1x1 convolution is slower than a matmul, most in the backward pass: a
    ResNet-50 training step is 1.8x faster this way, its forward pass 1.1x. The matmul is
    as fast on GPU and TPU. The kernel is stored as (in, out), so importing a torch
    (out, in, 1, 1) weight is a squeeze and a transpose.
    """

    def __init__(self, in_features: int, out_features: int, *, stride: int = 1, **kwargs):
        super().__init__(in_features, out_features, **kwargs)
        self.stride = stride

    def __call__(self, x: Array) -> Array:
        # A strided 1x1 convolution without padding reads every stride-th pixel.
        x = x[:, :: self.stride, :: self.stride]
        # A 2D matmul: a dot on the 4D array is up to 3x slower in the backward pass on CPU.
        y = super().__call__(x.reshape(-1, x.shape[-1]))
        return y.reshape(*x.shape[:-1], y.shape[-1])


def grouped_conv(
    lhs: Array,
    rhs: Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    **kwargs,
) -> Array:
    """`lax.conv_general_dilated`, with depthwise convolutions as sums of shifted products.

    XLA's CPU depthwise convolution is 5-30x slower forward and 2-10x slower backward
    than k*k shifted multiply-adds, which XLA fuses into one loop (measured on
    EfficientNet-Lite0's shapes, docs/benchmarks.md). The sum is the same function on
    every backend; other convolutions go to lax unchanged.
    """
    channels, (kh, kw, per_group, out) = lhs.shape[-1], rhs.shape
    plain = lhs_dilation not in (None, (1, 1)) or rhs_dilation not in (None, (1, 1))
    if feature_group_count != channels or per_group != 1 or out != channels or plain:
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            **kwargs,
        )
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
    sy, sx = window_strides
    x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    out_h = (x.shape[1] - kh) // sy + 1
    out_w = (x.shape[2] - kw) // sx + 1
    total = None
    for i in range(kh):
        for j in range(kw):
            window = x[:, i : i + sy * (out_h - 1) + 1 : sy, j : j + sx * (out_w - 1) + 1 : sx]
            term = window * rhs[i, j, 0]
            total = term if total is None else total + term
    return total


@dataclasses.dataclass(frozen=True)
class Layers:
    """Builds convolutions, BatchNorms and dense layers with a model's shared options.

    BatchNorm defaults match torch.nn.BatchNorm2d: epsilon 1e-5 and running averages
    updated with torch momentum 0.1, i.e. flax momentum 0.9 (torch updates the running
    variance with the unbiased batch variance, flax with the biased one: a factor
    n / (n - 1) on n = batch x height x width values). Statistics and normalisation are
    float32 whatever the compute dtype; the output is in the compute dtype.
    """

    rngs: nnx.Rngs
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    bn_axis_name: str | None = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    same_padding: bool = False  # TensorFlow 'SAME' padding instead of torch's k // 2.

    def conv(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int = 1,
        groups: int = 1,
        padding: int | tuple[int, int] | None = None,
        use_bias: bool = False,
        kernel_init: nnx.Initializer = conv_init,
    ) -> nnx.Module:
        """A convolution, square unless `kernel_size` is a (height, width) pair.

        `padding` is per side, (height, width) or one for both, as torch's Conv2d takes
        it; by default k // 2, or TensorFlow's 'SAME' with `same_padding`. 1x1 ones
        without groups or padding become a `PointwiseConv`.
        """
        common = dict(
            use_bias=use_bias,
            kernel_init=kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
        )
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        same = self.same_padding and padding is None
        if padding is None:
            padding = (kernel[0] // 2, kernel[1] // 2)
        elif isinstance(padding, int):
            padding = (padding, padding)
        if kernel == (1, 1) and groups == 1 and padding == (0, 0):
            return PointwiseConv(in_features, out_features, stride=stride, **common)
        return nnx.Conv(
            in_features,
            out_features,
            kernel,
            strides=stride,
            padding="SAME" if same else tuple((p, p) for p in padding),
            feature_group_count=groups,
            conv_general_dilated=grouped_conv,
            **common,
        )

    def norm(self, features: int) -> nnx.BatchNorm:
        return nnx.BatchNorm(
            features,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            promote_dtype=_to_float32,
            rngs=self.rngs,
        )

    def dense(self, in_features: int, out_features: int) -> nnx.Linear:
        return nnx.Linear(
            in_features,
            out_features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
        )


class ConvNorm(nnx.Module):
    """Convolution, BatchNorm and an optional activation (torchvision's Conv2dNormActivation)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | tuple[int, int],
        *,
        layers: Layers,
        stride: int = 1,
        groups: int = 1,
        padding: int | tuple[int, int] | None = None,
        activation: Activation | None = None,
    ):
        self.conv = layers.conv(
            in_features, out_features, kernel_size, stride=stride, groups=groups, padding=padding
        )
        self.norm = layers.norm(out_features)
        self.activation = activation

    def __call__(self, x: Array) -> Array:
        x = self.norm(self.conv(x))
        return x if self.activation is None else self.activation(x)


def global_average_pool(x: Array) -> Array:
    """Mean over height and width, accumulated in float32."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
