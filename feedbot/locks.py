"""An exclusive lock between processes: `flock` on a sidecar file, removed when released.

Used where two feedbot processes may do the same read-modify-write at once: edits of
sources.yaml (`sources_edit`) and the ONNX export of a model (`backends`). Where there is no
fcntl (Windows), or the lock file cannot be created, the work goes ahead unlocked: the caller
then reports its own error, if any.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows)
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (created if need be, removed afterwards, so no
    stray file is left beside the user's)."""
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # no such directory, or a read-only one
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us may have removed the file: then lock the new one.
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)  # releases the lock, after the unlink: a waiter then sees a stale file
