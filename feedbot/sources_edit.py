"""Edit sources.yaml in place: comments, order and formatting kept (ruamel.yaml round trip).

Every edit is validated before the file is replaced, and the replacement is atomic (temp file
in the same directory, fsync, rename): the file is never left half-written. A symlinked file is
edited where the link points, so the link stays. Edits are serialised by an exclusive lock on a
sidecar file (`.sources.yaml.lock`, next to the file, removed after the edit) held from reading
the file to replacing it, so concurrent edits never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from .config import Config, ConfigError, load_config, parse_yaml
from .locks import exclusive


def _dumper() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _detect_indent(text: str) -> tuple[int, int]:
    """(sequence indent, dash offset) as the file already uses them, default (4, 2)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.lstrip(" ")
        if stripped.startswith("- ") and i > 0 and lines[i - 1].rstrip().endswith(":"):
            parent = len(lines[i - 1]) - len(lines[i - 1].lstrip(" "))
            offset = len(line) - len(stripped) - parent
            after_dash = stripped[1:]
            return offset + 1 + len(after_dash) - len(after_dash.lstrip(" ")), offset
    return 4, 2


def _detect_mapping_indent(text: str) -> int:
    """How far the file indents the keys under a top-level key (`learner:`), default 2."""
    lines = text.splitlines()
    for prev, line in zip(lines, lines[1:], strict=False):
        stripped = line.lstrip(" ")
        if prev.rstrip().endswith(":") and prev[:1] not in (" ", "#", "-") and stripped \
                and not stripped.startswith(("-", "#")):
            return len(line) - len(stripped)
    return 2


def atomic_write(path: Path, text: str) -> None:
    """Replace the file at `path` (the target of a symlink, which stays) with `text`."""
    path = Path(path).resolve()
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def edit_sources(path: Path, mutate: Callable[[CommentedMap], Any]) -> tuple[Config, Any]:
    """Apply `mutate` to the parsed document, validate, and atomically replace the file.

    Returns (the new validated config, whatever `mutate` returned). Raises ConfigError and
    leaves the file untouched when the current file or the result is invalid. A symlink is
    followed: its target is edited and the link kept.
    """
    path = Path(path)
    target = path.resolve()
    with exclusive(target.with_name(f".{target.name}.lock")):
        return _edit_locked(path, target, mutate)


def _edit_locked(path: Path, target: Path,
                 mutate: Callable[[CommentedMap], Any]) -> tuple[Config, Any]:
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    load_config(path, text=text)  # refuse to edit a file that is already broken
    doc = parse_yaml(text, path)
    if doc is None:
        doc = CommentedMap()
    result = mutate(doc)
    y = _dumper()
    seq, offset = _detect_indent(text)
    y.indent(mapping=_detect_mapping_indent(text), sequence=seq, offset=offset)
    buf = io.StringIO()
    y.dump(doc, buf)
    new_text = buf.getvalue()
    try:
        cfg = load_config(path, text=new_text)
    except ConfigError as e:
        raise ConfigError(path, f"edit refused, the result would be invalid: {e.message}",
                          key=e.key, hint=e.hint) from None
    atomic_write(target, new_text)
    cfg.path = path
    return cfg, result


def set_stage(path: Path, stage_id: str) -> Config:
    def mutate(doc: CommentedMap) -> None:
        learner = doc.get("learner")
        if not isinstance(learner, dict):
            learner = CommentedMap()
            doc.insert(0, "learner", learner)
        learner["stage"] = stage_id

    cfg, _ = edit_sources(path, mutate)
    return cfg
