"""Locks between processes: `flock` on a sidecar file, removed by the last holder.

`exclusive`: where two feedbot processes may do the same read-modify-write at once: edits of
sources.yaml (`sources_edit`) and the ONNX export of a model (`backends`). `shared`: any number
of holders at once, none while an exclusive holder has it (a process loading a model's ONNX
export, so that no other one removes it meanwhile). `try_exclusive`: the exclusive lock if no one
holds it, without waiting (removing an export no process uses; a source being collected, which
`collect` polls for so that two processes never fetch one source at once). Where there is no fcntl
(Windows), or the lock file cannot be created, the work goes ahead unlocked: the caller then
reports its own error, if any.
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
    with _held(lock, "exclusive"):
        yield


@contextlib.contextmanager
def shared(lock: Path) -> Iterator[None]:
    """Hold a shared lock on the file `lock`: other shared holders may hold it at once; an
    exclusive one waits (`exclusive`) or gives up (`try_exclusive`). The last holder out
    removes the file."""
    with _held(lock, "shared"):
        yield


@contextlib.contextmanager
def try_exclusive(lock: Path, *, unlockable: bool = False) -> Iterator[bool]:
    """`exclusive` without waiting: yields True with the lock held, or False, holding nothing,
    when another holder (shared or exclusive, in any process) has it. When the lock file cannot
    be created it yields `unlockable`: False for callers that must not go ahead unlocked, True
    for those that may. Without fcntl (Windows) it yields True, unlocked: callers that remove
    what others may use need another safeguard there."""
    with _held(lock, "try", unlockable) as held:
        yield held


@contextlib.contextmanager
def _held(lock: Path, mode: str, unlockable: bool = False) -> Iterator[bool]:
    if fcntl is None:
        yield True
        return
    op = {"exclusive": fcntl.LOCK_EX, "shared": fcntl.LOCK_SH,
          "try": fcntl.LOCK_EX | fcntl.LOCK_NB}[mode]
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # no such directory, or a read-only one
            yield mode != "try" or unlockable
            return
        try:
            fcntl.flock(fd, op)
            # The holder before us may have removed the file: then lock the new one.
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        except BlockingIOError:  # try_exclusive: someone holds it
            os.close(fd)
            yield False
            return
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield True
    finally:
        last = True
        if mode == "shared":  # the last holder removes the file: none other holds it now
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                last = False
        if last:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
        os.close(fd)  # releases the lock, after the unlink: a waiter then sees a stale file
