"""Two feedbot processes collecting at once: the per-source lock beside the database and
arXiv's turn in $FEEDBOT_HOME, pushed at their edges (a holder finishing between a read and
the lock, a stopped holder, a cancelled write on the daemon's collection thread)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from feedbot import collect as collect_mod
from feedbot import locks
from feedbot.collect import collect, collect_async, collect_one, source_lock
from feedbot.collectors import Context
from feedbot.collectors.arxiv_api import ARXIV_TURN, ArxivGate
from feedbot.config import SourceSpec
from feedbot.http import make_client
from feedbot.store import Store

from .support import FIXTURES, LocalServer, atom_feed
from .test_arxiv_api import queries
from .test_arxiv_batch import PEOPLE, people_config, serve_batch
from .test_collect import _entries, feeds_config

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
FEED = (FIXTURES / "arxiv_author_batch.xml").read_bytes()


def in_another_process(work: Callable[[], Any]) -> Any:
    """`work()` with its own event loop and connections, as another process has (flock locks
    held through two open files conflict within one process too)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join(30)
    assert out, "the other collection did not finish"
    return out[0]


# --- 1. a holder that finishes between this process's read of the state and its lock --------

@pytest.mark.parametrize("before_the_read", [False, True],
                         ids=["between-the-read-and-the-lock", "after-the-run-began"])
def test_a_source_another_process_collected_meanwhile_is_not_fetched_again(
        before_the_read: bool, server: LocalServer, tmp_path: Path) -> None:
    """Another process (`feedbot digest` beside the daemon) collects a source whole (fetch,
    record, let go) while this run goes on, so the source's lock is free when this run gets
    to it, but the source was just collected:
    - between this run's read of the source's state and its lock (the daemon reads on its
      collection thread, before the event loop takes the lock): the state read again after
      the lock tells;
    - after this run began, before it read the state (a plain `feedbot collect` fetches every
      source, due or not): the outcomes read when the run began tell."""
    url = server.add("/f", body=atom_feed(_entries("f")), content_type="application/atom+xml")
    report, theirs = collected_beside_another(url, tmp_path / "db.sqlite", before_the_read)
    assert (theirs.status, theirs.new) == ("ok", 3)
    assert len(server.hits("/f")) == 1, "fetched twice"
    assert report.line() == "f: skipped: collected meanwhile by another feedbot process"


def test_a_source_another_process_failed_meanwhile_says_it_failed(
        server: LocalServer, tmp_path: Path) -> None:
    """"collected meanwhile" was said of a source whose fetch had failed in the other
    process: the digest then went on as if all was well."""
    url = server.add("/f", status=500, body=b"down", content_type="text/plain")
    report, theirs = collected_beside_another(url, tmp_path / "db.sqlite", False)
    assert theirs.status == "error"
    assert report.line() == ("f: skipped: tried meanwhile by another feedbot process, which "
                             f"got: {theirs.error}")


def collected_beside_another(url: str, db_path: Path, before_the_read: bool) -> tuple[Any, Any]:
    """(this run's report of feed "f" at `url`, the other process's), another process having
    collected it whole before this run read its state (`before_the_read`) or just after."""
    cfg = feeds_config({"f": url})
    store = Store(db_path)
    others: list[Any] = []

    def other_collection() -> Any:
        with Store(db_path) as other:
            return collect(cfg, other, now=NOW + timedelta(seconds=1))  # type: ignore[arg-type]

    async def db(fn: Callable[..., Any], /, *args: Any) -> Any:
        if fn is not collect_mod._begin or others:
            return fn(store, *args)
        if before_the_read:
            others.append(in_another_process(other_collection))
        result = fn(store, *args)
        if not before_the_read:
            others.append(in_another_process(other_collection))
        return result

    try:
        (report,) = asyncio.run(collect_async(cfg, None, now=NOW, db=db))  # type: ignore[arg-type]
    finally:
        store.close()
    (theirs,) = others[0]
    return report, theirs


# --- 2. arXiv's turn held by a process that does not go on ------------------------------------

_STOPPED_HOLDER = """
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


def test_an_arxiv_turn_held_by_a_stopped_process_is_waited_for_a_bounded_time(
        server: LocalServer, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """`feedbot run` stopped with Ctrl-Z (SIGSTOP) in the middle of an arXiv request keeps the
    turn's flock for as long as it is stopped. A `feedbot digest` beside it must not wait for
    ever: the request thread's time must stay bounded (`in_daemon_thread`'s contract), the
    first request after at most a few deadlines, and the next ones without waiting again."""
    server.add("/api/query", body=FEED, content_type="application/atom+xml")
    feedbot_env.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", _STOPPED_HOLDER,
                               str(feedbot_env / ARXIV_TURN)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        gate = ArxivGate(api_url=server.url("/api/query?{}"), delay=0.2, retries=0,
                         deadline=1.0)
        out: list[Any] = []
        started = time.monotonic()

        def work() -> None:
            with Store(tmp_path / "db.sqlite") as store:
                out.append(collect(queries("a", "b", "c", "d"), store, now=NOW, arxiv=gate))

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(30)
        took = time.monotonic() - started
        assert not thread.is_alive(), "waiting for arXiv's turn for ever"
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
        thread.join(30)
    assert [r.status for r in out[0]] == ["ok"] * 4
    assert len(server.hits("/api/query")) == 4
    # one patience, 2 × (1 s + 2 × 0.2 s), then no more waiting for that holder: not four
    assert took < 8, took
    said = [r.getMessage() for r in caplog.records if "held the turn" in r.getMessage()]
    assert said == [f"arXiv: another feedbot process has held the turn for requests "
                    f"({feedbot_env / ARXIV_TURN}) for over 2.8 s, stopped or stuck; asking "
                    f"without it, spaced after the last request it recorded"]


# --- 3. cancelled while the daemon's collection thread records the outcome -------------------

def test_a_cancelled_collection_holds_the_source_until_its_outcome_is_written(
        server: LocalServer, tmp_path: Path) -> None:
    """In `feedbot run` the store work runs on the collection thread, and a cancelled call
    still ends there (its transaction whole). Until it has, the source must stay held: a
    process waiting for it would otherwise find no outcome recorded and fetch it again."""
    url = server.add("/f", body=atom_feed(_entries("f")), content_type="application/atom+xml")
    db_path = tmp_path / "db.sqlite"
    Store(db_path).close()
    lock = source_lock(str(db_path), "f")
    assert lock is not None
    pool = ThreadPoolExecutor(1)
    local = threading.local()
    writing, may_write = threading.Event(), threading.Event()

    def on_thread(fn: Callable[..., Any], *args: Any) -> Any:
        store = getattr(local, "store", None)
        if store is None:
            store = local.store = Store(db_path)
        if fn is collect_mod._succeeded:  # a 500-item upsert, or a database held a while
            writing.set()
            may_write.wait(10)
        return fn(store, *args)

    async def db(fn: Callable[..., Any], /, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, on_thread, fn, *args)

    seen: dict[str, Any] = {}

    async def main() -> None:
        async with make_client() as http:
            ctx = Context(now=NOW, http=http, arxiv=ArxivGate(delay=0.0), extra={},
                          deadline=10.0)
            spec = SourceSpec("f", "feed", url, "f")
            task = asyncio.create_task(collect_one(
                ctx, None, spec, collect_mod.collectors(), db=db))
            while not writing.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.sleep(0.3)  # the daemon goes on stopping; the write is still going
            with locks.try_exclusive(lock) as free:
                seen["free while writing"] = free
            may_write.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())
    pool.shutdown(wait=True)
    with Store(db_path) as store:
        assert store.source_state("f").last_attempt == NOW  # the write did end, whole
    assert seen["free while writing"] is False, "let go before its outcome was recorded"
    assert not lock.exists()


# --- 4. a batch of people's author queries, some held by another process ---------------------

@contextlib.contextmanager
def another_process_holding(lock: Path, until: Callable[[], bool],
                            before_letting_go: Callable[[], Any] = lambda: None,
                            after: Callable[[], Any] = lambda: None) -> Iterator[None]:
    """Inside the block, `lock` is held from a thread (as another process would hold it: flock
    locks through two open files conflict within one process too) until `until()` is true, or
    20 s; that holder calls `before_letting_go()`, lets go, then calls `after()`."""
    holding = threading.Event()

    def holder() -> None:
        with locks.try_exclusive(lock) as held:
            assert held
            holding.set()
            give_up = time.monotonic() + 20
            while not until() and time.monotonic() < give_up:
                time.sleep(0.02)
            before_letting_go()
        after()

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(10)
    try:
        yield
    finally:
        thread.join(30)


def collect_while_held(feeds: dict[str, str], db_path: Path, held: str,
                       **holder: Any) -> dict[str, Any]:
    """The reports of `collect` of `feeds` into `db_path`, by name, while another process holds
    source `held` (`holder`: `another_process_holding`'s options)."""
    lock = source_lock(str(db_path), held)
    assert lock is not None
    with Store(db_path) as store, another_process_holding(lock, **holder):
        return {r.name: r for r in collect(feeds_config(feeds), store,  # type: ignore[arg-type]
                                           now=NOW)}


@pytest.mark.parametrize("recorded", [True, False], ids=["it-recorded", "it-crashed"])
def test_people_another_process_holds_are_left_out_of_the_batch(
        recorded: bool, server: LocalServer, tmp_path: Path) -> None:
    """The people's author queries go out as one request. When another process holds one of
    them, its part of the answer would be thrown away (that process is collecting it), so the
    request leaves it out. Once that process lets go: skipped if it recorded an outcome, else
    (it crashed mid-fetch) asked alone, so that nobody is lost."""
    gate = serve_batch(server)
    db_path = tmp_path / "db.sqlite"
    cfg = people_config()
    held_name = "Lin Sample/arxiv"
    lock = source_lock(str(db_path), held_name)
    assert lock is not None

    def record() -> None:
        if recorded:
            with Store(db_path) as other:
                other.record_failure(held_name, NOW, "HTTP 503", retry_after=None)

    store = Store(db_path)
    with another_process_holding(lock, until=lambda: bool(server.hits("/api/query")),
                                 before_letting_go=record):  # once the batch has been asked
        got = collect(cfg, store, now=NOW, arxiv=gate)
    reports = {r.name: r for r in got}
    asked = [parse_qs(r.query)["search_query"][0] for r in server.hits("/api/query")]
    others = [n for p, n in PEOPLE.items() if f"{p}/arxiv" != held_name]
    assert asked[0] == " OR ".join(f'au:"{n}"' for n in others)
    assert all(reports[f"{p}/arxiv"].status == "ok" for p, n in PEOPLE.items() if n in others)
    if recorded:
        assert asked[1:] == []
        assert reports[held_name].line() == ("Lin Sample/arxiv: skipped: tried meanwhile by "
                                             "another feedbot process, which got: HTTP 503")
    else:
        assert asked[1:] == ['au:"Lin Sample"']
        assert reports[held_name].status == "ok"
        assert store.source_state(held_name).last_success == NOW
    store.close()


def test_a_batch_counts_people_this_run_holds_as_its_own_with_store_calls_that_pause(
        server: LocalServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's store calls run on its collection thread, so each one lets the event loop
    go on: every person of a batch takes their lock, then waits to read their state again.
    The batch starts meanwhile; a lock this run holds, opened again to ask, conflicts with it
    all the same (flock), and must not count as another process's: one request, not four."""
    gate = serve_batch(server)
    store = Store(tmp_path / "db.sqlite")

    async def db(fn: Callable[..., Any], /, *args: Any) -> Any:
        await asyncio.sleep(0)  # a hop to the store's thread and back
        return fn(store, *args)

    reports = asyncio.run(collect_async(people_config(), None, now=NOW,  # type: ignore[arg-type]
                                        arxiv=gate, db=db))
    assert [r.status for r in reports] == ["ok"] * len(PEOPLE)
    asked = [parse_qs(r.query)["search_query"][0] for r in server.hits("/api/query")]
    assert asked == [" OR ".join(f'au:"{n}"' for n in PEOPLE.values())]
    assert not [r for r in caplog.records if "left out" in r.getMessage()]
    store.close()


@pytest.mark.parametrize("recorded", [True, False], ids=["it-recorded", "it-crashed"])
def test_a_source_another_process_holds_is_waited_for_without_a_fetch_slot(
        recorded: bool, server: LocalServer, tmp_path: Path, monkeypatch: Any) -> None:
    """With one fetch slot, a source held by another process must not keep the slot while it
    waits for that process: the sources nobody else holds go on meanwhile. The held one is
    then skipped (recorded by the other) or, once let go unrecorded, fetched in a slot."""
    monkeypatch.setenv("FEEDBOT_FETCH_CONCURRENCY", "1")
    feeds = {n: server.add(f"/{n}", body=atom_feed(_entries(n)),
                           content_type="application/atom+xml") for n in ("held", "free")}
    db_path = tmp_path / "db.sqlite"
    saw_free: list[bool] = []

    def record() -> None:
        saw_free.append(bool(server.hits("/free")))
        if recorded:
            with Store(db_path) as other:
                other.record_failure("held", NOW, "HTTP 503", retry_after=None)

    reports = collect_while_held(feeds, db_path, "held",
                                 until=lambda: bool(server.hits("/free")),
                                 before_letting_go=record)
    assert saw_free == [True], "the held source kept the only slot while it waited"
    assert (reports["free"].status, reports["free"].new) == ("ok", 3)
    if recorded:
        assert reports["held"].line() == ("held: skipped: tried meanwhile by another feedbot "
                                          "process, which got: HTTP 503")
        assert server.hits("/held") == []
    else:
        assert (reports["held"].status, reports["held"].new) == ("ok", 3)
        assert len(server.hits("/held")) == 1


def test_a_source_let_go_unrecorded_does_not_hold_its_lock_while_it_queues_for_a_slot(
        server: LocalServer, tmp_path: Path, monkeypatch: Any) -> None:
    """The other process let go of the source without recording it (it crashed). This run
    must still fetch it, but its one slot is busy with a slow feed: queued meanwhile, it must
    not hold the source's lock, or a third process would wait on a fetch that has not begun
    (and give up after 120 s with "has been collecting it")."""
    monkeypatch.setenv("FEEDBOT_FETCH_CONCURRENCY", "1")
    feeds = {"held": server.add("/held", body=atom_feed(_entries("held")),
                                content_type="application/atom+xml"),
             "slow": server.add("/slow", body=atom_feed(_entries("slow")), delay=2.0,
                                content_type="application/atom+xml")}
    db_path = tmp_path / "db.sqlite"
    lock = source_lock(str(db_path), "held")
    assert lock is not None
    free_while_queued: list[bool] = []

    def third_process() -> None:
        # the other crashed: it let go, recording nothing. While "slow" still holds the only
        # slot, a third process looks at the source, after this run's waiter noticed (0.2 s)
        time.sleep(1.0)
        with locks.try_exclusive(lock) as free:
            free_while_queued.append(free)

    reports = collect_while_held(feeds, db_path, "held",
                                 until=lambda: bool(server.hits("/slow")), after=third_process)
    assert free_while_queued == [True], "the lock was held while queued for the slot"
    assert [(r.status, r.new) for r in reports.values()] == [("ok", 3), ("ok", 3)]
    assert len(server.hits("/held")) == 1


# --- 5. what is left beside the database and in FEEDBOT_HOME ----------------------------------

def test_a_stale_lock_file_of_a_killed_process_is_taken_over_and_removed(
        server: LocalServer, tmp_path: Path) -> None:
    url = server.add("/f", body=atom_feed(_entries("f")), content_type="application/atom+xml")
    db_path = tmp_path / "db.sqlite"
    store = Store(db_path)
    lock = source_lock(str(db_path), "f")
    assert lock is not None
    lock.write_bytes(b"")  # left by a process killed (SIGKILL) while it held the source
    (report,) = collect(feeds_config({"f": url}), store, now=NOW)  # type: ignore[arg-type]
    assert (report.status, report.new) == ("ok", 3)
    assert not lock.exists()
    store.close()


def test_odd_source_names_collect_and_leave_no_lock_files(server: LocalServer,
                                                          tmp_path: Path) -> None:
    names = ["a/b", "../../x", "nul\x00in", "é" * 300, ""]
    feeds = {n: server.add(f"/{i}", body=atom_feed(_entries(str(i))),
                           content_type="application/atom+xml") for i, n in enumerate(names)}
    store = Store(tmp_path / "db.sqlite")
    reports = collect(feeds_config(feeds), store, now=NOW)  # type: ignore[arg-type]
    assert [r.status for r in reports] == ["ok"] * len(names)
    assert sorted(p.name for p in tmp_path.iterdir() if ".collect-" in p.name) == []
    store.close()


@pytest.mark.parametrize("where", [":memory:", ""])  # "": SQLite's private temporary database
def test_a_database_in_memory_takes_no_lock(where: str, server: LocalServer, tmp_path: Path,
                                            monkeypatch: Any) -> None:
    url = server.add("/f", body=atom_feed(_entries("f")), content_type="application/atom+xml")
    monkeypatch.chdir(tmp_path)
    store = Store(where)
    (report,) = collect(feeds_config({"f": url}), store, now=NOW)  # type: ignore[arg-type]
    assert (report.status, report.new) == ("ok", 3)
    assert list(tmp_path.iterdir()) == []
    assert source_lock(store.path, "f") is None  # no other process can reach it: no lock


def test_one_database_reached_by_two_paths_has_one_lock(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    """The daemon may open the database through a symbolic link (a home on another disk) and
    `feedbot digest` through its real path, or a relative one: one source, one lock file."""
    real = tmp_path / "disk" / "feedbot.db"
    real.parent.mkdir()
    real.touch()
    (tmp_path / "home").symlink_to(real.parent)
    monkeypatch.chdir(tmp_path)
    paths = [str(real), str(tmp_path / "home" / "feedbot.db"), "disk/feedbot.db"]
    locks_of = {source_lock(p, "Vision Lab") for p in paths}
    assert len(locks_of) == 1
    assert str(locks_of.pop()).startswith(str(real.resolve()))


def test_a_lock_file_that_cannot_be_created_collects_unlocked(
        server: LocalServer, tmp_path: Path, monkeypatch: Any) -> None:
    url = server.add("/f", body=atom_feed(_entries("f")), content_type="application/atom+xml")
    store = Store(tmp_path / "db.sqlite")
    real_open = os.open

    def refusing(path: Any, *args: Any, **kw: Any) -> int:
        if ".collect-" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", refusing)
    (report,) = collect(feeds_config({"f": url}), store, now=NOW)  # type: ignore[arg-type]
    assert (report.status, report.new) == ("ok", 3)
    store.close()


def test_a_damaged_or_huge_turn_file_costs_at_most_one_spacing(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    server.add("/api/query", body=FEED, content_type="application/atom+xml")
    feedbot_env.mkdir(parents=True, exist_ok=True)
    turn = feedbot_env / ARXIV_TURN
    turn.write_bytes(b"inf" + b"\x00" * 29 + b"\xff" * 1_000_000)
    started = time.monotonic()
    gate = ArxivGate(api_url=server.url("/api/query?{}"), delay=0.3, retries=0)
    reports = collect(queries("a"), Store(tmp_path / "db.sqlite"), now=NOW, arxiv=gate)
    assert [r.status for r in reports] == ["ok"]
    assert time.monotonic() - started < 10
    assert float(turn.read_bytes()[:32].decode()) <= time.monotonic()
