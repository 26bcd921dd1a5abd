"""Whether a compiled step fits: its memory by XLA's analysis, against what is free.

`Trainer.check` asks before anything is written or run, so a run that cannot fit stops
with the figures and what to change, instead of being killed by the operating system's
out-of-memory killer mid-run (where it has written checkpoints and lost the hours
since the last one). On CPU the step's buffers are host memory; on GPUs and TPUs they
are the device's.
"""

from __future__ import annotations

import dataclasses
import os

import jax

GIB = 2**30


class InsufficientMemory(RuntimeError):
    """A step needs more memory than the host or device has free."""


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes of one compiled step, as XLA's buffer assignment counts them."""

    arguments: int
    outputs: int
    aliased: int  # outputs written into donated arguments: counted once
    temporaries: int
    code: int

    @classmethod
    def of(cls, compiled: jax.stages.Compiled) -> StepMemory:
        m = compiled.memory_analysis()
        if m is None:
            raise ValueError("this backend gives no memory analysis of a compiled step")
        return cls(
            arguments=m.argument_size_in_bytes,
            outputs=m.output_size_in_bytes,
            aliased=m.alias_size_in_bytes,
            temporaries=m.temp_size_in_bytes,
            code=m.generated_code_size_in_bytes,
        )

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    def describe(self) -> str:
        return (
            f"{self.total / GIB:.2f} GiB (temporaries {self.temporaries / GIB:.2f}, "
            f"arguments {self.arguments / GIB:.2f}, new outputs "
            f"{(self.outputs - self.aliased) / GIB:.2f})"
        )


def _meminfo_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def _cgroup_free() -> int | None:
    """What this process's cgroup (v2) still allows, if it sets a limit."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            current = int(f.read())
    except OSError:
        return None
    return None if limit == "max" else int(limit) - current


def free_bytes(device: jax.Device) -> tuple[int, str]:
    """Bytes the step's buffers can still take, and where the figure comes from."""
    if device.platform == "cpu":
        free, source = _meminfo_available(), "the host's available memory (/proc/meminfo)"
        cgroup = _cgroup_free()
        if cgroup is not None and cgroup < free:
            free, source = cgroup, "this process's cgroup limit"
        return free, source
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        raise ValueError(f"{device} reports no memory limit")
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"{device}'s free memory"


def check_fits(memory: StepMemory, *, what: str, limit_gib: float, advice: str) -> None:
    """Raises `InsufficientMemory` if ``memory`` exceeds the limit: ``limit_gib`` when
    positive (a budget the user sets), else what the first local device has free."""
    if limit_gib > 0:
        free, source = int(limit_gib * GIB), "config.train.memory_limit_gib"
    else:
        free, source = free_bytes(jax.local_devices()[0])
    if memory.total > free:
        raise InsufficientMemory(
            f"{what} needs {memory.describe()}, but {free / GIB:.2f} GiB are free "
            f"({source}, pid {os.getpid()}). {advice}"
        )
