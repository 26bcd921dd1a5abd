"""Training-mode batch normalization (and an optional ReLU) through oneDNN on CPU.

XLA:CPU's fusions of BatchNorm run well under memory bandwidth, worst in bfloat16, where
they took 30% of a ResNet-50 train step; oneDNN's primitive (the one torch runs on CPU)
reads the input twice and writes the output once forward, reads input and gradient
twice backward, and is 3-6x faster in bfloat16 on ResNet-50's shapes (docs/benchmarks.md).
Models call `batch_norm` where `supports` holds (see `onednn.available`), elsewhere
`xla.batch_norm_train`, which computes the same values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from skinjax.kernels import onednn

Array = jax.Array


def supports(x: Array) -> bool:
    """Whether `batch_norm` normalizes this input: NHWC, float32 or bfloat16."""
    return onednn.takes(x)


def _stats(x: Array) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape[-1:], jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm(
    x: Array, scale: Array, bias: Array, epsilon: float, relu: bool
) -> tuple[Array, Array, Array]:
    """Normalizes NHWC ``x`` over all but its channel axis, scales, shifts, then ReLU.

    ``scale`` and ``bias`` are float32. Returns the output in ``x``'s dtype and the
    float32 batch mean and biased variance, which carry no gradient.
    """
    return _batch_norm_fwd(x, scale, bias, epsilon, relu)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, relu):
    onednn.loaded()
    bfloat16 = x.dtype == jnp.bfloat16
    workspace = onednn.workspace_bytes("BatchNormWorkspaceBytes", x.shape, bfloat16) if relu else 0
    outputs = (
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        _stats(x),
        _stats(x),
        jax.ShapeDtypeStruct((workspace,), jnp.uint8),
    )
    call = jax.ffi.ffi_call(onednn.target("BatchNormForward"), outputs, vmap_method="sequential")
    y, mean, var, mask = call(x, scale, bias, epsilon=np.float32(epsilon), relu=relu)
    return (y, mean, var), (x, scale, mean, var, mask)


def _batch_norm_bwd(epsilon, relu, residuals, cotangents):
    x, scale, mean, var, mask = residuals
    outputs = (jax.ShapeDtypeStruct(x.shape, x.dtype), _stats(x), _stats(x))
    call = jax.ffi.ffi_call(onednn.target("BatchNormBackward"), outputs, vmap_method="sequential")
    g = cotangents[0].astype(x.dtype)
    return call(x, g, scale, mean, var, mask, epsilon=np.float32(epsilon), relu=relu)


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)
