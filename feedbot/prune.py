"""Retention: remove what the database no longer needs, so that it does not grow forever.

`feedbot prune` and, once a day, `feedbot run` remove items older than `retention.items`
(by their date and by when they were first seen), unless a chat voted on or saved them or a
followed post shared them since, with their sources and deliveries; then
the cached vectors no item uses any more, except those of the roadmap's stage texts and the
demo items (a digest over cached items must not load the model, issue 6); with
`--other-models`, also the vectors of models other than the current one.

An undated item leaves a tombstone (see store.MIGRATIONS 7): it counts from when it was first
seen, so a feed that still lists it would bring it back as news. A dated one needs none: the
store does not take in an item dated before the last prune's cutoff.

Everything is deleted in short transactions of a few hundred rows, so another feedbot
process waits at most a moment for the write lock; VACUUM (which holds it throughout) only
when asked for. All SQL is in store.py.

It also removes the saved 👍/👎 models under `$FEEDBOT_HOME/models` that no chat, stage or
embedding model can use any more and no process has used for a week (`learn.unused_models`),
each unless another feedbot is loading or replacing it at that moment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .items import content_hash

if TYPE_CHECKING:
    from .embed import Embedder
    from .roadmap import Roadmap
    from .store import Store

ITEM_CHUNK = 500  # items deleted per transaction
VECTOR_CHUNK = 2000  # vectors deleted per transaction
# `feedbot run` vacuums only after a prune that left this much of the file free (the first
# prune of a database that grew for a year); the free pages of a daily prune are reused.
AUTO_VACUUM_SHARE = 0.25
AUTO_VACUUM_BYTES = 20_000_000
MODELS_SHOWN = 10  # saved models named in the report line, then "and N more"
_ROW_OVERHEAD = 40  # bytes a vector row takes besides its blob (key, hash, record header)


@dataclass
class PruneReport:
    older_than: str  # the retention as given ("365d"), "" when items are kept
    items: int = 0  # removed (or, in a dry run, that would be)
    kept: int = 0  # as old, kept: a chat voted on or saved them, or a post shared them since
    vectors: int = 0  # removed, of items or texts no longer there
    other_models: int = 0  # removed, of other models' vectors of items still there
    tombstones: int = 0  # forgotten: no feed has listed them for the retention period
    freed_estimate: int = 0  # bytes
    bytes_before: int = 0
    bytes_after: int = 0
    dry_run: bool = False
    vacuumed: bool = False
    vacuum_error: str = ""  # VACUUM failed for want of disk space (the removal stands)
    stopped: bool = False  # `feedbot run` stopped in the middle
    models: list[str] = field(default_factory=list)  # saved 👍/👎 models removed (or would be)

    @property
    def removed(self) -> bool:
        return bool(self.items or self.vectors or self.other_models or self.tombstones)

    def line(self) -> str:
        """One line: what was (or would be) removed, and the database's size."""
        verb = "would remove" if self.dry_run else "removed"
        what = []
        if self.older_than:
            kept = (f" ({self.kept:,} as old kept: voted on, saved, or shared since)"
                    if self.kept else "")
            what.append(f"{_count(self.items, 'item')} older than {self.older_than}{kept}")
        vectors = f"{_count(self.vectors + self.other_models, 'cached vector')}"
        if self.other_models:
            vectors += f" ({self.other_models:,} of other models)"
        what.append(vectors)
        if self.tombstones:
            what.append(f"{_count(self.tombstones, 'tombstone')} of items no feed lists any "
                        "more")
        if self.models:
            shown = "; ".join(self.models[:MODELS_SHOWN])
            more = len(self.models) - MODELS_SHOWN
            shown += f" and {more:,} more" if more > 0 else ""
            what.append(f"{_count(len(self.models), 'unused 👍/👎 model file')} ({shown})")
        text = f"{verb} {' and '.join(what)}"
        if not self.older_than:
            text = f"items are kept (retention never); {text}"
        size = _mb(self.bytes_before)
        if self.dry_run:
            return f"{text}: about {_mb(self.freed_estimate)} of the database's {size}"
        if self.vacuumed:
            text += f"; database {size} → {_mb(self.bytes_after)}"
        elif self.vacuum_error:
            text += (f"; the file was not compacted ({self.vacuum_error}: VACUUM needs about "
                     f"{size} free beside it); new items reuse the space freed")
        elif self.removed and self.freed_estimate:
            text += (f"; database {size}, about {_mb(self.freed_estimate)} of it now free "
                     "space that new items reuse")
        else:
            text += f"; database {size}"
        return text + (" (stopped before the end)" if self.stopped else "")


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _mb(n: int) -> str:
    """Bytes in decimal units, as `feedbot doctor` gives them: 113.0 MB, 1.2 GB, 48.0 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def protected_hashes(roadmap: Roadmap, now: datetime) -> set[str]:
    """Content hashes of the texts whose vectors stay though no item has them: every stage
    text of the learner's roadmap and of the packaged one (`digest.stage_vectors` caches them
    like items; a learner may go back to the packaged roadmap) and the bundled demo items
    (`feedbot digest` before the first collection)."""
    from .digest import demo_items
    from .roadmap import load_roadmap

    out: set[str] = set()
    for r in (roadmap, load_roadmap()):
        for stage in r.stages:
            out.update(content_hash(t) for t in stage.texts().values())
    out.update(s.content_hash for s in demo_items(now))
    return out


def current_model(embedder: Embedder) -> tuple[Callable[[str], bool], str]:
    """Which cached vectors are the current model's, and how that was told, without loading
    the model: its cache key (`Embedder.model_id`) when known from the settings or the
    backend measured before; otherwise every key of the model (`name`, `name#backend`)."""
    from .backends import cached_choice  # a JSON file; imports no torch

    if (embedder.loaded or embedder.backend_pref != "auto"
            or cached_choice(embedder.model_ref, embedder.device_pref)):
        key = embedder.model_id
        return (lambda m: m == key), key
    space = embedder._space  # the model's part of every key it caches vectors under
    return (lambda m: m == space or m.startswith(space + "#")), f"{space} (any backend)"


def prune(store: Store, *, older_than: float | None, label: str, now: datetime,
          keep_hashes: set[str], keep_model: Callable[[str], bool] | None = None,
          dry_run: bool = False, vacuum: bool | str = False,
          stop: Callable[[], bool] | None = None,
          embedding_model: Callable[[str], bool] | None = None,
          home: Path | None = None) -> PruneReport:
    """Remove items older than `older_than` seconds (None: none), then the vectors no item
    uses (but those of `keep_hashes`), and with `keep_model` the vectors of models it says
    no to. `vacuum`: True, False, or "auto" (only when much of the file is left free).
    `stop()` is asked between transactions; when true, the prune ends there.

    First the saved 👍/👎 models under `home` (default `$FEEDBOT_HOME`) that cannot be used
    any more (`learn.unused_models`); `embedding_model` tells the current embedding model's
    cache keys (default: `keep_model`, else the model the environment configures)."""
    report = PruneReport(older_than=label if older_than is not None else "", dry_run=dry_run,
                         bytes_before=store.disk_bytes())
    report.models = _prune_models(store, embedding_model or keep_model, home, dry_run)
    before = now - timedelta(seconds=older_than) if older_than is not None else None
    candidates = store.prune_candidates(before) if before is not None else None
    going = set(candidates.ids) if candidates is not None else set()
    hashes = store.item_hashes()
    staying = {h for i, h in hashes.items() if i not in going}
    unused: list[int] = []
    other: list[int] = []
    vector_bytes = all_vector_bytes = 0
    for rowid, model, h, size in store.vector_keys():
        all_vector_bytes += size + _ROW_OVERHEAD
        if h not in staying and h not in keep_hashes:
            unused.append(rowid)
        elif keep_model is not None and not keep_model(model):
            other.append(rowid)
        else:
            continue
        vector_bytes += size + _ROW_OVERHEAD
    item_bytes = 0
    if going:  # the rest of the file, shared out over the items
        rest = max(report.bytes_before - all_vector_bytes, 0)
        item_bytes = rest * len(going) // max(len(hashes), 1)
    report.freed_estimate = vector_bytes + item_bytes
    if candidates is not None:
        report.kept = candidates.voted
    if dry_run:
        report.items, report.vectors, report.other_models = len(going), len(unused), len(other)
        if before is not None:
            report.tombstones = store.unseen_tombstones(before)
        return report

    def stopping() -> bool:
        report.stopped = stop is not None and stop()
        return report.stopped

    if before is None:  # `never` now: items of every date are taken in again
        store.set_pruned_before(None)
    if before is not None and candidates is not None:
        store.set_pruned_before(before)
        for chunk in _chunks(candidates.ids, ITEM_CHUNK):
            if stopping():
                return _finish(store, report, vacuum=False)
            report.items += len(store.delete_items(chunk, before, now))
        report.tombstones = store.delete_tombstones(before)
    for chunk in _chunks(unused, VECTOR_CHUNK):
        if stopping():
            return _finish(store, report, vacuum=False)
        report.vectors += store.delete_vectors(chunk, unused_only=True)
    for chunk in _chunks(other, VECTOR_CHUNK):
        if stopping():
            return _finish(store, report, vacuum=False)
        report.other_models += store.delete_vectors(chunk, unused_only=False)
    if report.items < len(going):  # some were voted on meanwhile: scale the estimate
        report.freed_estimate = (vector_bytes * report.vectors // max(len(unused), 1)
                                 + item_bytes * report.items // len(going))
    return _finish(store, report, vacuum=vacuum)


def _prune_models(store: Store, current: Callable[[str], bool] | None,
                  home: Path | None, dry_run: bool) -> list[str]:
    """The saved 👍/👎 models removed (in a dry run, that would be): names, with why. A
    problem here is logged and stops nothing: the models are only a cache of the votes."""
    import logging
    import time

    from .learn import remove_unused_models, unused_models

    if current is None:
        with contextlib.suppress(Exception):  # a bad setting: said by the commands that embed
            from .embed import Embedder

            current = current_model(Embedder())[0]
    try:
        # File times are the system clock's, whatever clock the caller runs on.
        found = unused_models(store, now=time.time(), home=home, current=current)
        if not dry_run:
            found = list(remove_unused_models(found))
    except Exception as e:
        logging.getLogger(__name__).warning("the unused 👍/👎 models were not removed (%s: %s)",
                                            type(e).__name__, e)
        return []
    return [m.line() for m in found]


def _finish(store: Store, report: PruneReport, *, vacuum: bool | str) -> PruneReport:
    if vacuum == "auto":
        vacuum = (report.freed_estimate >= AUTO_VACUUM_BYTES and
                  report.freed_estimate >= AUTO_VACUUM_SHARE * report.bytes_before)
    # not for tombstones alone: a few rows of a few bytes do not pay for rewriting the file
    if vacuum and (report.items or report.vectors or report.other_models):
        import sqlite3

        from .store import is_disk_trouble

        try:
            store.vacuum()
            report.vacuumed = True
        except sqlite3.OperationalError as e:  # what was removed stays removed
            if not is_disk_trouble(e):
                raise
            report.vacuum_error = str(e)
    report.bytes_after = store.disk_bytes()
    return report


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
