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

from skinjax.kernels import ops

Array = jax.Array
Activation = Callable[[Array], Array]
Padding = ops.Padding

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


class Dense(nnx.Linear):
    """``nnx.Linear`` on (batch, features) inputs through `ops.matmul`: a float32 output."""

    def __call__(self, x: Array) -> Array:
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        y = ops.matmul(x, kernel)
        return y if bias is None else y + bias


def _convolve(
    layer: nnx.Module,
    x: Array,
    kernel: Array,
    strides: tuple[int, int],
    padding: Padding,
    groups: int,
    epilogue: ops.Epilogue | None,
) -> Array:
    """``layer``'s convolution of `x` by `kernel`, plus its bias, then `epilogue`.

    The kernel stays in its parameter dtype: `ops.conv2d` casts it where it is needed.
    """
    bias = None if layer.bias is None else layer.bias[...]
    x = x.astype(layer.dtype)
    if epilogue is None:
        y = ops.conv2d(x, kernel, strides, padding, groups)
        return y if bias is None else y + bias.astype(y.dtype)
    return ops.conv2d_epilogue(x, kernel, bias, strides, padding, groups, epilogue)


class Conv(nnx.Conv):
    """``nnx.Conv`` of NHWC input through `ops.conv2d`, optionally then an `ops.Epilogue`."""

    def __call__(self, x: Array, epilogue: ops.Epilogue | None = None) -> Array:
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        padding = self.padding
        if isinstance(padding, str):
            padding = jax.lax.padtype_to_pads(x.shape[1:3], self.kernel_size, strides, padding)
        kernel = self.kernel[...]
        return _convolve(self, x, kernel, strides, padding, self.feature_group_count, epilogue)


class PointwiseConv(Dense):
    """A 1x1 convolution of NHWC input, stored as a dense (in, out) kernel.

    Importing a torch (out, in, 1, 1) weight is a squeeze and a transpose; see `ops.conv2d`
    for how it runs.
    """

    def __init__(self, in_features: int, out_features: int, *, stride: int = 1, **kwargs):
        super().__init__(in_features, out_features, **kwargs)
        self.stride = stride

    def __call__(self, x: Array, epilogue: ops.Epilogue | None = None) -> Array:
        kernel, no_padding = self.kernel[...][None, None], ((0, 0), (0, 0))
        return _convolve(self, x, kernel, (self.stride,) * 2, no_padding, 1, epilogue)


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm over the last axis, then an optional residual addition and ReLU.

    Same variables, defaults and running-average updates as nnx.BatchNorm, which it
    calls unchanged with running averages. In training, statistics within one device
    come from `ops.batch_norm_train` (oneDNN, or a hand-written XLA gradient across the
    devices of ``axis_name``). `ConvNorm` folds the inference
    form into its convolution instead (`epilogue`).
    """

    def __init__(self, num_features: int, *, relu: bool = False, **kwargs):
        super().__init__(num_features, **kwargs)
        self.relu = relu

    def epilogue(self, residual: Array | None = None) -> ops.Epilogue:
        """The affine map this BatchNorm is with running averages, then residual and ReLU."""
        mean, var, scale, bias = _to_float32(
            (self.mean[...], self.var[...], self.scale[...], self.bias[...])
        )
        scale = scale * jax.lax.rsqrt(var + self.epsilon)
        return ops.Epilogue(scale, bias - mean * scale, residual, self.relu)

    def __call__(self, x: Array, residual: Array | None = None) -> Array:
        if self.use_running_average:
            return ops.add_relu(super().__call__(x), residual, self.relu)
        scale, bias = _to_float32((self.scale[...], self.bias[...]))
        relu = self.relu and residual is None  # otherwise after the addition
        options = dict(epsilon=self.epsilon, relu=relu, axis_name=self.axis_name, dtype=self.dtype)
        y, mean, var = ops.batch_norm_train(x, scale, bias, **options)
        y = ops.add_relu(y, residual, self.relu and not relu)
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
    inference the BatchNorm, residual and ReLU fold into the convolution (`ops.Epilogue`).
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


def global_average_pool(x: Array) -> Array:
    """Mean over height and width, accumulated in float32."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
