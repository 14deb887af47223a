"""Notice edits to sources.yaml while `feedbot run` is running.

Polls the file's stat (mtime, size, inode); a change must hold still for one more poll before
the file is read, so a half-written save or an editor's rename dance is not mistaken for an
edit. A settled change is loaded and validated with the caller's `load` and reported as new
settings or as the error. This module never applies anything and never writes the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from .config import ConfigError

T = TypeVar("T")

Signature = tuple[int, int, int] | None
_UNSET = object()


@dataclass(frozen=True)
class Change(Generic[T]):
    settings: T | None = None  # the new settings, when the edit is valid
    error: ConfigError | None = None  # why it is not


class SourcesWatcher(Generic[T]):
    """`poll()` every few seconds; it returns a `Change` once per settled edit, else None."""

    def __init__(self, path: Path, load: Callable[[Path], T]) -> None:
        self.path = Path(path)
        self.load = load
        self._seen: Signature = None
        self._pending: object = _UNSET
        self._content = ""
        self.accept()

    def _signature(self) -> Signature:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _hash(self) -> str:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return ""

    def accept(self) -> None:
        """Take the file as it is now as already applied (after feedbot's own edits)."""
        self._seen = self._signature()
        self._pending = _UNSET
        self._content = self._hash()

    def poll(self) -> Change[T] | None:
        sig = self._signature()
        if sig == self._seen:
            self._pending = _UNSET
            return None
        if sig != self._pending:  # changed since the last look: let it settle
            self._pending = sig
            return None
        self._seen, self._pending = sig, _UNSET
        content = self._hash()
        if content and content == self._content:  # touched, not changed
            return None
        self._content = content
        try:
            return Change(settings=self.load(self.path))
        except ConfigError as e:
            return Change(error=e)
