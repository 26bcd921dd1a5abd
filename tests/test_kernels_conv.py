"""oneDNN convolutions compute what XLA's compute, forward and backward."""

import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skinjax.kernels import conv, onednn

native = pytest.mark.skipif(not onednn.available(), reason="oneDNN kernels not built here")
native_bfloat16 = pytest.mark.skipif(
    not onednn.available() or jnp.bfloat16 not in onednn.dtypes(),
    reason="oneDNN runs no bfloat16 on this CPU (AVX2 only)",
)


def _lax(x, w, strides, padding):
    return jax.lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1] // w.shape[2],
    )


def _value_and_grads(fn, x, w, g):
    y, vjp = jax.vjp(fn, x, w)
    return (y, *vjp(g.astype(y.dtype)))


def test_built_where_supported():
    """On x86-64 Linux the extension must build: a failed build would silently be slow."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("oneDNN kernels are built on x86-64 Linux only")
    assert onednn.available()


@native
@pytest.mark.parametrize(
    "shape, kernel, strides, padding",
    [
        ((2, 9, 11, 5), (3, 3, 5, 7), (1, 1), ((1, 1), (1, 1))),
        ((2, 9, 11, 5), (3, 3, 5, 7), (2, 2), ((1, 1), (1, 1))),
        ((3, 16, 16, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3))),
        ((2, 10, 10, 8), (1, 1, 8, 16), (2, 2), ((0, 0), (0, 0))),
        ((1, 8, 12, 4), (3, 5, 4, 6), (2, 1), ((0, 1), (2, 1))),  # TF 'SAME'-like, asymmetric
        # Grouped: depthwise (one input channel per group), stride 1 and 2, and two groups.
        ((2, 9, 11, 6), (3, 3, 1, 6), (1, 1), ((1, 1), (1, 1))),
        ((2, 10, 10, 5), (5, 5, 1, 5), (2, 2), ((1, 2), (1, 2))),
        ((2, 8, 8, 16), (3, 3, 1, 16), (2, 2), ((0, 1), (0, 1))),
        ((2, 8, 8, 6), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1))),
    ],
)
def test_float32_matches_lax_forward_and_backward(shape, kernel, strides, padding):
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), kernel)
    y_shape = jax.eval_shape(lambda x, w: _lax(x, w, strides, padding), x, w).shape
    g = jax.random.normal(jax.random.key(2), y_shape)
    ours = lambda x, w: conv.conv2d(x, w, strides, padding)
    got = jax.jit(lambda x, w, g: _value_and_grads(ours, x, w, g))(x, w, g)
    expected = _value_and_grads(lambda x, w: _lax(x, w, strides, padding), x, w, g)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@native_bfloat16
def test_bfloat16_is_float32_of_rounded_operands_rounded_once():
    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 16)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (3, 3, 16, 32)).astype(jnp.bfloat16)
    g = jax.random.normal(jax.random.key(2), (2, 6, 6, 32)).astype(jnp.bfloat16)
    strides, padding = (2, 2), ((1, 1), (1, 1))
    got = _value_and_grads(lambda x, w: conv.conv2d(x, w, strides, padding), x, w, g)
    assert all(a.dtype == jnp.bfloat16 for a in got)
    f32 = lambda a: a.astype(jnp.float32)
    expected = _value_and_grads(lambda x, w: _lax(x, w, strides, padding), f32(x), f32(w), f32(g))
    # Accumulated in float32 and rounded to bfloat16 once: within bfloat16's half ulp.
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(f32(a), b, rtol=2**-8, atol=1e-5 * float(jnp.abs(b).max()))


@native_bfloat16
def test_float32_kernel_of_bfloat16_activations_is_rounded_once_and_gets_float32_gradient():
    """As if cast to bfloat16 first, but the kernel gradient stays float32 (no bf16 rounding)."""
    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 16)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (3, 3, 16, 32))
    g = jax.random.normal(jax.random.key(2), (2, 12, 12, 32)).astype(jnp.bfloat16)
    args = ((1, 1), ((1, 1), (1, 1)))
    y, dx, dw = _value_and_grads(lambda x, w: conv.conv2d(x, w, *args), x, w, g)
    y16, dx16, _ = _value_and_grads(lambda x, w: conv.conv2d(x, w, *args), x, w.astype(x.dtype), g)
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32)
    np.testing.assert_array_equal(y, y16)
    np.testing.assert_array_equal(dx, dx16)
    f32 = lambda a: a.astype(jnp.float32)
    _, _, expected = _value_and_grads(lambda x, w: _lax(x, w, *args), f32(x), w, f32(g))
    np.testing.assert_allclose(dw, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))


@native
def test_vmap_loops_over_the_mapped_axis():
    x = jax.random.normal(jax.random.key(0), (3, 2, 8, 8, 4))
    w = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))
    args = ((1, 1), ((1, 1), (1, 1)))
    got = jax.vmap(lambda x: conv.conv2d(x, w, *args))(x)
    np.testing.assert_allclose(got, jax.vmap(lambda x: _lax(x, w, *args))(x), rtol=1e-4, atol=1e-4)


def test_disabled_and_unsupported_convolutions_trace_lax():
    x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    with onednn.disabled():
        assert not conv.supports(x, w, 1)
    depthwise = jnp.ones((3, 3, 1, 4))
    assert conv.supports(x, depthwise, 4) == onednn.available()
    # oneDNN has no bfloat16 grouped convolution on NHWC activations.
    assert not conv.supports(x.astype(jnp.bfloat16), depthwise, 4)
    assert not conv.supports(x, depthwise, 2)  # groups that do not match the kernel
    assert not conv.supports(x.astype(jnp.float16), w.astype(jnp.float16), 1)
    assert not conv.supports(x, w.astype(jnp.bfloat16), 1)  # bf16 kernel, f32 input


@native
@pytest.mark.parametrize("name, train", [("resnet18", True), ("resnet50", False)])
def test_resnet_gradients_through_onednn_equal_xla(name, train):
    """A tiny ResNet's loss and gradients: the same with oneDNN as with XLA's kernels.

    In training mode BatchNorm runs through oneDNN as well. ResNet-50 runs with BatchNorm
    in inference mode: at width 8 its training-mode gradients change by 10% when the
    input changes by 1e-6, with XLA alone.
    """
    from flax import nnx

    from skinjax import models

    model = models.build(name, 2, width=8)
    model.train() if train else model.eval()
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(0), (8, 64, 64, 3))

    def loss(params):
        logits = nnx.merge(graph, params, rest, copy=True)(x)
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
    assert onednn.target("ConvBackwardWeights") in jaxpr
    assert (onednn.target("BatchNormBackward") in jaxpr) == train
    got = jax.jit(jax.value_and_grad(loss))(params)
    with onednn.disabled():
        assert "skinjax_onednn" not in str(jax.make_jaxpr(jax.grad(loss))(params))
        expected = jax.jit(jax.value_and_grad(loss))(params)
    check = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * jnp.abs(b).max())
    jax.tree.map(check, got, expected)


@native
@pytest.mark.parametrize("residual, relu", [(False, False), (False, True), (True, True)])
def test_conv_with_bias_residual_and_relu_matches_lax(residual, relu):
    """The fused epilogue equals lax's convolution followed by the same ops, value and VJP."""
    key = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(key[0], (2, 9, 9, 8))
    w = 0.3 * jax.random.normal(key[1], (3, 3, 8, 16))
    bias = jax.random.normal(key[2], (16,))
    r = jax.random.normal(key[3], (2, 5, 5, 16)) if residual else None
    strides, padding = (2, 2), ((1, 1), (1, 1))

    def expected(x, w, bias, r):
        y = _lax(x, w, strides, padding) + bias
        y = y if r is None else y + r
        return jax.nn.relu(y) if relu else y

    ours = lambda x, w, bias, r: conv.conv2d_bias(x, w, bias, strides, padding, r, relu)
    np.testing.assert_allclose(ours(x, w, bias, r), expected(x, w, bias, r), rtol=1e-5, atol=1e-5)
    g = jax.random.normal(key[4], (2, 5, 5, 16))
    argnums = (0, 1, 2, 3) if residual else (0, 1, 2)
    grads = lambda fn: jax.grad(lambda *a: jnp.sum(fn(*a) * g), argnums)(x, w, bias, r)
    check = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    jax.tree.map(check, grads(ours), grads(expected))


@native
def test_a_bias_that_does_not_match_the_output_channels_is_an_error():
    x, w = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 4, 8))
    with pytest.raises(Exception, match="bias per output channel"):
        jax.block_until_ready(conv.conv2d_bias(x, w, jnp.ones(5), (1, 1), ((1, 1), (1, 1))))


@native
def test_bfloat16_is_taken_exactly_where_onednn_runs_it():
    """On a CPU without AVX-512 oneDNN cannot make bfloat16 primitives: XLA's run instead."""
    x, w = jnp.ones((1, 8, 8, 16), jnp.bfloat16), jnp.ones((3, 3, 16, 16), jnp.bfloat16)
    args = ((1, 1), ((1, 1), (1, 1)))
    assert conv.supports(x, w, 1) == (jnp.bfloat16 in onednn.dtypes())
    if conv.supports(x, w, 1):
        jax.block_until_ready(conv.conv2d(x, w, *args))
    else:
        with pytest.raises(Exception, match="could not create a primitive"):
            jax.block_until_ready(conv.conv2d(x, w, *args))
