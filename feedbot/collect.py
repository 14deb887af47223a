"""Collect sources: decide which are due, fetch them concurrently and politely, store the items.

One broken source is that source's result (recorded in the store, shown to the user); it never
stops the others. Feeds run concurrently, bounded overall and per host; arXiv queries go one at a
time through the shared gate, and the people's author queries that are due together go out as
one request per batch of AUTHOR_BATCH names. Collection never ranks or renders.

Where the store lives. `collect_async` does its store work through `db(fn, *args)`, which runs
`fn(store, *args)`: inline by default (the CLI's `feedbot collect`: one thread, nothing to wait
for but the fetches), or on a thread of its own in `feedbot run` (`Runner.in_collection`), so a
database another connection holds, or a 500-item upsert, never stalls the event loop the bot
answers on. A source's items and its success are written in one transaction: a collection
stopped midway leaves both or neither.

A database error while recording one source (held past the busy timeout, a full disk, a damaged
row) is that source's result too: its report says it was not recorded (`SourceReport.store_error`),
nothing of it is kept (its validators neither, so the next run fetches its items again), and the
other sources go on. After a full disk, the sources not yet recorded are not fetched either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import random
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from . import locks
from .collectors import Collected, Context, SourceDisabled, SourceError, first_leaf
from .collectors.arxiv_api import (
    AUTHOR_BATCH,
    ArxivGate,
    author_name,
    collect_arxiv,
    fetch_author_batch,
)
from .collectors.feeds import collect_feed
from .config import Config, SourceSpec, name_key
from .http import make_client
from .items import Item, clamp_future
from .redact import mask_userinfo
from .store import (
    SourceState,
    Store,
    UpsertResult,
    is_busy,
    is_disk_trouble,
    is_read_only,
    same_target,
)

log = logging.getLogger(__name__)

MAX_CONCURRENT = 32  # all fetches at once, unless FEEDBOT_FETCH_CONCURRENCY says otherwise
PER_HOST = 4  # at once against one site (see feed_host)
BACKOFF_BASE = 300.0  # seconds after the first failure; doubles per failure, capped by interval

_T = TypeVar("_T")

Collector = Callable[[Context, SourceSpec, SourceState], Awaitable[Collected]]


class StoreCall(Protocol):
    """`call(fn, *args)` runs `fn(store, *args)` where the store lives and returns its result:
    `inline(store)`, or `Runner.in_collection` (a thread with its own `Store`)."""

    def __call__(self, fn: Callable[..., _T], /, *args: Any) -> Awaitable[_T]: ...


def inline(store: Store) -> StoreCall:
    """Store calls made right here, on the calling thread (the CLI's way)."""

    async def call(fn: Callable[..., _T], /, *args: Any) -> _T:
        return fn(store, *args)

    return call


class DeferredMeta:
    """The store's meta table as collectors see it (`ctx.extra["meta"]`: get_meta/set_meta,
    synchronous) when the store lives on another thread: the keys a source's collector may read
    are loaded with its state before it runs, and what it writes is kept here and written with
    that source's outcome. Only X's collector uses it (its user-id cache, its recent threads)."""

    def __init__(self) -> None:
        self._values: dict[str, str | None] = {}
        self._pending: dict[str, str] = {}

    @staticmethod
    def keys_for(spec: SourceSpec) -> tuple[str, ...]:
        if spec.kind != "x":
            return ()
        from .collectors.x import meta_keys  # as collect_x names them

        return meta_keys(spec.target)

    def load(self, values: dict[str, str | None]) -> None:
        self._values.update({k: v for k, v in values.items() if k not in self._pending})

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        if key in self._pending:
            return self._pending[key]
        value = self._values.get(key)
        return default if value is None else value

    def set_meta(self, key: str, value: str) -> None:
        self._pending[key] = value

    def take(self) -> dict[str, str]:
        """What was written since the last `take`, to write to the store now."""
        out, self._pending = self._pending, {}
        self._values.update(out)
        return out


@dataclass(frozen=True)
class SourceReport:
    name: str
    label: str
    status: str  # "ok", "not-modified", "error", "skipped", "disabled"
    new: int = 0
    updated: int = 0
    withdrawn: int = 0  # stored arXiv papers this fetch found withdrawn (removed, or marked)
    seen: int = 0
    error: str = ""
    warning: str = ""
    seconds: float = 0.0
    # The database error that kept this source's outcome from being recorded (None: recorded).
    store_error: sqlite3.Error | None = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        if self.status == "ok":
            detail = f"{self.new} new" + (f", {self.updated} updated" if self.updated else "")
            detail += f", {self.withdrawn} withdrawn" if self.withdrawn else ""
            detail += f" ({self.seen} in feed)"
            if self.warning:
                detail += f"; {self.warning}"
        elif self.status == "not-modified":
            detail = "not modified" + (f"; {self.warning}" if self.warning else "")
        elif self.status == "skipped":
            detail = "skipped: " + (self.error or "not due yet")
        elif self.status == "disabled":
            detail = "off: " + self.error
        else:
            detail = "error: " + self.error
        return f"{self.name}: {detail}"


CLOCK_SLACK = timedelta(minutes=5)  # clocks of two processes, or one set by NTP, may differ


def next_due(state: SourceState, interval: float, now: datetime | None = None
             ) -> datetime | None:
    """When a source should next be fetched (None: now). Pure.

    After failures the wait is BACKOFF_BASE doubled per consecutive failure, never longer
    than the source's interval; a server's Retry-After always wins. A last attempt after
    `now` (by more than CLOCK_SLACK) was recorded by a clock set ahead, and set right since:
    the source is due now, not an interval after that time (a month ahead, it waited a
    month, while `sources` said "ok, last ok just now").
    """
    if state.retry_after is not None:
        return state.retry_after
    if state.last_attempt is None:
        return None
    if now is not None and state.last_attempt > now + CLOCK_SLACK:
        return None
    # the exponent bounded: a feed dead for a year (1,025 failures) overflowed the float
    wait = (min(interval, BACKOFF_BASE * 2.0 ** (min(state.failures, 64) - 1))
            if state.failures else interval)
    return state.last_attempt + timedelta(seconds=wait)


def is_due(state: SourceState, interval: float, now: datetime) -> bool:
    due = next_due(state, interval, now)
    return due is None or due <= now


def fetch_concurrency() -> int:
    """FEEDBOT_FETCH_CONCURRENCY when it is a whole number ≥ 1, else MAX_CONCURRENT (with a
    warning: 0 would hang collection, and a typo must not stop it)."""
    raw = os.environ.get("FEEDBOT_FETCH_CONCURRENCY", "").strip()
    if not raw:
        return MAX_CONCURRENT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        log.warning("FEEDBOT_FETCH_CONCURRENCY=%r is not a whole number of at least 1; "
                    "using the default, %d", raw, MAX_CONCURRENT)
        return MAX_CONCURRENT
    return value


# Second-level labels under which a country's names are registered (example.co.uk): the site
# is then the last three labels.
_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "ne", "net", "or", "org"})


def feed_host(url: str) -> str:
    """The site a feed URL names, for the per-host limit: its host name's last two labels
    (three under a country's co., ac. and the like), an address as it is; '' when the URL is
    malformed (the fetch then reports it as that source's error).

    By site, not by host: fifty newsletters on their own subdomains of one service
    (alice.substack.com, bob.substack.com) are one service's servers, and were fetched
    all at once, which such a service answers with 429 Too Many Requests."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""
    if ":" in host or host.replace(".", "").isdigit():  # an IPv6 or IPv4 address
        return host
    labels = host.split(".")
    keep = 3 if len(labels[-1]) == 2 and len(labels) > 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-keep:])


def collectors() -> dict[str, Collector]:
    from .collectors.x import collect_x  # tweepy is imported only when collecting

    return {"feed": collect_feed, "arxiv": collect_arxiv, "x": collect_x}


def select_sources(cfg: Config, only: str | Sequence[str] | None = None) -> list[SourceSpec]:
    """All sources, or those whose name, person or label (as digests show it, "Ada on X")
    matches `only`, case-insensitively; a source's own name first: the blog "arXiv cs.CV" is that
    blog alone, not also the query "cs.CV" its label names (`feedbot run` collects each source
    by its name). Several names (`collect --source A --source B`): the sources of each, once.
    KeyError naming the sources when a name matches none."""
    specs = cfg.sources()
    if only is None:
        return specs
    if not isinstance(only, str):
        picked = {s.name: s for name in only for s in select_sources(cfg, name)}
        return list(picked.values())
    want = name_key(only)
    named = [s for s in specs if name_key(s.name) == want]
    if named:
        return named
    chosen = [s for s in specs
              if want in (name_key(s.person), name_key(s.label))]
    if not chosen:
        names = ", ".join(sorted({s.person or s.name for s in specs})) or "none configured"
        raise KeyError(f"no source named {only!r}; sources: {names}")
    return chosen


def author_batches(specs: Sequence[SourceSpec], due: Callable[[SourceSpec], bool],
                   size: int = AUTHOR_BATCH) -> list[list[SourceSpec]]:
    """The due people's arXiv author queries, in batches of at most `size`, in config order.

    Fewer than two due author queries make no batch: a lone one takes the ordinary path."""
    due_authors = [s for s in specs if author_name(s) is not None and due(s)]
    if len(due_authors) < 2:
        return []
    return [due_authors[i:i + size] for i in range(0, len(due_authors), size)]


class Holding:
    """The sources whose lock this collection holds, and the database they are collected into:
    what a batch needs to tell the people another feedbot process is collecting."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.db_path: str | None = None

    def free(self, name: str) -> bool:
        """Whether no other process holds source `name` now (this collection may)."""
        if name in self.names or self.db_path is None:
            return True
        lock = source_lock(self.db_path, name)
        if lock is None:
            return True
        with locks.try_exclusive(lock, unlockable=True) as held:
            return held


class SharedFetch:
    """One fetch shared by several sources: the first to ask starts it, all get its result.

    `collect` is a `Collector` for each source of the batch: its share of the items, or the
    batch's error raised afresh for that source. The fetch leaves out the sources that another
    feedbot process holds when it starts (`free` says False): that process is collecting them,
    so their part of the answer would be thrown away. One of them that still needs collecting
    once its lock is had (that process recorded nothing) is fetched `alone`."""

    def __init__(self, specs: Sequence[SourceSpec],
                 fetch: Callable[[Sequence[SourceSpec]], Awaitable[dict[str, list[Item]]]],
                 alone: Collector, free: Callable[[str], bool] = lambda name: True) -> None:
        self._specs = list(specs)
        self._fetch = fetch
        self._alone = alone
        self._free = free
        self._asked: set[str] = set()
        self._task: asyncio.Future[dict[str, list[Item]]] | None = None

    async def collect(self, ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
        if self._task is None:
            asked = [s for s in self._specs if s.name == spec.name or self._free(s.name)]
            if len(asked) < len(self._specs):
                log.info("arXiv author batch: %d of %d people left out, another feedbot "
                         "process is collecting them", len(self._specs) - len(asked),
                         len(self._specs))
            self._asked = {s.name for s in asked}
            self._task = asyncio.ensure_future(self._fetch(asked))
        if spec.name not in self._asked:
            return await self._alone(ctx, spec, state)
        try:
            got = await asyncio.shield(self._task)  # one source cancelled never cancels the rest
        except SourceError as e:
            raise type(e)(str(e), retry_after=e.retry_after) from e
        return Collected(list(got.get(spec.name, [])))


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ArxivGate] = \
    weakref.WeakKeyDictionary()


def shared_arxiv_gate() -> ArxivGate:
    """One arXiv gate per event loop, so successive runs in `feedbot run` keep the spacing."""
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = ArxivGate()
    return gate


async def collect_async(
    cfg: Config, store: Store | None, *, now: datetime, only: str | Sequence[str] | None = None,
    due_only: bool = False, http: httpx.AsyncClient | None = None,
    arxiv: ArxivGate | None = None, on_done: Callable[[SourceReport], None] | None = None,
    extra: dict[str, object] | None = None, deadline: float = 60.0,
    db: StoreCall | None = None,
) -> list[SourceReport]:
    """Collect the selected sources. The store work goes through `db` when given (`store` is
    then not used, and may be None), else it is done inline on `store`."""
    specs = select_sources(cfg, only)
    meta: object  # get_meta/set_meta for collectors' caches (X user ids, threads)
    if db is None:
        if store is None:
            raise TypeError("collect_async needs a store, or db to reach one")
        db, meta = inline(store), store
    else:
        meta = DeferredMeta()
    call, disk_full = _guarded(db)
    # Read before the run's own client exists, which only the `try` below closes.
    try:  # a source renamed in sources.yaml takes its old name's state along (validators,
        # back-off) before anything is fetched; only an edit of the file writes here
        await call(adopt_renamed, [(s.name, s.kind, s.target) for s in cfg.sources()])
    except sqlite3.Error as e:  # busy or read-only: the renamed source is fetched afresh
        log.debug("could not record the configured sources: %s", e)
    try:  # every source's last outcome as this run begins: what another process records is news
        began: dict[str, Attempt] | None = await call(_attempts)
    except sqlite3.Error:  # each source meets this trouble again, and reports it
        began = None
    states: dict[str, SourceState] = {}
    if due_only:  # the people's author queries, to batch those that are due
        states = await call(_states, [s.name for s in specs if author_name(s) is not None])

    own_client = http is None
    ctx = Context(now=now, http=http or make_client(), arxiv=arxiv or shared_arxiv_gate(),
                  extra=dict(extra or {}), deadline=deadline)
    ctx.extra.setdefault("meta", meta)
    table = collectors()
    overall = asyncio.Semaphore(fetch_concurrency())
    hosts: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def slot(host: str) -> AsyncIterator[None]:
        sem = hosts.setdefault(host, asyncio.Semaphore(PER_HOST))
        # The host's slot first: a task queued behind a busy host must not hold one of the
        # overall slots while it waits, or one host with many feeds starves all the others.
        async with sem, overall:
            yield

    async def slotted(host: str, work: Callable[[], Awaitable[_T]]) -> _T:
        async with slot(host):
            return await work()

    def due(spec: SourceSpec) -> bool:
        return not due_only or is_due(states[spec.name], spec.interval, now)

    holding = Holding()

    async def fetch_batch(batch: Sequence[SourceSpec]) -> dict[str, list[Item]]:
        return await slotted("arxiv", functools.partial(fetch_author_batch, ctx.arxiv, batch))

    async def fetch_alone(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
        return await slotted("arxiv", functools.partial(table["arxiv"], ctx, spec, state))

    batch_of: dict[str, SharedFetch] = {}
    for batch in author_batches(specs, due):
        shared = SharedFetch(batch, fetch_batch, fetch_alone, holding.free)
        batch_of.update(dict.fromkeys((s.name for s in batch), shared))

    async def one(spec: SourceSpec) -> SourceReport:
        shared = batch_of.get(spec.name)
        outcome = None if began is None else began.get(spec.name, NEVER)
        if shared is None:
            host = feed_host(spec.target) if spec.kind == "feed" else spec.kind
            report = await collect_one(ctx, store, spec, table, due_only=due_only, db=call,
                                       slot=functools.partial(slot, host), began=outcome)
        else:
            # A batched source makes no request of its own, so it waits for its batch holding
            # no slot. The batch's one request takes the "arxiv" host slot and one overall slot,
            # exactly like a single arXiv query: twenty people cost the feeds one slot, not
            # twenty, and the gate still sends one request at a time with its spacing. A batch
            # holds only sources found due above, so their state is not read for that again.
            report = await collect_one(ctx, store, spec, {**table, "arxiv": shared.collect},
                                       db=call, holding=holding, began=outcome)
        if on_done is not None:
            on_done(report)
        return report

    try:
        reports = list(await asyncio.gather(*(one(s) for s in specs)))
        left = ctx.extra["meta"].take() if isinstance(ctx.extra["meta"], DeferredMeta) else {}
        try:
            if left:  # written by a source that recorded nothing (switched off)
                await call(_write_meta, left)
            await call(_link_due, now)
        except sqlite3.Error as e:  # the sources are recorded; the next collection links them
            if not disk_full:
                log.warning("linking posts to the items they share was put off: %s", e)
        except Exception as e:  # a bug in linking must not fail a run whose sources are recorded
            log.warning("linking posts to the items they share failed: %s: %s",
                        type(e).__name__, e, exc_info=log.isEnabledFor(logging.DEBUG))
        return reports
    finally:
        if own_client:
            await ctx.http.aclose()


async def collect_one(ctx: Context, store: Store | None, spec: SourceSpec,
                      table: dict[str, Collector], *, due_only: bool = False,
                      db: StoreCall | None = None, holding: Holding | None = None,
                      slot: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None,
                      began: Attempt | None = None) -> SourceReport:
    """One source: its state, its collector, its outcome recorded (through `db` when given,
    else inline on `store`). `holding` learns the sources whose lock this holds.

    `slot` is the fetch slot to hold while working (the host's and one overall). A source that
    another feedbot process is collecting is waited for without one, so that the sources
    nobody else holds go on meanwhile. When that process lets go without recording an outcome
    (it crashed), the lock is let go too and the source queues for a slot afresh: a lock held
    while queued would make a third process wait for a fetch that has not begun. After
    `LOCK_ROUNDS` such rounds it keeps the lock while it queues.

    `began` is the source's last outcome (`_attempted`) when the run began, if it was read
    then: a source whose outcome another process has recorded since is not fetched again. The
    lock alone cannot tell that when the other process finished it before this one got to it."""
    for round_ in range(1, LOCK_ROUNDS + 1):
        report = await _slotted_round(ctx, store, spec, table, due_only, db, holding, slot,
                                      began, last=round_ == LOCK_ROUNDS or slot is None)
        if report is not None:
            return report
    raise AssertionError("the last round always reports")


LOCK_ROUNDS = 3  # waits for another process, each followed by a new queue for a slot (see above)


async def _slotted_round(ctx: Context, store: Store | None, spec: SourceSpec,
                         table: dict[str, Collector], due_only: bool, db: StoreCall | None,
                         holding: Holding | None,
                         slot: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None,
                         began: Attempt | None, *, last: bool) -> SourceReport | None:
    """One try of `collect_one`: None when the source, waited for without a slot, still needs
    fetching and this is not the `last` round."""
    async with contextlib.AsyncExitStack() as slotted:
        if slot is not None:
            await slotted.enter_async_context(slot())
        left: list[bool] = []

        async def leave_slot() -> None:
            left.append(True)
            await slotted.aclose()

        async def fetch(work: Callable[[], Awaitable[SourceReport]]) -> SourceReport | None:
            if left:  # waited without the slot (`leave_slot`, given only with one)
                assert slot is not None
                if not last:
                    return None  # let go of the lock, and queue for a slot again
                await slotted.enter_async_context(slot())
            return await work()

        return await _collect_one(ctx, store, spec, table, due_only, db, holding,
                                  leave_slot if slot is not None else None, fetch, began)


async def _collect_one(ctx: Context, store: Store | None, spec: SourceSpec,
                       table: dict[str, Collector], due_only: bool, db: StoreCall | None,
                       holding: Holding | None, on_wait: Callable[[], Awaitable[None]] | None,
                       fetch: Callable[[Callable[[], Awaitable[SourceReport]]],
                                       Awaitable[SourceReport | None]],
                       began: Attempt | None) -> SourceReport | None:
    if db is None:
        if store is None:
            raise TypeError("collect_one needs a store, or db to reach one")
        db = inline(store)
    meta = ctx.extra.get("meta")
    deferred = meta if isinstance(meta, DeferredMeta) else None
    keys = deferred.keys_for(spec) if deferred else ()
    try:
        state, cached, path = await db(_begin, spec.name, keys)
    except sqlite3.Error as trouble:
        return _unrecorded(spec, trouble)
    if due_only and not is_due(state, spec.interval, ctx.now):
        return SourceReport(spec.name, spec.label, "skipped")
    if began is not None and _attempted(state) != began:
        return SourceReport(spec.name, spec.label, "skipped", error=_meanwhile(state))
    collector = table.get(spec.kind)
    if collector is None:
        return SourceReport(spec.name, spec.label, "disabled",
                            error=f"no collector for {spec.kind} sources")
    patience = max(ctx.deadline, 10.0) * LOCK_PATIENCE
    lock = source_lock(path, spec.name)
    writes: list[asyncio.Future[Any]] = []  # an outcome still being written when cancelled
    async with _alone(lock, patience, writes, on_wait) as held:
        if not held:
            return SourceReport(spec.name, spec.label, "skipped",
                                error=f"another feedbot process has been collecting it for over "
                                      f"{patience:g} s")
        if holding is not None:  # at once: a batch starting meanwhile must not count it as
            holding.db_path = path  # another process's (this process's lock, opened again by
            holding.names.add(spec.name)  # `Holding.free`, conflicts with it all the same)
        try:
            # Another process may have collected it since `state` was read: while we waited
            # for the lock, or whole between that read and the lock, which was then free at
            # once (the daemon reads on its collection thread, so that gap is a thread's turn).
            if lock is not None:  # did it record an outcome?
                try:
                    after, cached, _ = await db(_begin, spec.name, keys)
                except sqlite3.Error as trouble:
                    return _unrecorded(spec, trouble)
                if _attempted(after) != _attempted(state):
                    return SourceReport(spec.name, spec.label, "skipped",
                                        error=_meanwhile(after))
                state = after
            if deferred is not None:
                deferred.load(cached)
            return await fetch(functools.partial(
                _collect_held, ctx, spec, state, collector, db, deferred, writes))
        finally:
            if holding is not None:
                holding.names.discard(spec.name)


LOCK_PATIENCE = 2  # × a fetch's deadline: how long a source held by another process is waited for
LOCK_POLL = 0.2  # seconds between looks at a source held by another process


def source_lock(db_path: str, name: str) -> Path | None:
    """The file that the process collecting source `name` into the database at `db_path` holds:
    beside the database file itself, whatever path (a symbolic link, a relative path) each
    process opened it by. None for a database in memory or SQLite's private temporary one
    (`""`), which no other process can reach."""
    if db_path in ("", ":memory:"):
        return None
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Path(f"{os.path.realpath(db_path)}.collect-{digest}.lock")


@contextlib.asynccontextmanager
async def _alone(lock: Path | None, patience: float, writes: Sequence[asyncio.Future[Any]],
                 on_wait: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[bool]:
    """Hold `lock` between processes while a source is collected: yields True once it is held
    (at once, or after another feedbot process let go of it), or False when another process
    still held it after `patience` seconds (nothing is held then). Two processes collecting
    at once (the daemon and `feedbot digest`) fetch each source once, not twice. Where a lock
    cannot be had at all (no fcntl, the file cannot be created), the source is collected
    unlocked. `on_wait` is awaited once, when the lock is found held by another process and
    waiting begins: `collect_one` gives its fetch slot back there.

    Cancelled while its outcome is being written on the store's thread (`writes`: that call,
    which goes on to its end), the lock is let go only once the write has ended, without
    making the cancellation wait: a process waiting for the source would otherwise find no
    outcome recorded yet and fetch it again."""
    if lock is None:
        yield True
        return
    give_up = time.monotonic() + patience
    while True:
        with contextlib.ExitStack() as stack:
            held = stack.enter_context(locks.try_exclusive(lock, unlockable=True))
            if held:
                try:
                    yield True
                except BaseException:
                    pending = [w for w in writes if not w.done()]
                    if pending:  # let go when the write ends (see above); there is one
                        release = stack.pop_all()

                        def let_go(_: asyncio.Future[Any], release: Any = release) -> None:
                            release.close()

                        pending[0].add_done_callback(let_go)
                    raise
                return
        if time.monotonic() >= give_up:
            yield False
            return
        if on_wait is not None:  # another process holds it: wait without what `on_wait` frees
            await on_wait()
            on_wait = None
        await asyncio.sleep(LOCK_POLL)


def _meanwhile(state: SourceState) -> str:
    """Why a source another process recorded an outcome for meanwhile is skipped: "collected
    meanwhile" was said of one whose every fetch had failed there, and the digest then
    showed the demo items as if all was well."""
    if state.failures:  # its last outcome was a failure (a success sets failures to 0)
        return f"tried meanwhile by another feedbot process, which got: {state.last_error}"
    return "collected meanwhile by another feedbot process"


Attempt = tuple[datetime | None, datetime | None, int]
NEVER: Attempt = (None, None, 0)  # a source with no outcome recorded


def _attempted(state: SourceState) -> Attempt:
    """What recording an outcome always changes (see `Store.source_attempts`)."""
    return state.last_attempt, state.last_error_at, state.failures


async def _collect_held(ctx: Context, spec: SourceSpec, state: SourceState,
                        collector: Collector, db: StoreCall, deferred: DeferredMeta | None,
                        writes: list[asyncio.Future[Any]]) -> SourceReport:
    """`collect_one`'s work once the source is held: fetch, record, report. A write of the
    outcome still going on when this is cancelled is put in `writes` (see `_alone`)."""

    async def record(fn: Callable[..., _T], /, *args: Any) -> _T:
        write = asyncio.ensure_future(db(fn, *args))
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            if not write.done():
                write.add_done_callback(lambda w: w.cancelled() or w.exception())
                writes.append(write)
            raise

    started = time.monotonic()

    async def failed(msg: str, retry_after: datetime | None, meta: dict[str, str]
                     ) -> SourceReport:
        msg = mask_userinfo(msg)  # kept, and shown by `sources` and /sources: no password
        try:
            await record(_failed, _who(spec), ctx.now, msg, retry_after, meta)
        except sqlite3.Error as trouble:
            return _unrecorded(spec, trouble, msg, time.monotonic() - started)
        return SourceReport(spec.name, spec.label, "error", error=msg,
                            seconds=time.monotonic() - started)

    try:
        got = await collector(ctx, spec, state)
    except Exception as caught:  # a bug or a surprise in one source must not stop the others
        e = first_leaf(caught)
        if isinstance(e, SourceDisabled):
            return SourceReport(spec.name, spec.label, "disabled", error=str(e))
        if isinstance(e, SourceError):
            return await failed(str(e), e.retry_after, deferred.take() if deferred else {})
        log.error("collecting %s failed", spec.name, exc_info=caught)
        return await failed(f"unexpected {type(e).__name__}: {e}", None,
                            deferred.take() if deferred else {})
    items = [clamp_future(it, ctx.now) for it in got.items]
    try:
        result = await record(_succeeded, _who(spec), ctx.now, items, got,
                              deferred.take() if deferred else {})
    except sqlite3.Error as trouble:
        return _unrecorded(spec, trouble, seconds=time.monotonic() - started)
    except Exception as caught:  # a value the database cannot hold (a bug): this source only
        log.error("recording %s failed", spec.name, exc_info=caught)
        return await failed(f"unexpected {type(caught).__name__} while storing its items: "
                            f"{caught}", None, {})  # its meta went with the failed write
    status = "not-modified" if got.not_modified else "ok"
    return SourceReport(spec.name, spec.label, status, new=result.new, updated=result.updated,
                        withdrawn=result.withdrawn, seen=len(got.items), warning=got.warning,
                        seconds=time.monotonic() - started)


def store_trouble(e: BaseException) -> sqlite3.Error | None:
    """The database error that says why (held past the busy timeout, a full disk) when there
    is one in `e`'s chain (a failed ROLLBACK after it, "cannot rollback - no transaction is
    active", hides it), else `e` itself when it is a database error, else None."""
    seen: BaseException | None = e
    while seen is not None:
        if is_busy(seen) or is_disk_trouble(seen) or is_read_only(seen):
            return seen  # type: ignore[return-value]
        seen = seen.__cause__ or seen.__context__
    return e if isinstance(e, sqlite3.Error) else None


def _not_recorded(trouble: sqlite3.Error) -> str:
    """One line: why a source's outcome was not recorded (`trouble`, as `store_trouble` found
    it), and that nothing of it is lost."""
    if is_busy(trouble):
        return "the database was busy; nothing of it was lost, run again"
    if is_disk_trouble(trouble):
        return (f"cannot write to the database ({trouble}); nothing of it was lost, run again "
                "once there is room")
    if is_read_only(trouble):
        return f"cannot write to the database ({trouble}); nothing of it was lost"
    return (f"could not be recorded ({type(trouble).__name__}: {trouble}); nothing of it was "
            "kept, and the next run fetches it again")


def _unrecorded(spec: SourceSpec, e: sqlite3.Error, fetch_error: str = "",
                seconds: float = 0.0) -> SourceReport:
    log.debug("recording %s failed", spec.name, exc_info=e)
    trouble = store_trouble(e) or e
    why = _not_recorded(trouble)
    return SourceReport(spec.name, spec.label, "error",
                        error=f"{fetch_error}; {why}" if fetch_error else why,
                        seconds=seconds, store_error=trouble)


def _guarded(call: StoreCall) -> tuple[StoreCall, list[sqlite3.Error]]:
    """`call`, which after the first full-disk error answers every later call with that error
    without trying: no more sources are fetched for nothing, nor written into a full disk.
    The list holds that error once there is one."""
    full: list[sqlite3.Error] = []

    async def guarded(fn: Callable[..., _T], /, *args: Any) -> _T:
        if full:
            raise type(full[0])(*full[0].args)
        try:
            return await call(fn, *args)
        except sqlite3.Error as e:
            trouble = store_trouble(e)
            if trouble is not None and is_disk_trouble(trouble) and not full:
                full.append(trouble)
            raise

    return guarded, full


# What collection does with the store, each in one call of `db` (on the store's thread).

def adopt_renamed(store: Store, sources: Sequence[tuple[str, str, str]]) -> None:
    """Record the configured sources when one is an old one renamed (`Store.remember_sources`
    then gives it its old name's state), or fetches another target than the one recorded for
    it (its validators, the old URL's, are then dropped); else only read, so that a collection
    never waits for a database another process holds before it has fetched anything."""
    known = store.known_sources()
    named = {name for name, _, _ in sources}
    gone = {same_target(kt) for name, kt in known.items() if name not in named and kt[1]}
    if any((name not in known and same_target((kind, target)) in gone)
           or (name in known and known[name][1]
               and same_target(known[name]) != same_target((kind, target)))
           for name, kind, target in sources):
        store.remember_sources(sources)


def _attempts(store: Store) -> dict[str, Attempt]:
    return store.source_attempts()


def _states(store: Store, names: Sequence[str]) -> dict[str, SourceState]:
    return {name: store.source_state(name) for name in names}


def _begin(store: Store, name: str, keys: Sequence[str]
           ) -> tuple[SourceState, dict[str, str | None], str]:
    return store.source_state(name), {key: store.get_meta(key) for key in keys}, store.path


def _write_meta(store: Store, meta: dict[str, str]) -> None:
    with store.transaction():
        for key, value in meta.items():
            store.set_meta(key, value)


def _who(spec: SourceSpec) -> tuple[str, str, str]:
    """A source as its outcome is recorded: name, and what it fetches (kind, target)."""
    return spec.name, spec.kind, spec.target


def _failed(store: Store, who: tuple[str, str, str], now: datetime, error: str,
            retry_after: datetime | None, meta: dict[str, str]) -> None:
    with store.transaction():
        _write_meta(store, meta)
        store.record_failure(who[0], now, error, retry_after=retry_after)
        store.note_target(*who)


def _succeeded(store: Store, who: tuple[str, str, str], now: datetime, items: list[Item],
               got: Collected, meta: dict[str, str]) -> UpsertResult:
    """The items and the source's success (its validators) in one transaction: stopped or
    failed midway, neither is kept, and the next run fetches the items again; never validators
    without the items they stand for (a 304 would then hide those items for good)."""
    with store.transaction():
        result = store.upsert_items(items, now)
        store.record_success(who[0], now, etag=got.etag, last_modified=got.last_modified,
                             cursor=got.cursor, notice=mask_userinfo(got.warning))
        store.note_target(*who)
        _write_meta(store, meta)
        if result.new or result.updated:
            store.set_meta(SHARES_RECORDED, str(_count(store.get_meta(SHARES_RECORDED)) + 1))
    return result


SHARE_WINDOW = timedelta(days=30)
# Meta keys: how many times items were recorded new or changed, and that count when the shares
# were last linked after them. They differ after a collection stopped (Ctrl-C, a crash, a
# database that refused the links) between recording and linking: the next one links then,
# even if it brings nothing new. A count, not a flag, so that a process linking while another
# records never marks the other's items linked.
SHARES_RECORDED = "shares.recorded"
SHARES_LINKED = "shares.linked"


def _count(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:  # edited by hand
        return 0


def _link_due(store: Store, now: datetime) -> int:
    """`link_shares` when items were recorded since the shares were last linked."""
    recorded = store.get_meta(SHARES_RECORDED)
    if recorded is None or recorded == store.get_meta(SHARES_LINKED):
        return 0
    with store.transaction():  # no other process records items meanwhile
        recorded = store.get_meta(SHARES_RECORDED) or recorded
        if recorded == store.get_meta(SHARES_LINKED):  # another process just linked them
            return 0
        linked = link_shares(store, now)
        store.set_meta(SHARES_LINKED, recorded)
    return linked


def link_shares(store: Store, now: datetime, window: timedelta = SHARE_WINDOW) -> int:
    """A post that links to a stored paper or blog post becomes a 'shared by' of that item.

    Runs over recent posts after each collection, so it does not matter whether the post or
    the item it links to was collected first. Returns how many links were recorded.
    """
    linked = 0
    for post in store.items_since(now - window, kinds=("social",)):
        if not post.item.links:
            continue
        for target in set(store.find_by_urls(post.item.links).values()):
            if target != post.id:
                store.add_share(target, post.item.source, post.item.person, post.id, now)
                linked += 1
    return linked


def collect(cfg: Config, store: Store, *, now: datetime, **kw: object) -> list[SourceReport]:
    """Synchronous wrapper for the CLI."""
    return asyncio.run(collect_async(cfg, store, now=now, **kw))  # type: ignore[arg-type]


def jitter(seconds: float, fraction: float = 0.1, rng: random.Random | None = None) -> float:
    """A random offset of up to ±fraction·seconds, so sources are not all hit at once."""
    r = rng or random
    return seconds * fraction * (2 * r.random() - 1)


def report_lines(reports: Sequence[SourceReport]) -> list[str]:
    """One line per source; sources switched off for the same reason share one line."""
    lines: list[str] = []
    off: dict[str, list[str]] = {}
    for r in reports:
        if r.status == "disabled":
            off.setdefault(r.error, []).append(r.name)
        else:
            lines.append(r.line())
    for reason, names in off.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        lines.append(f"off ({len(names)} source{'s' if len(names) > 1 else ''}: {shown}): "
                     f"{reason}")
    return lines


def summarize(reports: Sequence[SourceReport]) -> str:
    ok = sum(r.status in ("ok", "not-modified") for r in reports)
    err = sum(r.status == "error" for r in reports)
    new = sum(r.new for r in reports)
    held = sum(r.status == "skipped" and bool(r.error) for r in reports)  # by another process
    gone = sum(r.withdrawn for r in reports)
    n = len(reports)
    return (f"{n} source{'s' if n != 1 else ''}: {ok} ok, {err} failed, "
            + (f"{held} skipped, " if held else "") + f"{new} new item{'s' if new != 1 else ''}"
            + (f", {gone} withdrawn on arXiv" if gone else ""))
