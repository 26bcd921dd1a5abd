"""Builds the optional oneDNN kernels (convolution, BatchNorm, max pool) and, on Linux, the
block cache that scripts preload into malloc (`skinjax/block_cache.c`); the rest: pyproject.toml.

The extension compiles against the XLA FFI headers that jaxlib ships and the oneDNN
headers of the onednn-devel-cpu-gomp wheel (both build requirements on x86-64 Linux).
Where either is missing, or the compiler fails, skinjax installs without it and its
models use XLA's convolutions and fusions.
"""

import importlib.metadata
import importlib.util
import os
import sys

from setuptools import Extension, setup


def _include_dirs() -> list[str] | None:
    jaxlib = importlib.util.find_spec("jaxlib")
    try:
        files = importlib.metadata.files("onednn-devel-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    headers = [f for f in files if f.name == "dnnl.hpp" and f.parent.name == "dnnl"]
    if jaxlib is None or not headers:
        return None
    # .../include/oneapi/dnnl/dnnl.hpp -> .../include
    return [
        os.path.join(jaxlib.submodule_search_locations[0], "include"),
        str(headers[0].locate().parent.parent.parent),
    ]


include_dirs = _include_dirs()
extensions = []
if include_dirs:
    extensions.append(
        Extension(
            "skinjax.kernels._onednn",
            sources=[
                "skinjax/kernels/onednn_conv.cc",
                "skinjax/kernels/onednn_batch_norm.cc",
                "skinjax/kernels/onednn_pool.cc",
            ],
            depends=["skinjax/kernels/onednn.h"],
            include_dirs=include_dirs,
            language="c++",
            extra_compile_args=["-std=c++17", "-Wno-return-type", "-Wno-sign-compare"],
            optional=True,
        )
    )
if sys.platform.startswith("linux"):
    # A plain shared library for LD_PRELOAD (`skinjax.host_memory`), never imported.
    extensions.append(
        Extension(
            "skinjax._block_cache",
            sources=["skinjax/block_cache.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    )
setup(ext_modules=extensions)
