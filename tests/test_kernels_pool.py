"""oneDNN's max pool computes what nnx.max_pool and its autodiff gradient compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skinjax.kernels import onednn, ops, pool

native = pytest.mark.skipif(not onednn.available(), reason="oneDNN kernels not built here")
native_bfloat16 = pytest.mark.skipif(
    not onednn.available() or jnp.bfloat16 not in onednn.dtypes(),
    reason="oneDNN runs no bfloat16 on this CPU (AVX2 only)",
)


def _flax(x, size, stride):
    pad = size // 2
    return nnx.max_pool(x, (size, size), strides=(stride, stride), padding=((pad, pad),) * 2)


def _value_and_grad(fn, x, g):
    y, vjp = jax.vjp(fn, x)
    return y, vjp(g)[0]


@native
@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.bfloat16, marks=native_bfloat16)])
@pytest.mark.parametrize("shape, size, stride", [((2, 11, 12, 5), 3, 2), ((3, 8, 8, 16), 3, 1)])
def test_matches_flax_forward_and_backward(shape, size, stride, dtype):
    # Continuous random values: no tied maxima, where gradients may go to either.
    x = jax.random.normal(jax.random.key(0), shape).astype(dtype)
    out_shape = jax.eval_shape(lambda x: _flax(x, size, stride), x).shape
    g = jax.random.normal(jax.random.key(1), out_shape).astype(dtype)
    ours = jax.jit(lambda x, g: _value_and_grad(lambda x: pool.max_pool(x, size, stride), x, g))
    y, dx = ours(x, g)
    f32 = lambda a: np.asarray(a, np.float32)
    y_ref, dx_ref = _value_and_grad(lambda x: _flax(x, size, stride), f32(x), f32(g))
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(f32(y), y_ref)  # a maximum is exact in any dtype
    # A position collects the gradients of up to size * size windows: in bfloat16 each
    # addition rounds (about 1% for stride 1).
    tolerance = 1e-6 if dtype == jnp.float32 else 2**-6
    np.testing.assert_allclose(f32(dx), dx_ref, rtol=tolerance, atol=tolerance)


@native
def test_the_layer_uses_onednn_on_cpu_and_xla_when_disabled():
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
    # A new function per trace: jit and make_jaxpr cache traces by function.
    grad = lambda: jax.grad(lambda x: jnp.sum(ops.max_pool(x) ** 2))
    assert onednn.target("MaxPoolBackward") in str(jax.make_jaxpr(grad())(x))
    got = jax.jit(grad())(x)
    with onednn.disabled():
        assert "skinjax_onednn" not in str(jax.make_jaxpr(grad())(x))
        expected = jax.jit(grad())(x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_unsupported_inputs_keep_xla():
    assert not pool.supports(jnp.ones((2, 8, 8, 4), jnp.float16))
    assert not pool.supports(jnp.ones((8, 8, 4)))
    with onednn.disabled():
        assert not pool.supports(jnp.ones((2, 8, 8, 4)))


@native
def test_a_window_or_stride_below_one_is_an_error():
    x = jnp.ones((2, 8, 8, 4))
    with pytest.raises(ValueError, match="size and stride must be positive"):
        pool.max_pool(x, 3, 0)
    with pytest.raises(ValueError, match="size and stride must be positive"):
        jax.grad(lambda x: jnp.sum(pool.max_pool(x, 0, 2)))(x)
    # The extension itself refuses the problem too, as a ValueError naming the shape.
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8, 4\)"):
        onednn.workspace_bytes("MaxPoolWorkspaceBytes", (2, 8, 8, 4), 3, 0, False)
