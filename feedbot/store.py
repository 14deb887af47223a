"""All SQL lives here: items, per-source state, cached vectors, feedback, deliveries.

SQLite in WAL mode; numbered migrations run on open, one transaction each (`PRAGMA
user_version` records how far we are). Callers pass `now` in; nothing here reads the clock
except `Store.open`'s default. Nothing here does network I/O or embedding.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .items import (
    Item,
    canonical_url,
    clean_url,
    content_hash,
    item_id,
    item_key,
    paper_id_from_link,
    split_arxiv_id,
)
from .text import fold, is_word_char, mark_chars

DB_FILE = "feedbot.db"  # in $FEEDBOT_HOME

# A migration is SQL (statements separated by ";\n"), or a function given the connection for
# one that depends on what this SQLite can do (9: the word index).
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: the core tables
    """
    CREATE TABLE items (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        url_canon TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        title TEXT NOT NULL,
        url TEXT NOT NULL,
        authors TEXT NOT NULL DEFAULT '[]',
        published REAL,
        summary TEXT NOT NULL DEFAULT '',
        arxiv_version INTEGER NOT NULL DEFAULT 0,
        categories TEXT NOT NULL DEFAULT '[]',
        pdf_url TEXT NOT NULL DEFAULT '',
        links TEXT NOT NULL DEFAULT '[]',
        person TEXT NOT NULL DEFAULT '',
        content_hash TEXT NOT NULL,
        first_seen REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX items_published ON items(coalesce(published, first_seen));
    CREATE INDEX items_url_canon ON items(url_canon);
    CREATE TABLE item_sources (
        item_id TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        guid TEXT NOT NULL DEFAULT '',
        person TEXT NOT NULL DEFAULT '',
        via TEXT NOT NULL DEFAULT '',   -- id of the post that shared it, when shared
        seen REAL NOT NULL,
        PRIMARY KEY (item_id, source)
    );
    CREATE INDEX item_sources_guid ON item_sources(source, guid) WHERE guid != '';
    CREATE TABLE source_state (
        name TEXT PRIMARY KEY,
        etag TEXT NOT NULL DEFAULT '',
        last_modified TEXT NOT NULL DEFAULT '',
        cursor TEXT NOT NULL DEFAULT '',
        last_attempt REAL,
        last_success REAL,
        last_error TEXT NOT NULL DEFAULT '',
        last_error_at REAL,
        failures INTEGER NOT NULL DEFAULT 0,
        retry_after REAL
    );
    CREATE TABLE vectors (
        model TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vec BLOB NOT NULL,
        PRIMARY KEY (model, content_hash)
    ) WITHOUT ROWID;
    CREATE TABLE feedback (
        chat TEXT NOT NULL,
        item_id TEXT NOT NULL,
        value TEXT NOT NULL CHECK (value IN ('up', 'down', 'later')),
        at REAL NOT NULL,
        PRIMARY KEY (chat, item_id)
    );
    CREATE TABLE deliveries (
        chat TEXT NOT NULL,
        item_id TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (chat, item_id)
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: vectors in a rowid table. In a WITHOUT ROWID table a 1.5 kB vector overflows the
    # index page, and joining 100k items to their vectors took 2.8 s instead of 0.55 s.
    """
    CREATE TABLE vectors_new (
        model TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vec BLOB NOT NULL
    );
    INSERT INTO vectors_new(model, content_hash, dim, vec)
        SELECT model, content_hash, dim, vec FROM vectors;
    DROP TABLE vectors;
    ALTER TABLE vectors_new RENAME TO vectors;
    CREATE UNIQUE INDEX vectors_key ON vectors(model, content_hash);
    """,
    # 3: items per source. The primary key starts with item_id, so every source's item count
    # (read for each source on every collection) scanned the whole table: 1.1 s for 200
    # sources over 100k items.
    """
    CREATE INDEX item_sources_source ON item_sources(source);
    """,
    # 4: the roadmap stage a 👍/👎 was given at, so that feedback from an earlier stage steers
    # the next one less ('' for votes given before this migration: they count at every stage).
    """
    ALTER TABLE feedback ADD COLUMN stage TEXT NOT NULL DEFAULT '';
    """,
    # 5: read-later is a bookmark beside the vote, not a third kind of vote: saving a liked
    # item for later used to erase its 👍. Existing 'later' rows move to the new table.
    """
    CREATE TABLE bookmarks (
        chat TEXT NOT NULL,
        item_id TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (chat, item_id)
    );
    INSERT INTO bookmarks(chat, item_id, at)
        SELECT chat, item_id, at FROM feedback WHERE value = 'later';
    DELETE FROM feedback WHERE value = 'later';
    """,
    # 6: what each source fetches (its kind and feed URL, arXiv query or handle), recorded
    # from sources.yaml, so that a source renamed there is still known by its old name's
    # items (see `Store.remember_sources`). '' where not recorded yet.
    """
    ALTER TABLE source_state ADD COLUMN kind TEXT NOT NULL DEFAULT '';
    ALTER TABLE source_state ADD COLUMN target TEXT NOT NULL DEFAULT '';
    """,
    # 7: what `feedbot prune` removed and must not take in again as new: the dedup keys of
    # pruned undated items (`items.key`, and `guid:SOURCE:GUID` for each source's GUID). An
    # undated item counts from when it was first seen, so a feed that still lists it would
    # bring it back as news. Dated items need none (see `Store.upsert_items`). `seen`: when a
    # feed last listed it; a tombstone no feed has listed for the retention period goes.
    """
    CREATE TABLE tombstones (
        key TEXT PRIMARY KEY,
        pruned REAL NOT NULL,
        seen REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 8: the forum topic (`message_thread_id`) of a group with topics where the chat's daily
    # digest goes: where someone last gave /start or /digest. No row: the chat's main thread
    # (a private chat, a group without topics, or a forum's General topic).
    """
    CREATE TABLE chat_topics (
        chat TEXT PRIMARY KEY,
        thread INTEGER NOT NULL,
        at REAL NOT NULL
    );
    """,
    # 9: an index of the words of every summary (SQLite FTS5), so that `feedbot search` finds
    # a word anywhere in a summary, not only in its first 400 characters; filled here for the
    # items already stored. See `_index_words`: where this SQLite has no FTS5, nothing but the
    # key table is made, and search reads the start of each summary as before.
    lambda db: _migrate_words(db),
    # 10: what the source's last successful fetch had to say beside its items: the feed moved
    # permanently (update its URL), was malformed and read anyway, or was cut short. Shown by
    # `feedbot sources` and /sources; before, only that run's `collect` output said it, and a
    # `feedbot run` user never saw it.
    """
    ALTER TABLE source_state ADD COLUMN notice TEXT NOT NULL DEFAULT '';
    """,
    # 11: when the withdrawal of a stored paper that a chat voted on or saved was collected
    # (NULL: not withdrawn). Such a paper stays for its votes and saved lists, but no digest
    # or search offers it any more; before, it stayed in every chat's digests as it was.
    """
    ALTER TABLE items ADD COLUMN withdrawn REAL;
    """,
    # 12: the arXiv version that withdrew a paper removed for it (see `Store._withdraw`); 0 for
    # a tombstone of `feedbot prune`. So that `feedbot feedback` and search, asked for such a
    # paper, say it was withdrawn, not "never collected, or removed by a prune".
    """
    ALTER TABLE tombstones ADD COLUMN withdrawn INTEGER NOT NULL DEFAULT 0;
    """,
]

# --- the word index of summaries (migration 9) ----------------------------------------------
#
# `summary_words` is a contentless FTS5 table (the summaries are in `items` already: a second
# copy would add about 1 kB an item) whose rowid is `item_keys.n`, an INTEGER PRIMARY KEY,
# which VACUUM keeps. It is not keyed on the rowid of `items`: that table has a TEXT primary
# key, whose rowids SQLite may renumber in a VACUUM, leaving an index keyed on them pointing
# at the wrong items. An item has a key exactly when its summary is indexed.
#
# `Store.upsert_items` indexes a batch of new items in one statement (`_index_new`) and
# `Store.delete_items` takes a batch out in one (`_unindex`): FTS5 writes its pending words out
# at each statement that changes it, and a trigger per row (tried first) made inserting 10,000
# items about 2.5 times as slow. Triggers on `items` keep the index right for every other
# change, in the same transaction: a summary replaced (a new arXiv version, an edit), an item
# deleted by other means. A contentless table is told what to remove ('delete' with the
# summary that was indexed), which a trigger has exactly; an item without a key is left
# alone. Meta `WORDS_INDEX` is 'fts5' while the index is kept.
WORDS_INDEX = "search.words"
# Words as search's \w+ cuts them (with `_separators()`: unicode61 knows Unicode 6.1 only, and
# keeps inside a word what \w+ cuts at: the emoji that came later ("LoRA🤗", "agents🤖"), some
# marks and symbols), folded as `text.fold` folds them: Latin letters without their accents,
# so that "muller" finds "Müller" (remove_diacritics 2 also takes a separate combining accent
# off its letter, where 1 keeps that word whole and unfound).
# Marks (categories M*) are kept inside a word, as search's words hold them (`text.word_marks`):
# "मशीन" is one word, not "मश" and "न". A SQLite older than 3.25, which has no `categories`,
# cuts at them as before (`_words_base`), and search reads such words in the summary's start.
WORDS_TOKENIZER = "unicode61 remove_diacritics 2 tokenchars '_' categories 'L* N* Co M*'"
_WORDS_BEFORE_MARKS = "unicode61 remove_diacritics 2 tokenchars '_'"
_WORDS_TRIGGERS = {
    "summary_words_update": """
        CREATE TRIGGER summary_words_update AFTER UPDATE OF id, summary ON items
        WHEN (old.summary IS NOT new.summary OR old.id IS NOT new.id)
            AND EXISTS (SELECT 1 FROM item_keys WHERE id = old.id) BEGIN
            INSERT INTO summary_words(summary_words, rowid, summary)
                SELECT 'delete', n, old.summary FROM item_keys WHERE id = old.id;
            UPDATE item_keys SET id = new.id WHERE id = old.id;
            INSERT INTO summary_words(rowid, summary)
                SELECT n, new.summary FROM item_keys WHERE id = new.id;
        END""",
    "summary_words_delete": """
        CREATE TRIGGER summary_words_delete AFTER DELETE ON items
        WHEN EXISTS (SELECT 1 FROM item_keys WHERE id = old.id) BEGIN
            INSERT INTO summary_words(summary_words, rowid, summary)
                SELECT 'delete', n, old.summary FROM item_keys WHERE id = old.id;
            DELETE FROM item_keys WHERE id = old.id;
        END""",
}


_X_STATUS = re.compile(r"https?://(?:www\.|mobile\.)?(?:x|twitter)\.com/(?:i/web|i|\w{1,50})/"
                       r"status(?:es)?/(\d{1,30})(?:[/?#]|$)", re.IGNORECASE)


def same_target(kind_target: tuple[str, str]) -> tuple[str, str]:
    """What a source fetches, as two spellings of one target compare: an X handle in any case
    (`Grace_T` is `grace_t`: X's own lookup ignores case, and its cursor belongs to the
    account, so a handle retyped in another case keeps it)."""
    kind, target = kind_target
    return (kind, target.casefold()) if kind == "x" else (kind, target)


@cache
def fts5_available() -> bool:
    """Whether this SQLite has FTS5 (some distributions build it without)."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


@cache
def _words_base() -> str:
    """`WORDS_TOKENIZER` where this SQLite takes it, else the tokenizer without `categories`."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize=\"{WORDS_TOKENIZER}\")")
        return WORDS_TOKENIZER
    except sqlite3.OperationalError:  # no FTS5 (then unused), or no `categories`
        return _WORDS_BEFORE_MARKS
    finally:
        db.close()


@cache
def index_keeps() -> frozenset[str]:
    """The marks the word index keeps inside a word as they are: a query word with any other
    (one remove_diacritics takes off, or any mark where `categories` is missing) is read in
    the summary's start instead (`search.Word.indexed`)."""
    if not fts5_available():
        return frozenset()
    marks = mark_chars()
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize=\"{_words_base()}\")")
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'row')")
        db.execute("INSERT INTO t(x) VALUES (?)", (" ".join(f"a{c}b" for c in marks),))
        return frozenset(t[1] for (t,) in db.execute("SELECT term FROM v")
                         if len(t) == 3 and t[0] == "a" and t[2] == "b")
    finally:
        db.close()


@cache
def _separators() -> str:
    """The characters that are no part of a word to search's `\\w+` (Python's Unicode) but that
    this SQLite's unicode61 keeps inside one (its tables are of Unicode 6.1): the symbols and
    emoji added since (🤗 U+1F917, 🧠, 🤖), and some marks. Told to the tokenizer as separators,
    so that "LoRA🤗" in a post holds the word "lora" for the index as it does for the scan of
    titles (and of summaries before the index). The 25 combining accents of Latin letters
    (U+0301 …) are none of them: remove_diacritics 2 takes them off their letter, so a
    summary that writes "é" as "e" and U+0301 holds the word "cafe", as `text.fold` makes
    of the query "café"."""
    maybe = [c for c in map(chr, range(0x80, 0x30000))
             if unicodedata.category(c) not in ("Cn", "Co", "Cs") and not is_word_char(c)]
    db = sqlite3.connect(":memory:")
    try:  # which of them this SQLite keeps inside a word: "a?b" is one word then
        db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize=\"{_words_base()}\")")
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'row')")
        db.execute("INSERT INTO t(x) VALUES (?)", (" ".join(f"a{c}b" for c in maybe),))
        kept = {t[1] for (t,) in db.execute("SELECT term FROM v")
                if len(t) == 3 and t[0] == "a" and t[2] == "b"}
    finally:
        db.close()
    return "".join(c for c in maybe if c in kept)


def _words_tokenizer() -> str:
    """The tokenizer of `summary_words`: `WORDS_TOKENIZER` and `_separators()`."""
    return f"{_words_base()} separators '{_separators()}'" if _separators() \
        else _words_base()


def _words_outdated(db: sqlite3.Connection) -> bool:
    """Whether the word index was made by an older feedbot, which cut or folded words
    otherwise: before separators it kept "LoRA🤗" as one word, before remove_diacritics 2
    "Müller" was no "muller", before `categories` it cut "मशीन" at its vowel sign. Rebuilt on
    open. (`_separators()` is computed only for an index without any: 50 ms, at every open of
    the store otherwise.)"""
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'summary_words'").fetchone()
    if row is None:
        return False
    base = row[0].split('tokenize="', 1)[-1].split(" separators ", 1)[0].rstrip('")')
    return base not in (WORDS_TOKENIZER, _WORDS_BEFORE_MARKS) or \
        base == _WORDS_BEFORE_MARKS and _words_base() == WORDS_TOKENIZER or \
        " separators " not in row[0] and bool(_separators())


def _holds(text: str, words: str) -> bool:
    """SQL `feedbot_holds(text, words)`: whether `text`, folded (`text.fold`), holds one of
    `words` (folded, one per line) anywhere."""
    low = fold(text)
    return any(w in low for w in words.split("\n"))


def _migrate_words(db: sqlite3.Connection) -> None:
    """Migration 9."""
    _index_words(db, fts5_available())


def _index_words(db: sqlite3.Connection, fts: bool) -> None:
    """Make the word index what this SQLite can keep, inside the caller's write transaction.

    With FTS5 (`fts`): (re)build it from every stored item and keep it with triggers. Without:
    drop the triggers (they would fail every write of an item: "no such module: fts5", as in
    a database that moved to a SQLite built without it) and mark the index absent, so search
    reads the start of each summary; a later open with FTS5 rebuilds it."""
    for name in _WORDS_TRIGGERS:
        db.execute(f"DROP TRIGGER IF EXISTS {name}")
    db.execute("CREATE TABLE IF NOT EXISTS item_keys "
               "(n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE)")
    db.execute("DELETE FROM meta WHERE key = ?", (WORDS_INDEX,))
    if not fts:
        return
    db.execute("DROP TABLE IF EXISTS summary_words")  # made anew: the tokenizer of now
    db.execute("CREATE VIRTUAL TABLE summary_words USING "
               f"fts5(summary, content='', tokenize=\"{_words_tokenizer()}\")")
    db.execute("DELETE FROM item_keys")
    _index_new(db, "SELECT id FROM items")
    for sql in _WORDS_TRIGGERS.values():
        db.execute(sql)
    db.execute("INSERT INTO meta(key, value) VALUES (?, 'fts5')", (WORDS_INDEX,))


def _index_new(db: sqlite3.Connection, ids: str, *args: Any) -> None:
    """Index the summaries of the items the query `ids` names, which have no key yet."""
    db.execute(f"INSERT INTO item_keys(id) {ids}", args)
    db.execute("INSERT INTO summary_words(rowid, summary) SELECT k.n, i.summary FROM "
               f"item_keys k JOIN items i ON i.id = k.id WHERE k.id IN ({ids}) ORDER BY k.n",
               args)


def _unindex(db: sqlite3.Connection, ids: str, *args: Any) -> None:
    """Take the summaries of the items the query `ids` names out of the index, and their keys
    (before they are deleted: the 'delete' needs the summary that was indexed)."""
    db.execute("INSERT INTO summary_words(summary_words, rowid, summary) SELECT 'delete', k.n, "
               f"i.summary FROM item_keys k JOIN items i ON i.id = k.id WHERE k.id IN ({ids}) "
               "ORDER BY k.n", args)  # in order: FTS5 writes its pending words out at a step back
    db.execute(f"DELETE FROM item_keys WHERE id IN ({ids})", args)


# Meta key: the cutoff (epoch seconds) of the last real prune. An item that first arrives
# dated before it is not taken in: it would have been pruned, and stored now it would only
# be pruned again (see `Store.upsert_items`).
PRUNED_BEFORE = "prune.before"


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item as stored: the item, its public id, and every source that brought it."""

    id: str
    item: Item
    sources: tuple[str, ...]
    shared_by: tuple[str, ...]  # people who shared it (posts linking to it)
    first_seen: datetime
    content_hash: str

    @property
    def when(self) -> datetime:
        """When this became news: published, else first seen."""
        return self.item.published or self.first_seen


@dataclass(frozen=True)
class CandidateRows:
    """What ranking needs about many items at once, column-wise, with their vectors stacked.

    Rows whose vector is not cached yet are listed in `missing` (their X row is zero).
    """

    ids: list[str]
    sources: list[str]
    titles: list[str]
    kinds: list[str]
    when: np.ndarray  # epoch seconds (published, else first seen), float64
    hashes: list[str]
    X: np.ndarray  # (n, dim) float32, rows in the order above
    missing: list[int]
    heads: list[str]  # the first characters of each summary
    links: list[tuple[str, ...]]  # links mentioned in the item (posts), mostly empty

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class SourceState:
    name: str
    etag: str = ""
    last_modified: str = ""
    cursor: str = ""
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    failures: int = 0
    retry_after: datetime | None = None
    items: int = 0
    notice: str = ""  # what the last successful fetch said beside its items (migration 10)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    new: int = 0
    updated: int = 0
    new_ids: tuple[str, ...] = ()
    skipped: int = 0  # new to the store but pruned before (or dated before the last prune)
    withdrawn: int = 0  # stored papers whose withdrawal came: removed, or marked (`_withdraw`)


@dataclass(frozen=True, slots=True)
class PruneCandidates:
    """What a prune before some instant would remove: the items, and how many it keeps."""

    ids: list[str]  # oldest first
    voted: int  # items as old, kept: voted on or saved, or shared since the cutoff


def _about_the_directory(e: sqlite3.DatabaseError) -> bool:
    """Errors that say the file cannot be opened or written where it is (permissions, a
    read-only or missing directory): the caller reports those as a data-directory problem."""
    text = str(e).lower()
    return "unable to open" in text or "readonly" in text or "read-only" in text


def is_busy(e: BaseException) -> bool:
    """Whether SQLite gave up waiting for a database another connection held (past the busy
    timeout): "database is locked", "database table is busy"."""
    text = str(e)
    return isinstance(e, sqlite3.Error) and ("locked" in text or "busy" in text)


def is_disk_trouble(e: BaseException) -> bool:
    """SQLite's words for a disk that takes no more (full, over quota, over the file size
    limit) or that failed a write: not the database file's fault."""
    text = str(e).lower()
    return isinstance(e, sqlite3.Error) and ("disk is full" in text or "disk i/o error" in text)


def is_read_only(e: BaseException) -> bool:
    """SQLite's words for a database file (or its folder) this process may read but not
    write: owned by another user, mode 0444, a read-only mount."""
    return isinstance(e, sqlite3.Error) and "readonly" in str(e).lower()


def read_only_problem(home: Path, e: BaseException) -> str:
    """One line for `is_read_only` trouble with the database in `home`."""
    return (f"cannot write {home / DB_FILE}: {e}; this user may read it but not change it (another "
            "user's file, or a read-only one): run feedbot as the user that owns it, or fix "
            "the permissions of the file and its folder")


def _store_problem(path: str, e: sqlite3.DatabaseError) -> str:
    text = str(e)
    if is_busy(e):
        return (f"{path} is busy: another feedbot process has held it for 30 s ({text}); "
                "try again when it is done")
    if is_disk_trouble(e):
        return (f"cannot write {path}: {text}; free some space on its disk (the database is "
                "not damaged), then try again")
    return (f"{path} is damaged or not a feedbot database ({text}). Move it aside to start "
            "afresh (feedbot creates a new one), or put back a backup")


def _enter_wal(db: sqlite3.Connection, timeout: float) -> None:
    """`PRAGMA journal_mode = WAL`, tried again for up to `timeout` seconds while another
    connection holds the file. On a new file, several processes switching it at once can be
    told "database is locked" at once: SQLite skips the busy handler where waiting could
    deadlock (each holding the lock the other wants), so the connection's timeout does not
    apply. Seen in 2 of 100 rounds of 8 processes opening one new database. By the retry,
    another process has usually switched the file (the mode is kept in it), and the pragma
    only reads it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if not is_busy(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01 + 0.04 * random.random())  # apart from the others racing


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class Vote(NamedTuple):
    """One feedback row: a chat's 👍 ('up') or 👎 ('down') on an item."""

    chat: str
    item_id: str
    value: str
    at: datetime
    stage: str  # the roadmap stage it was given at; '' for votes older than stages


class VotedItem(NamedTuple):
    """A vote with what the 👍/👎 model's key needs of its item, and none of its text."""

    chat: str
    item_id: str
    value: str  # 'up' or 'down'
    at: float  # when, in epoch seconds (no datetime: 10,000 of them take 40 ms to make)
    stage: str  # the roadmap stage it was given at; '' for votes older than stages
    content_hash: str  # the voted item's; '' when the item is not stored


class StoreError(RuntimeError):
    """The database file cannot be used as it is: damaged, not a feedbot database, written by
    a newer feedbot, or held by another process for too long. The message says what to do."""


class AmbiguousRef(LookupError):
    """A reference names a page on which several stored items live (a day's posts told apart
    by their fragments, see `items.item_key`), not one of them: `items` are all of them."""

    def __init__(self, ref: str, items: list[StoredItem]) -> None:
        super().__init__(f"{len(items)} stored items are on the page {ref}")
        self.ref, self.items = ref, items


class Store:
    """The feedbot database. One per process; not shared across threads."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        """`timeout`: seconds a statement waits for a database another connection is writing
        before it fails with "database is locked"."""
        self.path = str(path)
        self._names: dict[str, list[str]] = {}  # `_same_source`, for one `upsert_items`
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self.db.row_factory = sqlite3.Row
            self.db.create_function("feedbot_holds", 2, _holds, deterministic=True)
            self.db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                _enter_wal(self.db, timeout)
                self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except BaseException as e:
            self.db.close()
            if isinstance(e, sqlite3.DatabaseError) and not _about_the_directory(e):
                raise StoreError(_store_problem(self.path, e)) from e
            raise

    @classmethod
    def open(cls, home: Path, timeout: float = 30.0) -> Store:
        return cls(home / DB_FILE, timeout=timeout)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self.db.in_transaction:  # nested: join the outer one
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            # SQLite rolls a transaction back by itself on some errors (a full disk part-way
            # through): a ROLLBACK then raised "cannot rollback - no transaction is active",
            # in place of the error that says what happened
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same state of the database."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            if self.db.in_transaction:  # (see `transaction`)
                self.db.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} was written by a newer feedbot (schema {version}, "
                             f"this one knows {len(MIGRATIONS)}); upgrade feedbot")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction() as db:
                # Two processes may start on a new database at once: the write lock taken by
                # the transaction decides who migrates, and the other finds it done.
                if db.execute("PRAGMA user_version").fetchone()[0] >= number:
                    continue
                if callable(script):
                    script(db)
                else:
                    for statement in script.split(";\n"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
        if self._words_stale():
            # the database moved between SQLites with and without FTS5 since it was written,
            # or its index cuts words as an older feedbot did
            with self.transaction() as db:
                if self._words_stale():  # not done yet
                    _index_words(db, fts5_available())

    def _words_stale(self) -> bool:
        kept = self.get_meta(WORDS_INDEX) == "fts5"
        return kept != fts5_available() or kept and _words_outdated(self.db)

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def write_refused(self, wait: float = 1.0) -> sqlite3.Error | None:
        """Try a write that leaves nothing (a table made in a transaction rolled back): the
        error that stops this connection writing the file, or None. A file this user may only
        read (another user's, a read-only mount) opens and reads as usual while its -wal and
        -shm files are there, and `BEGIN IMMEDIATE` passes: only a write fails. Another
        connection writing now is no refusal; it is waited for `wait` seconds at most."""
        if self.db.in_transaction:  # its rollback would undo the caller's writes too
            raise RuntimeError("write_refused() inside a transaction")
        (before,) = self.db.execute("PRAGMA busy_timeout").fetchone()
        self.db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("CREATE TABLE main.feedbot_write_check (x)")
            finally:
                if self.db.in_transaction:  # (see `transaction`)
                    self.db.execute("ROLLBACK")
        except sqlite3.Error as e:
            return None if is_busy(e) else e
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {int(before)}")
        return None

    # --- items ----------------------------------------------------------------------------

    def upsert_items(self, items: Iterable[Item], now: datetime) -> UpsertResult:
        """Insert new items, merge duplicates, update papers that got a new arXiv version.

        A withdrawn paper (`Item.withdrawn`: its newest version says so) is not taken in; one
        stored before is removed (`_withdraw`), unless a chat voted on it or saved it: then
        it stays as it was, its votes kept, marked withdrawn (out of digests and searches)
        until a later version that does not withdraw it.

        A new item that `feedbot prune` removed before (a tombstone), or dated before the last
        prune's cutoff, is skipped: it would come back as news, or only be pruned again; so is
        a withdrawn paper removed, until a later version is a paper again (`_unwithdrawn`). Before
        any prune, items of every date are taken in (benchmarks, a first collection)."""
        new_ids: list[str] = []
        updated = skipped = withdrawn = 0
        with self.transaction():
            before = self.get_meta(PRUNED_BEFORE)
            pruned_before = float(before) if before else None
            self._names = {}
            for it in items:
                existing = self._find_existing(it)
                if it.withdrawn:
                    if existing is None:  # still listed: its tombstone is kept as long
                        self.db.execute("UPDATE tombstones SET seen = ? WHERE key = ?",
                                        (now.timestamp(), it.key))
                    elif self._withdraw(existing, it, now):
                        withdrawn += 1
                        if existing["id"] in new_ids:  # taken in by this call, and gone again
                            new_ids.remove(existing["id"])
                    continue
                if existing is None:
                    if self._pruned(it, pruned_before, now):
                        skipped += 1
                        continue
                    iid = it.id
                    self._insert(iid, it, now)
                    new_ids.append(iid)
                else:
                    iid = existing["id"]
                    if self._should_update(existing, it, self._same_source(it.source)):
                        self._update(iid, it, now)
                        updated += 1
                    elif _dated_by_a_wrong_clock(existing, it, now):
                        self.db.execute("UPDATE items SET published = ? WHERE id = ?",
                                        (_ts(it.published), iid))
                self.db.execute(
                    "INSERT INTO item_sources(item_id, source, guid, person, seen) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(item_id, source) DO UPDATE SET "
                    "guid = CASE WHEN excluded.guid != '' THEN excluded.guid ELSE guid END",
                    (iid, it.source, it.guid, it.person, now.timestamp()),
                )
            if new_ids and self.has_word_index():
                _index_new(self.db, "SELECT value FROM json_each(?)", json.dumps(new_ids))
        return UpsertResult(len(new_ids), updated, tuple(new_ids), skipped, withdrawn)

    def _withdraw(self, row: sqlite3.Row, it: Item, now: datetime) -> bool:
        """Remove the stored paper `row` that `it` withdraws, when `it` is newer than it (a
        later version) and no chat voted on it or saved it: with its sources, deliveries and
        words, and a tombstone for its key, so that no source (a blog linking to it) brings
        it back as news. A paper a chat voted on or saved stays as it was: its votes train on
        the paper's text, not on the withdrawal notice; it is marked withdrawn (since the
        first time this was collected), which keeps it out of every digest and search.
        Returns whether the paper was withdrawn now (removed, or marked): False when `it` is
        no newer or the paper was marked already."""
        if not self._should_update(row, it, self._same_source(it.source)):
            return False
        iid = row["id"]
        if self.db.execute("SELECT 1 FROM feedback WHERE item_id = ?1 UNION ALL "
                           "SELECT 1 FROM bookmarks WHERE item_id = ?1", (iid,)).fetchone():
            return self.db.execute("UPDATE items SET withdrawn = ? WHERE id = ? AND withdrawn "
                                   "IS NULL", (now.timestamp(), iid)).rowcount > 0
        self.db.execute("INSERT OR REPLACE INTO tombstones(key, pruned, seen, withdrawn) "
                        "VALUES (?, ?, ?, ?)", (it.key, now.timestamp(), now.timestamp(),
                                                max(it.arxiv_version, 1)))
        self._delete_item_rows(self.db, [iid])
        return True

    def _delete_item_rows(self, db: sqlite3.Connection, ids: Sequence[str]) -> None:
        """Delete these items with their sources and deliveries, inside the caller's write
        transaction, and take their summaries out of the word index in one statement (the
        trigger would take one per item). Votes and bookmarks stay (they are the chats'),
        and so do vectors (another item may have the same text)."""
        doomed = json.dumps(list(ids))
        if self.has_word_index():
            _unindex(db, "SELECT value FROM json_each(?)", doomed)
        # ON DELETE CASCADE removes the sources too (foreign_keys is on); said here anyway
        for table, column in (("item_sources", "item_id"), ("deliveries", "item_id"),
                              ("items", "id")):
            db.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))",
                       (doomed,))

    def _pruned(self, it: Item, pruned_before: float | None, now: datetime) -> bool:
        """Whether a new item is one `feedbot prune` removed, or would have: tombstoned (an
        undated item), or dated before the last prune's cutoff. Either would come back as
        news, or be stored only to be pruned again. A tombstone notes that it was listed."""
        if (it.published is not None and pruned_before is not None
                and it.published.timestamp() < pruned_before):
            return True
        if self._unwithdrawn(it):
            return False
        keys = [it.key] + ([f"guid:{n}:{it.guid}" for n in self._same_source(it.source)]
                           if it.guid else [])
        q = ",".join("?" * len(keys))
        return self.db.execute(f"UPDATE tombstones SET seen = ? WHERE key IN ({q})",
                               (now.timestamp(), *keys)).rowcount > 0

    def _unwithdrawn(self, it: Item) -> bool:
        """Whether `it` is a later version of a paper removed for its withdrawal that does not
        withdraw it (a corrected paper after "withdrawn due to an error"): its tombstone goes,
        and it is taken in as new, as the news it is. A prune's tombstone (version 0) stays;
        so does a withdrawal's for a version no newer (the withdrawn paper listed again)."""
        return it.kind == "paper" and bool(it.arxiv_id) and self.db.execute(
            "DELETE FROM tombstones WHERE key = ? AND withdrawn BETWEEN 1 AND ?",
            (it.key, it.arxiv_version - 1)).rowcount > 0

    def _same_source(self, name: str) -> list[str]:
        """`name` and the old names of the same source (renamed in sources.yaml: the same
        kind and target recorded), whose items its feed still lists under their guids."""
        cache = self._names
        if name not in cache:
            row = self.db.execute("SELECT kind, target FROM source_state WHERE name = ?",
                                  (name,)).fetchone()
            names = [name]
            if row is not None and row[1]:
                me = same_target((row[0], row[1]))
                names += [n for n, k, t in self.db.execute(
                    "SELECT name, kind, target FROM source_state WHERE kind = ? AND name != ?",
                    (row[0], name)) if t and same_target((k, t)) == me]
            cache[name] = names
        return cache[name]

    def _find_existing(self, it: Item) -> sqlite3.Row | None:
        row = self.db.execute(
            "SELECT id, source, arxiv_version, content_hash, kind, published, first_seen "
            "FROM items WHERE key = ?", (it.key,)).fetchone()
        if row is None and it.guid:
            row = self.db.execute(
                "SELECT i.id, i.source, i.arxiv_version, i.content_hash, i.kind, i.published, "
                "i.first_seen FROM items i "
                "JOIN item_sources s ON s.item_id = i.id WHERE s.source IN "
                "(SELECT value FROM json_each(?)) AND s.guid = ?",
                (json.dumps(self._same_source(it.source)), it.guid),
            ).fetchone()
        return row

    @staticmethod
    def _should_update(row: sqlite3.Row, it: Item, names: Sequence[str] = ()) -> bool:
        if it.arxiv_id:
            # arXiv's own record (a paper) is what the paper's entry shows: a blog entry that
            # links to `abs/<id>v2` adds its source but never writes its title, text and
            # empty authors over the paper's; the paper replaces such an entry's.
            if (row["kind"] == "paper") != (it.kind == "paper"):
                return it.kind == "paper"
            return it.arxiv_version > row["arxiv_version"]
        # The source that first brought the item may correct it (edited title or summary).
        return (row["source"] in (it.source, *names)
                and content_hash(it.embed_text) != row["content_hash"])

    def _values(self, it: Item) -> dict[str, Any]:
        return {
            "url_canon": canonical_url(it.url) if it.url else "",
            "kind": it.kind,
            "title": it.title,
            "url": it.url,
            "authors": json.dumps(list(it.authors), ensure_ascii=False),
            "published": _ts(it.published),
            "summary": it.summary,
            "arxiv_version": it.arxiv_version,
            "categories": json.dumps(list(it.categories)),
            "pdf_url": it.pdf_url,
            "links": json.dumps(list(it.links)),
            "person": it.person,
            "content_hash": content_hash(it.embed_text),
        }

    def _insert(self, iid: str, it: Item, now: datetime) -> None:
        v = self._values(it) | {"id": iid, "key": it.key, "source": it.source,
                                "first_seen": now.timestamp(), "updated": now.timestamp()}
        cols = ", ".join(v)
        self.db.execute(f"INSERT INTO items({cols}) VALUES ({', '.join('?' * len(v))})",
                        tuple(v.values()))

    def _update(self, iid: str, it: Item, now: datetime) -> None:
        # a newer version that does not withdraw the paper (a correction) brings it back
        v = self._values(it) | {"updated": now.timestamp(), "withdrawn": None}
        sets = ", ".join(f"{k} = ?" for k in v)
        self.db.execute(f"UPDATE items SET {sets} WHERE id = ?", (*v.values(), iid))

    def _rows_to_items(self, rows: Sequence[sqlite3.Row]) -> list[StoredItem]:
        ids = [r["id"] for r in rows]
        srcs: dict[str, list[tuple[str, str, str]]] = {i: [] for i in ids}
        for chunk in _chunks(ids, 500):
            q = ",".join("?" * len(chunk))
            for s in self.db.execute(
                f"SELECT item_id, source, person, via FROM item_sources WHERE item_id IN ({q}) "
                "ORDER BY seen, rowid", chunk,
            ):
                srcs[s["item_id"]].append((s["source"], s["person"], s["via"]))
        out = []
        for r in rows:
            it = Item(
                title=r["title"], url=r["url"], source=r["source"], kind=r["kind"],
                authors=tuple(json.loads(r["authors"])), published=_dt(r["published"]),
                summary=r["summary"], arxiv_id=r["key"][6:] if r["key"].startswith("arxiv:")
                else "", arxiv_version=r["arxiv_version"],
                categories=tuple(json.loads(r["categories"])), pdf_url=r["pdf_url"],
                links=tuple(json.loads(r["links"])), person=r["person"],
                withdrawn=r["withdrawn"] is not None,
            )
            s = srcs[r["id"]]
            out.append(StoredItem(
                id=r["id"], item=it,
                sources=tuple(dict.fromkeys(x[0] for x in s if not x[2])) or (r["source"],),
                shared_by=tuple(dict.fromkeys(x[1] or x[0] for x in s if x[2])),
                first_seen=_dt(r["first_seen"]) or datetime.now(UTC),
                content_hash=r["content_hash"],
            ))
        return out

    def items_since(self, since: datetime | None = None, limit: int | None = None,
                    kinds: Sequence[str] | None = None) -> list[StoredItem]:
        """Items published (or first seen, when undated) at or after `since`, newest first."""
        sql = "SELECT * FROM items WHERE 1=1"
        args: list[Any] = []
        if since is not None:
            sql += " AND coalesce(published, first_seen) >= ?"
            args.append(since.timestamp())
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        sql += " ORDER BY coalesce(published, first_seen) DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._rows_to_items(self.db.execute(sql, args).fetchall())

    def candidates(self, model: str, since: datetime | None = None, *,
                   dim: int | None = None, head: int = 400, hidden: Collection[str] = (),
                   rename: Mapping[str, str] | None = None, claims: bool = False
                   ) -> CandidateRows:
        """Columns and stacked vectors of items since `since`, newest first, in one query.

        This is the digest's hot path at scale: no per-item objects, no JSON, one pass over
        the rows, and the vectors land in one contiguous float32 matrix.

        `hidden` names sources the learner no longer follows: an item every one of whose
        sources (`item_sources`, shares included, and the `items.source` that first brought
        it) is hidden is left out; nothing is deleted. An item kept through another source
        reports that one as its source (its own sources before those of posts that shared
        it). `rename` maps a source's old name to its name now, for the `sources` column.
        Both are done in SQL: with neither given the query is the plain one.

        `heads` are the summaries' first `head` characters; with `claims`, the whole summary
        where it is longer and may claim a state-of-the-art result (`_CLAIMS`), which papers
        claim at the end of their abstract: what the level signal reads.
        """
        with self.snapshot():  # the count and the rows must see the same items
            return self._candidates(model, since, dim, head, tuple(hidden), dict(rename or {}),
                                    claims)

    def _candidates(self, model: str, since: datetime | None, dim: int | None,
                    head: int, hidden: tuple[str, ...], rename: dict[str, str],
                    claims: bool = False) -> CandidateRows:
        where, args = _window(since)
        source, source_args = "i.source", []
        if hidden:
            names = _names_json(hidden)
            where += f" AND {_FOLLOWED}"
            args += [names, names]
            source = ("CASE WHEN i.source IN (SELECT value FROM json_each(?)) THEN (SELECT "
                      "s.source FROM item_sources s WHERE s.item_id = i.id AND s.source NOT IN "
                      "(SELECT value FROM json_each(?)) ORDER BY s.via != '', s.seen, s.rowid "
                      "LIMIT 1) ELSE i.source END")
            source_args = [names, names]
        if rename:
            renames = sorted(rename.items())
            whens = " ".join("WHEN ? THEN ?" for _ in renames)
            source = f"CASE {source} {whens} ELSE {source} END"
            source_args = [*source_args, *(x for r in renames for x in r), *source_args]
        order = f"{where} ORDER BY coalesce(i.published, i.first_seen) DESC, i.id"
        summary = _CLAIMS if claims else "substr(i.summary, 1, ?1)"
        rows = self.db.execute(
            f"SELECT i.id, {source}, i.title, i.kind, coalesce(i.published, i.first_seen), "
            f"i.content_hash, {summary.replace('?1', '?')}, "
            f"CASE WHEN i.links != '[]' THEN i.links END FROM items i{order}",
            [*source_args, *[head] * summary.count("?1"), *args]).fetchall()
        if dim is None:
            found = self.db.execute("SELECT dim FROM vectors WHERE model = ? LIMIT 1",
                                    (model,)).fetchone()
            dim = int(found[0]) if found else 0
        if not rows:
            return CandidateRows([], [], [], [], np.empty(0), [], np.zeros((0, dim), np.float32),
                                 [], [], [])
        columns = (list(c) for c in zip(*rows, strict=True))
        ids, sources, titles, kinds, when, hashes, heads, links = columns
        del rows
        X = np.zeros((len(ids), dim), dtype=np.float32)
        have = np.zeros(len(ids), dtype=bool)
        pos = {h: n for n, h in enumerate(hashes)}
        if len(ids) * 2 >= self.vector_count(model):  # the window holds most vectors: scan
            found = self.db.execute(  # `+model`: read the table in order, not via the index
                "SELECT content_hash, dim, vec FROM vectors WHERE +model = ?", (model,))
            pairs = ((pos.get(h), d, v) for h, d, v in found)
        else:  # a small window of a big store: look each vector up
            found = self.db.execute(
                "SELECT v.dim, v.vec FROM items i LEFT JOIN vectors v ON v.model = ? "
                f"AND v.content_hash = i.content_hash{order}", [model, *args])
            pairs = ((n, d, v) for n, (d, v) in enumerate(found))
        _fill(X, have, pairs, dim)
        if len(pos) < len(hashes):  # the same text under two ids: one vector for both
            for n, h in enumerate(hashes):
                first = pos[h]
                if first != n and have[first] and not have[n]:
                    X[n], have[n] = X[first], True
        return CandidateRows(ids, sources, titles, kinds, np.asarray(when, dtype=np.float64),
                             hashes, X, np.flatnonzero(~have).tolist(), heads,
                             [tuple(json.loads(x)) if x else () for x in links])

    def own_sources(self, item_ids: Sequence[str]) -> dict[str, list[str]]:
        """The sources that brought each item themselves (not by a post sharing it), for the
        items that more than one brought: item id → their names."""
        out: dict[str, list[str]] = {}
        for chunk in _chunks(list(item_ids), 900):
            q = ",".join("?" * len(chunk))
            for iid, names in self.db.execute(
                    f"SELECT item_id, json_group_array(source) FROM item_sources WHERE via = '' "
                    f"AND item_id IN ({q}) GROUP BY item_id HAVING count(*) > 1", chunk):
                out[iid] = json.loads(names)
        return out

    def get_item(self, ref: str) -> StoredItem | None:
        """Find an item by public id, arXiv id or any URL that canonicalises to its URL.

        `ref` may be copied with what the digests print around it (`[id]` in the terminal,
        `` `id` `` in Markdown, `<url>`, quotes) and in any case: ids are hex, lower case.
        Raises `AmbiguousRef` for the URL of a page several stored items share: a vote or a
        search by it must not go to one of them picked at random.
        """
        ref = unwrap_ref(ref)
        row = self.db.execute("SELECT * FROM items WHERE id = ?", (ref,)).fetchone()
        if row is None and ITEM_ID.fullmatch(ref):
            row = self.db.execute("SELECT * FROM items WHERE id = ?", (ref.lower(),)).fetchone()
        if row is None:
            aid, _ = split_arxiv_id(ref)
            if aid:
                row = self.db.execute("SELECT * FROM items WHERE key = ?",
                                      (f"arxiv:{aid}",)).fetchone()
        if row is None:
            rows = self._url_rows(ref)
            if len(rows) > 1:
                raise AmbiguousRef(ref, self._rows_to_items(rows))
            row = rows[0] if rows else None
        return self._rows_to_items([row])[0] if row is not None else None

    def _url_rows(self, ref: str) -> list[sqlite3.Row]:
        """The items a URL reference (with or without its scheme) names; none when `ref` is
        no URL."""
        if "://" in ref:
            return self._rows_by_url(ref, "*")
        if _HOST.match(ref):  # a URL without its scheme
            return self._rows_by_url("https://" + ref, "*")
        return []

    def _rows_by_url(self, url: str, columns: str) -> list[sqlite3.Row]:
        """The item `url` names exactly, else every item on its page. Entries of one page told
        apart by their fragment (see `items.item_key`) are found by it: by its canonical URL
        alone, which has no fragment, `…/26.html#a2` found the first entry of the page, and a
        vote went to it. The page itself, or an anchor none of them has, names them all."""
        url = clean_url(url)
        row = self.db.execute(f"SELECT {columns} FROM items WHERE key = ?",
                              (item_key("", url, guid=url),)).fetchone()
        if row is not None:
            return [row]
        return self.db.execute(f"SELECT {columns} FROM items WHERE url_canon = ? ORDER BY rowid",
                               (canonical_url(url),)).fetchall()

    def find_by_urls(self, urls: Iterable[str]) -> dict[str, str]:
        """Map each given URL to the id of a stored item it points to (arXiv id or URL). The
        URL of a page several stored items share (a day's posts told apart by their fragments)
        points to none of them, as in `get_item`: a post sharing the page was filed as sharing
        its first entry, which it may not even mention."""
        out: dict[str, str] = {}
        for u in urls:
            aid = paper_id_from_link(u) or split_arxiv_id(u)[0]  # a paper's page, or its id
            key = f"arxiv:{aid}" if aid else None
            row = None
            if key:
                row = self.db.execute("SELECT id FROM items WHERE key = ?", (key,)).fetchone()
            if row is None:
                rows = self._rows_by_url(u, "id")
                row = rows[0] if len(rows) == 1 else None
            if row is None and (status := _X_STATUS.match(u)) is not None:
                # an X post by its id, whatever the handle's case or the host: a quote links
                # `twitter.com/Grace_T/status/…`, a retweet's original is `x.com/i/status/…`
                row = self.db.execute(
                    "SELECT item_id AS id FROM item_sources WHERE guid = ? AND source IN "
                    "(SELECT name FROM source_state WHERE kind = 'x')", (status[1],)).fetchone()
            if row is not None:
                out[u] = row["id"]
        return out

    def add_share(self, item_id_: str, source: str, person: str, via: str, now: datetime) -> None:
        """Record that `via` (a post from `source`) shared the stored item `item_id_`."""
        self.db.execute(
            "INSERT INTO item_sources(item_id, source, person, via, seen) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(item_id, source) DO NOTHING",
            (item_id_, source, person, via, now.timestamp()),
        )

    def shares(self, post_ids: Iterable[str]) -> dict[str, str]:
        """For each given post id that shared a stored item: post id → shared item id. A
        withdrawn paper (kept for its votes) is shared by none: the post stands on its own,
        as one does that links to a withdrawn paper no chat kept."""
        out: dict[str, str] = {}
        for chunk in _chunks(list(post_ids), 500):
            q = ",".join("?" * len(chunk))
            for r in self.db.execute(
                f"SELECT s.via, s.item_id FROM item_sources s JOIN items i ON i.id = s.item_id "
                f"WHERE s.via IN ({q}) AND i.withdrawn IS NULL", chunk,
            ):
                out[r[0]] = r[1]
        return out

    def sharers(self, hidden: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
        """item id → the people (or sources) whose posts shared it, for every shared item.

        Shares by `hidden` sources (no longer followed) are left out."""
        out: dict[str, list[str]] = {}
        sql, args = ("SELECT item_id, CASE WHEN person != '' THEN person ELSE source END "
                     "FROM item_sources WHERE via != ''"), []
        if hidden:
            sql += " AND source NOT IN (SELECT value FROM json_each(?))"
            args.append(_names_json(hidden))
        for item, who in self.db.execute(sql + " ORDER BY seen, rowid", args):
            out.setdefault(item, []).append(who)
        return {k: tuple(dict.fromkeys(v)) for k, v in out.items()}

    def get_items(self, ids: Iterable[str]) -> list[StoredItem]:
        rows: list[sqlite3.Row] = []
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            q = ",".join("?" * len(chunk))
            rows += self.db.execute(f"SELECT * FROM items WHERE id IN ({q})", chunk).fetchall()
        return self._rows_to_items(rows)

    def item_titles(self, ids: Iterable[str]) -> dict[str, str]:
        """id → title of the stored items among `ids`, without building the items."""
        out: dict[str, str] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            q = ",".join("?" * len(chunk))
            out.update(self.db.execute(f"SELECT id, title FROM items WHERE id IN ({q})",
                                       chunk).fetchall())
        return out

    def item_count(self, source: str | None = None) -> int:
        if source is None:
            return int(self.db.execute("SELECT count(*) FROM items").fetchone()[0])
        # what the source brought, not the items its posts shared (via != '')
        return int(self.db.execute("SELECT count(*) FROM item_sources WHERE source = ? "
                                   "AND via = ''", (source,)).fetchone()[0])

    def items_of(self, names: Collection[str]) -> int:
        """How many items any of these sources brought (each item once; not what they shared)."""
        return int(self.db.execute(
            "SELECT count(DISTINCT item_id) FROM item_sources WHERE via = '' AND source IN "
            "(SELECT value FROM json_each(?))", (_names_json(names),)).fetchone()[0])

    def count_hidden(self, since: datetime | None, hidden: Collection[str]) -> int:
        """How many items since `since` `candidates(hidden=...)` leaves out: those whose every
        source is hidden (no longer followed)."""
        return self._count_since(since, hidden, followed=False) if hidden else 0

    def count_followed(self, since: datetime | None, hidden: Collection[str]) -> int:
        """How many items since `since` a followed source brought (delivered ones too)."""
        return self._count_since(since, hidden, followed=True)

    def _count_since(self, since: datetime | None, hidden: Collection[str],
                     followed: bool) -> int:
        where, args = _window(since)
        names = _names_json(hidden)
        return int(self.db.execute(
            f"SELECT count(*) FROM items i{where} AND {'' if followed else 'NOT '}{_FOLLOWED}",
            [*args, names, names]).fetchone()[0])

    # --- search (see search.py) -------------------------------------------------------------

    def has_word_index(self) -> bool:
        """Whether `summary_matches` can answer: the word index is there and kept."""
        return fts5_available() and self.get_meta(WORDS_INDEX) == "fts5"

    def summary_matches(self, match: str, *, with_text: bool = False
                        ) -> list[tuple[str, str]] | None:
        """(id, summary when `with_text`, else '') of every item whose summary matches the
        FTS5 query `match` (any date); None without the word index (see `has_word_index`)."""
        if not self.has_word_index():
            return None
        text = "i.summary" if with_text else "''"
        join = " JOIN items i ON i.id = k.id" if with_text else ""
        cur = self.db.cursor()
        cur.row_factory = None  # plain tuples
        try:
            return cur.execute(
                f"SELECT k.id, {text} FROM summary_words w JOIN item_keys k ON k.n = w.rowid"
                f"{join} WHERE summary_words MATCH ?", (match,)).fetchall()
        except sqlite3.OperationalError:  # the module went away under a running process
            return None

    def summaries(self, ids: Collection[str]) -> dict[str, str]:
        """The whole summaries of these items (those stored)."""
        return dict(self.db.execute(
            "SELECT id, summary FROM items WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),)).fetchall())

    def author_matches(self, words: Sequence[str], since: datetime | None = None
                       ) -> Iterator[tuple[str, str]]:
        """(id, authors and person one per line) of the items since `since` whose authors or
        person hold one of `words` (folded: `text.fold`) anywhere: the caller checks that a
        word stands whole. Names in ASCII are matched by SQLite's LIKE (ASCII letters in any
        case); only the items with other letters in a name ("Müller", "Łukasz") are folded
        first, one call of `_holds` each."""
        if not words:
            return
        where, args = _window(since)
        likes = " OR ".join(f"i.{col} LIKE ? ESCAPE '\\'" for _ in words
                            for col in ("authors", "person"))
        patterns = ["%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    + "%" for w in words for _ in range(2)]
        wide = " OR ".join(f"length(i.{col}) < length(CAST(i.{col} AS BLOB))"  # not ASCII
                           for col in ("authors", "person"))
        folded = f"({wide}) AND feedbot_holds(i.authors || char(10) || i.person, ?)"
        for iid, authors, person in self.db.execute(
                f"SELECT i.id, i.authors, i.person FROM items i{where} AND ({likes} OR {folded})",
                [*args, *patterns, "\n".join(words)]):
            names = json.loads(authors) if authors != "[]" else []
            yield iid, "\n".join([*names, person] if person else names)

    def item_ids_of_sources(self, names: Collection[str]) -> set[str]:
        """Ids of the items that any of these sources brought (shares included)."""
        return {r[0] for r in self.db.execute(
            "SELECT item_id FROM item_sources WHERE source IN (SELECT value FROM json_each(?))",
            (_names_json(names),))}

    # --- per-source state -----------------------------------------------------------------

    def remember_sources(self, sources: Iterable[tuple[str, str, str]]) -> bool:
        """Record the configured sources as (name, kind, target): what each one fetches.

        Writes only what changed (a digest calls this every time) and returns whether it
        wrote. When a configured source's target changes, sources no longer configured that
        stood for it (the same kind and target: its old names) take the new target along, so
        that a rename followed by a new feed URL still finds the old name's items. Their
        validators (ETag, Last-Modified) and cursor were the old target's and are dropped: sent
        to the new URL, they could bring a 304 that hides its items.
        """
        want = {name: (kind, target) for name, kind, target in sources}
        have = self.known_sources()
        changed = {n: kt for n, kt in want.items()
                   if n not in have or same_target(have[n]) != same_target(kt)}
        if not changed:
            return False
        with self.transaction():
            for name, (kind, target) in changed.items():
                before = have.get(name)
                moved = before if before and before[1] else None  # from a recorded target
                # carry along the old names that stood for it (unless another source
                # still fetches what it fetched)
                if moved is not None and same_target(moved) not in map(same_target, want.values()):
                    self.db.execute(
                        f"UPDATE source_state SET kind = ?, target = ?, {_NO_VALIDATORS} "
                        "WHERE kind = ? AND target = ? AND name NOT IN "
                        "(SELECT value FROM json_each(?))",
                        (kind, target, *moved, json.dumps(list(want))))
                self._ensure_state(name)
                self.db.execute("UPDATE source_state SET kind = ?, target = ?"
                                + (f", {_NO_VALIDATORS}, {_NEW_TARGET}" if moved else "")
                                + " WHERE name = ?", (kind, target, name))
                if before is None and target:  # a new name: perhaps an old source renamed
                    self._adopt_state(name, kind, target, list(want))
        return True

    def note_target(self, name: str, kind: str, target: str) -> None:
        """What a collected source fetches, where nothing is recorded for it yet: so that a
        rename in sources.yaml is recognised even when no digest ran since it was collected.
        A changed target is `remember_sources`'s to record (it carries old names along)."""
        self.db.execute("UPDATE source_state SET kind = ?, target = ? WHERE name = ? AND "
                        "target = ''", (kind, target, name))

    def _adopt_state(self, name: str, kind: str, target: str, wanted: list[str]) -> None:
        """A source renamed in sources.yaml takes along the health of its old name (the one
        collected last among those no longer configured that fetch the same): its last
        success and error, back-off and validators, so that `feedbot sources` does not show
        it as new, and its next fetch may be conditional. Only while the new name has never
        been collected."""
        old = self.db.execute(
            f"SELECT {_STATE} FROM source_state WHERE kind = ? AND target = ? AND name != ? "
            "AND name NOT IN (SELECT value FROM json_each(?)) AND last_attempt IS NOT NULL "
            "ORDER BY last_attempt DESC LIMIT 1",
            (kind, target, name, json.dumps(wanted))).fetchone()
        if old is not None:
            self.db.execute(f"UPDATE source_state SET ({_STATE}) = ({', '.join('?' * len(old))}) "
                            "WHERE name = ? AND last_attempt IS NULL", (*old, name))

    def known_sources(self) -> dict[str, tuple[str, str]]:
        """Every source feedbot has collected or seen configured → (kind, target), both ''
        where not recorded (collected before targets were recorded)."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute(
            "SELECT name, kind, target FROM source_state")}

    def source_attempts(self) -> dict[str, tuple[datetime | None, datetime | None, int]]:
        """Every recorded source → (last attempt, last error's time, failures): what recording
        an outcome always changes, read for all sources in one query."""
        return {r[0]: (_dt(r[1]), _dt(r[2]), r[3]) for r in self.db.execute(
            "SELECT name, last_attempt, last_error_at, failures FROM source_state")}

    def source_state(self, name: str) -> SourceState:
        r = self.db.execute("SELECT * FROM source_state WHERE name = ?", (name,)).fetchone()
        n = self.item_count(name)
        if r is None:
            return SourceState(name, items=n)
        return SourceState(
            name=name, etag=r["etag"], last_modified=r["last_modified"], cursor=r["cursor"],
            last_attempt=_dt(r["last_attempt"]), last_success=_dt(r["last_success"]),
            last_error=r["last_error"], last_error_at=_dt(r["last_error_at"]),
            failures=r["failures"], retry_after=_dt(r["retry_after"]), items=n,
            notice=r["notice"],
        )

    def _ensure_state(self, name: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO source_state(name) VALUES (?)", (name,))

    def record_success(self, name: str, now: datetime, *, etag: str | None = None,
                       last_modified: str | None = None, cursor: str | None = None,
                       notice: str = "") -> None:
        """A fetch worked (including a 304). Validators are kept unless new ones are given.
        `notice`: what this fetch said beside its items ('' for nothing), replacing the last
        one: a feed mended, or its URL updated, says nothing more."""
        with self.transaction():
            self._ensure_state(name)
            self.db.execute(
                "UPDATE source_state SET last_attempt = ?, last_success = ?, failures = 0, "
                "retry_after = NULL, etag = coalesce(?, etag), "
                "last_modified = coalesce(?, last_modified), cursor = coalesce(?, cursor), "
                "notice = ? WHERE name = ?",
                (now.timestamp(), now.timestamp(), etag, last_modified, cursor, notice[:500],
                 name),
            )

    def record_failure(self, name: str, now: datetime, error: str,
                       retry_after: datetime | None = None) -> None:
        """A fetch failed. `retry_after`: when the server asked us to come back. One not
        after `now` (`Retry-After: 0`, or a date already past: a cached error page, a server's
        clock behind) says nothing, and is not kept: kept, it made the source due at once
        after every failure, so a server down all day was asked every minute instead of
        with the usual backoff."""
        if retry_after is not None and retry_after <= now:
            retry_after = None
        with self.transaction():
            self._ensure_state(name)
            self.db.execute(
                "UPDATE source_state SET last_attempt = ?, last_error = ?, last_error_at = ?, "
                "failures = failures + 1, retry_after = ? WHERE name = ?",
                (now.timestamp(), error[:500], now.timestamp(), _ts(retry_after), name),
            )

    # --- vectors --------------------------------------------------------------------------

    def get_vectors(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(dict.fromkeys(hashes)), 900):
            q = ",".join("?" * len(chunk))
            for h, dim, blob in self.db.execute(
                f"SELECT content_hash, dim, vec FROM vectors WHERE model = ? "
                f"AND content_hash IN ({q})", (model, *chunk),
            ):
                out[h] = _decode(blob, dim)
        return out

    def put_vectors(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors as float16: half the disk and I/O of float32, and rankings agree
        (top-10 agreement 1.000 over 65 stage rankings of the dev set, measured)."""
        with self.transaction():
            self.db.executemany(
                "INSERT INTO vectors(model, content_hash, dim, vec) VALUES (?,?,?,?) "
                "ON CONFLICT(model, content_hash) DO UPDATE SET dim = excluded.dim, "
                "vec = excluded.vec",
                [(model, h, int(v.shape[0]), np.asarray(v, dtype=np.float16).tobytes())
                 for h, v in vectors.items()],
            )

    def missing_vectors(self, model: str, since: datetime | None = None,
                        limit: int | None = None) -> list[tuple[str, str, str]]:
        """(content_hash, title, summary) of items with no vector for `model`, newest first."""
        sql = ("SELECT i.content_hash, i.title, i.summary FROM items i WHERE NOT EXISTS ("
               "SELECT 1 FROM vectors v WHERE v.model = ? AND v.content_hash = i.content_hash)")
        args: list[Any] = [model]
        if since is not None:
            sql += " AND coalesce(i.published, i.first_seen) >= ?"
            args.append(since.timestamp())
        sql += " ORDER BY coalesce(i.published, i.first_seen) DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [(r[0], r[1], r[2]) for r in self.db.execute(sql, args)]

    def vector_count(self, model: str | None = None) -> int:
        if model is None:
            return int(self.db.execute("SELECT count(*) FROM vectors").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM vectors WHERE model = ?",
                                   (model,)).fetchone()[0])

    # --- feedback and deliveries ----------------------------------------------------------

    def set_feedback(self, chat: str, item_id_: str, value: str, now: datetime,
                     stage: str = "") -> None:
        """Record 'up' or 'down' (a vote, which also takes the item off the chat's read-later
        list: it has been read), or 'later' (a bookmark; a vote given before stays). `stage`
        is the roadmap stage the learner was at when voting."""
        with self.transaction():
            if value == "later":
                self.db.execute(
                    "INSERT INTO bookmarks(chat, item_id, at) VALUES (?, ?, ?) "
                    "ON CONFLICT(chat, item_id) DO UPDATE SET at = excluded.at",
                    (chat, item_id_, now.timestamp()))
                return
            self.db.execute(
                "INSERT INTO feedback(chat, item_id, value, at, stage) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(chat, item_id) DO UPDATE SET value = excluded.value, "
                "at = excluded.at, stage = excluded.stage",
                (chat, item_id_, value, now.timestamp(), stage))
            self.db.execute("DELETE FROM bookmarks WHERE chat = ? AND item_id = ?",
                            (chat, item_id_))

    def bookmarks(self, chat: str) -> list[str]:
        """The chat's read-later item ids, the latest saved first.

        Items of sources the learner has since unfollowed stay on the list (unlike in the
        digest): saving an item was a choice about that item, made after reading its title,
        and unfollowing a source is a choice about what comes next. A 👍/👎 takes it off.
        """
        return [r[0] for r in self.db.execute(
            "SELECT item_id FROM bookmarks WHERE chat = ? ORDER BY at DESC, rowid DESC",
            (chat,))]

    def bookmarked_items(self, chat: str) -> list[StoredItem]:
        """The chat's read-later items (`bookmarks`), the latest saved first."""
        ids = self.bookmarks(chat)
        found = {s.id: s for s in self.get_items(ids)}
        return [found[i] for i in ids if i in found]

    def feedback(self, chat: str | None = None) -> list[Vote]:
        """The latest vote of each chat on each item, oldest first (every chat for None)."""
        sql, args = "SELECT chat, item_id, value, at, stage FROM feedback", []
        if chat is not None:
            sql, args = sql + " WHERE chat = ?", [chat]
        return [Vote(r[0], r[1], r[2], _dt(r[3]) or datetime.now(UTC), r[4])
                for r in self.db.execute(sql + " ORDER BY at", args)]

    def voted_items(self, chat: str | None = None) -> list[VotedItem]:
        """`feedback`, each vote with its item's content hash: what decides whether the saved
        👍/👎 model still fits, read without building the items (1.2 s for 10,000 votes)."""
        sql = ("SELECT f.chat, f.item_id, f.value, f.at, f.stage, i.content_hash "
               "FROM feedback f LEFT JOIN items i ON i.id = f.item_id")
        args: list[Any] = []
        if chat is not None:
            sql, args = sql + " WHERE f.chat = ?", [chat]
        return [VotedItem(r[0], r[1], r[2], r[3], r[4], r[5] or "")
                for r in self.db.execute(sql + " ORDER BY f.at, f.rowid", args)]

    def mark_delivered(self, chat: str, item_ids: Iterable[str], now: datetime) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO deliveries(chat, item_id, at) VALUES (?, ?, ?)",
                [(chat, i, now.timestamp()) for i in item_ids],
            )

    def delivered(self, chat: str) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT item_id FROM deliveries WHERE chat = ?", (chat,))}

    # --- forum topics ---------------------------------------------------------------------

    def digest_topic(self, chat: str) -> int | None:
        """The forum topic the chat's daily digest goes to; None: the chat's main thread."""
        r = self.db.execute("SELECT thread FROM chat_topics WHERE chat = ?", (chat,)).fetchone()
        return int(r[0]) if r is not None else None

    def set_digest_topic(self, chat: str, thread: int | None, now: datetime) -> bool:
        """Send the chat's daily digest to forum topic `thread` (None: the main thread, a
        forum's General). Returns whether that changed anything."""
        if self.digest_topic(chat) == thread:
            return False
        with self.transaction():
            if thread is None:
                self.db.execute("DELETE FROM chat_topics WHERE chat = ?", (chat,))
            else:
                self.db.execute(
                    "INSERT INTO chat_topics(chat, thread, at) VALUES (?, ?, ?) "
                    "ON CONFLICT(chat) DO UPDATE SET thread = excluded.thread, at = excluded.at",
                    (chat, thread, now.timestamp()))
        return True

    def forget_digest_topic(self, chat: str, thread: int) -> bool:
        """The topic `thread` is gone or closed: the daily digest goes to the main thread,
        unless the chat has chosen another topic since. Returns whether it was forgotten."""
        with self.transaction() as db:
            return db.execute("DELETE FROM chat_topics WHERE chat = ? AND thread = ?",
                              (chat, thread)).rowcount > 0

    # --- pruning (see prune.py) ------------------------------------------------------------

    def prune_candidates(self, before: datetime) -> PruneCandidates:
        """Items published (else first seen) before `before` and first seen before it too,
        that no chat voted on or saved and no post shared since, oldest first; and how many
        as old are kept."""
        with self.snapshot():
            args = {"before": before.timestamp()}
            ids = [r[0] for r in self.db.execute(
                f"SELECT id FROM items WHERE {_PRUNABLE} "
                "ORDER BY coalesce(published, first_seen)", args)]
            old = self.db.execute(
                "SELECT count(*) FROM items WHERE coalesce(published, first_seen) < :before "
                "AND first_seen < :before", args).fetchone()[0]
        return PruneCandidates(ids, int(old) - len(ids))

    def delete_items(self, ids: Sequence[str], before: datetime, now: datetime) -> list[str]:
        """Delete those of `ids` that are still prunable before `before` (a vote may have come
        since they were chosen), in one transaction: with their sources and deliveries, and a
        tombstone for each undated one. Returns the ids deleted. Vectors are left to
        `delete_vectors` (another item may have the same text)."""
        args = {"ids": json.dumps(list(ids)), "before": before.timestamp(),
                "now": now.timestamp()}
        chosen = f"id IN (SELECT value FROM json_each(:ids)) AND {_PRUNABLE}"
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO tombstones(key, pruned, seen) SELECT key, :now, "
                       f":now FROM items WHERE published IS NULL AND {chosen}", args)
            db.execute("INSERT OR REPLACE INTO tombstones(key, pruned, seen) "
                       "SELECT 'guid:' || s.source || ':' || s.guid, :now, :now "
                       "FROM item_sources s WHERE s.guid != '' AND s.item_id IN (SELECT id FROM "
                       f"items WHERE published IS NULL AND {chosen})", args)
            gone = [r[0] for r in db.execute(f"SELECT id FROM items WHERE {chosen}", args)]
            self._delete_item_rows(db, gone)
        return gone

    def item_hashes(self, ids: Collection[str] | None = None) -> dict[str, str]:
        """item id → content hash (what its vector is cached under), for every item or for
        the stored ones of `ids`."""
        if ids is None:
            return {r[0]: r[1] for r in self.db.execute("SELECT id, content_hash FROM items")}
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT id, content_hash FROM items WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),))}

    def hashes_and_titles(self, ids: Collection[str]) -> dict[str, tuple[str, str]]:
        """item id → (content hash, title), for the stored ones of `ids`."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute(
            "SELECT id, content_hash, title FROM items WHERE id IN "
            "(SELECT value FROM json_each(?))", (json.dumps(list(ids)),))}

    def vector_keys(self) -> list[tuple[int, str, str, int]]:
        """(rowid, model, content hash, bytes) of every cached vector."""
        return [(r[0], r[1], r[2], r[3]) for r in self.db.execute(
            "SELECT rowid, model, content_hash, length(vec) FROM vectors")]

    def delete_vectors(self, rowids: Sequence[int], *, unused_only: bool) -> int:
        """Delete these vectors in one transaction; with `unused_only`, only those whose text
        no item has (checked here: an item may have come since they were chosen)."""
        sql = "DELETE FROM vectors WHERE rowid IN (SELECT value FROM json_each(?))"
        if unused_only:
            sql += " AND content_hash NOT IN (SELECT content_hash FROM items)"
        with self.transaction() as db:
            return db.execute(sql, (json.dumps(list(rowids)),)).rowcount

    def delete_tombstones(self, unseen_since: datetime) -> int:
        """Forget tombstones that no feed has listed since `unseen_since`."""
        with self.transaction() as db:
            return db.execute(f"DELETE {_UNSEEN_TOMBSTONES}",
                              (unseen_since.timestamp(),)).rowcount

    def unseen_tombstones(self, unseen_since: datetime) -> int:
        """How many tombstones `delete_tombstones(unseen_since)` would forget (a dry run's)."""
        return int(self.db.execute(f"SELECT count(*) {_UNSEEN_TOMBSTONES}",
                                   (unseen_since.timestamp(),)).fetchone()[0])

    def was_withdrawn(self, ref: str) -> bool:
        """Whether `ref` (an arXiv id or page, as `get_item` takes it) names a paper removed
        because its newest version withdrew it, not by a prune (see `_withdraw`)."""
        aid, _ = split_arxiv_id(unwrap_ref(ref))
        return bool(aid) and self.db.execute(
            "SELECT 1 FROM tombstones WHERE key = ? AND withdrawn > 0",
            (f"arxiv:{aid}",)).fetchone() is not None

    def tombstone_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM tombstones").fetchone()[0])

    def set_pruned_before(self, before: datetime | None) -> None:
        """Record the cutoff of a real prune: items dated before it are not taken in again.
        None forgets it (retention is `never` now): items of every date are taken in."""
        if before is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (PRUNED_BEFORE,))
            return
        self.set_meta(PRUNED_BEFORE, repr(before.timestamp()))

    def disk_bytes(self) -> int:
        """The database's size on disk, with its write-ahead log (0 in memory)."""
        if self.path == ":memory:":
            return 0
        total = 0
        for suffix in ("", "-wal"):
            with suppress(OSError):
                total += Path(self.path + suffix).stat().st_size
        return total

    def vacuum(self) -> None:
        """Rewrite the file without its free pages (holds the write lock while it runs), then
        empty the write-ahead log, which VACUUM filled with the whole database. The word index
        is merged into one b-tree first ('optimize': smaller, and a search reads one)."""
        if self.has_word_index():
            with self.transaction() as db:
                db.execute("INSERT INTO summary_words(summary_words) VALUES ('optimize')")
        self.db.execute("VACUUM")
        with suppress(sqlite3.OperationalError):  # a reader in the way: the log stays for now
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # --- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        r = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return r[0] if r is not None else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = excluded.value", (key, value))


ITEM_ID = re.compile(r"[0-9a-fA-F]{12}")  # an item id that is not an arXiv id
_HOST = re.compile(r"[\w-]+(\.[\w-]+)+(:\d+)?(/|$)")
_WRAPPERS = {"[": "]", "<": ">", "(": ")", "`": "`", '"': '"', "'": "'", "“": "”", "‘": "’"}


def unwrap_ref(ref: str) -> str:
    """`ref` without surrounding space and the brackets or quotes it was copied with."""
    ref = ref.strip()
    while len(ref) > 2 and _WRAPPERS.get(ref[0]) == ref[-1]:
        ref = ref[1:-1].strip()
    return ref


# An item some source that is not hidden brought (the `?`s: the hidden names, a JSON list).
_FOLLOWED = ("(i.source NOT IN (SELECT value FROM json_each(?)) OR EXISTS (SELECT 1 FROM "
             "item_sources s WHERE s.item_id = i.id AND s.source NOT IN "
             "(SELECT value FROM json_each(?))))")


# An item a prune before `:before` removes: old by its date and by when it was first seen (a
# paper collected yesterday stays, whatever its date), no chat voted on or saved it (votes
# train the learner's model, which needs the item and its vector), and no post shared it
# since: an old paper a followed post shares today is news again (and sent), and removed that
# night, a 👍 on the morning's message found no item, its delivered mark went with it, and
# the post about it came the next day (the same story twice).
def _dated_by_a_wrong_clock(row: sqlite3.Row, it: Item, now: datetime) -> bool:
    """Whether a stored item's date is the fetch time that `items.clamp_future` gave it (its
    date was more than a day after the clock), and `it`, the same item read again, has a date
    believed now: not clamped again (that date would be `now`). A Raspberry Pi without a clock
    battery boots days behind until NTP answers; the week's posts it read then looked as if
    from the future, and kept the wrong boot-time date for good. A date still in the future
    (a feed's year 3000) is clamped again on every read, so it keeps its first date."""
    return (row["published"] is not None and row["published"] == row["first_seen"]
            and it.published is not None and it.published != now)


_UNSEEN_TOMBSTONES = "FROM tombstones WHERE seen < ?"  # no feed has listed them since then
_PRUNABLE = ("coalesce(published, first_seen) < :before AND first_seen < :before AND "
             "id NOT IN (SELECT item_id FROM feedback) AND "
             "id NOT IN (SELECT item_id FROM bookmarks) AND "
             # by item (the primary key of item_sources starts with item_id): the whole table
             # read for each statement of a prune's batches made a prune 24 % slower
             "NOT EXISTS (SELECT 1 FROM item_sources s WHERE s.item_id = items.id "
             "AND s.via != '' AND s.seen >= :before)")


# what belongs to one target: its validators, and what its last fetch said ("moved
# permanently": the user has just updated the URL, as it asked)
_NO_VALIDATORS = "etag = '', last_modified = '', cursor = '', notice = ''"
# A configured source given a new target (a mistyped URL mended) is due at once: the old
# target's failures and Retry-After held the mended one back for hours.
_NEW_TARGET = "failures = 0, retry_after = NULL, last_attempt = NULL"
# A source's state as a renamed source takes it along (`Store._adopt_state`)
_STATE = ("etag, last_modified, cursor, last_attempt, last_success, last_error, "
          "last_error_at, failures, retry_after, notice")


def _names_json(names: Collection[str]) -> str:
    """Source names as the JSON list that `json_each(?)` reads in the queries above."""
    return json.dumps(sorted(set(names)))


# A summary's head (`?1` characters), or the whole summary where the rest may claim a
# state-of-the-art result: LIKE (ASCII case-insensitive, in C) finds the few that may, and
# `rank.level_signal`'s own pattern decides. Lowering each summary to look for the words
# cost 12 times the plain head's time (30,000 abstracts: 426 ms against 34 ms); this, 5.
_CLAIMS = ("CASE WHEN length(i.summary) <= ?1 OR NOT (i.summary LIKE '%of_the_art%' OR "
           "i.summary LIKE '%sota%' OR i.summary LIKE '%outperform%' OR i.summary LIKE "
           "'%new record%') THEN substr(i.summary, 1, ?1) ELSE i.summary END")


def _window(since: datetime | None) -> tuple[str, list[Any]]:
    """` WHERE` clause (and its argument) of the items a digest or search may offer: published
    (else first seen) since `since`, and not withdrawn (a paper kept for its votes, see
    `Store._withdraw`)."""
    if since is None:
        return " WHERE i.withdrawn IS NULL", []
    return (" WHERE coalesce(i.published, i.first_seen) >= ? AND i.withdrawn IS NULL",
            [since.timestamp()])


DECODE_CHUNK = 4096  # float16 vectors converted at a time: 3 MB of blobs, 6 MB of float32


def _fill(X: np.ndarray, have: np.ndarray,
          pairs: Iterable[tuple[int | None, int, bytes | None]], dim: int) -> None:
    """Put stored vectors into rows of X: (row or None, dim, blob) in, `have` marks the rows.

    float16 blobs (what feedbot writes) are converted DECODE_CHUNK at a time, not one by one:
    at 100,000 items that took a numpy call per row. A chunk, not all at once, so there is
    never a second copy of every vector. Others go through `_decode` (old float32, damaged).
    """
    rows: list[int] = []
    blobs: list[bytes] = []
    size = dim * 2

    def flush() -> None:
        if rows:
            X[rows] = np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(rows), dim)
            have[rows] = True
            rows.clear()
            blobs.clear()

    for n, d, v in pairs:
        if n is None or v is None or d != dim:
            continue
        if len(v) == size:
            rows.append(n)
            blobs.append(v)
            if len(rows) == DECODE_CHUNK:
                flush()
        else:
            X[n] = _decode(v, d)
            have[n] = True
    flush()


def _decode(blob: bytes, dim: int) -> np.ndarray:
    """A stored vector (float16, or float32 as older versions wrote them); a blob of any other
    length, which no version writes, reads as NaN: damaged, so the digest embeds it again."""
    if len(blob) == dim * 2:
        return np.frombuffer(blob, dtype=np.float16).astype(np.float32)
    if len(blob) == dim * 4:
        return np.frombuffer(blob, dtype=np.float32)
    return np.full(dim, np.nan, dtype=np.float32)


def _chunks(seq: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


__all__ = ["PruneCandidates", "Store", "StoredItem", "SourceState", "UpsertResult", "item_id",
           "unwrap_ref"]
