"""The long-running process behind `feedbot run`: one asyncio loop holding the scheduler, the
Telegram bot and the sources.yaml watcher, wiring jobs to the pipeline.

Threads and SQLite. SQLite connections never cross threads, so there are four, and the
loop thread writes nothing:
- the collection thread (`in_collection`) owns a `Store` for collection's store work: the
  sources' state, their items and outcome (`collect_async(db=...)` awaits it), so a database
  another connection holds, or a 500-item upsert, stalls no chat and no job. It is not the
  database thread: one thread would queue every vote behind the upserts of a collection of
  many feeds (and behind its wait for a busy database, up to 30 s); two threads are two writers
  in one process, which WAL and the busy timeout handle like any two connections, each
  write a short transaction;
- the database thread (`in_db`) owns a `Store` for everything the bot's handlers and
  deliveries read and write: feedback, read-later, source health, delivery state, topics. A
  database another connection holds (a long collection transaction, a prune, VACUUM, another
  feedbot process) then makes only the update that needs it wait, never the whole bot: every
  other chat's commands and buttons are answered meanwhile;
- one worker thread owns a `Store` and the embedder, and does the heavy synchronous part
  (embedding, ranking) so the bot keeps answering meanwhile;
- the loop thread's own `Store` only reads, and little: when to collect a source next at
  start, after a sources.yaml edit and before each digest, when the last prune and digest
  were. In WAL mode a read does not wait for a writer.
WAL mode and the store's busy timeout let the connections write the same file; one worker
keeps the model on one thread and ranking runs one at a time.

Delivery. An item is marked delivered for a chat only after the message carrying it was sent;
`make_digest(exclude=delivered)` keeps it from ever coming again. The slot (UTC instant) of the
last complete scheduled digest is kept per chat in the store's meta, so a restart inside the grace
period sends a missed digest once, a restart after it was sent sends nothing, and a new time zone
reads it on its own calendar. A failed send is retried on a later tick (with backoff) and
continues where it stopped. What was sent is remembered in memory
until the store takes it: a database held by another process when a message went out must not
make that message's items come again. A message cut off by a stop (SIGTERM) while its request
was out counts as sent, like one whose answer was lost.

This module does not speak the Bot API (bot.py), render (telegram_render.py) or do time
arithmetic (scheduler.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import numpy as np

from .collect import (
    PER_HOST,
    adopt_renamed,
    collect_async,
    feed_host,
    fetch_concurrency,
    is_due,
    jitter,
)
from .config import Config, ConfigError, SourceSpec
from .digest import (
    Digest,
    DigestEntry,
    following,
    labeller,
    source_specs,
    span_text,
    utcnow,
    voted_on,
)
from .embed import Embedder
from .http import make_client, shown_url
from .pipeline import embed_pending, make_digest, source_health
from .prune import PruneReport
from .redact import install_url_redaction, mask_userinfo
from .roadmap import Roadmap
from .scheduler import (
    FRESH_LEAD,
    FRESH_SPREAD,
    Jobs,
    after_run_floor,
    collect_before_digest,
    digest_grace,
    digest_slot,
    due_digest_day,
    local_day,
    next_collect_time,
    next_digest_time,
    next_prune_time,
    sent_on_a_day_to_come,
)
from .store import SourceState, Store, StoredItem, StoreError, is_busy
from .telegram_render import TgMessage, config_ok, config_problem, render_digest
from .text import shorten
from .watch import SourcesWatcher

log = logging.getLogger(__name__)
T = TypeVar("T")

DIGEST_JOB, TICK_JOB, WATCH_JOB = "digest", "digest-tick", "watch-sources"
PRUNE_JOB = "prune"
FRESH_JOB = "collect-before-digest"
PRUNED_AT = "prune.last"  # meta: when `feedbot run` last pruned (ISO time)
# A runner that never lives to the quiet time (restarted every few hours, a laptop asleep at
# night) prunes this soon after starting when the last prune is older than PRUNE_OVERDUE.
PRUNE_OVERDUE = timedelta(days=2)
PRUNE_SOON = timedelta(minutes=10)
CATCH_UP = 150.0  # seconds a late digest waits for the overdue sources' collection
# Another process (`feedbot prune` with its VACUUM, `feedbot collect`) held the database past
# the busy timeout while a digest was built: known, and retried, so one line and no traceback
BUSY_DIGEST = ("the digest for chat %s could not be built: the database is busy, held by "
               "another process (%s)")
# How a collection says it could not connect at all (http._fetch_error, the describe_error of
# arxiv_api and of x; a test holds them to it): when every overdue source says so, the network
# is probably not up yet
NO_CONNECTION = ("cannot resolve host", "cannot connect to", "cannot reach the arXiv API",
                 "cannot reach the X API")
# a source another process collected this lately, after its job was armed, is not fetched again
ELSEWHERE_RECENT = timedelta(minutes=30)


@dataclass(frozen=True)
class Settings:
    """A validated sources.yaml and the roadmap it points at."""

    config: Config
    roadmap: Roadmap


def load_settings(path: Path) -> Settings:
    """Load, validate and check the stage exactly like the CLI does (raises ConfigError)."""
    from .cli import App

    app = App(str(path))
    return Settings(app.config, app.roadmap)


@dataclass(frozen=True)
class RunOptions:
    grace: timedelta = timedelta(hours=6)  # a digest missed by less than this is still sent
    tick: float = 60.0  # seconds between checks for a due (or failed) digest
    watch: float = 5.0  # seconds between looks at sources.yaml
    clock_check: float = 5.0  # seconds between looks whether the system clock was set back
    poll_timeout: float = 30.0  # getUpdates long-poll seconds
    send_attempts: int = 5
    send_backoff: float = 1.0  # first wait after a network error; doubles
    send_timeout: float = 30.0  # seconds to wait for Telegram's answer to a message
    retry_cap: timedelta = timedelta(minutes=30)  # longest wait before retrying a failed digest
    # After Telegram's 403 (the learner blocked the bot, or it was removed from the group) or
    # a 400 that says the same (the bot may not post there, the chat is not found),
    # the day's digest is tried again this much later (within `grace`, so a learner who
    # unblocks the bot still gets it), not every half hour, ranking a digest each time
    forbidden_wait: timedelta = timedelta(hours=2)
    # Seconds the bot's database thread waits for a database another connection is writing
    # before giving up ("database is locked"): a vote then asks the user to press again
    db_timeout: float = 30.0
    # Seconds before the overdue sources of a late digest are collected once more when none
    # of them could connect (the network not up yet after a wake): arXiv is not asked again
    # for 60 s after it could not be reached
    offline_retry: float = 60.0
    run_jobs: bool = True  # False: jobs are scheduled but never fired (tests fire them)


@dataclass
class Delivery:
    messages: int = 0
    items: int = 0
    complete: bool = True
    error: str = ""
    retry_after: float = 0.0  # seconds Telegram asked us to wait before sending again
    migrate_to: int | None = None  # the group became this supergroup (Telegram said so)
    forbidden: bool = False  # the bot was blocked, removed from the group, may not post there
    refusal: str = ""  # then: why, and what mends it (bot.why_refused)
    # the digest could not be built: another process held the database past the busy timeout
    busy: bool = False


@dataclass
class _ChatState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0  # failed attempts at `failing_day`'s digest: its retries' back-off
    failing_day: date | None = None
    retry_at: datetime | None = None


def _key(kind: str, chat: int | str) -> str:
    return f"telegram.{kind}.{chat}"


class Runner:
    """Everything `feedbot run` holds. `start()`/`stop()`, or `run_forever()` until a signal."""

    def __init__(self, settings: Settings, *, home: Path, sources: Path, embedder: Embedder,
                 token: str | None = None, api_url: str | None = None,
                 options: RunOptions | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.home = Path(home)
        self.sources = Path(sources)
        self.embedder = embedder
        self.token = token or None
        self.api_url = api_url
        self.options = options or RunOptions()
        self.now = clock
        self.jobs = Jobs(run=self.options.run_jobs)
        self.watcher: SourcesWatcher[Settings] = SourcesWatcher(self.sources, load_settings)
        self.app: Any = None  # telegram.ext.Application when there is a token
        self._store: Store | None = None
        self._http: httpx.AsyncClient | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedbot-rank")
        self._db_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedbot-db")
        self._collect_pool = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="feedbot-collect")
        self._gone_topics: set[tuple[int, int]] = set()  # (chat, topic) deleted or closed
        self._stopping = threading.Event()  # tells the worker to give up between chunks
        self._worker_embedder: Any = StoppableEmbedder(embedder, self._stopping)
        self._local = threading.local()
        self._collecting: dict[str, asyncio.Lock] = {}
        # each source is its own collect_async call: the per-site and overall limits that one
        # call keeps must hold across them too (all jobs fire at once after a sleep)
        self._sites: dict[str, asyncio.Semaphore] = {}
        self._fetching = asyncio.Semaphore(fetch_concurrency())
        self._never_collected: set[str] = set()  # scheduled from an empty state: renamed?
        # each source's last attempt when its job was armed: a later one is another process's
        self._armed_after: dict[str, datetime | None] = {}
        self._chats: dict[int, _ChatState] = {}
        # One reload of sources.yaml at a time: the watcher's (a hand edit) and feedbot's own
        # after an edit (/stage, /follow). Interleaved, a hand edit loaded just before a
        # /stage edit was applied after it, and the stage moved back in memory for good.
        self._sources_lock = asyncio.Lock()
        # Sent, not yet in the store (it was busy): chat -> {item id: when}, and meta to write.
        self._unsaved: dict[int, dict[str, datetime]] = {}
        self._unsaved_meta: dict[str, str] = {}
        self._config_broken = False
        self._stop = asyncio.Event()
        self._undo_redaction: Callable[[], None] | None = None
        self._started = False
        self._fatal: BaseException | None = None  # why the bot stopped polling, if it did
        self._prune_tried: datetime | None = None  # the last prune this process started
        self._conflict_said = False  # another bot polls with this token: said once
        self._commands: asyncio.Future[None] | None = None  # registering the command list
        self._catch_up_tasks: set[asyncio.Future[Any]] = set()
        self._caught_up: tuple[datetime, asyncio.Future[Any]] | None = None  # slot, its catch-up
        self._warned_ahead: dict[int, date | None] = {}  # chat: a sent day still to come
        self._instance = contextlib.ExitStack()  # holds run.lock while running

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.home)
        return self._store

    async def start(self) -> None:
        """Open the store, schedule every job, and bring the bot up (when there is a token)."""
        from .locks import try_exclusive

        self.store  # noqa: B018 - open (and migrate) on the loop thread now
        if not self._instance.enter_context(try_exclusive(self.home / "run.lock")):
            self._instance.close()
            self.store.close()
            self._store = None
            raise StoreError(f"another `feedbot run` is already running on {self.home}; "
                             "stop it first (two would send every digest twice)")
        self._started = True
        self._http = make_client()
        self.jobs.start()
        self.jobs.watch_clock(self._clock_set_back, self.options.clock_check,
                              wall=lambda: self.now().timestamp())
        for spec in self.settings.config.sources():
            self.schedule_collect(spec)
        self.jobs.every(WATCH_JOB, self.options.watch, self.check_sources)
        self.schedule_prune()
        if self.token is None:
            log.warning("TELEGRAM_BOT_TOKEN is not set: collecting on schedule only, no bot and "
                        "no digests")
            return
        await self._start_bot()
        self.schedule_digest()
        self.jobs.every(TICK_JOB, self.options.tick, self.digest_tick)  # first run: now

    async def _start_bot(self) -> None:
        from . import bot

        undo_token = bot.install_token_redaction(self.token or "")
        undo_url = install_url_redaction(self.api_url or "")  # a proxy's password in it

        def undo() -> None:
            undo_url()
            undo_token()

        self._undo_redaction = undo
        self.app = bot.build_application(self.token or "", self, self.api_url)
        delay = 1.0
        while True:
            try:
                await self._bring_up_bot()
                break
            except bot.InvalidToken:
                raise
            except bot.TelegramError as e:
                log.warning("cannot reach the Telegram Bot API (%s); retrying in %.0fs",
                            _api_error(e, self.api_url or bot.api_url_from_env()), delay)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return
                except TimeoutError:
                    delay = min(60.0, delay * 2)
        for task in asyncio.all_tasks():
            if task.get_name() == bot.POLLING_TASK:
                task.add_done_callback(self._polling_ended)
        # The command list is the menu's, and its retries may wait out flood waits of minutes:
        # beside the polling, not before it (the bot was deaf meanwhile, and a stop waited).
        self._commands = asyncio.ensure_future(bot.set_commands(self.app.bot))
        log.info("Telegram bot @%s is up; allowed chats: %s", self.app.bot.username,
                 self.allowed_chats or "none yet (send /start to the bot to get the line to add)")

    async def _bring_up_bot(self) -> None:
        """getMe (InvalidToken propagates, and stops us), then the polling, whose start asks
        Telegram to drop any webhook (deleteWebhook): python-telegram-bot tries that once, so a
        5xx, a flood wait or a dropped connection there stopped `feedbot run` with a
        traceback. Raises TelegramError for `_start_bot` to try again; each step that worked
        is not done again."""
        await self.app.initialize()  # a no-op once it has worked
        if not self.app.running:
            await self.app.start()
        ptb_log = logging.getLogger(PTB_EXT_LOGGER)
        ptb_log.addFilter(_bootstrap_given_up)
        try:
            await self.app.updater.start_polling(
                timeout=timedelta(seconds=self.options.poll_timeout),
                allowed_updates=["message", "callback_query"],
                error_callback=self._polling_error)
        finally:
            ptb_log.removeFilter(_bootstrap_given_up)

    def _clock_set_back(self) -> None:
        """The system clock was set back (`Jobs.watch_clock`): the collections, the prune and
        the digest are armed again by the clock as it is now, and a failed digest's retry
        time, which the wrong clock put that much later, is dropped. Armed by a clock that was
        ahead, they came as late as it had been ahead."""
        for spec in self.settings.config.sources():
            self.schedule_collect(spec)
        self.schedule_prune()
        for state in self._chats.values():
            state.retry_at = None
        self.schedule_digest()

    def _polling_error(self, e: Exception) -> None:
        """An error the poller retries: one line, not python-telegram-bot's traceback on every
        poll. A Conflict is another bot polling with this token (another machine, another
        FEEDBOT_HOME: run.lock cannot see it), said once: the two take turns at the updates."""
        from telegram.error import Conflict

        if isinstance(e, Conflict):
            if not self._conflict_said:
                self._conflict_said = True
                log.error("another program is receiving this bot's messages (Telegram: %s); "
                          "only one `feedbot run` may use TELEGRAM_BOT_TOKEN: stop the other",
                          e)
            return
        log.warning("receiving Telegram messages failed (%s: %s); trying again",
                    type(e).__name__, e)

    def _polling_ended(self, task: asyncio.Task[Any]) -> None:
        """The poller gives up only on errors it cannot retry, above all a token revoked while
        running. A bot that no longer hears anyone must not look alive: stop, and let
        `run_forever` raise the error (exit status 2 for a rejected token)."""
        if task.cancelled() or task.exception() is None or not self._started:
            return
        log.error("the Telegram bot stopped receiving messages: %s; stopping feedbot",
                  task.exception())
        self._fatal = task.exception()
        self._stop.set()

    async def stop(self) -> None:
        """Stop jobs and the bot, close clients, the worker and the stores. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self._stopping.set()  # the worker stops after the chunk it is embedding
        await self.jobs.shutdown()
        pending = [*self._catch_up_tasks, *([self._commands] if self._commands else [])]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self.app is not None:
            await self._stop_bot()
        if not await self._save_sent():
            log.error("could not record in the store what was sent to %s; those items may be "
                      "sent again", ", ".join(f"chat {c}" for c in self._unsaved) or "Telegram")
        if self._http is not None:
            await self._http.aclose()
        loop = asyncio.get_running_loop()
        # a collection's write in progress (cancelled above, the thread goes on) ends first:
        # its items and its source's success are in, or neither
        await loop.run_in_executor(self._collect_pool, self._close_thread_store)
        self._collect_pool.shutdown(wait=True)
        await loop.run_in_executor(self._pool, self._close_thread_store)
        self._pool.shutdown(wait=True)
        await loop.run_in_executor(self._db_pool, self._close_thread_store)
        self._db_pool.shutdown(wait=True)
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._undo_redaction is not None:
            self._undo_redaction()
        self._instance.close()

    async def _stop_bot(self) -> None:
        """Each step on its own: with a revoked token the updater's last getUpdates fails, and
        the application must still shut down (its HTTP connections closed)."""
        from .bot import close_requests

        app = self.app
        steps = [app.updater.stop] if app.updater is not None and app.updater.running else []
        steps += [app.stop] if app.running else []
        updater_log = logging.getLogger(UPDATER_LOGGER)
        updater_log.addFilter(_pulled_while_stopping)
        try:
            for step in [*steps, app.shutdown, partial(close_requests, app)]:
                try:
                    await step()
                except Exception as e:
                    log.warning("stopping the bot: %s: %s", type(e).__name__, e)
        finally:
            updater_log.removeFilter(_pulled_while_stopping)

    async def run_forever(self, handle_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or `request_stop()`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            if not self._stop.is_set():  # not asked to stop while the bot was coming up
                log.info("feedbot is running: %d sources from %s, home %s; stop with Ctrl-C "
                         "or SIGTERM", len(self.settings.config.sources()), self.sources,
                         self.home)
            await self._stop.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.stop()
        if self._fatal is not None:
            raise self._fatal

    def request_stop(self) -> None:
        log.info("stopping")
        self._stop.set()

    # --- the worker thread ----------------------------------------------------------------------

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` on the worker thread, with that thread's own Store. Once
        stopping, the work gives up between embedding chunks and this raises CancelledError."""
        try:
            return await self._on(self._pool, 30.0, fn, *args)
        except Stopping:
            raise asyncio.CancelledError from None

    async def in_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` on the database thread, with that thread's own Store (busy
        timeout `RunOptions.db_timeout`): the loop goes on answering while it waits for a
        database another connection holds."""
        return await self._on(self._db_pool, self.options.db_timeout, fn, *args)

    async def in_collection(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` on the collection thread, with that thread's own Store (the
        store's usual 30 s busy timeout: a collection waits out another `feedbot collect`).
        Cancelled, the call in progress still ends (its transaction whole)."""
        return await self._on(self._collect_pool, 30.0, fn, *args)

    async def _on(self, pool: ThreadPoolExecutor, timeout: float, fn: Callable[..., T],
                  *args: Any) -> T:
        """`fn(store, *args)` on `pool`'s thread, with that thread's own Store."""
        return await asyncio.get_running_loop().run_in_executor(
            pool, partial(self._with_thread_store, timeout, fn, *args))

    def _with_thread_store(self, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        """`fn` with the calling thread's own Store (opened on first use, with busy timeout
        `timeout`)."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store.open(self.home, timeout=timeout)
        return fn(store, *args)

    def _close_thread_store(self) -> None:
        store = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None

    # --- collection ------------------------------------------------------------------------------

    def _spec(self, name: str) -> SourceSpec | None:
        return next((s for s in self.settings.config.sources() if s.name == name), None)

    def schedule_collect(self, spec: SourceSpec, earliest: datetime | None = None,
                         state: SourceState | None = None) -> datetime:
        """(Re)schedule one source's next collection from its state (read from the store
        when not given)."""
        if state is None:
            state = self.store.source_state(spec.name)
        if state.last_attempt is None and state.retry_after is None:
            self._never_collected.add(spec.name)
        else:
            self._never_collected.discard(spec.name)
        self._armed_after[spec.name] = state.last_attempt
        when = next_collect_time(state, spec.interval, self.now(), earliest=earliest)
        self.jobs.at(f"collect:{spec.name}", when, self.collect_source, spec.name)
        return when

    async def collect_source(self, name: str) -> None:
        """Collect one source (never two runs of it at once), embed what is new, re-arm."""
        lock = self._collecting.setdefault(name, asyncio.Lock())
        if lock.locked():
            log.info("%s is still being collected; skipping this run", name)
            return
        async with lock:
            spec = self._spec(name)
            if spec is None:  # unfollowed meanwhile
                return
            now = self.now()
            if spec.name in self._never_collected and await self._waits_as_renamed(spec, now):
                return
            if await self._collected_elsewhere(spec, now):
                return
            ran = True
            site = feed_host(spec.target) if spec.kind == "feed" else spec.kind
            try:
                async with self._sites.setdefault(site, asyncio.Semaphore(PER_HOST)), \
                        self._fetching:
                    reports = await collect_async(self.settings.config, None, now=now, only=name,
                                                  http=self._http, db=self.in_collection)
                for r in reports:
                    ran = ran and r.status != "disabled"
                    # not recorded (the database refused it): nothing kept, collected again
                    log.log(logging.INFO if r.store_error is None else logging.WARNING,
                            "collected %s", r.line())
                if any(r.new or r.updated for r in reports):
                    await self.in_worker(embed_pending, self._worker_embedder, now)
            finally:
                if self._spec(name) is not None and self._started:
                    await self._rearm(name, now, ran)

    async def _collected_elsewhere(self, spec: SourceSpec, now: datetime) -> bool:
        """Another feedbot process (`feedbot digest`, `feedbot collect`) collected the source
        moments ago, after this job was armed: it is re-armed from that outcome, not fetched
        again. The morning digest typed beside a starting `feedbot run` made every source be
        fetched twice within a minute (X's quota, arXiv's patience). True when put off."""
        armed_after = self._armed_after.get(spec.name)
        try:
            state = await self.in_collection(Store.source_state, spec.name)
        except (sqlite3.Error, StoreError):  # collected now, as before
            return False
        last = state.last_attempt
        if last is None or (armed_after is not None and last <= armed_after) \
                or now - last > ELSEWHERE_RECENT or is_due(state, spec.interval, now):
            return False
        when = self.schedule_collect(spec, state=state)
        log.info("%s was collected by another feedbot process at %s; next collection %s",
                 spec.name, last.isoformat(timespec="seconds"), when.isoformat(timespec="seconds"))
        return True

    async def _waits_as_renamed(self, spec: SourceSpec, now: datetime) -> bool:
        """A source scheduled as never collected may be an old one renamed in sources.yaml
        (or by `feedbot follow`): it takes its old name's state now, as the collection would,
        and when that state says to wait (the interval, a back-off, a Retry-After), the
        collection waits too. True when it was put off."""
        self._never_collected.discard(spec.name)
        try:
            await self.in_collection(adopt_renamed, [(s.name, s.kind, s.target)
                                                     for s in self.settings.config.sources()])
            state = await self.in_collection(Store.source_state, spec.name)
        except (sqlite3.Error, StoreError):  # collected now, afresh, as before
            return False
        if is_due(state, spec.interval, now):
            return False
        when = self.schedule_collect(spec, state=state)
        log.info("%s: its stored state (an old name's, or another process's collection) says "
                 "to wait; next collection %s", spec.name, when.isoformat(timespec="seconds"))
        return True

    async def _rearm(self, name: str, now: datetime, ran: bool) -> None:
        """After a run: the source's next collection, from its state read on the collection
        thread (a database held past the busy timeout: soon, as if it had never run)."""
        try:
            state = await self.in_collection(Store.source_state, name)
        except (sqlite3.Error, StoreError) as e:  # StoreError: the thread's store not opened
            log.warning("could not read the state of %s (%s); collecting it again soon",
                        name, e)
            state = SourceState(name)
        current = self._spec(name)
        if current is not None and self._started:
            self.schedule_collect(current, after_run_floor(now, current.interval, ran), state)

    # --- digests ---------------------------------------------------------------------------------

    @property
    def allowed_chats(self) -> list[int]:
        return list(self.settings.config.telegram.allowed_chats)

    def is_allowed(self, chat: int) -> bool:
        return chat in self.settings.config.telegram.allowed_chats

    def _chat(self, chat: int) -> _ChatState:
        return self._chats.setdefault(chat, _ChatState())

    def _next_digest_slot(self, after: datetime) -> datetime:
        """The first local digest time (DST-safe) after `after` whose day's digest is still to
        send: after today's went out, a later time set today is tomorrow's (one digest a day).
        The digest job, the collection before it and the "next" the log gives all use it."""
        learner = self.settings.config.learner
        now = self.now()
        when = next_digest_time(after, learner.digest_time, learner.timezone)
        sent = [self._last_sent(chat, now) for chat in self.allowed_chats]
        if sent and all(due_digest_day(when, learner.digest_time, learner.timezone, d,
                                       self.options.grace) is None for d in sent):
            when = next_digest_time(when, learner.digest_time, learner.timezone)
        return when

    def schedule_digest(self) -> datetime | None:
        """Arm the digest job at the next digest time whose digest is still to send."""
        if self.app is None:
            return None
        when = self._next_digest_slot(self.now())
        self.jobs.at(DIGEST_JOB, when, self._digest_job)
        self.schedule_fresh()
        return when

    def schedule_fresh(self) -> datetime | None:
        """Arm the collection before the digest: FRESH_LEAD before the next digest time that
        is at least that far ahead and whose digest is still to send (a digest that will not
        go out gets no collections brought forward; see `collect_before_digest`)."""
        if self.app is None:
            return None
        slot = self._next_digest_slot(self.now() + FRESH_LEAD)
        self.jobs.at(FRESH_JOB, slot - FRESH_LEAD, self._fresh_job)
        return slot - FRESH_LEAD

    async def _fresh_job(self) -> None:
        try:
            self.collect_before_digest()
        except Exception as e:  # never stops the bot: the collections keep their own times
            log.warning("could not bring the collections forward before the digest (%s: %s)",
                        type(e).__name__, e)
        finally:
            if self._started:
                self.schedule_fresh()

    def collect_before_digest(self) -> list[str]:
        """Bring forward, to within FRESH_SPREAD seconds from now, the collection of each
        source that `scheduler.collect_before_digest` says to collect before the next digest;
        the names of those sources."""
        now = self.now()
        slot = self._next_digest_slot(now)
        moved = []
        for spec in self.settings.config.sources():
            job = f"collect:{spec.name}"
            if collect_before_digest(self.store.source_state(spec.name), spec.interval,
                                     spec.kind, self.jobs.next_run(job), now, slot):
                when = now + timedelta(seconds=abs(jitter(FRESH_SPREAD, 1.0)))
                self.jobs.at(job, when, self.collect_source, spec.name)
                moved.append(spec.name)
        if moved:
            log.info("collecting %d source(s) before the digest at %s", len(moved),
                     f"{slot:%H:%M} UTC")
        return moved

    async def _digest_job(self) -> None:
        try:
            await self.digest_tick()
        finally:
            if self._started:
                self.schedule_digest()

    # --- retention -------------------------------------------------------------------------------

    def schedule_prune(self) -> datetime:
        """Arm the daily prune at the next quiet time (soon, when it is overdue)."""
        now = self.now()
        learner = self.settings.config.learner
        when = next_prune_time(now, learner.digest_time, learner.timezone)
        last = self._prune_tried
        if last is None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                done = self.store.get_meta(PRUNED_AT)
                last = datetime.fromisoformat(done) if done else None
        if last is None or now - last > PRUNE_OVERDUE:
            when = min(when, now + PRUNE_SOON)
        self.jobs.at(PRUNE_JOB, when, self._prune_job)
        return when

    async def _prune_job(self) -> None:
        try:
            await self.prune_now()
        except Exception as e:  # never stops the bot: tried again at the next quiet time
            log.warning("pruning the database failed (%s: %s); feedbot goes on and tries "
                        "again at the next quiet time", type(e).__name__, e)
        finally:
            if self._started:
                self.schedule_prune()

    async def prune_now(self) -> PruneReport:
        """Prune per `retention` in sources.yaml, on the worker thread (see prune.py)."""
        now = self._prune_tried = self.now()
        report = await self.in_worker(_prune, self.settings.config, self.settings.roadmap, now,
                                      self._stopping.is_set)
        log.info("pruned the database: %s", report.line())
        return report

    def _meta(self, key: str) -> str | None:
        if key in self._unsaved_meta:
            return self._unsaved_meta[key]
        return self.store.get_meta(key)

    def last_digest_day(self, chat: int) -> date | None:
        """The local day, in the learner's time zone now, of the last scheduled digest sent
        to `chat`: the day of its slot's instant (`digest_slot`), so that after a move to a
        zone behind the old one, the new zone's next day still gets its digest (the old
        zone's date of the slot is a day ahead there). A store written before the slot was
        kept has only the date."""
        slot = self._meta(_key("digest_slot", chat))
        if slot:
            return local_day(datetime.fromisoformat(slot), self.settings.config.learner.timezone)
        value = self._meta(_key("digest_day", chat))
        return date.fromisoformat(value) if value else None

    def _last_sent(self, chat: int, now: datetime) -> date | None:
        """`last_digest_day`, with a warning (once per chat and day) when it is a day still to
        come, which `due_digest_day` then does not count: the clock was ahead when it was sent."""
        day = self.last_digest_day(chat)
        tz = self.settings.config.learner.timezone
        if sent_on_a_day_to_come(day, now, tz) and self._warned_ahead.get(chat) != day:
            self._warned_ahead[chat] = day
            log.warning("the last digest to chat %s is recorded for %s, a day still to come "
                        "(%s here now): the clock was ahead when it was sent. Digests go out "
                        "by today's date again", chat, day, local_day(now, tz))
        return day

    def _progress(self, chat: int, slot: datetime) -> int:
        """Items already sent of the scheduled digest of `slot` (cut short by a failure).
        Keyed by the slot's instant, not its local date, which a new time zone reads as
        another day."""
        value = self._meta(_key("digest_progress", chat)) or ""
        done_slot, _, count = value.rpartition("=")
        return int(count) if done_slot == slot.isoformat() and count.isdigit() else 0

    async def digest_tick(self) -> None:
        """Send each allowed chat its scheduled digest if one is due (or failed before). The
        chats go side by side: one waiting out Telegram's flood control (a group's limit of
        about 20 messages a minute) or a slow answer holds up no other; ranking still runs one
        at a time on the worker. One chat's failure stops no other's."""
        if self.app is None:
            return
        await self._save_sent()
        chats = self.allowed_chats
        await self._catch_up(chats)
        results = await asyncio.gather(*(self.daily_digest(chat) for chat in chats),
                                       return_exceptions=True)
        for chat, result in zip(chats, results, strict=True):
            if isinstance(result, asyncio.CancelledError):  # stopping: as before, it goes on
                raise result
            if isinstance(result, Exception):
                log.error("the daily digest for chat %s failed: %s: %s", chat,
                          type(result).__name__, result, exc_info=result)

    async def _catch_up(self, chats: list[int]) -> None:
        """A digest due now whose sources were not collected before it (feedbot was down or
        asleep): collect the overdue ones first (at most CATCH_UP), once per slot; a second
        tick meanwhile waits for the same catch-up."""
        learner = self.settings.config.learner
        now = self.now()
        days = [day for c in chats if (day := due_digest_day(
            now, learner.digest_time, learner.timezone, self._last_sent(c, now),
            self.options.grace)) is not None]
        if not days:
            return
        slot = digest_slot(max(days), learner.digest_time, learner.timezone)
        if self._caught_up is None or self._caught_up[0] != slot:
            names = []
            for spec in self.settings.config.sources():
                st = self.store.source_state(spec.name)
                if (spec.kind != "x" and spec.interval <= 86400 and not st.failures
                        and is_due(st, spec.interval, now)):
                    names.append(spec.name)
            if names:
                log.info("collecting %d overdue source(s) before the digest of %s",
                         len(names), max(days))
            self._caught_up = (slot, self._stoppable(self._collect_overdue(names)))
        await asyncio.shield(self._caught_up[1])

    def _stoppable(self, work: Any) -> asyncio.Future[Any]:
        """`work` as a task that `stop` cancels if it still runs."""
        task = asyncio.ensure_future(work)
        self._catch_up_tasks.add(task)
        task.add_done_callback(self._catch_up_tasks.discard)
        return task

    async def _collect_overdue(self, names: list[str]) -> None:
        """Collect `names` (waiting at most CATCH_UP for them); when every one failed for want
        of a network (a laptop that woke before its Wi-Fi was back), once more after
        `RunOptions.offline_retry` seconds: they failed at once, and the late digest went out
        with yesterday's items, its sources backing off for 5 minutes."""
        if not names:
            return
        await asyncio.wait([self._stoppable(self._collected(n)) for n in names],
                           timeout=CATCH_UP)
        if self._all_offline(names):
            log.info("none of the %d overdue source(s) could be reached (no network yet?); "
                     "they are tried once more in %.0fs, before the digest", len(names),
                     self.options.offline_retry)
            await asyncio.sleep(self.options.offline_retry)
            await asyncio.wait([self._stoppable(self._collected(n)) for n in names],
                               timeout=CATCH_UP)

    def _all_offline(self, names: list[str]) -> bool:
        """Whether each source in `names` (none of which was failing before) failed for want
        of a connection: no name resolved, no connection made, arXiv not reached."""
        try:
            states = [self.store.source_state(n) for n in names]
        except (sqlite3.Error, StoreError):  # the digest goes out as before
            return False
        return all(st.failures and st.last_error.startswith(NO_CONNECTION) for st in states)

    async def _collected(self, name: str) -> None:
        """Collect `name` now, or wait for its collection in progress to end."""
        lock = self._collecting.get(name)
        if lock is not None and lock.locked():
            async with lock:
                return
        await self.collect_source(name)

    async def daily_digest(self, chat: int) -> Delivery | None:
        """The scheduled digest for `chat`, if due now: once per local day, never twice."""
        state = self._chat(chat)
        async with state.lock:
            now = self.now()
            learner = self.settings.config.learner
            day = due_digest_day(now, learner.digest_time, learner.timezone,
                                 self._last_sent(chat, now), self.options.grace)
            if day is None or (state.retry_at is not None and now < state.retry_at):
                return None
            if day != state.failing_day:  # a new day's digest: its back-off starts afresh
                state.failures, state.failing_day = 0, day
            try:
                thread = await self.in_db(Store.digest_topic, str(chat))
                result = await self._deliver(chat, day, thread)
            except Exception as e:  # ranking broke: log it, and retry later like a failed send
                result = Delivery(complete=False, error=f"{type(e).__name__}: {e}",
                                  busy=is_busy(e) or is_busy(e.__cause__ or e))
                if not result.busy:  # a busy database is said with its retry (`_log_retry`)
                    log.exception("building the digest for chat %s failed", chat)
            if result.complete:
                state.failures, state.retry_at = 0, None
            else:
                state.failures += 1
                # in seconds, the exponent bounded: a chat failing all day must not overflow
                wait = timedelta(seconds=min(self.options.retry_cap.total_seconds(),
                                             self.options.tick
                                             * 2.0 ** (min(state.failures, 64) - 1)))
                if result.forbidden:
                    wait = self.options.forbidden_wait
                state.retry_at = now + max(wait, timedelta(seconds=result.retry_after))
                self._log_retry(chat, day, result, state.retry_at)
        if result.migrate_to is not None:  # feedbot missed Telegram's notices (it was down)
            await self.chat_migrated(chat, result.migrate_to)
        return result

    def _log_retry(self, chat: int, day: date, result: Delivery, retry_at: datetime) -> None:
        """Say when the day's failed digest is tried again, or that it is not: a retry after
        its slot + grace would find the day no longer due (`due_digest_day`)."""
        learner = self.settings.config.learner
        grace = digest_grace(self.options.grace)
        end = digest_slot(day, learner.digest_time, learner.timezone) + grace
        why, args = _why_not_sent(chat, result)
        if retry_at < end:
            if result.forbidden or result.busy:
                log.warning(why + "; the digest is tried again at %s", *args,
                            f"{retry_at:%H:%M} UTC")
            return
        following = next_digest_time(end, learner.digest_time, learner.timezone)
        log.warning(why + "; the digest of %s is given up: a retry would come more than %s "
                    "after its time. The next one is due at %s", *args, day,
                    span_text(grace), f"{following:%Y-%m-%d %H:%M} UTC")

    async def chat_migrated(self, old: int, new: int) -> None:
        """The group `old` is now the supergroup `new`: serve it there (see bot.chat_migrated);
        its digest goes out at the next tick, to the new id, with nothing sent twice."""
        from .bot import chat_migrated

        await chat_migrated(self, old, new)

    async def deliver_digest(self, chat: int, thread: int | None = None,
                             sending: asyncio.Event | None = None) -> Delivery:
        """A digest now (`/digest`, asked in forum topic `thread`): new items only; an empty
        one says so. `sending` is set when it is built and its messages start to go out."""
        async with self._chat(chat).lock:
            return await self._deliver(chat, None, thread, sending)

    async def _deliver(self, chat: int, day: date | None, thread: int | None = None,
                       sending: asyncio.Event | None = None) -> Delivery:
        from .bot import MaybeSent, request_was_out, unreachable, why_refused

        await self._save_sent()  # what a busy store did not take before, first
        cfg, roadmap = self.settings.config, self.settings.roadmap
        slot = digest_slot(day, cfg.learner.digest_time, cfg.learner.timezone) if day else None
        done = self._progress(chat, slot) if slot else 0
        limit = cfg.learner.digest_size - done
        now = self.now()
        out = Delivery()

        def sent(msg: TgMessage) -> None:
            out.messages += 1
            out.items += len(msg.item_ids)
            progress = {_key("digest_progress", chat): f"{slot.isoformat()}={done + out.items}"
                        } if slot else {}
            self._remember_sent(chat, msg.item_ids, now, progress)

        if limit > 0:
            sent_before = frozenset(self._unsaved.get(chat, ()))
            digest = await self.in_worker(_build_digest, cfg, roadmap, self._worker_embedder,
                                          now, str(chat), limit, sent_before)
            empty = "silent" if done or (day and cfg.learner.empty_digest == "silent") else "say"
            # the day it is for: a digest missed at 23:30 and sent after midnight is yesterday's
            label = (day or now.astimezone(ZoneInfo(cfg.learner.timezone)).date()
                     ).strftime("%a %d %b")
            if sending is not None:
                sending.set()
            for msg in render_digest(digest, empty=empty, date_label=label, continued=done > 0):
                try:
                    await self.send(chat, msg, thread=thread)
                except MaybeSent as e:  # counted as sent: never risk showing items twice
                    log.warning("Telegram did not confirm a digest message to chat %s (%s); it "
                                "is not sent again, so that no item shows twice", chat, e)
                except asyncio.CancelledError as e:  # stopping (SIGTERM)
                    if request_was_out(e):  # it may be there: the same rule as MaybeSent
                        log.warning("stopped while a digest message to chat %s was on its way; "
                                    "it counts as sent, so that no item shows twice", chat)
                        sent(msg)
                    raise
                except Exception as e:
                    log.warning("digest to chat %s stopped after %d message(s): %s; the rest is "
                                "retried later", chat, out.messages, e)
                    out.complete, out.error = False, str(e)
                    out.retry_after = getattr(e, "retry_after", 0.0)
                    out.migrate_to = getattr(e, "migrate_to", None)
                    out.forbidden = unreachable(e.__cause__)
                    out.refusal = why_refused(e.__cause__)
                    return out
                sent(msg)
                await self._save_sent()
        if day and slot:
            self._remember_sent(chat, (), now, {_key("digest_day", chat): day.isoformat(),
                                                _key("digest_slot", chat): slot.isoformat()})
            await self._save_sent()
            log.info("digest for %s sent to chat %s: %d items", day, chat, done + out.items)
        return out

    def _remember_sent(self, chat: int, item_ids: tuple[str, ...], now: datetime,
                       meta: dict[str, str]) -> None:
        """Remember what went out, until `_save_sent` writes it to the store."""
        self._unsaved.setdefault(chat, {}).update(dict.fromkeys(item_ids, now))
        self._unsaved_meta.update(meta)

    async def _save_sent(self) -> bool:
        """Write what was sent to the store, on the database thread; on a busy (locked)
        database keep it for later. What is sent meanwhile stays for the next call."""
        if not any(self._unsaved.values()) and not self._unsaved_meta:
            self._unsaved.clear()
            return True
        items = {chat: dict(sent) for chat, sent in self._unsaved.items() if sent}
        meta = dict(self._unsaved_meta)
        try:
            await self.in_db(_write_sent, items, meta)
        except sqlite3.Error as e:
            log.warning("could not record what was sent in the store (%s); feedbot keeps it in "
                        "memory and records it later, so nothing is sent twice", e)
            return False
        for chat, written in items.items():
            left = self._unsaved.get(chat, {})
            for item_id in written:
                left.pop(item_id, None)
            if not left:
                self._unsaved.pop(chat, None)
        for key, value in meta.items():
            if self._unsaved_meta.get(key) == value:
                del self._unsaved_meta[key]
        return True

    # --- talking to Telegram -------------------------------------------------------------------

    async def send(self, chat: int, msg: TgMessage, thread: int | None = None) -> Any:
        """Send one message (flood control and retries included), to forum topic `thread` when
        given; raises bot.SendFailed. A topic that was deleted or closed gets nothing more: the
        message goes to the chat's General topic instead, with a log line, and the chat's daily
        digest goes there from now on."""
        from .bot import SendFailed, send_message

        if self.app is None:
            raise RuntimeError("no Telegram bot in this run")
        if thread is not None and (chat, thread) in self._gone_topics:
            thread = None
        try:
            return await send_message(self.app.bot, chat, msg, thread=thread,
                                      attempts=self.options.send_attempts,
                                      backoff=self.options.send_backoff,
                                      timeout=self.options.send_timeout)
        except SendFailed as e:
            if thread is None or not e.topic_gone:
                raise
            log.warning("topic %s of chat %s is deleted or closed (%s); feedbot writes to the "
                        "chat's General topic instead, and sends the daily digest there until "
                        "someone gives /digest or /start in a topic", thread, chat, e)
            self._gone_topics.add((chat, thread))
            try:
                await self.in_db(Store.forget_digest_topic, str(chat), thread)
            except sqlite3.Error as err:
                log.warning("could not forget topic %s of chat %s in the store: %s", thread,
                            chat, err)
        return await self.send(chat, msg)

    def topic_alive(self, chat: int, thread: int) -> None:
        """Someone wrote in forum topic `thread` (a topic reopened, or made anew): feedbot
        answers there again."""
        self._gone_topics.discard((chat, thread))

    async def remember_topic(self, chat: int, thread: int | None) -> None:
        """The chat's daily digest goes to forum topic `thread` (None: its main thread) from
        now on; best effort: a busy database keeps the topic it had."""
        try:
            changed = await self.in_db(Store.set_digest_topic, str(chat), thread, self.now())
        except sqlite3.Error as e:
            log.warning("could not record where chat %s wants its daily digest: %s", chat, e)
            return
        if changed:
            log.info("the daily digest of chat %s goes to %s from now on", chat,
                     f"topic {thread}" if thread else "its main thread (General)")

    async def notify(self, msg: TgMessage) -> None:
        """Tell every allowed chat something (best effort), where its daily digest goes: a
        forum's digest topic, else (or when that topic is gone) its General topic."""
        if self.app is None:
            return
        for chat in self.allowed_chats:
            try:
                await self.send(chat, msg, thread=await self._digest_topic(chat))
            except Exception as e:
                log.warning("could not notify chat %s: %s", chat, e)
                new = getattr(e, "migrate_to", None)
                if new is not None:
                    await self.chat_migrated(chat, new)
                    with contextlib.suppress(Exception):
                        await self.send(new, msg, thread=await self._digest_topic(new))

    async def _digest_topic(self, chat: int) -> int | None:
        """The forum topic the chat's daily digest goes to; None (General) when there is
        none, or when the database is too busy to say."""
        try:
            return await self.in_db(Store.digest_topic, str(chat))
        except sqlite3.Error as e:
            log.warning("could not read where chat %s wants its daily digest (%s); feedbot "
                        "writes to its General topic", chat, e)
            return None

    async def first_refusal(self, chat: int) -> bool:
        """True the first time a stranger's chat is refused (remembered across restarts)."""
        return await self.in_db(_first_refusal, _key("refused", chat), self.now())

    # --- what the handlers ask for (on the database thread) --------------------------------------

    async def record_feedback(self, chat: int, item_id: str, value: str) -> bool:
        """Store a vote or bookmark; False when the item is not stored. Waits for a busy
        database up to `RunOptions.db_timeout`, then raises sqlite3.OperationalError. Raises
        store.AmbiguousRef, storing nothing, for the URL of a page several items share."""
        return await self.in_db(_record_feedback, str(chat), item_id, value, self.now(),
                                self.settings.config.learner.stage)

    async def source_rows(self) -> list[dict[str, Any]]:
        return await self.in_db(lambda store: source_health(self.settings.config, store,
                                                            self.now()))

    async def later_entries(self, chat: int) -> list[DigestEntry]:
        """The chat's read-later items, newest first."""
        cfg = self.settings.config

        def read(store: Store) -> tuple[list[StoredItem], Callable[[str], str]]:
            # a renamed source's older items carry its old name: labelled as it is named now
            follows = following(cfg, store, record=False)
            return store.bookmarked_items(str(chat)), labeller(source_specs(cfg, follows))

        saved, label = await self.in_db(read)
        out = []
        for s in saved:
            it = s.item
            out.append(DigestEntry(
                id=s.id, title=it.title, url=it.url, source=label(s.sources[0]),
                kind=it.kind, authors=list(it.authors), published=it.published, score=0.0,
                why="", summary=it.summary, withdrawn=it.withdrawn))
        return out

    async def set_stage(self, stage_id: str) -> None:
        from .sources_edit import set_stage

        await asyncio.to_thread(set_stage, self.sources, stage_id)
        await self.reload_now()

    async def follow(self, args: list[str]) -> str:
        """`/follow …` through `feedbot.follow`, the CLI's code path (refusals are returned)."""
        try:
            from .follow import NothingToChange, follow, parse_follow_args
        except ImportError:
            return "Following from Telegram needs feedbot.follow, which this install lacks."
        try:
            req = parse_follow_args(args)
            text = await asyncio.to_thread(follow, self.sources, req, True)
        except NothingToChange as e:
            return mask_userinfo(f"Already so: {e}")
        except (ConfigError, ValueError) as e:
            return mask_userinfo(f"Not followed: {e}")
        await self.reload_now()
        return mask_userinfo(str(text))  # a blog's URL may hold its password

    async def unfollow(self, name: str) -> str:
        try:
            from .follow import unfollow
        except ImportError:
            return "Unfollowing from Telegram needs feedbot.follow, which this install lacks."
        try:
            text = await asyncio.to_thread(unfollow, self.sources, name)
        except (ConfigError, ValueError) as e:
            return mask_userinfo(f"Not unfollowed: {e}")
        await self.reload_now()
        return mask_userinfo(str(text))  # a blog's URL may hold its password

    # --- sources.yaml while running --------------------------------------------------------------

    async def check_sources(self) -> None:
        """The watcher job: apply a settled valid edit; report an invalid one and keep going."""
        async with self._sources_lock:
            change = await asyncio.to_thread(self.watcher.poll)
            if change is not None and change.settings is not None:
                self.apply(change.settings)
        if change is None:
            return
        if change.error is not None:
            log.error("sources.yaml changed but is invalid, keeping the last good configuration:"
                      " %s", change.error)
            self._config_broken = True
            await self.notify(config_problem(str(change.error)))
            return
        if self._config_broken:
            self._config_broken = False
            await self.notify(config_ok())

    async def reload_now(self) -> None:
        """After feedbot's own edit of sources.yaml: load it and apply it at once."""
        async with self._sources_lock:
            settings = await asyncio.to_thread(load_settings, self.sources)
            self.watcher.accept()
            self.apply(settings)
        if self._config_broken:  # mended by that edit (`/stage set` over a bad stage id):
            self._config_broken = False  # said now, not at some later edit
            await self.notify(config_ok())

    def apply(self, settings: Settings) -> None:
        """Switch to new settings: collect jobs follow the sources, the digest its time."""
        old, self.settings = self.settings, settings
        before = {s.name: s for s in old.config.sources()}
        after = {s.name: s for s in settings.config.sources()}
        for name in before.keys() - after.keys():
            self.jobs.cancel(f"collect:{name}")
        changed = [s for n, s in after.items() if before.get(n) != s]
        for spec in changed:
            was = before.get(spec.name)
            if was is not None and (was.kind, was.target) != (spec.kind, spec.target):
                # a new URL (a typo mended): soon, not when the old one's back-off ends; its
                # collection records the new target, which starts its state afresh
                self.schedule_collect(spec, state=SourceState(spec.name))
            else:
                self.schedule_collect(spec)
        o, n = old.config.learner, settings.config.learner
        if (o.digest_time, o.timezone) != (n.digest_time, n.timezone):
            self.schedule_prune()
            when = self.schedule_digest()
            log.info("digest time is now %s %s (next: %s)", n.digest_time, n.timezone, when)
        log.info("sources.yaml reloaded: %d sources (%d added, %d removed, %d changed); stage %s",
                 len(after), len(after.keys() - before.keys()), len(before.keys() - after.keys()),
                 len(changed) - len(after.keys() - before.keys()), n.stage)


UPDATER_LOGGER = "telegram.ext.Updater"
PTB_EXT_LOGGER = "telegram.ext"  # python-telegram-bot's retry loops log here
PULLED_WHILE_STOPPING = "Pulled updates will be ignored and pulled again on restart"


def _api_error(e: Exception, api_url: str) -> str:
    """A Bot API error in one short line: python-telegram-bot's message for an answer that
    is not JSON holds the whole answer (an HTML page, a proxy's) as bytes."""
    from .bot import is_custom_api

    text, _, page = str(e).partition(". Parsing the server response")
    if page or text == "Invalid server response":  # not JSON: an error page, or a 200 one
        text += f", and the answer from {shown_url(api_url)} is not the Bot API's JSON"
        if is_custom_api(api_url):
            text += " (is FEEDBOT_TELEGRAM_API_URL right?)"
    return shorten(text, 300)


def _pulled_while_stopping(record: logging.LogRecord) -> bool:
    """A filter on python-telegram-bot's updater while the bot stops. When Telegram hands
    over an update (a button pressed, a command sent) just as feedbot stops, the updater
    logs CRITICAL "Updater stopped unexpectedly. Pulled updates will be ignored and pulled
    again on restart.": in the log of an ordinary restart, and nothing is lost (the update
    is not confirmed, so Telegram gives it again to the next start). It becomes an INFO line
    that says so."""
    if record.levelno > logging.INFO and PULLED_WHILE_STOPPING in record.getMessage():
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.msg, record.args = ("stopped while Telegram was handing over new messages or "
                                   "button presses; they come again after the next start"), ()
    return True


def _bootstrap_given_up(record: logging.LogRecord) -> bool:
    """A filter on python-telegram-bot's retry loops while the polling starts: a failed
    deleteWebhook is logged as an ERROR with a traceback ("Network Retry Loop (Bootstrap
    delete Webhook): Failed run number 0 of 0. Aborting."), though feedbot says it in one
    warning and tries again (`Runner._bring_up_bot`). Shown with -vv."""
    return (logging.getLogger().getEffectiveLevel() <= logging.DEBUG
            or not ("Bootstrap" in (msg := record.getMessage()) and "Aborting." in msg))


class Stopping(Exception):
    """Raised on the worker thread between embedding chunks once `feedbot run` stops."""


class StoppableEmbedder:
    """The embedder as the worker uses it: a long list of texts (the first collection of many
    feeds, a model change) is embedded in chunks, and a stop is noticed between them, so
    SIGTERM does not wait for thousands of texts. Everything else is the embedder's own."""

    CHUNK = 256  # texts per call: a few seconds on a CPU, large enough for efficient batches

    def __init__(self, inner: Embedder, stopping: threading.Event) -> None:
        self._inner = inner
        self._stopping = stopping

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        parts = []
        for i in range(0, max(len(texts), 1), self.CHUNK):
            if self._stopping.is_set():
                raise Stopping("feedbot is stopping")
            parts.append(self._inner.embed(texts[i:i + self.CHUNK]))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _why_not_sent(chat: int, result: Delivery) -> tuple[str, tuple[Any, ...]]:
    """The log message, and its arguments, that say why a scheduled digest did not go out."""
    if result.forbidden:
        return "Telegram refuses messages to chat %s (%s)", (chat, result.refusal)
    if result.busy:
        return BUSY_DIGEST, (chat, result.error)
    return "the digest for chat %s did not go out", (chat,)


def _prune(store: Store, cfg: Config, roadmap: Roadmap, now: datetime,
           stop: Callable[[], bool]) -> PruneReport:
    """On the worker thread: the daily prune. VACUUM only after one that left much of the file
    free (the first after an upgrade): it holds the database while it rewrites it."""
    from .prune import protected_hashes, prune

    report = prune(store, older_than=cfg.retention.items_seconds, label=cfg.retention.items,
                   now=now, keep_hashes=protected_hashes(roadmap, now),
                   vacuum="auto", stop=stop)
    if not report.stopped:
        store.set_meta(PRUNED_AT, now.isoformat())
    return report


def _write_sent(store: Store, items: dict[int, dict[str, datetime]],
                meta: dict[str, str]) -> None:
    """On the database thread: record delivered items and digest state in one transaction."""
    with store.transaction():
        for chat, sent in items.items():
            for item_id, at in sent.items():
                store.mark_delivered(str(chat), [item_id], at)
        for key, value in meta.items():
            store.set_meta(key, value)


def _first_refusal(store: Store, key: str, now: datetime) -> bool:
    if store.get_meta(key):
        return False
    store.set_meta(key, now.isoformat())
    return True


def _record_feedback(store: Store, chat: str, item_id: str, value: str, now: datetime,
                     stage: str) -> bool:
    found = store.get_item(item_id)
    if found is None:
        return False
    store.set_feedback(chat, found.id, value, now, stage=stage)
    return True


def _build_digest(store: Store, cfg: Config, roadmap: Roadmap, embedder: Embedder,
                  now: datetime, chat: str, limit: int, sent: frozenset[str] = frozenset()
                  ) -> Digest:
    """On the worker thread: embed what is pending, then rank for the chat, minus delivered
    (and minus `sent`: delivered, not yet in the store), minus what the chat voted on: read,
    delivered or not (a /search result, `feedbot feedback --chat`), as `feedbot digest`
    leaves it out."""
    embed_pending(store, embedder, now)
    voted, read = voted_on(store, cfg, now, chat=chat)
    return make_digest(cfg, store, embedder, roadmap, now=now, limit=limit,
                       exclude=store.delivered(chat) | sent | voted, read=read, chat=chat)
