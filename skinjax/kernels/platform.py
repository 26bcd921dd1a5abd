"""The platform that code traced now is for: what picks each op's form.

`jax.default_backend()` names the platform this process runs on, but `jax.export` can
trace for another one: a GPU or TPU program lowered on a CPU host (as
tests/test_lowering.py does) must get XLA's native forms, not oneDNN's CPU-only custom
calls or the CPU's shifted-sum depthwise convolution. `tracing_for` names that platform
while a function is traced; elsewhere the default backend is the one traced for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

# jax.export's platform names -> jax.default_backend()'s.
KINDS = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "tpu": "tpu"}
_traced_for: list[str] = []


@contextlib.contextmanager
def tracing_for(platform: str) -> Iterator[None]:
    """Traces code inside for ``platform`` (an export platform: cpu, cuda, rocm or tpu).

    Like `onednn.disabled`, it decides what is traced: trace anew inside (a function
    jitted and called before keeps its cached trace).
    """
    if platform not in KINDS:
        raise ValueError(f"unknown platform {platform!r}; expected one of {sorted(KINDS)}")
    _traced_for.append(KINDS[platform])
    try:
        yield
    finally:
        _traced_for.pop()


def traced() -> str:
    """The platform kind ('cpu', 'gpu' or 'tpu') code traced now is for."""
    return _traced_for[-1] if _traced_for else jax.default_backend()
