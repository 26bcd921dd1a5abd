"""host_memory.keep_freed_memory, opt-in: a thread's second large allocation reuses the first one's
pages; by default malloc is left as it is."""

import os
import pathlib
import subprocess
import sys

import pytest

from skinjax import host_memory

# Allocates, touches and frees 256 MiB twice in a new thread, as XLA's threads do with a
# step's temporaries, and prints the page faults of the second round.
_SCRIPT = """
import ctypes, ctypes.util, resource, sys, threading
from skinjax import host_memory
if sys.argv[1] == "keep":
    assert host_memory.keep_freed_memory() and host_memory.keeps_freed_memory()
if sys.argv[1] == "default":
    assert not host_memory.keep_freed_memory() and not host_memory.keeps_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
faults = []
def work():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(faults[1])
"""


def _second_round_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "SKINJAX_KEEP_FREED_MEMORY"}
    if mode == "keep":
        env["SKINJAX_KEEP_FREED_MEMORY"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True, env=env
    )
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_second_allocation_does_not_page_fault():
    pages = (256 << 20) // 4096
    assert _second_round_faults("default") > pages // 2  # malloc as it is: faults again
    assert _second_round_faults("keep") < pages // 100  # SKINJAX_KEEP_FREED_MEMORY=1


# Restarts with huge pages (unless SKINJAX_HUGE_PAGES=0), then touches a new 256 MiB block
# and prints whether the restart happened and the page faults the block took.
_HUGE_PAGES_SCRIPT = """
import ctypes, ctypes.util, resource
from skinjax import host_memory
host_memory.restart_with_huge_pages()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size)
ctypes.memset(block, 1, size)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
libc.free(block)
print(host_memory.uses_huge_pages(), faults)
"""


def _huge_pages_run(setting: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SKINJAX_HUGE_PAGES")}
    if setting is not None:
        env["SKINJAX_HUGE_PAGES"] = setting
    result = subprocess.run(
        [sys.executable, "-c", _HUGE_PAGES_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    restarted, faults = result.stdout.split()
    return restarted, int(faults)


@pytest.mark.skipif(not host_memory.huge_pages_possible(), reason="needs glibc 2.35+ and THP")
def test_restart_with_huge_pages_faults_large_blocks_in_2mib_pages():
    pages = (256 << 20) // 4096
    restarted, faults = _huge_pages_run(None)
    assert restarted == "True" and faults < pages // 20
    restarted, faults = _huge_pages_run("0")  # opted out: 4 KiB pages, one fault each
    assert restarted == "False" and faults > pages // 2


@pytest.mark.skipif(not host_memory.huge_pages_possible(), reason="needs glibc 2.35+ and THP")
def test_scripts_restart_with_huge_pages_before_importing_jax():
    """A script's restart comes before its imports: both processes import host_memory,
    only the restarted one imports JAX (a restart after the imports costs one more)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SKINJAX_HUGE_PAGES")}
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
