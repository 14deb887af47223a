"""Edit sources.yaml in place: comments, order and formatting kept (ruamel.yaml round trip).

Every edit is validated before the file is replaced, and the replacement is atomic (temp file
in the same directory, fsync, rename): the file is never left half-written. A symlinked file is
edited where the link points, so the link stays. Edits are serialised by an exclusive lock on a
sidecar file (`.sources.yaml.lock`, next to the file, removed after the edit) held from reading
the file to replacing it, so concurrent edits never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import functools
import io
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap

from .config import (
    MAX_SOURCES_BYTES,
    Config,
    ConfigError,
    load_config,
    parse_yaml,
    read_sources,
)
from .locks import exclusive


def _dumper() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


_END_COMMENT = re.compile(r"\s+#.*$")


def _opens_block(line: str) -> bool:
    """Whether a line is a key with its value below it: `blogs:`, `blogs:   # what I read`."""
    return not line.lstrip().startswith("#") and _END_COMMENT.sub("", line).rstrip().endswith(":")


def _key_above(lines: list[str], i: int) -> str | None:
    """The line above line `i` past blank and comment lines, if it opens a block."""
    for prev in reversed(lines[:i]):
        if prev.strip() and not prev.lstrip().startswith("#"):
            return prev if _opens_block(prev) else None
    return None


def _detect_indent(text: str) -> tuple[int, int]:
    """(sequence indent, dash offset) as the file already uses them, default (4, 2)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.lstrip(" ")
        if stripped.startswith("- ") and (key := _key_above(lines, i)) is not None:
            parent = len(key) - len(key.lstrip(" "))
            offset = len(line) - len(stripped) - parent
            after_dash = stripped[1:]
            return offset + 1 + len(after_dash) - len(after_dash.lstrip(" ")), offset
    return 4, 2


def _detect_mapping_indent(text: str) -> int:
    """How far the file indents the keys under a top-level key (`learner:`), default 2."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.lstrip(" ")
        if stripped and not stripped.startswith(("-", "#")) \
                and (key := _key_above(lines, i)) is not None and key[:1] not in (" ", "-"):
            return len(line) - len(stripped)
    return 2


def atomic_write(path: Path, text: str, unchanged: Callable[[], bool] | None = None) -> bool:
    """Replace the file at `path` (the target of a symlink, which stays) with `text`.

    `unchanged`, when given, is asked once the new text is safely on disk, right before the
    rename: when it says False (someone saved the file meanwhile), nothing is replaced and
    False is returned. The slow part (the fsync) is thus outside the window in which another
    writer's save would be lost."""
    path = Path(path).resolve()
    st = path.stat() if path.exists() else None
    if st is not None and not _writable(path):  # the rename would not ask
        raise PermissionError(errno.EACCES, "the file is read-only", str(path))
    mode = st.st_mode & 0o777 if st is not None else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:
            _keep_owner(tmp, st)
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


def _writable(path: Path) -> bool:
    """Whether this process may write `path`, and someone meant it to be written: a file
    without any write permission (`chmod a-w`) is read-only even for root, who may write
    anything (feedbot in a container often runs as root)."""
    with contextlib.suppress(OSError):
        if not path.stat().st_mode & 0o222:
            return False
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK, effective_ids=effective)


def _keep_owner(tmp: str, st: os.stat_result) -> None:
    """Give the new file the old one's owner and group (`sudo feedbot follow` on a user's file
    made it root's, and with mode 0600 unreadable by its user), as far as we may."""
    if not hasattr(os, "chown"):  # Windows
        return
    for uid, gid in ((st.st_uid, st.st_gid), (-1, st.st_gid)):
        with contextlib.suppress(OSError):  # only root may give a file away
            os.chown(tmp, uid, gid)
            return


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
    seq, offset = _detect_indent(text)
    indent = (_detect_mapping_indent(text), seq, offset)
    before = prefix + _dump(doc, indent)  # the file as ruamel writes it, before the edit
    result = mutate(doc)
    new_text = prefix + _dump(doc, indent)
    size = len(new_text.encode("utf-8"))
    if size > MAX_SOURCES_BYTES:  # no command would read it then
        raise ConfigError(path, f"edit refused: the file would be {size / 1e6:.0f} MB; a "
                          f"sources file is at most {MAX_SOURCES_BYTES // 1_000_000} MB")
    try:
        cfg = load_config(path, text=new_text)
    except ConfigError as e:
        raise ConfigError(path, f"edit refused, the result would be invalid: {e.message}",
                          key=e.key, hint=e.hint) from None
    new_text = _patched(text, before, new_text)
    if crlf:
        new_text = new_text.replace("\n", "\r\n")
    return cfg, result, bom + new_text


def _dump(doc: CommentedMap, indent: tuple[int, int, int]) -> str:
    y = _dumper()
    y.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _patched(text: str, before: str, after: str) -> str:
    """`after` as the change from `before` to `after` applied to the file's own `text`.

    ruamel rewrites more than the edit: it drops a `---` line, trailing blanks and the final
    newline's absence, and reflows a flow list written over several lines. Only the lines
    that the edit changed are taken from ruamel; the others stay as the human wrote them.
    When that cannot be done unambiguously, or would not give the same data, `after` as is."""
    if before == after:  # nothing changed (a no-op edit): the file as it is
        return text
    if before == text:
        return after
    old = text.splitlines(keepends=True)
    if old and not old[-1].endswith("\n"):
        old[-1] += "\n"
    base, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    # base line -> the file's line it comes from, where they match but for trailing blanks
    where: dict[int, int] = {}
    blocks = _matching_blocks([line.rstrip() for line in old], [line.rstrip() for line in base])
    changes = _changes(base, new)
    if blocks is None or changes is None:
        return after
    for a, b, size in blocks:
        where.update((b + k, a + k) for k in range(size))
    out: list[str] = []
    done = 0  # old[:done] is in out, or replaced
    for tag, i1, i2, j1, j2 in changes:
        if tag == "insert":  # after the line before, or else before the line after
            start = where[i1 - 1] + 1 if i1 - 1 in where else 0 if not i1 else \
                where.get(i1, len(old) if i1 == len(base) else -1)
            end = start
        else:  # the lines replaced must be the file's own, one after the other
            lines = [where.get(i, -1) for i in range(i1, i2)]
            start, end = lines[0], lines[0] + len(lines)
            if lines != list(range(start, end)):
                return after
        if start < done:
            return after
        out += old[done:start] + new[j1:j2]
        done = end
    out += old[done:]
    result = "".join(out)
    if not text.endswith("\n") and result.endswith("\n") and not after.endswith("\n\n"):
        result = result[:-1]
    try:
        same = YAML(typ="safe").load(result) == YAML(typ="safe").load(after)
    except YAMLError:
        same = False
    return result if same else after


# Lines between the common head and tail that difflib compares (quadratic with many equal
# lines, `weight: 2.0` in thousands of entries): beyond this, ruamel's text is written as is.
PATCH_MAX_LINES = 2000


def _trimmed(a: list[str], b: list[str]) -> tuple[int, int] | None:
    """(length of the common head, of the common tail), None when the rest is too long."""
    n = min(len(a), len(b))
    head = next((i for i in range(n) if a[i] != b[i]), n)
    tail = next((i for i in range(n - head) if a[-1 - i] != b[-1 - i]), n - head)
    if max(len(a), len(b)) - head - tail > PATCH_MAX_LINES:
        return None
    return head, tail


def _matcher(a: list[str], b: list[str]
             ) -> tuple[difflib.SequenceMatcher[str], int, int] | None:
    """difflib's matcher of `a` and `b` between their common head and tail, with the head's
    and the tail's lengths; None when what lies between is too long (`_trimmed`)."""
    cut = _trimmed(a, b)
    if cut is None:
        return None
    head, tail = cut
    m = difflib.SequenceMatcher(None, a[head:len(a) - tail], b[head:len(b) - tail],
                                autojunk=False)
    return m, head, tail


def _matching_blocks(a: list[str], b: list[str]) -> list[tuple[int, int, int]] | None:
    """difflib's matching blocks (a index, b index, size) of two lists of lines."""
    if (found := _matcher(a, b)) is None:
        return None
    m, head, tail = found
    blocks = [(head + i, head + j, size) for i, j, size in m.get_matching_blocks() if size]
    return [(0, 0, head), *blocks, (len(a) - tail, len(b) - tail, tail)]


def _changes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]] | None:
    """difflib's opcodes from `a` to `b`, without the 'equal' ones."""
    if (found := _matcher(a, b)) is None:
        return None
    m, head, _ = found
    return [(tag, head + i1, head + i2, head + j1, head + j2)
            for tag, i1, i2, j1, j2 in m.get_opcodes() if tag != "equal"]


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
