"""One process per work directory: an exclusive `fcntl.flock` on ``workdir/lock``.

Two trainings in one work directory would write the same checkpoint steps (or crash
inside orbax); the second is refused at once, told which process holds the directory.
The operating system drops the lock when its holder exits in any way, ``kill -9``
included, so a stale lock file never blocks a rerun: only a live holder does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

import jax

LOCK_FILE = "lock"


class WorkdirBusy(RuntimeError):
    """Another live process holds the work directory."""


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds ``workdir`` (created if need be) for the duration, or raises `WorkdirBusy`.

    On several hosts, process 0 alone takes the lock: the others share its directory.
    """
    if jax.process_index() != 0:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise WorkdirBusy(
                f"{workdir} is in use by {holder} (lock {path}). Wait for it to end, "
                "or use another --workdir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock, if held
