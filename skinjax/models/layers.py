"""Layers shared by the classifiers, built to match their torchvision counterparts.

A classifier builds every layer through one `Layers` factory, so the options every model
accepts (compute dtype, parameter dtype, the BatchNorm axis name) reach every layer, and
BatchNorm and initialisation follow torchvision, whose weights the models import.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from skinjax.kernels import batch_norm, conv, platform, pool

Array = jax.Array
Activation = Callable[[Array], Array]
Padding = Sequence[tuple[int, int]]  # (low, high) per spatial axis

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


class Dense(nnx.Linear):
    """``nnx.Linear`` on (batch, features) inputs through `matmul`, so its output is float32."""

    def __call__(self, x: Array) -> Array:
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        y = matmul(x, kernel)
        return y if bias is None else y + bias


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
      returned in float32 (see `matmul`): XLA's own 1x1 convolution is slower than that
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
        return _shifted_sum_depthwise(x, kernel, strides, padding)
    kernel = kernel.astype(x.dtype)
    if (kh, kw, groups) == (1, 1, 1) and padding == ((0, 0), (0, 0)):
        # A strided 1x1 convolution without padding reads every stride-th pixel; a
        # 2D matmul, as a dot on the 4D array is up to 3x slower backward on CPU.
        x = x[:, :: strides[0], :: strides[1]]
        return matmul(x.reshape(-1, channels), kernel[0, 0]).reshape(*x.shape[:-1], out)
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        strides,
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _convolve(
    layer: nnx.Module,
    x: Array,
    kernel: Array,
    strides: tuple[int, int],
    padding: Padding,
    groups: int,
    epilogue: Epilogue | None,
) -> Array:
    """``layer``'s convolution of `x` by `kernel`, plus its bias, then `epilogue`.

    The kernel stays in its parameter dtype: `conv2d` casts it where it is needed.
    """
    bias = None if layer.bias is None else layer.bias[...]
    x = x.astype(layer.dtype)
    if epilogue is None:
        y = conv2d(x, kernel, strides, padding, groups)
        return y if bias is None else y + bias.astype(y.dtype)
    kernel, shift = epilogue.fold(kernel, bias)
    if conv.supports(x, kernel, groups):
        residual = epilogue.residual
        residual = None if residual is None else residual.astype(x.dtype)
        return conv.conv2d_bias(
            x, kernel, shift, tuple(strides), tuple(map(tuple, padding)), residual, epilogue.relu
        )
    y = conv2d(x, kernel, strides, padding, groups).astype(jnp.float32) + shift
    return epilogue.finish(y).astype(x.dtype)


class Conv(nnx.Conv):
    """``nnx.Conv`` of NHWC input through `conv2d`, optionally followed by an `Epilogue`."""

    def __call__(self, x: Array, epilogue: Epilogue | None = None) -> Array:
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        padding = self.padding
        if isinstance(padding, str):
            padding = jax.lax.padtype_to_pads(x.shape[1:3], self.kernel_size, strides, padding)
        kernel = self.kernel[...]
        return _convolve(self, x, kernel, strides, padding, self.feature_group_count, epilogue)


class PointwiseConv(Dense):
    """A 1x1 convolution of NHWC input, stored as a dense (in, out) kernel.

    Importing a torch (out, in, 1, 1) weight is a squeeze and a transpose; see `conv2d`
    for how it runs.
    """

    def __init__(self, in_features: int, out_features: int, *, stride: int = 1, **kwargs):
        super().__init__(in_features, out_features, **kwargs)
        self.stride = stride

    def __call__(self, x: Array, epilogue: Epilogue | None = None) -> Array:
        kernel, no_padding = self.kernel[...][None, None], ((0, 0), (0, 0))
        return _convolve(self, x, kernel, (self.stride,) * 2, no_padding, 1, epilogue)


def _shifted_sum_depthwise(x: Array, rhs: Array, strides, padding) -> Array:
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


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm over the last axis, then an optional residual addition and ReLU.

    Same variables, defaults and running-average updates as nnx.BatchNorm, which it
    calls unchanged with running averages. In training, statistics within one device
    come from oneDNN where `kernels.batch_norm.supports` the input, otherwise, and across
    the devices of ``axis_name``, from `batch_norm_train`. `ConvNorm` folds the inference
    form into its convolution instead (`epilogue`).
    """

    def __init__(self, num_features: int, *, relu: bool = False, **kwargs):
        super().__init__(num_features, **kwargs)
        self.relu = relu

    def epilogue(self, residual: Array | None = None) -> Epilogue:
        """The affine map this BatchNorm is with running averages, then residual and ReLU."""
        mean, var, scale, bias = _to_float32(
            (self.mean[...], self.var[...], self.scale[...], self.bias[...])
        )
        scale = scale * jax.lax.rsqrt(var + self.epsilon)
        return Epilogue(scale, bias - mean * scale, residual, self.relu)

    def __call__(self, x: Array, residual: Array | None = None) -> Array:
        if self.use_running_average:
            return add_relu(super().__call__(x), residual, self.relu)
        scale, bias = _to_float32((self.scale[...], self.bias[...]))
        relu = self.relu and residual is None  # otherwise after the addition
        if self.axis_name is None and batch_norm.supports(x):
            y, mean, var = batch_norm.batch_norm(x, scale, bias, self.epsilon, relu)
            y = y.astype(self.dtype)
        else:
            y, mean, var = batch_norm_train(
                x, scale, bias, self.epsilon, relu, self.axis_name, self.dtype
            )
        y = add_relu(y, residual, self.relu and not relu)
        for average, batch in ((self.mean, mean), (self.var, var)):
            # set_value, not `average[...] =`: under a trace nnx's indexed assignment
            # asks each tracer for its sharding, whose error message walks the whole
            # jaxpr, a third of the time to trace a ResNet-50 train step.
            update = self.momentum * average[...] + (1 - self.momentum) * batch
            average.set_value(jax.lax.stop_gradient(update).astype(average.dtype))
        return y


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
    ) -> Conv | PointwiseConv:
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
        return Conv(
            in_features,
            out_features,
            kernel,
            strides=stride,
            padding="SAME" if same else tuple((p, p) for p in padding),
            feature_group_count=groups,
            **common,
        )

    def norm(self, features: int, *, relu: bool = False) -> BatchNorm:
        return BatchNorm(
            features,
            relu=relu,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            promote_dtype=_to_float32,
            rngs=self.rngs,
        )

    def dense(self, in_features: int, out_features: int) -> Dense:
        return Dense(
            in_features,
            out_features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
        )


class StemStagesHead(nnx.Module):
    """A backbone of ``stem``, ``stages`` (lists of blocks) and ``head`` submodules.

    Calling it gives every intermediate map by name: ``stem``, ``stage1`` ... ``head``.
    """

    stem: nnx.Module
    stages: nnx.List
    head: nnx.Module

    def __call__(self, x: Array) -> dict[str, Array]:
        x = self.stem(x)
        features = {"stem": x}
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x)
            features[f"stage{i + 1}"] = x
        features["head"] = self.head(x)
        return features


class ConvNorm(nnx.Module):
    """Convolution, BatchNorm and an optional activation (torchvision's Conv2dNormActivation).

    Called with a residual, it adds it before the activation (a residual block's tail). In
    inference the BatchNorm, residual and ReLU fold into the convolution (`Epilogue`).
    """

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
        fuse = activation is nnx.relu  # into BatchNorm's hand-written gradient
        self.norm = layers.norm(out_features, relu=fuse)
        self.activation = None if fuse else activation

    def __call__(self, x: Array, residual: Array | None = None) -> Array:
        if self.norm.use_running_average:
            y = self.conv(x, self.norm.epilogue(residual))
        else:
            y = self.norm(self.conv(x), residual)
        return y if self.activation is None else self.activation(y)


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


def max_pool(x: Array, size: int = 3, stride: int = 2) -> Array:
    """A size x size max pool with stride and torch's padding of size // 2, in NHWC.

    On CPU oneDNN's pooling (`kernels.pool`), forward and backward; elsewhere
    `_xla_max_pool`.
    """
    if pool.supports(x):
        return pool.max_pool(x, size, stride)
    return _xla_max_pool(x, size, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _xla_max_pool(x: Array, size: int, stride: int) -> Array:
    """``nnx.max_pool`` forward; the gradient is that of the same maxima taken over strided
    slices, first along height and then along width, computed in float32, as XLA's
    gradient of the pool (select-and-scatter) is 3.6x slower on CPU in float32 (5x in
    bfloat16). Gradients differ only between tied maxima, which share the gradient here
    instead of giving it to one.
    """
    pad = size // 2
    return nnx.max_pool(x, (size, size), strides=(stride, stride), padding=((pad, pad),) * 2)


def _max_pool_fwd(x: Array, size: int, stride: int) -> tuple[Array, Array]:
    return _xla_max_pool(x, size, stride), x


def _max_pool_bwd(size: int, stride: int, x: Array, g: Array) -> tuple[Array]:
    # In float32: XLA:CPU runs this fusion 6x slower on bfloat16 values.
    f32 = jnp.float32
    _, vjp = jax.vjp(lambda x: _max_pool_slices(x, size, stride), x.astype(f32))
    (dx,) = vjp(g.astype(f32))
    return (dx.astype(x.dtype),)


_xla_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def global_average_pool(x: Array) -> Array:
    """Mean over height and width, accumulated in float32."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
