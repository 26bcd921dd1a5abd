"""The fast forms in layers.py compute what the plain Flax layers compute."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skinjax.kernels import onednn, ops
from skinjax.models import layers


def _norms(axis_name: str | None = None) -> tuple[nnx.Module, nnx.Module]:
    """Our BatchNorm and nnx.BatchNorm with the same non-trivial scale and bias."""
    ours = layers.Layers(nnx.Rngs(0), bn_axis_name=axis_name).norm(8)
    plain = nnx.BatchNorm(8, momentum=0.9, axis_name=axis_name, rngs=nnx.Rngs(0))
    for norm in (ours, plain):
        norm.scale[...] = jnp.linspace(0.5, 1.5, 8)
        norm.bias[...] = jnp.linspace(-0.3, 0.3, 8)
    return ours, plain


def _grads(norm: nnx.Module, activation, x: jax.Array, g: jax.Array):
    """Gradients of sum(activation(norm(x)) * g) for params and x, and the new statistics."""
    graph, params, rest = nnx.split(norm, nnx.Param, ...)

    def loss(params, x):
        model = nnx.merge(graph, params, rest, copy=True)
        return jnp.sum(activation(model(x)) * g), nnx.state(model, nnx.BatchStat)

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, x)


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_gradient_and_statistics_match_autodiff(relu):
    ours, plain = _norms()
    ours.relu = relu
    x = 2 * jax.random.normal(jax.random.key(1), (4, 5, 5, 8)) + 1
    g = jax.random.normal(jax.random.key(2), x.shape)
    got = _grads(ours, lambda y: y, x, g)
    expected = _grads(plain, nnx.relu if relu else (lambda y: y), x, g)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, expected)


def test_batch_norm_gradient_spans_the_devices_of_its_axis():
    ours, plain = _norms(axis_name="data")
    ours.relu = True
    x = jax.random.normal(jax.random.key(1), (2, 2, 5, 5, 8)) + 0.5
    g = jax.random.normal(jax.random.key(2), x.shape)
    per_device = lambda norm, activation: jax.vmap(
        lambda x, g: _grads(norm, activation, x, g), axis_name="data"
    )(x, g)
    got, expected = per_device(ours, lambda y: y), per_device(plain, nnx.relu)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, expected)


def test_bfloat16_matmul_keeps_bfloat16_gradients_close_to_float32():
    x = jax.random.normal(jax.random.key(0), (32, 16))
    w = jax.random.normal(jax.random.key(1), (16, 8))
    g = jax.random.normal(jax.random.key(2), (32, 8))
    loss = lambda x, w: jnp.sum(ops.matmul(x, w) * g)
    dx, dw = jax.grad(loss, argnums=(0, 1))(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    dx_ref, dw_ref = jax.grad(loss, argnums=(0, 1))(x, w)
    assert ops.matmul(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)).dtype == jnp.float32
    assert dx.dtype == dw.dtype == jnp.bfloat16
    np.testing.assert_allclose(dx.astype(jnp.float32), dx_ref, rtol=0.05, atol=0.1)
    np.testing.assert_allclose(dw.astype(jnp.float32), dw_ref, rtol=0.05, atol=0.2)


@pytest.mark.parametrize("size", [16, 15])
def test_max_pool_and_its_gradient_match_flax(size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    g = jax.random.normal(jax.random.key(1), (2, size // 2 + size % 2, size // 2 + size % 2, 3))
    flax_pool = lambda x: nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(ops.max_pool(x), flax_pool(x))
    grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * g))(x)
    np.testing.assert_allclose(grad(ops.max_pool), grad(flax_pool), rtol=1e-6, atol=1e-6)


def _conv_norm(kernel_size: int, stride: int, dtype=jnp.float32, **kwargs) -> layers.ConvNorm:
    """A ConvNorm in inference mode with non-trivial running statistics and affine."""
    built = layers.Layers(nnx.Rngs(0), dtype=dtype, **kwargs)
    unit = layers.ConvNorm(8, 16, kernel_size, stride=stride, activation=nnx.relu, layers=built)
    key = jax.random.split(jax.random.key(3), 4)
    unit.norm.mean[...] = jax.random.normal(key[0], (16,))
    unit.norm.var[...] = jax.random.uniform(key[1], (16,), minval=0.5, maxval=2.0)
    unit.norm.scale[...] = jax.random.uniform(key[2], (16,), minval=0.5, maxval=1.5)
    unit.norm.bias[...] = jax.random.normal(key[3], (16,))
    unit.eval()
    return unit


@pytest.mark.parametrize(
    "kernel_size, stride, same_padding", [(3, 1, False), (3, 2, True), (1, 2, False)]
)
@pytest.mark.parametrize("native", [True, False])
def test_inference_folds_batch_norm_residual_and_relu_into_the_convolution(
    kernel_size, stride, same_padding, native
):
    """relu(norm(conv(x)) + residual) with running averages: folded, the same values."""
    unit = _conv_norm(kernel_size, stride, same_padding=same_padding)
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 8))
    size = -(-9 // stride)
    residual = jax.random.normal(jax.random.key(1), (2, size, size, 16))
    pre = nnx.BatchNorm.__call__(unit.norm, unit.conv(x))  # nnx's unfolded inference form
    with contextlib.nullcontext() if native else onednn.disabled():
        got = jax.jit(lambda x, r: unit(x, residual=r))(x, residual)
        got_plain = unit(x)
    np.testing.assert_allclose(got, nnx.relu(pre + residual), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_plain, nnx.relu(pre), rtol=1e-5, atol=1e-5)


def test_bfloat16_folding_stays_within_bfloat16_rounding():
    unit16, unit32 = _conv_norm(3, 1, jnp.bfloat16), _conv_norm(3, 1)
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 8))
    got = unit16(x.astype(jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    expected = unit32(x.astype(jnp.bfloat16).astype(jnp.float32))
    # The folded kernel is rounded to bfloat16 once, as the unfolded one is.
    np.testing.assert_allclose(got.astype(jnp.float32), expected, rtol=2**-6, atol=2**-6)


@pytest.mark.parametrize("form", ["onednn", "shifted_sum"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(("kernel_size", "stride"), [(3, 1), (5, 2)])
def test_depthwise_matches_lax_convolution(form, dtype, kernel_size, stride):
    """Values and gradients, accumulated in float32: one bfloat16 rounding of the result.

    On CPU depthwise convolutions run through oneDNN, or as shifted sums without it.
    """
    if form == "onednn" and not onednn.available():
        pytest.skip("oneDNN kernels not built here")
    context = onednn.disabled if form == "shifted_sum" else contextlib.nullcontext
    channels, pad = 6, kernel_size // 2
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, channels)).astype(dtype)
    kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 1, channels))
    padding = ((pad, pad), (pad, pad))

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(
            x.astype(jnp.float32),
            kernel,
            (stride, stride),
            padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
            precision="highest",
        )

    def ours(x, kernel):
        with context():
            return ops.conv2d(x, kernel, (stride, stride), padding, groups=channels)

    with context():
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda k: jnp.sum(ours(x, k))))(kernel))
    assert (onednn.target("ConvBackwardWeights") in jaxpr) == (form == "onednn")
    y = ours(x, kernel)
    assert y.dtype == dtype
    g = jax.random.normal(jax.random.key(2), y.shape)
    want = reference(x, kernel)
    rtol = 1e-5 if dtype == jnp.float32 else 2**-8  # bfloat16: the result's rounding only
    np.testing.assert_allclose(np.float32(y), want, rtol=rtol, atol=rtol * np.abs(want).max())
    dx, dk = jax.grad(lambda x, k: jnp.sum(ours(x, k).astype(jnp.float32) * g), (0, 1))(x, kernel)
    want_dx, want_dk = jax.grad(lambda x, k: jnp.sum(reference(x, k) * g), (0, 1))(x, kernel)
    assert dx.dtype == dtype and dk.dtype == jnp.float32
    # Both input gradients are rounded to bfloat16 from float32 sums: one unit apart at most.
    np.testing.assert_allclose(np.float32(dx), want_dx, atol=2 * rtol * np.abs(want_dx).max())
    # The kernel gradient is float32, from the output gradient rounded to bfloat16.
    np.testing.assert_allclose(dk, want_dk, atol=max(rtol, 1e-5) * np.abs(want_dk).max())
