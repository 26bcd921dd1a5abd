"""2D convolutions through oneDNN on CPU, as XLA FFI custom calls with a custom VJP.

XLA:CPU converts bfloat16 convolutions to float32 ones and runs their weight gradient
at about half a matmul's rate; oneDNN's convolutions (the ones torch runs on CPU) use
the bfloat16 dot-product instructions of AVX-512 and AMX processors, about twice as fast.
`conv2d` is used where `available()` holds (x86-64 Linux, the compiled extension and
the `onednn-cpu-gomp` wheel present, tracing for the CPU, not `disabled()`); everywhere
else, GPUs and TPUs included, models call `jax.lax.conv_general_dilated` as before.
`SKINJAX_ONEDNN=0` in the environment turns oneDNN off for the whole process.

Products accumulate in float32 and are rounded to the operands' dtype, as XLA's own
convolution and torch.autocast do: with bfloat16 operands, returning float32 instead
made the ResNet-50 train step 7% slower (BatchNorm then reads twice the bytes). The
kernel gradient accumulates in float32 before it is cast to the kernel's dtype.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]

# Pass -> the handler's symbol in the extension; its FFI target is _target(pass).
_SYMBOLS = {
    "forward": "ConvForward",
    "backward_data": "ConvBackwardData",
    "backward_weights": "ConvBackwardWeights",
}
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
_state = {"enabled": os.environ.get("SKINJAX_ONEDNN", "1") != "0"}


def _library_paths() -> tuple[str, str] | None:
    """oneDNN's shared library (from its wheel) and the compiled handlers, if both exist."""
    spec = importlib.util.find_spec("skinjax.kernels._onednn_conv")
    handlers = spec and spec.origin
    try:
        files = importlib.metadata.files("onednn-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    dnnl = [f for f in files if f.name == "libdnnl.so.3"]
    if not handlers or not dnnl:
        return None
    return str(dnnl[0].locate()), handlers


def _target(kind: str) -> str:
    return f"skinjax_onednn_conv_{kind}"


@functools.cache
def _load() -> bool:
    """Loads oneDNN and registers the FFI targets, once; False where that is impossible."""
    paths = _library_paths()
    if paths is None:
        return False
    dnnl, handlers = paths
    try:
        # oneDNN first and global: the handlers library resolves its symbols against it.
        ctypes.CDLL(dnnl, mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(handlers)
    except OSError:
        return False
    for kind, symbol in _SYMBOLS.items():
        capsule = jax.ffi.pycapsule(getattr(lib, symbol))
        jax.ffi.register_ffi_target(_target(kind), capsule, platform="cpu")
    return True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Traces `jax.lax` convolutions inside: for artifacts that must run without skinjax."""
    previous = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = previous


def available() -> bool:
    """Whether convolutions traced now go to oneDNN."""
    return _state["enabled"] and jax.default_backend() == "cpu" and _load()


def supports(x: Array, w: Array, feature_group_count: int, dilations: Sequence) -> bool:
    """Whether `conv2d` computes this convolution: 2D, no groups or dilation, f32/bf16."""
    return (
        x.ndim == 4
        and w.ndim == 4
        and feature_group_count == 1
        and all(d in (None, (1, 1)) for d in dilations)
        and x.dtype == w.dtype
        and x.dtype in _DTYPES
        and available()
    )


def _call(kind: str, a: Array, b: Array, shape, dtype, strides, padding: Padding) -> Array:
    if not _load():
        raise RuntimeError("skinjax's oneDNN kernels are not built or oneDNN is missing")
    (top, bottom), (left, right) = padding
    # vmap (rare for whole images) loops over the mapped axis.
    call = jax.ffi.ffi_call(
        _target(kind), jax.ShapeDtypeStruct(shape, dtype), vmap_method="sequential"
    )
    return call(
        a,
        b,
        strides=np.asarray(strides, np.int64),
        padding=np.asarray([top, bottom, left, right], np.int64),
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
    return _call("forward", x, w, shape, x.dtype, strides, padding)


def _conv2d_fwd(x, w, strides, padding):
    return conv2d(x, w, strides, padding), (x, w)


def _conv2d_bwd(strides, padding, residuals, g):
    x, w = residuals
    dx = _call("backward_data", g, w, x.shape, x.dtype, strides, padding)
    dw = _call("backward_weights", x, g, w.shape, jnp.float32, strides, padding)
    return dx, dw.astype(w.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
