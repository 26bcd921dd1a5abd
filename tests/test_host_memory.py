"""skinjax.host_memory: the malloc settings scripts restart with (huge pages, the block cache)
and the opt-in keep_freed_memory, each measured by the page faults of large blocks."""

import os
import pathlib
import subprocess
import sys

import pytest

from skinjax import host_memory

_SETTINGS = (
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
    "SKINJAX_HUGE_PAGES",
    "SKINJAX_BLOCK_CACHE",
    "SKINJAX_KEEP_FREED_MEMORY",
)


def _restarted_run(script: str, **settings: str) -> str:
    """The output of ``script`` run in a fresh process with only the given malloc settings."""
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    env.update(settings)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    return result.stdout


# Restarts with the fast malloc settings (and keeps freed memory where asked, as
# `runtime.start` does), then allocates, touches and frees a 256 MiB block three times in a
# new thread (as XLA's threads do with a step's temporaries) and prints which settings are
# in effect and the page faults of the first and last round.
_FAULTS_SCRIPT = """
import ctypes, os, resource, threading
from skinjax import host_memory
host_memory.restart_with_fast_malloc()
host_memory.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
faults = []
def work():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(host_memory.uses_huge_pages(), host_memory.uses_block_cache(), faults[0], faults[-1])
assert host_memory.keeps_freed_memory() == (os.environ.get("SKINJAX_KEEP_FREED_MEMORY") == "1")
"""

_PAGES = (256 << 20) // 4096


def _faults(**settings: str) -> tuple[str, str, int, int]:
    huge, cached, first, last = _restarted_run(_FAULTS_SCRIPT, **settings).split()
    return huge, cached, int(first), int(last)


@pytest.mark.skipif(not host_memory.huge_pages_possible(), reason="needs glibc 2.35+ and THP")
def test_huge_pages_fault_large_blocks_in_2mib_pages():
    huge, cached, first, last = _faults()  # the default: huge pages, no block cache
    assert (huge, cached) == ("True", "False")
    assert first < _PAGES // 20 and last < _PAGES // 20
    huge, cached, first, last = _faults(SKINJAX_HUGE_PAGES="0")
    assert (huge, cached) == ("False", "False")
    assert last > _PAGES // 2  # malloc as it is: 4 KiB pages, one fault each, every round


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_keep_freed_memory_reuses_a_freed_block_without_faults():
    huge, cached, first, last = _faults(SKINJAX_HUGE_PAGES="0", SKINJAX_KEEP_FREED_MEMORY="1")
    assert (huge, cached) == ("False", "False")
    assert first > _PAGES // 2 and last < _PAGES // 100  # opt-in: the heap keeps the block


@pytest.mark.skipif(host_memory.block_cache_library() is None, reason="block cache not built")
def test_block_cache_reuses_a_freed_block_without_faults():
    huge, cached, first, last = _faults(SKINJAX_HUGE_PAGES="0", SKINJAX_BLOCK_CACHE="1")
    assert (huge, cached) == ("False", "True")
    assert last < 16 < first  # a fresh mapping (the cache's own huge pages), then the same one


# malloc's contract on the cache's blocks, and the cache given up before a block it cannot
# serve is mapped (printed: checks that must all be True, then the resident growth in MiB).
_CONTRACT_SCRIPT = """
import ctypes
import numpy as np
from skinjax import host_memory
host_memory.restart_with_fast_malloc()
assert host_memory.uses_block_cache()
libc = ctypes.CDLL(None)
for name, args in [("malloc", [ctypes.c_size_t]), ("calloc", [ctypes.c_size_t] * 2),
                   ("realloc", [ctypes.c_void_p, ctypes.c_size_t]),
                   ("malloc_usable_size", [ctypes.c_void_p])]:
    getattr(libc, name).argtypes = args
    sized = name == "malloc_usable_size"
    getattr(libc, name).restype = ctypes.c_size_t if sized else ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
MiB = 1 << 20
def view(ptr, size):
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (size,))
def resident():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))
checks = []
block = libc.malloc(256 * MiB)
view(block, 256 * MiB)[:] = 7
libc.free(block)
zeroed = libc.calloc(256, MiB)  # the cached block again, which held sevens
checks.append(zeroed == block and not view(zeroed, 256 * MiB).any())
view(zeroed, 256 * MiB)[:3] = [1, 2, 3]
grown = libc.realloc(zeroed, 300 * MiB)
checks.append(list(view(grown, 3)) == [1, 2, 3])
checks.append(libc.malloc_usable_size(grown) >= 300 * MiB)
aligned = ctypes.c_void_p()
checks.append(libc.posix_memalign(ctypes.byref(aligned), 4096, 128 * MiB) == 0)
checks.append(aligned.value % 4096 == 0)
view(aligned.value, 128 * MiB)[:] = 1
small = libc.malloc(100)
checks.append(libc.malloc_usable_size(small) >= 100)
for ptr in (grown, aligned.value, small):
    libc.free(ptr)
start = resident()
bigger = libc.malloc(512 * MiB)  # fits no cached block: the cache is unmapped first
view(bigger, 512 * MiB)[:] = 1
print(*checks, resident() - start)
"""


@pytest.mark.skipif(host_memory.block_cache_library() is None, reason="block cache not built")
def test_block_cache_keeps_malloc_contract_and_peak():
    *checks, growth = _restarted_run(_CONTRACT_SCRIPT, SKINJAX_BLOCK_CACHE="1").split()
    assert checks == ["True"] * 6
    # 256 MiB of the 300 MiB block (the copy) and the 128 MiB block were resident in the
    # cache; a cache that kept them would grow by 512 MiB, holding 896 MiB for 512.
    assert int(growth) < 512 - 256 - 128 + 32


@pytest.mark.skipif(not host_memory.huge_pages_possible(), reason="needs glibc 2.35+ and THP")
def test_scripts_restart_with_fast_malloc_before_importing_jax():
    """A script's restart comes before its imports: both processes import host_memory,
    only the restarted one imports JAX (a restart after the imports costs one more)."""
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "plot_runs.py"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--help"],  # absl exits 1 on --help
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert imported.count("skinjax.host_memory") == 2
    assert imported.count("jax") == 1
