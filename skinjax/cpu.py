"""Process settings that make XLA:CPU steps faster; no effect on how a model computes."""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    XLA:CPU allocates a step's temporary buffers (2 GiB for a ResNet-50 train step at
    batch 16) on every call. glibc serves blocks this large with mmap and unmaps them
    on free, so each step first page-faults its whole working set: keeping the memory
    made ResNet-50 steps on 2 cores 1.17x (train) and 1.4x (eval) faster. The process
    then holds its peak memory until it exits. Returns False where malloc is not glibc's.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
