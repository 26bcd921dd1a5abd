"""runtime.keep_freed_memory, opt-in: a thread's second large allocation reuses the first one's
pages; by default malloc is left as it is."""

import os
import subprocess
import sys

import pytest

# Allocates, touches and frees 256 MiB twice in a new thread, as XLA's threads do with a
# step's temporaries, and prints the page faults of the second round.
_SCRIPT = """
import ctypes, ctypes.util, resource, sys, threading
from skinjax import runtime
if sys.argv[1] == "keep":
    assert runtime.keep_freed_memory() and runtime.keeps_freed_memory()
if sys.argv[1] == "default":
    assert not runtime.keep_freed_memory() and not runtime.keeps_freed_memory()
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
