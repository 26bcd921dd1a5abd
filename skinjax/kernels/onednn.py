"""Loads skinjax's oneDNN extension and decides whether traced code uses it.

The extension (`_onednn`, built by setup.py from the `onednn_*.cc` handlers) runs
oneDNN primitives as XLA FFI custom calls. It is used where `available()` holds:
x86-64 Linux, the extension built and the `onednn-cpu-gomp` wheel present, tracing for
the CPU (`platform.traced()`, which a GPU or TPU export on a CPU host is not), not inside
`disabled()`. Everywhere else, GPUs and TPUs included, models use `jax.lax` and
`jax.numpy` as before. `SKINJAX_ONEDNN=0` turns oneDNN off for the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from skinjax.kernels import platform

# The FFI handlers the extension exports; each is registered as the target `target(name)`.
HANDLERS = (
    "ConvForward",
    "ConvBackwardData",
    "ConvBackwardWeights",
    "BatchNormForward",
    "BatchNormBackward",
    "MaxPoolForward",
    "MaxPoolBackward",
)
_state = {"enabled": os.environ.get("SKINJAX_ONEDNN", "1") != "0"}


def _library_paths() -> tuple[str, str] | None:
    """oneDNN's shared library (from its wheel) and the compiled handlers, if both exist."""
    spec = importlib.util.find_spec("skinjax.kernels._onednn")
    handlers = spec and spec.origin
    try:
        files = importlib.metadata.files("onednn-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    dnnl = [f for f in files if f.name == "libdnnl.so.3"]
    if not handlers or not dnnl:
        return None
    return str(dnnl[0].locate()), handlers


def target(handler: str) -> str:
    """The FFI target name of one of `HANDLERS`."""
    return f"skinjax_onednn.{handler}"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The extension, loaded once with its FFI targets registered; None where impossible."""
    paths = _library_paths()
    if paths is None:
        return None
    dnnl, handlers = paths
    try:
        # oneDNN first and global: the extension resolves its symbols against it.
        ctypes.CDLL(dnnl, mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(handlers)
    except OSError:
        return None
    for handler in HANDLERS:
        capsule = jax.ffi.pycapsule(getattr(lib, handler))
        jax.ffi.register_ffi_target(target(handler), capsule, platform="cpu")
    return lib


def loaded() -> ctypes.CDLL:
    """`library()`, or a clear error where the extension cannot be used."""
    lib = library()
    if lib is None:
        raise RuntimeError("skinjax's oneDNN kernels are not built or oneDNN is missing")
    return lib


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Traces `jax.lax` code inside: for artifacts that must run without skinjax.

    It decides what is traced, not what runs: a function jitted and called before keeps
    its cached trace for the same shapes, so wrap a new function (or trace anew) inside.
    """
    previous = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = previous


def available() -> bool:
    """Whether kernels traced now go to oneDNN."""
    return _state["enabled"] and platform.traced() == "cpu" and library() is not None


@functools.cache
def dtypes() -> tuple[jnp.dtype, ...]:
    """The activation dtypes the handlers take on this CPU: float32, and bfloat16 where
    oneDNN runs it (AVX-512 and newer; a CPU with AVX2 alone gets XLA's kernels for it)."""
    bfloat16 = library() is not None and bool(_supports_bfloat16())
    return (jnp.dtype(jnp.float32),) + ((jnp.dtype(jnp.bfloat16),) if bfloat16 else ())


def _supports_bfloat16() -> bool:
    function = loaded().SupportsBFloat16
    function.restype = ctypes.c_bool
    return function()


def takes(x: jax.Array) -> bool:
    """Whether NHWC activations ``x`` traced now go to oneDNN: rank 4, float32 or (where
    this CPU runs it) bfloat16."""
    return x.ndim == 4 and available() and x.dtype in dtypes()


@functools.cache
def workspace_bytes(query: str, shape: tuple[int, ...], *options: int | bool) -> int:
    """The bytes of the workspace (a forward pass leaves it for the backward one) that the
    extension's ``query`` function reports for NHWC ``shape`` and its options.

    Raises ValueError naming the shape where oneDNN cannot run that problem.
    """
    function = getattr(loaded(), query)
    function.restype = ctypes.c_int64
    arguments = (*shape, *options)
    function.argtypes = [
        ctypes.c_bool if isinstance(a, bool) else ctypes.c_int64 for a in arguments
    ]
    size = function(*arguments)
    if size < 0:
        raise ValueError(f"oneDNN cannot run {query} for an input of shape {shape}")
    return size
