"""oneDNN's training-mode BatchNorm computes what `xla.batch_norm_train` computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skinjax.kernels import batch_norm, onednn, xla
from skinjax.models import layers

native = pytest.mark.skipif(not onednn.available(), reason="oneDNN kernels not built here")
native_bfloat16 = pytest.mark.skipif(
    not onednn.available() or jnp.bfloat16 not in onednn.dtypes(),
    reason="oneDNN runs no bfloat16 on this CPU (AVX2 only)",
)
EPSILON = 1e-5


def _inputs(shape, dtype):
    keys = jax.random.split(jax.random.key(0), 4)
    channels = shape[-1]
    x = (2 * jax.random.normal(keys[0], shape) + 0.5).astype(dtype)
    scale = jax.random.uniform(keys[1], (channels,), minval=0.5, maxval=1.5)
    bias = jax.random.normal(keys[2], (channels,))
    g = jax.random.normal(keys[3], shape).astype(dtype)
    return x, scale, bias, g


def _forward_and_grads(fn, x, scale, bias, g):
    (y, mean, var), vjp = jax.vjp(fn, x, scale, bias)
    zeros = jnp.zeros_like(mean)
    return (y, mean, var, *vjp((g, zeros, zeros)))


def _reference(x, scale, bias, relu):
    return xla.batch_norm_train(x, scale, bias, EPSILON, relu, None, x.dtype)


@native
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 24), (4, 16, 16, 64), (3, 6, 6, 17)])
def test_float32_matches_xla_forward_and_backward(shape, relu):
    x, scale, bias, g = _inputs(shape, jnp.float32)
    ours = lambda x, s, b: batch_norm.batch_norm(x, s, b, EPSILON, relu)
    got = jax.jit(lambda *a: _forward_and_grads(ours, *a))(x, scale, bias, g)
    expected = _forward_and_grads(lambda *a: _reference(*a, relu), x, scale, bias, g)
    # Where the input to the ReLU is within rounding of 0, the two may take either side.
    pre_relu = _reference(x, scale, bias, False)[0]
    boundary = (jnp.abs(pre_relu) < 1e-4) if relu else jnp.zeros(x.shape, bool)
    assert float(boundary.mean()) < 1e-3
    names = ("y", "mean", "var", "dx", "dscale", "dbias")
    for name, a, b in zip(names, got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if name == "dscale" or name == "dbias":
            continue  # checked below, away from the boundary
        a, b = (jnp.where(boundary, 0, a), jnp.where(boundary, 0, b)) if a.ndim == 4 else (a, b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)
    # The parameter gradients sum over every position, boundary ones included.
    np.testing.assert_allclose(got[4], expected[4], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got[5], expected[5], rtol=1e-3, atol=1e-3)


@native_bfloat16
@pytest.mark.parametrize("relu", [False, True])
def test_bfloat16_matches_float32_on_the_rounded_input(relu):
    x, scale, bias, g = _inputs((4, 12, 12, 32), jnp.bfloat16)
    got = _forward_and_grads(
        lambda x, s, b: batch_norm.batch_norm(x, s, b, EPSILON, relu), x, scale, bias, g
    )
    f32 = lambda a: a.astype(jnp.float32)
    expected = _forward_and_grads(lambda *a: _reference(*a, relu), f32(x), scale, bias, f32(g))
    assert got[0].dtype == got[3].dtype == jnp.bfloat16
    assert got[1].dtype == got[2].dtype == got[4].dtype == jnp.float32
    pre_relu = _reference(f32(x), scale, bias, False)[0]
    interior = (jnp.abs(pre_relu) > 0.05) if relu else jnp.ones(x.shape, bool)
    for name, a, b in zip(("y", "mean", "var", "dx"), got[:4], expected[:4], strict=True):
        a = f32(a)
        if a.ndim == 4:
            a, b = jnp.where(interior, a, 0), jnp.where(interior, b, 0)
        # float32 statistics, outputs rounded to bfloat16 once: about bfloat16's ulp.
        atol = 2**-7 * float(jnp.abs(b).max())
        np.testing.assert_allclose(a, b, rtol=2**-7, atol=atol, err_msg=name)


@native
def test_vmap_normalizes_each_mapped_slice_on_its_own():
    x, scale, bias, _ = _inputs((3, 2, 4, 4, 8), jnp.float32)
    got = jax.vmap(lambda x: batch_norm.batch_norm(x, scale, bias, EPSILON, True))(x)
    expected = jax.vmap(lambda x: _reference(x, scale, bias, True))(x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_supports_nhwc_float32_and_bfloat16_only():
    x = jnp.ones((2, 4, 4, 8))
    with onednn.disabled():
        assert not batch_norm.supports(x)
    assert not batch_norm.supports(jnp.ones((2, 8)))
    assert not batch_norm.supports(x.astype(jnp.float16))


@native
def test_layer_uses_onednn_and_keeps_nnx_running_averages():
    x, *_ = _inputs((4, 6, 6, 8), jnp.float32)

    def run():
        norm = layers.Layers(nnx.Rngs(0)).norm(8, relu=True)
        jaxpr = str(jax.make_jaxpr(lambda x: nnx.clone(norm)(x))(x))
        return norm(x), norm.mean[...], norm.var[...], jaxpr

    got = run()
    with onednn.disabled():
        expected = run()
    assert onednn.target("BatchNormForward") in got[3]
    assert "skinjax_onednn" not in expected[3]
    for a, b in zip(got[:3], expected[:3], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(got[1]).max()) > 0  # the averages moved


def test_layer_with_statistics_across_devices_normalizes_the_whole_batch():
    """With ``axis_name`` the statistics span the mapped slices (oneDNN would not)."""
    norm = layers.Layers(nnx.Rngs(0), bn_axis_name="batch").norm(8)
    graph, state = nnx.split(norm)
    x, *_ = _inputs((2, 4, 6, 6, 8), jnp.float32)
    apply = lambda state, x: nnx.merge(graph, state)(x)
    got = jax.vmap(apply, (None, 0), axis_name="batch")(state, x)
    whole = layers.Layers(nnx.Rngs(0)).norm(8)(x.reshape(8, 6, 6, 8))
    np.testing.assert_allclose(got.reshape(whole.shape), whole, rtol=1e-5, atol=1e-5)
