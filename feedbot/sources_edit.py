"""Edit sources.yaml in place: comments, order and formatting kept (ruamel.yaml round trip).

Every edit is validated before the file is replaced, and the replacement is atomic (temp file
in the same directory, fsync, rename): the file is never left half-written. A symlinked file is
edited where the link points, so the link stays. Edits are serialised by an exclusive lock on a
sidecar file (`.sources.yaml.lock`, next to the file, removed after the edit) held from reading
the file to replacing it, so concurrent edits never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from .config import Config, ConfigError, load_config, parse_yaml, read_sources
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


def atomic_write(path: Path, text: str, unchanged: Callable[[], bool] | None = None) -> bool:
    """Replace the file at `path` (the target of a symlink, which stays) with `text`.

    `unchanged`, when given, is asked once the new text is safely on disk, right before the
    rename: when it says False (someone saved the file meanwhile), nothing is replaced and
    False is returned. The slow part (the fsync) is thus outside the window in which another
    writer's save would be lost."""
    path = Path(path).resolve()
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if unchanged is not None and not unchanged():
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


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


# A human's editor does not take our lock: when the file changes between our read and our
# replace, the edit is redone on the new text (up to this many times) instead of overwriting it.
EDIT_ATTEMPTS = 5


def _edit_locked(path: Path, target: Path,
                 mutate: Callable[[CommentedMap], Any]) -> tuple[Config, Any]:
    for _ in range(EDIT_ATTEMPTS):
        text = _read(path, target)
        cfg, result, new_text = _edited(path, text, mutate)
        unchanged = functools.partial(_unchanged, path, target, text)
        try:  # saved by someone else meanwhile (up to the rename): start again
            if not atomic_write(target, new_text, unchanged):
                continue
        except OSError as e:  # a read-only or full disk: the file is as it was
            raise ConfigError(path, f"cannot write: {e.strerror or e}; nothing was "
                              "changed") from None
        cfg.path = path
        return cfg, result
    raise ConfigError(path, "the file kept changing while feedbot was editing it; nothing "
                      "was changed", hint="save your edits, then try again")


def _unchanged(path: Path, target: Path, text: str) -> bool:
    return _read(path, target) == text


def _read(path: Path, target: Path) -> str:
    return read_sources(path, target, newline="")  # CRLF kept as it is


def _edited(path: Path, text: str, mutate: Callable[[CommentedMap], Any]) -> tuple[Config, Any,
                                                                                   str]:
    """(the validated result, what `mutate` returned, the new text) for the file's `text`."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    crlf = text.count("\r\n") * 2 > text.count("\n")  # the file's own line endings
    text = text.removeprefix(bom).replace("\r\n", "\n")  # edited as LF, written back as found
    load_config(path, text=text)  # refuse to edit a file that is already broken
    doc = parse_yaml(text, path)
    prefix = ""
    if doc is None:  # nothing but comments (or nothing): ruamel would drop the comments
        doc = CommentedMap()
        prefix = text.rstrip("\n") + "\n" if text.strip() else ""
    _keep_anchors(doc)
    result = mutate(doc)
    y = _dumper()
    seq, offset = _detect_indent(text)
    y.indent(mapping=_detect_mapping_indent(text), sequence=seq, offset=offset)
    buf = io.StringIO()
    y.dump(doc, buf)
    new_text = prefix + buf.getvalue()
    try:
        cfg = load_config(path, text=new_text)
    except ConfigError as e:
        raise ConfigError(path, f"edit refused, the result would be invalid: {e.message}",
                          key=e.key, hint=e.hint) from None
    if crlf:
        new_text = new_text.replace("\n", "\r\n")
    return cfg, result, bom + new_text


def _keep_anchors(node: Any) -> None:
    """ruamel writes an anchor (`&name`) only where an alias uses it: keep the unused ones too,
    as the human wrote them."""
    anchor = getattr(node, "yaml_anchor", None)
    if anchor is not None and (a := anchor()) is not None and a.value:
        node.yaml_set_anchor(a.value, always_dump=True)
    if isinstance(node, dict):
        for value in node.values():
            _keep_anchors(value)
    elif isinstance(node, list):
        for value in node:
            _keep_anchors(value)


def set_stage(path: Path, stage_id: str) -> Config:
    def mutate(doc: CommentedMap) -> None:
        learner = doc.get("learner")
        if not isinstance(learner, dict):
            learner = CommentedMap()
            doc.insert(0, "learner", learner)
        learner["stage"] = stage_id

    cfg, _ = edit_sources(path, mutate)
    return cfg
