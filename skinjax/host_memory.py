"""How this process uses host memory: glibc malloc's settings for XLA:CPU, and its peak.

Standard library only, so an entry point can restart itself with faster malloc settings
(`restart_with_fast_malloc`) as its first statement, before it imports JAX: the restart
then costs a Python start-up, not a second JAX import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
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


def block_cache_library() -> str | None:
    """The path of the built block cache (``skinjax/block_cache.c``), or None where the
    install built none (not Linux, no C compiler)."""
    spec = importlib.util.find_spec("skinjax._block_cache")
    return spec.origin if spec is not None else None


def uses_block_cache() -> bool:
    """Whether the block cache is loaded in this process (not only asked for)."""
    library = block_cache_library()
    if library is None:
        return False
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(os.path.realpath(library)) for line in f)


def restart_with_fast_malloc() -> None:
    """Re-executes this process so that XLA's per-step temporaries cost fewer page faults:
    glibc's malloc backs its large blocks with 2 MiB transparent huge pages (by default;
    ``SKINJAX_HUGE_PAGES=0`` opts out), and where ``SKINJAX_BLOCK_CACHE=1`` asks, the
    block cache (``skinjax/block_cache.c``, preloaded) hands a freed block of 64 MiB or
    more to the next request of its size. Does nothing where all is in effect already.

    XLA:CPU allocates a step's temporaries afresh on every call (2.4 GiB for the
    EfficientNet-Lite0 train step at batch 32, 224 px); glibc maps them with mmap and
    unmaps them on free, so each step faults them in again, 4 KiB at a time: 620,000
    page faults and 2 s of kernel time per Lite0 step on 2 cores. Huge pages cut that to
    1,800 faults in the same peak memory; the block cache to none, but XLA asks for the
    next step's block before it frees the last one's, so the cache holds two: one more
    step's temporaries of peak memory (docs/benchmarks.md), hence opt-in. glibc reads
    both settings only when a process starts, hence the re-exec: call it first thing in
    an entry point, before other imports.
    """
    current_tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    current_preload = os.environ.get("LD_PRELOAD", "").split()
    tunables, preload = list(current_tunables), list(current_preload)
    wants_huge_pages = os.environ.get("SKINJAX_HUGE_PAGES", "1") != "0" and huge_pages_possible()
    if wants_huge_pages and _HUGE_PAGES_TUNABLE not in tunables:
        tunables.append(_HUGE_PAGES_TUNABLE)
    library = block_cache_library()
    if os.environ.get("SKINJAX_BLOCK_CACHE", "0") == "1" and library not in (None, *preload):
        preload.append(library)
    if (tunables, preload) == (current_tunables, current_preload):
        return
    os.environ["GLIBC_TUNABLES"] = ":".join(tunables)
    os.environ["LD_PRELOAD"] = " ".join(preload)
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
