"""How this process uses host memory: glibc malloc's settings for XLA:CPU, and its peak.

Standard library only, so an entry point can restart itself with huge pages
(`restart_with_huge_pages`) as its first statement, before it imports JAX: the restart
then costs a Python start-up, not a second JAX import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


_kept = {"freed_memory": False}

# glibc (2.35+) then backs malloc's mmap'd blocks with transparent huge pages (madvise).
_HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_possible() -> bool:
    """Whether glibc's malloc can use transparent huge pages here: Linux, glibc 2.35 or
    later, and the kernel's THP mode not ``never``."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        with open(_THP_MODE) as f:
            thp_mode = f.read()
    except (AttributeError, OSError, ValueError):  # not Linux, not glibc, no THP
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return name == "glibc" and (major, minor) >= (2, 35) and "[never]" not in thp_mode


def uses_huge_pages() -> bool:
    """Whether this process started with malloc's large blocks on huge pages."""
    return _HUGE_PAGES_TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":")


def restart_with_huge_pages() -> None:
    """Re-executes this process with glibc's malloc backing its large blocks with 2 MiB
    transparent huge pages, unless it already does, cannot, or ``SKINJAX_HUGE_PAGES=0``.

    XLA:CPU allocates a step's temporaries afresh on every call (2.4 GiB for the
    EfficientNet-Lite0 train step at batch 32, 224 px); glibc maps them with mmap and
    unmaps them on free, so each step faults them in again, 4 KiB at a time: 620,000
    page faults and 2 s of kernel time per Lite0 step on 2 cores. On 2 MiB pages the
    same step takes 1,800 faults and trains 1.8x faster in the same peak memory
    (docs/benchmarks.md). glibc reads the setting only when a process starts, hence
    the re-exec: call it first thing in an entry point (it costs one more start-up).
    """
    if os.environ.get("SKINJAX_HUGE_PAGES", "1") == "0" or uses_huge_pages():
        return
    if not huge_pages_possible():
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, _HUGE_PAGES_TUNABLE]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def keep_freed_memory() -> bool:
    """Where ``SKINJAX_KEEP_FREED_MEMORY=1`` asks for it, makes glibc's malloc keep freed
    memory for reuse instead of returning it to the OS: faster steps for more memory.

    XLA:CPU allocates a step's temporary buffers (2 GiB for a ResNet-50 train step at
    batch 16) on every call, from its own threads. glibc gives each thread pool its own
    arena, serves blocks larger than an arena's 64 MiB heap with mmap whatever the
    settings, and unmaps them on free: every step page-faults its whole working set
    again. One arena, no mmap and no trimming make the second step reuse the first one's
    pages: ResNet-50 steps on 2 cores 1.3x (bf16) to 1.5x (f32) faster to train, 1.6x to
    evaluate (docs/benchmarks.md). The process then holds its peak memory until it
    exits, and that peak is about 2x higher, as the one heap fragments: the documented
    EfficientNet-Lite0 two-stage run (batch 32, 224 px) peaks at 9.4 GiB with it and
    4.8 GiB without, for 2x the speed (docs/benchmarks.md), and before its depthwise
    convolutions went to oneDNN it was killed by the OOM killer at 22 GiB. Hence opt-in.

    Call it before JAX starts its backend: a thread keeps the arena it took at its first
    allocation. On accelerator hosts it touches only host-side buffers. Returns whether
    the setting is now in effect (False where not asked for, or malloc is not glibc's).
    """
    if os.environ.get("SKINJAX_KEEP_FREED_MEMORY", "0") != "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # mallopt documents a trim threshold of -1 as "never trim".
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
    _kept["freed_memory"] = all([bool(mallopt(parameter, value)) for parameter, value in settings])
    return _kept["freed_memory"]


def keeps_freed_memory() -> bool:
    """Whether `keep_freed_memory` is in effect in this process."""
    return _kept["freed_memory"]


def peak_resident_bytes() -> int:
    """This process's peak resident memory (VmHWM) since it started or since
    `reset_peak_resident`: what the operating system's out-of-memory killer weighs."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status (not Linux?)")


def reset_peak_resident() -> None:
    """Starts `peak_resident_bytes` anew from the current resident memory (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
