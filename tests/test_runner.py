"""The long-running process with a controllable clock: collection jobs, the daily digest sent
once at the local time (after a restart too, inside the grace period), never repeating an item,
failed sends retried and not lost, sources.yaml reloaded while running, and `feedbot run`."""

from __future__ import annotations

import asyncio
import configparser
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from feedbot.runner import DIGEST_JOB, FRESH_JOB, PRUNE_JOB, PRUNED_AT, TICK_JOB, WATCH_JOB
from feedbot.scheduler import FRESH_LEAD, FRESH_SPREAD, next_digest_time, next_prune_time
from feedbot.store import Store

from .fake_bot_api import (
    CHAT,
    TOKEN,
    TOPICS,
    Clock,
    FakeBotAPI,
    eventually,
    options,
    running,
    seed_items,
    telegram_html_problems,
    write_sources,
)
from .support import LocalServer, atom_feed

# Europe/Berlin in November is UTC+1: the 08:00 digest is at 07:00Z
SLOT = datetime(2026, 11, 20, 7, tzinfo=UTC)


@pytest.fixture
def api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as a:
        yield a


def ids_sent(api: FakeBotAPI) -> list[str]:
    out = []
    for m in api.sent(CHAT):
        for row in (m.get("reply_markup") or {}).get("inline_keyboard", []):
            out.append(row[0]["callback_data"].split(":", 2)[2])
    return out


def feed_entries(n: int) -> list[dict[str, str]]:
    return [{"title": TOPICS[i].capitalize(), "link": f"https://blog.example.org/lesson-{i}",
             "updated": "2026-11-19T09:00:00Z",
             "summary": f"Lesson {i}: {TOPICS[i]} &amp; what it is for."} for i in range(n)]


async def test_collect_then_daily_digest_at_local_time_never_repeats(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    url = server.add("/feed.xml", body=atom_feed(feed_entries(4)))
    sources = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    clock = Clock(SLOT - timedelta(hours=1))
    async with running(sources, feedbot_env, clock, api) as runner:
        assert runner.jobs.next_run(DIGEST_JOB) == SLOT
        assert {"collect:Test blog", DIGEST_JOB, TICK_JOB, WATCH_JOB} <= runner.jobs.ids()
        await runner.collect_source("Test blog")
        assert len(server.hits("/feed.xml")) == 1
        assert runner.jobs.next_run("collect:Test blog") >= clock() + timedelta(seconds=60)
        await runner.digest_tick()
        assert api.sent(CHAT) == []  # not yet: 07:00 local
        clock.t = SLOT
        await runner.digest_tick()
        await runner.digest_tick()
        [msg] = api.sent(CHAT)
        assert telegram_html_problems(msg["text"]) == [] and "Stage 5" in msg["text"]
        first = ids_sent(api)
        assert len(first) == 3  # digest_size
        with Store.open(feedbot_env) as store:
            assert store.delivered(str(CHAT)) == set(first)
        server.add("/feed.xml", body=atom_feed(feed_entries(6)))  # two more the next day
        clock.t = SLOT + timedelta(days=1)
        await runner.collect_source("Test blog")
        await runner.digest_tick()
        second = ids_sent(api)[3:]
        assert len(second) == 3 and not set(second) & set(first)
        assert len(set(first + second)) == 6


async def test_sources_due_after_the_digest_are_collected_before_it(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """What a blog posted in the night reaches the morning digest: 20 minutes before the
    digest time, a source whose next collection would come after the digest is collected now
    (within 5 minutes); one collected lately or weekly keeps its time; the collection moved
    runs, and the next counts from it; the job comes again the next day."""
    names = ("Stale", "Recent", "Weekly")
    urls = {n: server.add(f"/{n.lower()}.xml", body=atom_feed(feed_entries(2))) for n in names}
    sources = write_sources(tmp_path / "sources.yaml", blogs=tuple(urls.items()))
    weekly = f"    url: {urls['Weekly']}\n"
    sources.write_text(sources.read_text().replace(weekly, weekly + "    interval: 7d\n"))
    with Store.open(feedbot_env) as store:
        store.record_success("Stale", SLOT - timedelta(hours=5))  # next: the digest + 1 h
        store.record_success("Recent", SLOT - timedelta(minutes=50))  # 30 min old at the lead
        store.record_success("Weekly", SLOT - timedelta(days=2))
    # after the last of those (an attempt later than the clock is a clock that was ahead)
    clock = Clock(SLOT - timedelta(minutes=45))
    async with running(sources, feedbot_env, clock, api) as runner:
        lead = SLOT - FRESH_LEAD
        assert runner.jobs.next_run(FRESH_JOB) == lead
        before = {n: runner.jobs.next_run(f"collect:{n}") for n in names}
        assert all(t > SLOT for t in before.values()), before
        clock.t = lead
        await runner._fresh_job()  # what the scheduler fires at that instant
        after = {n: runner.jobs.next_run(f"collect:{n}") for n in names}
        assert lead <= after["Stale"] <= lead + timedelta(seconds=FRESH_SPREAD)
        assert {n: after[n] for n in ("Recent", "Weekly")} == {
            n: before[n] for n in ("Recent", "Weekly")}
        assert runner.jobs.next_run(FRESH_JOB) == lead + timedelta(days=1)
        clock.t = after["Stale"]
        await runner.collect_source("Stale")  # what the scheduler fires then
        assert len(server.hits("/stale.xml")) == 1 and not server.hits("/recent.xml")
        assert runner.jobs.next_run("collect:Stale") >= clock() + timedelta(hours=6)
        await runner._fresh_job()  # run again (a restart): nothing more to bring forward
        assert runner.collect_before_digest() == []


async def test_a_digest_sent_late_collects_the_overdue_sources_first(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """Started after the digest time (down in the night, or the machine asleep), the digest
    went out at once with yesterday's items: the night's posts came a day late. The overdue
    sources are collected first now, once per slot."""
    url = server.add("/feed.xml", body=atom_feed(feed_entries(2)))
    sources = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    clock = Clock(SLOT - timedelta(hours=10))
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.collect_source("Test blog")  # yesterday evening's collection
    server.add("/feed.xml", body=atom_feed(feed_entries(5)))  # three posted in the night
    clock.t = SLOT + timedelta(minutes=30)  # up again, the digest due since half an hour
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
        await runner.digest_tick()  # a second tick: no second collection, no second digest
    assert len(server.hits("/feed.xml")) == 2
    assert len(api.sent(CHAT)) == 1 and len(ids_sent(api)) == 3
    with Store.open(feedbot_env) as store:
        newest = {s.id for s in store.items_since(SLOT - timedelta(days=1))
                  if s.item.url.endswith(("lesson-2", "lesson-3", "lesson-4"))}
    assert len(newest) == 3 and set(ids_sent(api)) & newest


class NetworkNotUp:
    """A LocalServer whose port refuses connections, as every host does for a machine whose
    network is not up yet, until `up()`: bound to its port, not listening until then."""

    def __init__(self) -> None:
        import socket

        self.server = LocalServer()
        address = self.server.httpd.server_address
        self.server.httpd.socket.close()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        self.server.httpd.socket = sock

    def up(self) -> None:
        self.server.httpd.server_activate()  # listen()
        self.server.__enter__()

    def close(self) -> None:
        if self.server.thread.is_alive():
            self.server.__exit__()
        else:
            self.server.httpd.server_close()


async def test_a_late_digest_tries_its_sources_again_when_the_network_was_not_up_yet(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """A laptop that woke after the digest time, before its Wi-Fi was back: the overdue
    sources failed at once ("cannot connect"), and the digest went out with what was stored.
    When every one of them failed so, they are tried once more a little later, then the
    digest goes out with what the night brought."""
    feed = NetworkNotUp()
    try:
        url = feed.server.add("/feed.xml", body=atom_feed(feed_entries(2)))
        sources = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
        with Store.open(feedbot_env) as store:
            store.record_success("Test blog", SLOT - timedelta(hours=10))  # last evening
        clock = Clock(SLOT + timedelta(minutes=30))
        async with running(sources, feedbot_env, clock, api, offline_retry=1.0) as runner:
            tick = asyncio.create_task(runner.digest_tick())
            with Store.open(feedbot_env) as store:
                await eventually(lambda: store.source_state("Test blog").failures == 1)
                assert "cannot connect" in store.source_state("Test blog").last_error
            feed.up()  # the network is back
            await tick
        assert len(feed.server.hits("/feed.xml")) == 1
        [digest] = api.sent(CHAT)
        assert "lesson-0" in digest["text"] and "lesson-1" in digest["text"]
    finally:
        feed.close()


async def test_a_late_digest_waits_for_no_network_when_a_source_could_connect(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """One overdue source reached, another refused: the network is up, and the refused one
    is that site's trouble: the digest goes out without waiting. A stop while waiting for the
    network (all refused) is prompt."""
    feed = NetworkNotUp()
    try:
        blogs = (("Up", server.add("/feed.xml", body=atom_feed(feed_entries(2)))),
                 ("Down", feed.server.add("/feed.xml", body=atom_feed(feed_entries(2)))))
        sources = write_sources(tmp_path / "sources.yaml", blogs=blogs)
        with Store.open(feedbot_env) as store:
            for name, _ in blogs:
                store.record_success(name, SLOT - timedelta(hours=10))
        clock = Clock(SLOT + timedelta(minutes=30))
        async with running(sources, feedbot_env, clock, api, offline_retry=60.0) as runner:
            await asyncio.wait_for(runner.digest_tick(), 30)
            assert len(server.hits("/feed.xml")) == 1 and len(ids_sent(api)) == 2
        only_down = write_sources(tmp_path / "down.yaml", blogs=blogs[1:])
        clock.advance(days=1)
        with Store.open(feedbot_env) as store:  # collected last evening
            store.record_success("Down", clock() - timedelta(hours=10))
        async with running(only_down, feedbot_env, clock, api, offline_retry=60.0) as runner:
            tick = asyncio.create_task(runner.digest_tick())
            with Store.open(feedbot_env) as store:
                await eventually(lambda: store.source_state("Down").failures == 1)
            await asyncio.sleep(0.2)  # waiting for the network now
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 10
        with pytest.raises(asyncio.CancelledError):
            await tick
    finally:
        feed.close()


async def test_a_digest_the_busy_database_kept_from_being_built_is_one_warning_and_retried(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """`feedbot prune` (its VACUUM) held the database past the busy timeout while the daily
    digest was built: an ERROR "building the digest for chat … failed" with a traceback, for a
    digest that was retried as it should be. Now one warning that says when it is tried again."""
    import sqlite3

    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 6)  # no vectors yet: the digest writes them first
    async with running(sources, feedbot_env, clock, api) as runner:
        # the worker waits 30 s for a held database; here 50 ms
        await runner.in_worker(lambda store: store.db.execute("PRAGMA busy_timeout = 50"))
        other = sqlite3.connect(feedbot_env / "feedbot.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        caplog.clear()
        try:
            with caplog.at_level(logging.WARNING):
                await runner.digest_tick()
        finally:
            other.execute("COMMIT")
            other.close()
        said = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [(r.levelname, r.exc_info) for r in said] == [("WARNING", None)], caplog.text
        line = said[0].getMessage()
        assert "database is locked" in line and "\n" not in line
        assert line.endswith("the digest is tried again at 07:01 UTC"), line
        assert api.sent(CHAT) == []
        clock.advance(seconds=61)
        await runner.digest_tick()  # the database is free: the digest goes out
        assert len(ids_sent(api)) == 3


async def test_sources_collected_at_once_keep_the_per_site_limit(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """Every source is its own collection in `feedbot run`, so the limit of 4 at once per site
    that one `feedbot collect` keeps did not hold: after a sleep, every overdue job fired
    together, 20 feeds of one site at once (the 429s the limit is there to avoid)."""
    from feedbot.collect import PER_HOST

    from .support import Overlap, Route

    slow = Overlap(atom_feed(feed_entries(1)))
    blogs = tuple((f"Blog {n}", server.add(f"/f{n}.xml", Route(handler=slow)))
                  for n in range(10))
    sources = write_sources(tmp_path / "sources.yaml", blogs=blogs)
    async with running(sources, feedbot_env, Clock(SLOT)) as runner:
        await asyncio.gather(*(runner.collect_source(name) for name, _ in blogs))
    assert sum(len(server.hits(f"/f{n}.xml")) for n in range(10)) == 10
    assert slow.most <= PER_HOST, f"{slow.most} at once against one site"


async def test_a_second_feedbot_run_on_one_home_is_refused(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """Two `feedbot run` on one home (the service and one started by hand) both sent every
    daily digest: both read "not sent yet" at the slot and ranked the same items."""
    from feedbot.store import StoreError

    sources = write_sources(tmp_path / "sources.yaml", blogs=())
    clock = Clock(SLOT)
    async with running(sources, feedbot_env, clock, api):
        with pytest.raises(StoreError, match="another `feedbot run` is already running on "):
            async with running(sources, feedbot_env, clock):
                pass
    async with running(sources, feedbot_env, clock):  # the first one stopped: free again
        pass


async def test_another_bot_polling_with_the_token_is_said_once_without_tracebacks(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Telegram answers 409 Conflict to a second poller of one token (another machine, another
    FEEDBOT_HOME): python-telegram-bot logged an ERROR with a full traceback on every poll."""
    api.fail("getUpdates", times=3, status=409, after=1,
             description="Conflict: terminated by other getUpdates request; make sure that "
                         "only one bot instance is running")
    sources = write_sources(tmp_path / "sources.yaml", blogs=())
    with caplog.at_level(logging.WARNING):
        async with running(sources, feedbot_env, Clock(SLOT), api):
            await eventually(lambda: len(api.calls_to("getUpdates")) >= 5, timeout=20)
    said = [r for r in caplog.records if "receiving this bot's messages" in r.getMessage()]
    assert len(said) == 1 and "only one `feedbot run` may use" in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.exc_text], caplog.text


async def test_digest_job_fires_at_local_time_across_the_dst_change(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(datetime(2026, 3, 28, 10, tzinfo=UTC))
    seed_items(feedbot_env, clock(), 6)
    async with running(sources, feedbot_env, clock, api) as runner:
        assert runner.jobs.next_run(DIGEST_JOB) == datetime(2026, 3, 29, 6, tzinfo=UTC)  # CEST
        clock.t = datetime(2026, 3, 29, 6, tzinfo=UTC)
        await runner._digest_job()  # what the scheduler fires at that instant
        assert len(api.sent(CHAT)) == 1
        assert runner.last_digest_day(CHAT) == date(2026, 3, 29)
        assert runner.jobs.next_run(DIGEST_JOB) == datetime(2026, 3, 30, 6, tzinfo=UTC)


async def test_restart_inside_grace_sends_once_and_never_twice(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT - timedelta(hours=2))
    seed_items(feedbot_env, clock(), 8)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()  # up, but too early; then down over the slot
    assert api.sent(CHAT) == []
    clock.t = SLOT + timedelta(hours=2)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()  # the first tick after a restart
        await runner.digest_tick()
    assert len(api.sent(CHAT)) == 1
    clock.advance(hours=1)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
    assert len(api.sent(CHAT)) == 1


async def test_restart_after_the_grace_period_sends_nothing(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT + timedelta(hours=6, minutes=1))
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
    assert api.sent(CHAT) == []


async def test_a_failed_send_is_retried_later_and_not_lost(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api, send_attempts=3) as runner:
        api.fail("sendMessage", times=3, status=502)
        await runner.digest_tick()
        assert len(api.calls_to("sendMessage")) == 3 and api.sent(CHAT) == []
        with Store.open(feedbot_env) as store:
            assert store.delivered(str(CHAT)) == set()
        assert runner.last_digest_day(CHAT) is None
        await runner.digest_tick()  # too soon: backing off
        assert len(api.calls_to("sendMessage")) == 3
        clock.advance(seconds=61)  # the next tick
        await runner.digest_tick()
        assert len(ids_sent(api)) == 3
        with Store.open(feedbot_env) as store:
            assert store.delivered(str(CHAT)) == set(ids_sent(api))
        assert runner.last_digest_day(CHAT) == SLOT.date()


async def test_a_digest_cut_short_continues_where_it_stopped(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    sources = write_sources(tmp_path / "sources.yaml", size=8)
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 12, long=True)
    async with running(sources, feedbot_env, clock, api, send_attempts=2) as runner:
        api.fail("sendMessage", times=2, after=1)
        await runner.digest_tick()
        first = ids_sent(api)
        assert len(api.sent(CHAT)) == 1 and 0 < len(first) < 8
        with Store.open(feedbot_env) as store:
            assert store.delivered(str(CHAT)) == set(first)  # what was sent, no more
        assert runner.last_digest_day(CHAT) is None
        clock.advance(seconds=61)
        await runner.digest_tick()
        rest = ids_sent(api)[len(first):]
        assert len(first) + len(rest) == 8 and not set(first) & set(rest)
        assert "(continued)" in api.sent(CHAT)[1]["text"]
        assert runner.last_digest_day(CHAT) == SLOT.date()


async def test_a_message_whose_answer_is_lost_is_not_sent_twice(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Telegram takes the message but answers after our timeout: sending it again would show
    its items twice, so it counts as sent."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api, send_timeout=0.3) as runner:
        api.slow("sendMessage", 1.0)
        await runner.digest_tick()
        assert len(api.calls_to("sendMessage")) == 1
        assert len(ids_sent(api)) == len(set(ids_sent(api))) == 3
        with Store.open(feedbot_env) as store:
            assert store.delivered(str(CHAT)) == set(ids_sent(api))
        assert runner.last_digest_day(CHAT) == SLOT.date()
        clock.advance(seconds=61)
        await runner.digest_tick()
        assert len(api.calls_to("sendMessage")) == 1
    assert "did not confirm a digest message" in caplog.text


async def test_a_long_flood_wait_is_respected(api: FakeBotAPI, tmp_path: Path,
                                              feedbot_env: Path) -> None:
    """Asked to wait 15 minutes, the runner does not call again after its own 1-minute backoff."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        api.fail("sendMessage", retry_after=900)
        await runner.digest_tick()
        assert len(api.calls_to("sendMessage")) == 1 and api.sent(CHAT) == []
        clock.advance(seconds=61)
        await runner.digest_tick()
        clock.advance(seconds=800)
        await runner.digest_tick()
        assert len(api.calls_to("sendMessage")) == 1  # still waiting, as asked
        clock.advance(seconds=40)
        await runner.digest_tick()
        assert len(ids_sent(api)) == 3


async def test_a_token_revoked_while_running_stops_the_runner(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """After /revoke in BotFather the poller gives up; a deaf bot must not look alive."""
    from telegram.error import InvalidToken

    from feedbot.runner import Runner, load_settings

    from .support import fake_embedder

    sources = write_sources(tmp_path / "sources.yaml")
    runner = Runner(load_settings(sources), home=feedbot_env, sources=sources,
                    embedder=fake_embedder(), token=api.token, api_url=api.url,
                    options=options(), clock=Clock(SLOT))
    task = asyncio.create_task(runner.run_forever(handle_signals=False))
    await api.wait_for("getUpdates")
    api.token = "123456789:ANewTokenFromBotFather"  # the old one now gets 401 Unauthorized
    with pytest.raises(InvalidToken):
        await asyncio.wait_for(task, 20)
    assert not runner._started  # stopped cleanly: jobs, store and worker closed


@pytest.mark.parametrize("empty", ["say", "silent"])
async def test_an_empty_day_says_so_or_stays_silent(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, empty: str) -> None:
    sources = write_sources(tmp_path / "sources.yaml", empty=empty)
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock() - timedelta(days=1), 2)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.deliver_digest(CHAT)  # /digest took everything there was
        sent = len(api.sent(CHAT))
        await runner.digest_tick()
        day = api.sent(CHAT)[sent:]
        assert runner.last_digest_day(CHAT) == SLOT.date()
    if empty == "say":
        assert len(day) == 1 and "Nothing new for your stage today." in day[0]["text"]
    else:
        assert day == []


async def test_a_stop_while_a_digest_message_is_out_does_not_send_it_again(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """SIGTERM while Telegram has the message but has not answered yet: after the restart
    (inside the grace period) the digest is not sent a second time."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 6)
    api.slow("sendMessage", 1.0)
    async with running(sources, feedbot_env, clock, api, run_jobs=True):
        await api.wait_for("sendMessage")  # the tick job's digest is out, unanswered: stop
    assert len(api.sent(CHAT)) == 1  # Telegram has it
    first = ids_sent(api)
    with Store.open(feedbot_env) as store:
        assert store.delivered(str(CHAT)) == set(first)
    clock.advance(minutes=5)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
        assert runner.last_digest_day(CHAT) == SLOT.date()
    assert ids_sent(api) == first and len(api.sent(CHAT)) == 1


async def test_a_stop_while_waiting_to_retry_loses_nothing(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Stopped while backing off after a refused send, nothing was delivered: after the
    restart the whole digest comes."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 6)
    api.fail("sendMessage", status=502)
    async with running(sources, feedbot_env, clock, api, run_jobs=True, send_backoff=60):
        await eventually(lambda: "Telegram unreachable" in caplog.text)  # waiting to retry
    with Store.open(feedbot_env) as store:
        assert store.delivered(str(CHAT)) == set()
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
    assert len(ids_sent(api)) == 3


async def test_a_busy_store_when_a_digest_goes_out_does_not_send_it_twice(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """Another process (`feedbot collect`) holds the database when Telegram confirms the
    message: what was sent is kept and recorded later, never sent again."""
    import sqlite3

    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 6)
    # the store waits 30 s for the database; here 50 ms
    async with running(sources, feedbot_env, clock, api, db_timeout=0.05) as runner:
        api.slow("sendMessage", 0.3)
        tick = asyncio.create_task(runner.digest_tick())
        await api.wait_for("sendMessage")
        other = sqlite3.connect(feedbot_env / "feedbot.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            await tick
            first = ids_sent(api)
            assert len(first) == 3 and runner.last_digest_day(CHAT) == SLOT.date()
            clock.advance(seconds=61)
            await runner.digest_tick()  # still locked: nothing new, nothing again
            await runner.deliver_digest(CHAT)  # /digest: the other three
        finally:
            other.execute("COMMIT")
            other.close()
        clock.advance(seconds=61)
        await runner.digest_tick()  # the store is free: recorded now
        with Store.open(feedbot_env) as store:
            assert store.delivered(str(CHAT)) == set(ids_sent(api))
    assert len(ids_sent(api)) == len(set(ids_sent(api))) == 6
    assert len(api.sent(CHAT)) == 2
    async with running(sources, feedbot_env, clock, api) as runner:
        assert runner.last_digest_day(CHAT) == SLOT.date()


async def test_a_flood_wait_in_one_chat_does_not_hold_up_the_other_chats_digest(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """Telegram limits the messages a bot sends to one group (about 20 a minute) and answers
    429 with `retry_after` for that chat. The daily digests went out one chat after another,
    so every chat waited out the one chat's flood control (up to 5 minutes). Now each chat's
    digest goes on its own: the other chat's arrives while the first one waits."""
    group = -1001777
    sources = write_sources(tmp_path / "sources.yaml", chats=(group, CHAT))
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 6)
    api.fail("sendMessage", retry_after=2)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
        assert runner.last_digest_day(group) == runner.last_digest_day(CHAT) == SLOT.date()
    calls = api.calls_to("sendMessage")
    waited = int(calls[0].params["chat_id"])  # the first send got the 429
    [retry] = [c for c in calls[1:] if int(c.params["chat_id"]) == waited]
    [other] = [c for c in calls if int(c.params["chat_id"]) != waited]
    assert other.at < retry.at  # sent while the first chat waited
    assert len(api.sent(group)) == len(api.sent(CHAT)) == 1


async def test_a_digest_sent_after_midnight_is_labelled_with_its_day(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """The 23:30 digest of Friday, missed and sent at 01:30 on Saturday, says Friday."""
    sources = write_sources(tmp_path / "sources.yaml", digest_time="23:30")
    clock = Clock(datetime(2026, 11, 21, 0, 30, tzinfo=UTC))  # Sat 01:30 in Berlin
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
        assert runner.last_digest_day(CHAT) == date(2026, 11, 20)
    [msg] = api.sent(CHAT)
    assert "Fri 20 Nov" in msg["text"] and "Sat" not in msg["text"]



async def test_a_move_to_a_time_zone_behind_does_not_skip_the_next_day(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """The day of the last digest was kept as the old zone's date: Tokyo's 08:00 digest of
    the 20th goes out at 23:00Z on the 19th; moved to Los Angeles half an hour later, the
    20th there (08:00 = 16:00Z) was taken as done, and the next digest came 41 hours later.
    Moving east, the rule stays once per local day in the new zone."""
    tokyo = datetime(2026, 11, 19, 23, tzinfo=UTC)  # 08:00 on the 20th in Tokyo
    path = write_sources(tmp_path / "sources.yaml", tz="Asia/Tokyo")
    clock = Clock(tokyo)
    seed_items(feedbot_env, clock(), 9)
    async with running(path, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 1
        clock.advance(minutes=30)
        touch(path, path.read_text().replace("Asia/Tokyo", "America/Los_Angeles"))
        await runner.check_sources()
        await runner.check_sources()
        assert runner.settings.config.learner.timezone == "America/Los_Angeles"
        assert runner.last_digest_day(CHAT) == date(2026, 11, 19)  # 15:00 on the 19th there
        clock.t = datetime(2026, 11, 20, 16, tzinfo=UTC)  # 08:00 on the 20th in LA
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 2
        assert runner.last_digest_day(CHAT) == date(2026, 11, 20)
        clock.advance(minutes=30)  # back east: the 21st has begun in Tokyo, with a digest
        touch(path, path.read_text().replace("America/Los_Angeles", "Asia/Tokyo"))
        await runner.check_sources()
        await runner.check_sources()
        assert runner.last_digest_day(CHAT) == date(2026, 11, 21)
        clock.t = datetime(2026, 11, 20, 23, tzinfo=UTC)  # 08:00 on the 21st in Tokyo
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 2  # once a local day
        clock.advance(days=1)
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 3


async def test_a_store_from_before_the_slot_was_kept_still_knows_the_day(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """Upgrading: a store that kept only the date of the last digest sends nothing twice."""
    with Store.open(feedbot_env) as store:
        store.set_meta(f"telegram.digest_day.{CHAT}", SLOT.date().isoformat())
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT + timedelta(hours=1))
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        assert runner.last_digest_day(CHAT) == SLOT.date()
        await runner.digest_tick()
        assert api.sent(CHAT) == []


def touch(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))



async def test_a_hand_edit_loaded_during_a_stage_change_does_not_undo_it(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """The watcher loaded a hand edit on its thread while /stage wrote the file and applied
    it; the watcher's older settings were applied last, so the stage went back in memory, and
    the file, seen by then, was never read again."""
    import threading

    path = write_sources(tmp_path / "sources.yaml")
    async with running(path, feedbot_env, Clock(SLOT - timedelta(hours=3)), api) as runner:
        touch(path, path.read_text().replace('"08:00"', '"09:30"'))  # a hand edit
        await runner.check_sources()  # seen; it settles
        real_load, loaded, release = runner.watcher.load, threading.Event(), threading.Event()

        def load(p: Path) -> Any:
            settings = real_load(p)  # the hand edit, read
            loaded.set()
            release.wait(10)
            return settings

        runner.watcher.load = load
        poll = asyncio.create_task(runner.check_sources())
        while not loaded.is_set():
            await asyncio.sleep(0.01)
        stage = asyncio.create_task(runner.set_stage("cnn"))
        await asyncio.wait({stage}, timeout=1.0)  # done at once before; waits for the poll now
        release.set()
        await poll
        await stage
        assert "stage: cnn" in path.read_text()
        assert runner.settings.config.learner.stage == "cnn"
        assert runner.settings.config.learner.digest_time == "09:30"


async def test_sources_yaml_edits_are_picked_up_while_running(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Old blog", "http://127.0.0.1:9/a"),))
    clock = Clock(SLOT - timedelta(hours=3))
    async with running(sources=path, home=feedbot_env, clock=clock, api=api) as runner:
        await runner.check_sources()
        assert "collect:Old blog" in runner.jobs.ids()
        good = write_sources(tmp_path / "next.yaml", digest_time="09:30", tz="America/New_York",
                             blogs=(("New blog", "http://127.0.0.1:9/b"),
                                    ("Other blog", "http://127.0.0.1:9/c"))).read_text()
        touch(path, good)
        await runner.check_sources()  # the change settles first
        assert "collect:Old blog" in runner.jobs.ids()
        await runner.check_sources()
        collect_jobs = {j for j in runner.jobs.ids() if j.startswith("collect:")}
        assert collect_jobs == {"collect:New blog", "collect:Other blog"}
        assert runner.jobs.next_run(DIGEST_JOB) == next_digest_time(clock(), "09:30",
                                                                    "America/New_York")
        touch(path, good + "blogz: []\n")  # a typo
        await runner.check_sources()
        await runner.check_sources()
        [warning] = api.sent(CHAT)
        assert "sources.yaml has a problem" in warning["text"] and "blogz" in warning["text"]
        assert telegram_html_problems(warning["text"]) == []
        assert runner.settings.config.learner.digest_time == "09:30"  # last good one runs on
        assert {j for j in runner.jobs.ids() if j.startswith("collect:")} == collect_jobs
        touch(path, good.replace("09:30", "10:00"))
        await runner.check_sources()
        await runner.check_sources()
        assert "valid again" in api.sent(CHAT)[-1]["text"]
        assert runner.settings.config.learner.digest_time == "10:00"


async def test_an_interval_under_a_minute_set_while_running_keeps_the_last_good_one(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """`interval: 1s` typed while `feedbot run` runs is a problem the chat is told of, like
    any other, and the blog keeps being collected at its last good interval."""
    path = write_sources(tmp_path / "sources.yaml", blogs=(("A blog", "http://127.0.0.1:9/a"),))
    clock = Clock(SLOT - timedelta(hours=3))
    async with running(sources=path, home=feedbot_env, clock=clock, api=api) as runner:
        before = runner.jobs.next_run("collect:A blog")
        touch(path, path.read_text() + "    interval: 1s\n")
        await runner.check_sources()
        await runner.check_sources()
        [warning] = api.sent(CHAT)
        assert "sources.yaml has a problem" in warning["text"]
        assert "blogs[0].interval" in warning["text"]
        assert "the shortest interval is 1m" in warning["text"]
        assert [s.interval for s in runner.settings.config.sources()] == [6 * 3600]
        assert runner.jobs.next_run("collect:A blog") == before


async def test_without_a_token_only_collection_runs(
        tmp_path: Path, feedbot_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_sources(tmp_path / "sources.yaml", blogs=(("A blog", "http://127.0.0.1:9/a"),))
    async with running(path, feedbot_env, Clock(SLOT)) as runner:
        assert runner.app is None
        assert runner.jobs.ids() == {"collect:A blog", WATCH_JOB, PRUNE_JOB}
        await runner.digest_tick()  # nothing to send with
    assert "TELEGRAM_BOT_TOKEN is not set" in caplog.text


async def test_one_source_is_never_collected_twice_at_once(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    url = server.add("/slow.xml", body=atom_feed(feed_entries(1)), delay=0.3)
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Slow", url),))
    async with running(path, feedbot_env, Clock(SLOT)) as runner:
        await asyncio.gather(runner.collect_source("Slow"), runner.collect_source("Slow"))
    assert len(server.hits("/slow.xml")) == 1


async def test_a_switched_off_source_waits_a_full_interval(
        tmp_path: Path, feedbot_env: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("people:\n  - name: Ada\n    x: ada_l\n", encoding="utf-8")
    clock = Clock(SLOT)
    async with running(path, feedbot_env, clock) as runner:
        await runner.collect_source("Ada/x")  # no X_BEARER_TOKEN: the source is off
        assert runner.jobs.next_run("collect:Ada/x") >= clock() + timedelta(hours=6)


def seed_old(home: Path, now: datetime) -> tuple[str, str]:
    """An item first collected and published 500 days before `now`, and a recent one."""
    from feedbot.items import Item

    old = Item("An old post", "https://blog.example.org/old", "Blog",
               published=now - timedelta(days=500))
    new = Item("A new post", "https://blog.example.org/new", "Blog",
               published=now - timedelta(hours=1))
    with Store.open(home) as store:
        store.upsert_items([old], now - timedelta(days=500))
        store.upsert_items([new], now)
    return old.id, new.id


async def test_the_daily_prune_runs_at_a_quiet_time_and_removes_old_items(
        tmp_path: Path, feedbot_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    old, new = seed_old(feedbot_env, SLOT)
    path = write_sources(tmp_path / "sources.yaml", blogs=(("A blog", "http://127.0.0.1:9/a"),))
    clock = Clock(SLOT)
    quiet = next_prune_time(SLOT, "08:00", "Europe/Berlin")
    assert quiet == datetime(2026, 11, 21, 3, tzinfo=UTC)  # 04:00 in Berlin
    async with running(path, feedbot_env, clock) as runner:
        # never pruned: soon after starting, not only at the next quiet time
        assert runner.jobs.next_run(PRUNE_JOB) == SLOT + timedelta(minutes=10)
        caplog.set_level("INFO", logger="feedbot.runner")
        await runner._prune_job()
        assert "pruned the database: removed 1 item older than 365d" in caplog.text
        assert {s.id for s in runner.store.items_since()} == {new}
        assert runner.jobs.next_run(PRUNE_JOB) == quiet  # then daily at the quiet time
        assert runner.store.get_meta(PRUNED_AT) == SLOT.isoformat()
    async with running(path, feedbot_env, Clock(SLOT + timedelta(hours=1))) as runner:
        assert runner.jobs.next_run(PRUNE_JOB) == quiet  # a restart: pruned a moment ago
    async with running(path, feedbot_env, Clock(SLOT + timedelta(days=3))) as runner:
        assert runner.jobs.next_run(PRUNE_JOB) == SLOT + timedelta(days=3, minutes=10)


async def test_a_failing_prune_is_one_line_and_the_runner_goes_on(
        server: LocalServer, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    import feedbot.prune

    def broken(*a: Any, **k: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(feedbot.prune, "prune", broken)
    url = server.add("/feed.xml", body=atom_feed(feed_entries(2)))
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    async with running(path, feedbot_env, Clock(SLOT)) as runner:
        await runner._prune_job()
        warnings = [r for r in caplog.records if "pruning" in r.getMessage()]
        assert [(r.levelname, r.exc_info) for r in warnings] == [("WARNING", None)]
        assert "database is locked" in warnings[0].getMessage()
        assert "\n" not in warnings[0].getMessage()
        assert PRUNE_JOB in runner.jobs.ids()  # armed again
        await runner.collect_source("Test blog")
        assert runner.store.item_count() == 2


async def test_the_prune_follows_retention_in_sources_yaml(
        tmp_path: Path, feedbot_env: Path) -> None:
    old, new = seed_old(feedbot_env, SLOT)
    path = write_sources(tmp_path / "sources.yaml")
    path.write_text(path.read_text() + "retention: {items: never}\n")
    async with running(path, feedbot_env, Clock(SLOT)) as runner:
        report = await runner.prune_now()
        assert report.items == 0 and runner.store.item_count() == 2
        path.write_text(path.read_text().replace("never", "2000d"))
        await runner.reload_now()
        assert (await runner.prune_now()).items == 0
        path.write_text(path.read_text().replace("2000d", "52w"))
        await runner.reload_now()
        assert (await runner.prune_now()).items == 1
        assert {s.id for s in runner.store.items_since()} == {new}


# --- `feedbot run` as a process ----------------------------------------------------------------

def _wait_for_line(proc: subprocess.Popen[bytes], marker: str, timeout: float = 20.0,
                   fd: int | None = None) -> str:
    """Read the process's stderr (unbuffered, straight from the pipe, or from `fd`) until
    `marker` shows."""
    seen = b""
    deadline = time.monotonic() + timeout
    if fd is None:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
    while marker.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no {marker!r} in: {seen.decode()}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 65536)
    return seen.decode()


@pytest.mark.parametrize("journal", ["", "other", "stderr"])
def test_feedbot_run_without_token_collects_only_and_stops_on_sigterm(
        tmp_path: Path, journal: str) -> None:
    """Its log lines say when (it runs for days), unless stderr is journald's stream (systemd
    names it in JOURNAL_STREAM), which stamps each line itself. A JOURNAL_STREAM inherited
    from a service, naming another stream, is not enough."""
    write_sources(Path(os.environ["FEEDBOT_SOURCES"]), chats=())
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    read, write = os.pipe()  # stands in for the journal's socket
    st = os.fstat(write)
    if journal:
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + (journal == 'other')}"
    journald = journal == "stderr"
    proc = subprocess.Popen([sys.executable, "-m", "feedbot", "run"], stderr=write,
                            stdout=subprocess.DEVNULL, env=env)
    os.close(write)
    try:
        seen = _wait_for_line(proc, "feedbot is running", fd=read)
        assert seen.count("TELEGRAM_BOT_TOKEN is not set") == 1, seen  # said once, not twice
        [running] = [line for line in seen.splitlines() if "feedbot is running" in line]
        # which file and home: a service's working directory is not the user's
        assert f"from {os.environ['FEEDBOT_SOURCES']}, home {os.environ['FEEDBOT_HOME']}" in running
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4} "
        if journald:
            assert running.startswith("INFO feedbot"), running
        else:
            assert re.match(stamp + "INFO feedbot", running), running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.communicate()
        os.close(read)


def test_feedbot_run_with_a_rejected_token_exits_2_without_showing_it(api: FakeBotAPI) -> None:
    write_sources(Path(os.environ["FEEDBOT_SOURCES"]))
    wrong = TOKEN.replace("AAH", "BAD")
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": wrong, "FEEDBOT_TELEGRAM_API_URL": api.url}
    done = subprocess.run([sys.executable, "-m", "feedbot", "-vv", "run"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "rejected TELEGRAM_BOT_TOKEN" in done.stderr
    assert wrong not in done.stderr + done.stdout
    assert "/bot<bot-token>/getMe" in done.stderr  # debug logging was on, redacted
    # a custom Bot API URL may be what is wrong: 404 there reads as a rejected token
    assert f"or FEEDBOT_TELEGRAM_API_URL={api.url} is not a Bot API server" in done.stderr


def test_the_systemd_unit_runs_feedbot_with_the_token_from_a_file() -> None:
    root = Path(__file__).resolve().parents[1]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(root / "deploy" / "feedbot.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("/feedbot run")
    assert service["EnvironmentFile"] == "/etc/feedbot/feedbot.env"
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["User"] == "feedbot" and service["KillSignal"] == "SIGTERM"
    env = (root / "deploy" / "feedbot.env.example").read_text()
    assert re.search(r"^TELEGRAM_BOT_TOKEN=", env, re.M)
    assert "deploy/feedbot.service" in (root / "docs" / "telegram.md").read_text()


async def test_stop_cancels_a_collection_in_flight_promptly_and_quietly(
        server: LocalServer, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    url = server.add("/slow.xml", body=atom_feed(feed_entries(1)), delay=30)
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Slow", url),))
    now = datetime.now(UTC)  # APScheduler fires on the real clock
    async with running(path, feedbot_env, Clock(now), run_jobs=True) as runner:
        runner.jobs.at("collect:Slow", now, runner.collect_source, "Slow")
        deadline = time.monotonic() + 5
        while not server.hits("/slow.xml"):  # the job is now waiting for the answer
            assert time.monotonic() < deadline, "the collection job never started"
            await asyncio.sleep(0.02)
        started = time.monotonic()
    assert time.monotonic() - started < 8  # stop() did not wait for the 30 s answer
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []
    assert "job collect:Slow cancelled" in caplog.text


async def test_stop_does_not_wait_for_a_long_embedding(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """The first collection of a big feed leaves hundreds of texts to embed on the worker; a
    SIGTERM meanwhile stops after the chunk in progress, not after all of them."""
    import threading

    from feedbot.runner import Runner, load_settings

    from .fake_bot_api import options
    from .support import FakeEncoder, fake_embedder

    class GatedEncoder(FakeEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.started, self.go = threading.Event(), threading.Event()

        def encode(self, texts: list[str], batch_size: int = 32) -> Any:
            self.started.set()
            self.go.wait(10)
            return super().encode(texts, batch_size)

    entries = [{"title": f"Post {i} on {TOPICS[i % 8]}", "link": f"https://e.org/{i}",
                "updated": "2026-11-19T09:00:00Z"} for i in range(600)]
    url = server.add("/big.xml", body=atom_feed(entries))
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Big", url),))
    embedder = fake_embedder()
    encoder = embedder._encoder = GatedEncoder()
    runner = Runner(load_settings(path), home=feedbot_env, sources=path, embedder=embedder,
                    options=options(run_jobs=True), clock=Clock(SLOT))
    await runner.start()
    try:
        runner.jobs.at("collect:Big", datetime.now(UTC), runner.collect_source, "Big")
        await asyncio.wait_for(asyncio.to_thread(encoder.started.wait, 5), 6)
    finally:
        stopping = asyncio.create_task(runner.stop())
        await asyncio.sleep(0.05)
        encoder.go.set()
        await stopping
    with Store.open(feedbot_env) as store:
        assert store.source_state("Big").last_success is not None  # the collection itself is in
        left = store.missing_vectors(embedder.model_id, since=SLOT - timedelta(days=30))
    assert len(encoder.calls) == 1 and len(left) > 0  # gave up after a chunk: the rest is
    # embedded after the next start


async def test_the_telegram_digest_leaves_out_a_source_unfollowed_while_running(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """The digest after sources.yaml lost a blog (as `/unfollow` leaves it, reloaded at once)
    has none of that blog's items; the items stay in the store."""
    blogs = tuple((f"Blog {x}", f"https://{x.lower()}.example.org/feed.xml") for x in "ABC")
    sources = write_sources(tmp_path / "sources.yaml", blogs=blogs, size=6)
    clock = Clock(SLOT)
    ids = seed_items(feedbot_env, clock(), 6)  # Blog A, B, C, A, B, C
    with Store.open(feedbot_env) as store:
        for name, _ in blogs:
            store.record_success(name, clock())  # collected: known sources
    async with running(sources, feedbot_env, clock, api) as runner:
        write_sources(sources, blogs=blogs[1:], size=6)
        await runner.reload_now()
        await runner.deliver_digest(CHAT)
    assert sorted(ids_sent(api)) == sorted(i for n, i in enumerate(ids) if n % 3)
    with Store.open(feedbot_env) as store:
        assert store.item_count() == 6


async def test_the_telegram_digest_leaves_out_what_the_chat_voted_on_undelivered(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """A 👍 on a /search result (search results are not marked delivered) or by `feedbot
    feedback --chat` did not keep the item out of that chat's daily digest: it led it, "you
    liked it", as `feedbot digest` never shows an item voted on. Another chat's vote does not
    count."""
    blogs = (("Blog A", "https://a.example.org/feed.xml"),)
    sources = write_sources(tmp_path / "sources.yaml", blogs=blogs, size=6)
    clock = Clock(SLOT)
    ids = seed_items(feedbot_env, clock(), 4)
    with Store.open(feedbot_env) as store:
        store.record_success("Blog A", clock())
        store.set_feedback(str(CHAT), ids[0], "up", clock() - timedelta(hours=1), stage="cnn")
        store.set_feedback(str(CHAT), ids[1], "down", clock() - timedelta(days=30),
                           stage="cnn")  # before the window: left out too
        store.set_feedback("999", ids[2], "up", clock(), stage="cnn")  # another chat's
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.deliver_digest(CHAT)
    assert sorted(ids_sent(api)) == sorted(ids[2:])


async def test_a_digest_to_a_group_that_became_a_supergroup_goes_to_its_new_id(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """feedbot was down when the group was upgraded, so it missed Telegram's notices: the
    daily send names the new chat, and feedbot switched to it only for the bot's notices; the
    digest was retried against the dead id all day."""
    old, new = -4012345, -1004012345
    sources = write_sources(tmp_path / "sources.yaml", chats=(old,))
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        api.fail("sendMessage", migrate_to=new)
        await runner.digest_tick()
        assert api.sent(old) == [] and runner.allowed_chats == [new]
        assert f"allowed_chats: [{new}]" in sources.read_text()
        clock.advance(seconds=61)
        await runner.digest_tick()
        [digest] = api.sent(new)
        assert len(digest["reply_markup"]["inline_keyboard"]) == 3
        assert runner.last_digest_day(new) == SLOT.date()
        clock.advance(seconds=61)
        await runner.digest_tick()
        assert len(api.sent(new)) == 1


async def refused_then_tried_two_hours_later(api: FakeBotAPI, runner: Any, clock: Clock,
                                            status: int, description: str | None) -> None:
    """Telegram refuses the day's digest (`status`, `description`): no retry in the next hour
    and a half of ticks, one just after two hours."""
    api.fail("sendMessage", status=status, times=3, description=description)
    await runner.digest_tick()
    assert len(api.calls_to("sendMessage")) == 1
    for _ in range(3):  # ticks for an hour and a half
        clock.advance(minutes=30)
        await runner.digest_tick()
    assert len(api.calls_to("sendMessage")) == 1
    clock.advance(minutes=30, seconds=1)
    await runner.digest_tick()
    assert len(api.calls_to("sendMessage")) == 2


@pytest.mark.parametrize(("status", "description"), [
    (403, None),  # "Forbidden: bot was blocked by the user"
    (400, "Bad Request: chat not found"),  # the bot was removed from a group, or it is gone
    (403, "Forbidden: bot was kicked from the supergroup chat"),
    (403, "Forbidden: bot is not a member of the supergroup chat"),
])
async def test_a_blocked_bot_tries_the_days_digest_again_hours_later_not_every_half_hour(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture, status: int, description: str | None) -> None:
    """A 403 (the learner blocked the bot, or it was removed from the group) was retried with
    the same backoff as a network error: every half hour all day, ranking a digest each time.
    So was a 400 "chat not found" (the bot removed from a group it can no longer see, a group
    deleted), which no retry within the day mends either."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        await refused_then_tried_two_hours_later(api, runner, clock, status, description)
    assert "bot was blocked, or removed from the group" in caplog.text



@pytest.mark.parametrize("description", [
    "Bad Request: not enough rights to send text messages to the chat",
    "Bad Request: have no rights to send a message",
    "Bad Request: CHAT_WRITE_FORBIDDEN",
])
async def test_a_group_where_the_bot_may_not_post_is_tried_hours_later_and_told_what_to_do(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture, description: str) -> None:
    """An admin took the bot's right to post (Telegram's 400): the digest was retried like a
    network error, every tick and then every half hour all day, and the log said only that it
    did not go out, not how to mend it."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        await refused_then_tried_two_hours_later(api, runner, clock, 400, description)
    [said] = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith(f"Telegram refuses messages to chat {CHAT}")
              and "tried again at 09:00 UTC" in r.getMessage()]
    assert "the bot may not post there" in said
    assert ("Give the bot the right to send messages in the chat, or remove the chat from "
            "telegram.allowed_chats in sources.yaml") in said


async def test_a_chat_that_refuses_every_digest_is_tried_a_few_times_a_day_for_weeks(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The failures of a blocked chat added up across days: the back-off's 2 ** failures
    overflowed at the 42nd, outside the error handling, and from then on the digest was built
    and sent every minute of the grace period, an error logged each time. Each day now starts
    its back-off afresh, and a retry that would come after the grace period says the day's
    digest is given up instead of promising a retry that never comes."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    api.fail("sendMessage", times=10**6, status=403,
             description="Forbidden: bot was blocked by the user")
    async with running(sources, feedbot_env, clock, api, send_attempts=1,
                       grace=timedelta(hours=3), forbidden_wait=timedelta(hours=1)) as runner:
        per_day = []
        for day in range(50):
            before = len(api.calls_to("sendMessage"))
            for minute in range(0, 4 * 60, 10):
                clock.t = SLOT + timedelta(days=day, minutes=minute)
                await runner.digest_tick()
            per_day.append(len(api.calls_to("sendMessage")) - before)
    assert per_day == [3] * 50, per_day  # at 0, 1 and 2 hours
    assert "OverflowError" not in caplog.text
    given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 50
    assert given_up[0].endswith("the digest of 2026-11-20 is given up: a retry would come more "
                                "than 3 hours after its time. The next one is due at "
                                "2026-11-21 07:00 UTC")
    assert "tried again at 08:00 UTC" in caplog.text


async def test_a_failing_digest_backs_off_afresh_each_day(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """A network error all of one day leaves the next day's first retry one tick after its
    first try, not the longest wait."""
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 6)
    api.fail("sendMessage", times=10**6, status=500)
    async with running(sources, feedbot_env, clock, api, send_attempts=1) as runner:
        for minute in range(0, 6 * 60):
            clock.t = SLOT + timedelta(minutes=minute)
            await runner.digest_tick()
        assert runner._chats[CHAT].failures > 5
        api.heal("sendMessage")
        api.fail("sendMessage", times=1, status=500)  # the next day: one failure, then fine
        clock.t = SLOT + timedelta(days=1)
        await runner.digest_tick()
        clock.advance(seconds=61)
        await runner.digest_tick()
        assert runner.last_digest_day(CHAT) == SLOT.date() + timedelta(days=1)


async def test_a_feed_dead_for_a_year_keeps_its_job_and_feedbot_run_starts(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """At its 1,025th failure in a row (a year at a 6 h interval) the back-off overflowed:
    the source's job was dropped after the run, /sources failed, and `feedbot run` could not
    start again."""
    url = server.add("/dead.xml", status=404, body=b"gone")
    sources = write_sources(tmp_path / "sources.yaml", blogs=(("Dead", url),))
    with Store.open(feedbot_env) as store:
        store.record_failure("Dead", SLOT - timedelta(hours=7), "HTTP 404")
        store.db.execute("UPDATE source_state SET failures = 1024 WHERE name = 'Dead'")
        store.db.commit()
    clock = Clock(SLOT)
    async with running(sources, feedbot_env, clock) as runner:
        assert runner.jobs.next_run("collect:Dead") is not None
        await runner.collect_source("Dead")
        assert len(server.hits("/dead.xml")) == 1
        assert runner.jobs.next_run("collect:Dead") >= clock() + timedelta(hours=6)
        [row] = await runner.source_rows()
        assert row["failures"] == 1025
    async with running(sources, feedbot_env, clock) as runner:  # a restart
        assert runner.jobs.next_run("collect:Dead") >= clock() + timedelta(hours=6)


async def test_a_feed_down_with_a_past_retry_after_is_not_asked_every_minute(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """A 503 whose Retry-After date is already past (a cached error page) made the source due
    at once: the runner asked again after its one-minute floor, all day long."""
    from email.utils import format_datetime

    from feedbot.collect import BACKOFF_BASE

    clock = Clock(SLOT)
    url = server.add("/feed.xml", status=503, content_type="text/html", body=b"<html>down</html>",
                     headers={"Retry-After": format_datetime(SLOT - timedelta(hours=1),
                                                             usegmt=True)})
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Down", url),))
    async with running(path, feedbot_env, clock) as runner:
        for failures in range(1, 4):
            await runner.collect_source("Down")
            wait = timedelta(seconds=BACKOFF_BASE * 2 ** (failures - 1))
            assert runner.jobs.next_run("collect:Down") >= clock() + wait
            clock.t = runner.jobs.next_run("collect:Down")
    assert len(server.hits("/feed.xml")) == 3


async def test_a_source_renamed_between_runs_keeps_its_back_off(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """A failing source renamed in sources.yaml while feedbot was stopped takes its old
    name's state when collected, but was scheduled from the new name's empty one: the first
    start after the rename fetched it at once, whatever its back-off said."""
    from feedbot.collect import BACKOFF_BASE

    clock = Clock(SLOT)
    url = server.add("/feed.xml", status=503, content_type="text/html", body=b"<html>down</html>")
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Down", url),))
    async with running(path, feedbot_env, clock) as runner:
        for _ in range(3):
            await runner.collect_source("Down")
    last = clock()
    clock.advance(minutes=1)
    write_sources(path, blogs=(("Down again", url),))
    async with running(path, feedbot_env, clock) as runner:
        await runner.collect_source("Down again")  # as the job would, if due at once
        assert len(server.hits("/feed.xml")) == 3
        assert runner.jobs.next_run("collect:Down again") >= last + timedelta(
            seconds=BACKOFF_BASE * 4)
        clock.t = runner.jobs.next_run("collect:Down again")
        await runner.collect_source("Down again")
        assert len(server.hits("/feed.xml")) == 4
        with Store.open(feedbot_env) as store:
            assert store.source_state("Down again").failures == 4




async def test_a_button_pressed_as_feedbot_stops_is_handled_after_the_restart_quietly(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A press that Telegram hands over just as feedbot stops (a restart by systemd) is not
    lost: it is not confirmed, so Telegram gives it again to the next start. But
    python-telegram-bot logged a CRITICAL "Updater stopped unexpectedly" for it, in the log
    of an ordinary restart (the soak test's month met it, most runs)."""
    from telegram.ext import ExtBot

    real = ExtBot.get_updates
    stopping: list[Any] = []  # the runner whose bot is to be held
    held = asyncio.Event()

    async def get_updates(bot: Any, *a: Any, **k: Any) -> Any:
        """Telegram's answer with the press comes back just as the bot stops (the race,
        every time): held until the updater is stopping."""
        updates = await real(bot, *a, **k)
        if updates and stopping and not held.is_set():
            held.set()
            while stopping[0].app.updater.running:
                await asyncio.sleep(0)
        return updates

    monkeypatch.setattr(ExtBot, "get_updates", get_updates)
    sources = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    seed_items(feedbot_env, clock(), 3)
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.digest_tick()
        [digest] = api.sent(CHAT)
        mid = next(m for m, v in api.messages.items() if v.get("_params") is digest)
        stopping.append(runner)
        api.press(CHAT, mid, digest["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
        await asyncio.wait_for(held.wait(), 5)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "they come again after the next start" in caplog.text
    async with running(sources, feedbot_env, clock, api):
        await api.wait_for("answerCallbackQuery")
        with Store.open(feedbot_env) as store:
            await eventually(lambda: [v.value for v in store.feedback(str(CHAT))] == ["up"])
    assert len(api.calls_to("answerCallbackQuery")) == 1


async def test_the_updaters_last_get_updates_as_feedbot_stops_finds_a_connection(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping, python-telegram-bot's updater calls getUpdates once more, to confirm the
    updates it took (or the next start gets them again). A stop that cancels the long poll
    just as Telegram answers can leave that poll's connection held (cancelled while closing
    the response), and over one connection the confirmation found none: an ERROR with a
    traceback ("Pool timeout"), in about one restart in twenty of the soak test's kind. Here
    the held connection is made on purpose: a getUpdates that Telegram answers late."""
    from telegram.ext import ExtBot

    real = ExtBot.get_updates
    holding: list[asyncio.Task[Any]] = []

    async def get_updates(bot: Any, *a: Any, **k: Any) -> Any:
        if k.get("timeout") == timedelta(0) and not holding:  # the last call, stopping
            asked = len(api.calls_to("getUpdates"))
            api.slow("getUpdates", 1.5)  # longer than the pool's 1 s wait for a connection
            holding.append(asyncio.create_task(real(bot, timeout=timedelta(0))))
            await api.wait_for("getUpdates", asked + 1)  # it holds a connection now
        return await real(bot, *a, **k)

    monkeypatch.setattr(ExtBot, "get_updates", get_updates)
    sources = write_sources(tmp_path / "sources.yaml")
    async with running(sources, feedbot_env, Clock(SLOT), api):
        await api.wait_for("getUpdates")
    await asyncio.gather(*holding, return_exceptions=True)
    assert holding, "the updater made no last getUpdates"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- collection and a database another connection holds -----------------------------------------

async def test_a_collection_waiting_for_a_busy_database_stalls_no_chat(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """Collection called SQLite on the event loop: a feed's items waiting for a database
    another connection held (the user's own `feedbot collect`, a prune, VACUUM) froze the whole
    bot until it was free, up to the 30 s busy timeout. Now the collection's store work waits
    on its own thread, not the bot's database thread: /help, and /sources (which reads the
    store), are answered meanwhile, and the items and the source's success are in once the
    database is free."""
    from .test_bot import HeldDatabase, ask

    url = server.add("/feed.xml", body=atom_feed(feed_entries(4)), etag='"v1"')
    sources = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    clock = Clock(SLOT - timedelta(hours=1))
    async with running(sources, feedbot_env, clock, api) as runner:
        with HeldDatabase(feedbot_env, seconds=5) as held:
            collecting = asyncio.create_task(runner.collect_source("Test blog"))
            await eventually(lambda: bool(server.hits("/feed.xml")))
            await asyncio.sleep(0.3)  # fetched and parsed: the items wait for the database
            [helptext] = await ask(api, "/help")
            [health] = await ask(api, "/sources")
            answered = time.monotonic()
            assert not collecting.done()
        assert "/digest" in helptext["text"] and "Test blog" in health["text"]
        assert answered < held.released_at
        await asyncio.wait_for(collecting, 10)
        state = await runner.in_db(Store.source_state, "Test blog")
        assert state.items == 4 and state.last_success == clock() and state.etag == '"v1"'
        assert runner.jobs.next_run("collect:Test blog") >= clock() + timedelta(seconds=60)


async def test_a_stop_while_a_collection_waits_for_the_database_keeps_items_with_their_state(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """SIGTERM while a collection's items wait for a busy database: the stop goes ahead at once
    (the loop is free), and the write in progress ends whole: the items with their source's
    success and validators. Never the ETag without the items (the next 304 would hide them for
    good), nor the items without their source's state."""
    from .test_bot import HeldDatabase

    url = server.add("/feed.xml", body=atom_feed(feed_entries(4)), etag='"v1"')
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    now = datetime.now(UTC)  # APScheduler fires on the real clock
    async with running(path, feedbot_env, Clock(now), run_jobs=True) as runner:
        with HeldDatabase(feedbot_env, seconds=5) as held:
            runner.jobs.at("collect:Test blog", now, runner.collect_source, "Test blog")
            await eventually(lambda: bool(server.hits("/feed.xml")))
            await asyncio.sleep(0.3)  # fetched and parsed: the items wait for the database
            stopping = time.monotonic()
            stop = asyncio.create_task(runner.stop())
            await asyncio.sleep(0.3)
            assert not stop.done()  # it waits for the write in progress to end, whole
        assert stopping < held.released_at
        await asyncio.wait_for(stop, 10)
    with Store.open(feedbot_env) as store:
        state = store.source_state("Test blog")
        assert state.items == 4 and state.last_success == now and state.etag == '"v1"'


async def test_sources_yaml_notices_go_where_the_chats_daily_digest_goes(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """The "sources.yaml has a problem" and "valid again" notices went to a forum's General
    topic even when its daily digest goes to a topic. Now they go with the digest, and to
    General when that topic was closed meanwhile, like the digest; a private chat is as it
    was."""
    from .test_bot import FORUM, ask

    path = write_sources(tmp_path / "sources.yaml", chats=(CHAT, FORUM))
    good = path.read_text()
    async with running(path, feedbot_env, Clock(SLOT - timedelta(hours=3)), api) as runner:
        papers = api.open_topic(FORUM, "Papers")
        [hello] = await ask(api, "/start", chat=FORUM, thread=papers)
        assert hello["message_thread_id"] == papers
        await eventually(lambda: runner.store.digest_topic(str(FORUM)) == papers)
        touch(path, good + "blogz: []\n")  # a typo
        await runner.check_sources()
        await runner.check_sources()
        [problem] = api.sent(FORUM)[1:]
        assert "sources.yaml has a problem" in problem["text"]
        assert problem["message_thread_id"] == papers
        [private] = api.sent(CHAT)
        assert "sources.yaml has a problem" in private["text"]
        assert "message_thread_id" not in private
        api.close_topic(FORUM, papers)
        touch(path, good.replace("08:00", "09:00"))
        await runner.check_sources()
        await runner.check_sources()
        [fixed] = api.sent(FORUM)[2:]
        assert "valid again" in fixed["text"] and "message_thread_id" not in fixed
        assert "valid again" in api.sent(CHAT)[-1]["text"]


async def test_an_x_handle_looked_up_while_the_database_is_busy_stalls_no_chat_and_is_kept(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, corpus: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The X collector keeps a handle's user id in the store's meta table: that write, made on
    the event loop, froze the bot while another connection held the database. Now it is kept
    with the collection and written with the source's outcome on the collection thread: /help
    is answered meanwhile, and the next run does not look the handle up again."""
    from .support import x_api
    from .test_bot import HeldDatabase, ask
    from .test_x import API, TOKEN, recorded

    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    path = write_sources(tmp_path / "sources.yaml")
    path.write_text(path.read_text() + "people:\n  - name: Twitter\n    x: Twitter\n")
    user = recorded(corpus, "test_client_get_user__0__GET.json")
    page = recorded(corpus, "test_client_get_users_tweets__0__GET.json")
    lookups = f"{API}/users/by/username/Twitter"
    clock = Clock(SLOT - timedelta(hours=1))
    async with running(path, feedbot_env, clock, api) as runner:
        with x_api() as rsps:
            rsps.get(lookups, json=user)
            rsps.get(f"{API}/users/783214/tweets", json=page)
            with HeldDatabase(feedbot_env, seconds=5) as held:
                collecting = asyncio.create_task(runner.collect_source("Twitter/x"))
                await eventually(lambda: len(rsps.calls) == 2)
                await asyncio.sleep(0.3)  # the user id and the posts wait for the database
                [helptext] = await ask(api, "/help")
                answered = time.monotonic()
                assert not collecting.done()
            assert "/digest" in helptext["text"] and answered < held.released_at
            await asyncio.wait_for(collecting, 10)
        assert await runner.in_db(Store.get_meta, "x:user:twitter") == "783214"
        state = await runner.in_db(Store.source_state, "Twitter/x")
        assert state.items == 2 and state.cursor == page["meta"]["newest_id"]
        clock.advance(hours=7)
        with x_api() as rsps:  # an unexpected lookup would fail the test
            rsps.get(f"{API}/users/783214/tweets", json={"meta": {"result_count": 0}})
            await runner.collect_source("Twitter/x")
            assert [c.path for c in rsps.calls] == ["/2/users/783214/tweets"]
        assert (await runner.in_db(Store.source_state, "Twitter/x")).failures == 0


async def test_a_source_the_database_refuses_is_a_warning_and_collected_again(
        server: LocalServer, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A database error while recording a source (here SQLite refusing its rows) is one
    WARNING naming it, no traceback; nothing of it is kept, so the next collection gets its
    items in full (no validators were saved to turn them into a 304)."""
    import sqlite3

    url = server.add("/feed.xml", body=atom_feed(feed_entries(3)), etag='"v1"')
    sources = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    clock = Clock(SLOT - timedelta(hours=1))
    async with running(sources, feedbot_env, clock) as runner:
        con = sqlite3.connect(feedbot_env / "feedbot.db")
        con.execute("CREATE TRIGGER refuse BEFORE INSERT ON item_sources BEGIN "
                    "SELECT RAISE(ABORT, 'damaged row'); END")
        con.commit()
        caplog.set_level("INFO", logger="feedbot.runner")
        await runner.collect_source("Test blog")
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING
                     and "Test blog" in r.getMessage()]
        assert "Test blog: error: could not be recorded (IntegrityError: damaged row)" in \
            warning.getMessage()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert (await runner.in_db(Store.source_state, "Test blog")).etag == ""
        con.execute("DROP TRIGGER refuse")
        con.commit()
        con.close()
        clock.advance(hours=2)
        await runner.collect_source("Test blog")
        state = await runner.in_db(Store.source_state, "Test blog")
        assert state.items == 3 and state.etag == '"v1"'
        assert "if-none-match" not in server.hits("/feed.xml")[-1].headers


@pytest.mark.parametrize(("status", "said"), [(502, "Bad Gateway (502)"),
                                              (200, "Invalid server response")])
async def test_a_bot_api_url_answering_html_is_one_short_line_per_try_and_a_stop_is_quiet(
        server: LocalServer, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture, status: int, said: str) -> None:
    """FEEDBOT_TELEGRAM_API_URL naming something that is no Bot API (or a proxy's error page):
    each try logged python-telegram-bot's ERROR with a traceback and the whole HTML page, then
    feedbot's warning with the page again as bytes; and a stop during the tries was followed by
    "feedbot is running"."""
    from feedbot.runner import Runner, load_settings

    from .support import fake_embedder

    page = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>" + b"<p>nginx</p>" * 50 \
        + b"</body></html>"
    server.add(f"/bot{TOKEN}/getMe", status=status, body=page, content_type="text/html")
    caplog.set_level(logging.INFO)
    sources = write_sources(tmp_path / "sources.yaml", chats=())
    # with credentials (a proxy's): never shown
    base = server.base.replace("http://", "http://proxy:s3cret@")
    runner = Runner(load_settings(sources), home=feedbot_env, sources=sources,
                    embedder=fake_embedder(), token=TOKEN, api_url=base,
                    options=options(), clock=Clock(SLOT))
    task = asyncio.create_task(runner.run_forever(handle_signals=False))
    await eventually(lambda: "cannot reach the Telegram Bot API" in caplog.text)
    runner.request_stop()
    await asyncio.wait_for(task, 10)
    [tried] = [r for r in caplog.records if "cannot reach the Telegram Bot API" in r.getMessage()]
    assert tried.getMessage() == (
        f"cannot reach the Telegram Bot API ({said}, and the answer from "
        f"{base.replace('s3cret', '***')} is not the Bot API's JSON (is "
        "FEEDBOT_TELEGRAM_API_URL right?)); retrying in 1s")
    assert "s3cret" not in caplog.text
    assert "nginx" not in caplog.text and "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "feedbot is running" not in caplog.text


@pytest.mark.parametrize("fail", [{"status": 502}, {"retry_after": 1}])
async def test_a_bot_api_that_fails_once_as_polling_starts_is_tried_again(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture, fail: dict[str, int]) -> None:
    """Starting to poll, python-telegram-bot first drops any webhook (deleteWebhook), once:
    a 502 or a flood wait there, just after getMe had worked, stopped `feedbot run` with a
    traceback, and no digest went out until someone started it again. Now it is one warning,
    the start is tried again, and the bot answers."""
    api.fail("deleteWebhook", **fail)
    caplog.set_level(logging.INFO)
    sources = write_sources(tmp_path / "sources.yaml")
    async with running(sources, feedbot_env, Clock(SLOT - timedelta(hours=1)), api) as runner:
        assert len(api.calls_to("deleteWebhook")) == 2 and len(api.calls_to("getMe")) == 1
        assert runner.jobs.next_run(DIGEST_JOB) == SLOT
        api.command(CHAT, "/help")
        await eventually(lambda: len(api.sent(CHAT)) == 1)
    [tried] = [r for r in caplog.records if "cannot reach the Telegram Bot API" in r.getMessage()]
    assert tried.levelno == logging.WARNING and "retrying in 1s" in tried.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_mended_feed_url_is_collected_soon_not_when_the_old_ones_back_off_ends(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """A blog URL with a typo failed four times; mended in sources.yaml under `feedbot run`,
    the new URL was not asked for until the old one's back-off (or Retry-After) ended, and
    `feedbot sources` showed the old error meanwhile."""
    bad = server.add("/typo.xml", status=404, content_type="text/html", body=b"<p>no</p>",
                     headers={"Retry-After": "7200"})
    good = server.add("/feed.xml", body=atom_feed(feed_entries(2)))
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Blog", bad),))
    clock = Clock(SLOT)
    async with running(path, feedbot_env, clock) as runner:
        for _ in range(4):
            await runner.collect_source("Blog")
        assert runner.jobs.next_run("collect:Blog") >= clock() + timedelta(hours=1)
        touch(path, path.read_text().replace(bad, good))
        await runner.check_sources()
        await runner.check_sources()
        assert runner.jobs.next_run("collect:Blog") <= clock() + timedelta(minutes=5)
        await runner.collect_source("Blog")  # as the job does then
        assert len(server.hits("/feed.xml")) == 1
        with Store.open(feedbot_env) as store:
            state = store.source_state("Blog")
            assert (state.failures, state.retry_after, state.items) == (0, None, 2)


async def test_a_source_another_process_just_collected_is_not_fetched_again(
        server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """`feedbot digest` typed as `feedbot run` starts collects every due source; the run then
    fetched each again within the minute."""
    url = server.add("/feed.xml", body=atom_feed(feed_entries(2)))
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Blog", url),))
    clock = Clock(SLOT)
    async with running(path, feedbot_env, clock) as runner:
        await runner.collect_source("Blog")
        assert len(server.hits("/feed.xml")) == 1
        clock.advance(hours=6)  # due again; another process collects it first
        with Store.open(feedbot_env) as store:
            store.record_success("Blog", clock())
        clock.advance(seconds=40)
        await runner.collect_source("Blog")
        assert len(server.hits("/feed.xml")) == 1
        assert runner.jobs.next_run("collect:Blog") >= clock() + timedelta(hours=5)
        clock.advance(hours=6)  # its own next collection fetches, as before
        await runner.collect_source("Blog")
        assert len(server.hits("/feed.xml")) == 2


async def test_a_file_mended_by_feedbots_own_edit_says_it_is_valid_again(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path) -> None:
    """A hand edit broke the stage id (⚠️ sent); `/stage set nlp` wrote a good one and loaded
    it, but no ✅ came, until some later, unrelated edit."""
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Blog", "http://127.0.0.1:9/a"),))
    good = path.read_text()
    clock = Clock(SLOT - timedelta(hours=3))
    async with running(sources=path, home=feedbot_env, clock=clock, api=api) as runner:
        await runner.check_sources()
        touch(path, good.replace("stage: ", "stage: nlpp  # was ", 1))
        await runner.check_sources()
        await runner.check_sources()
        assert "sources.yaml has a problem" in api.sent(CHAT)[-1]["text"]
        touch(path, good)  # what `/stage set` writes, then loads at once
        await runner.reload_now()
        assert "valid again" in api.sent(CHAT)[-1]["text"]
        await runner.check_sources()
        await runner.check_sources()
        assert sum("valid again" in m["text"] for m in api.sent(CHAT)) == 1


async def test_follow_from_telegram_never_shows_a_blogs_password(
        tmp_path: Path, feedbot_env: Path) -> None:
    path = write_sources(tmp_path / "sources.yaml")
    url = "https://bob:hunter2@bob.example.org/feed.xml"
    async with running(path, feedbot_env, Clock(SLOT)) as runner:
        answers = [await runner.follow(["Bob", "--blog", url, "--no-check"]),
                   await runner.follow(["Bob", "--blog", url, "--no-check"]),
                   await runner.follow(["Bo", "--blog", url, "--no-check"]),
                   await runner.unfollow("Bob/blog")]
    assert all("hunter2" not in a for a in answers), answers
    assert any("bob:***@" in a for a in answers), answers


async def test_a_digest_sent_by_a_clock_set_ahead_does_not_skip_the_days_until_then(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A Raspberry Pi booted a month ahead sends that day's digest; once the clock is set
    right, the digests of the month between go out each day, with a warning that says why."""
    url = server.add("/feed.xml", body=atom_feed(feed_entries(3)))
    sources = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    clock = Clock(SLOT + timedelta(days=30))
    async with running(sources, feedbot_env, clock, api) as runner:
        await runner.collect_source("Test blog")
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 1  # the day a month ahead
        server.add("/feed.xml", body=atom_feed(feed_entries(6)))
        clock.t = SLOT  # set right
        await runner.collect_source("Test blog")
        with caplog.at_level(logging.WARNING, logger="feedbot.runner"):
            await runner.digest_tick()
            await runner.digest_tick()
        assert len(api.sent(CHAT)) == 2
        warned = [r.getMessage() for r in caplog.records if "a day still to come" in r.getMessage()]
        assert len(warned) == 1 and "2026-12-20" in warned[0] and "2026-11-20" in warned[0]
        clock.t = SLOT + timedelta(days=1)
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 3  # the day after too


async def test_a_clock_set_back_while_running_arms_the_jobs_by_the_right_time(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """A machine that starts with its clock a day ahead (a dual-boot PC whose hardware clock
    keeps local time), set right by NTP minutes later: the digest, the collections and the
    prune stayed armed by the wrong clock, a day late, until feedbot was restarted."""
    url = server.add("/feed.xml", body=atom_feed(feed_entries(3)))
    sources = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    right = SLOT - timedelta(hours=1)
    clock = Clock(right + timedelta(days=1))
    async with running(sources, feedbot_env, clock, api, clock_check=0.05) as runner:
        await runner.collect_source("Test blog")
        assert runner.jobs.next_run(DIGEST_JOB) == SLOT + timedelta(days=1)
        assert runner.jobs.next_run(PRUNE_JOB) > clock()
        clock.t = right  # set right
        await eventually(lambda: runner.jobs.next_run(DIGEST_JOB) == SLOT)
        assert runner.jobs.next_run(FRESH_JOB) == SLOT - FRESH_LEAD
        assert runner.jobs.next_run("collect:Test blog") <= right + timedelta(minutes=5)
        assert runner.jobs.next_run(PRUNE_JOB) <= right + timedelta(minutes=10)


async def test_a_later_digest_time_set_after_todays_digest_is_armed_for_tomorrow(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """One digest a day: today's went out at 08:00, and 18:00 set at noon is tomorrow's, which
    is what the job and the log say (they said today's 18:00, when nothing was sent)."""
    seed_items(feedbot_env, SLOT, 3)
    path = write_sources(tmp_path / "sources.yaml")
    clock = Clock(SLOT)
    async with running(sources=path, home=feedbot_env, clock=clock, api=api) as runner:
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 1
        clock.t = SLOT + timedelta(hours=4)
        touch(path, path.read_text().replace('"08:00"', '"18:00"'))
        with caplog.at_level(logging.INFO, logger="feedbot.runner"):
            await runner.check_sources()
            await runner.check_sources()
        tomorrow = datetime(2026, 11, 21, 17, tzinfo=UTC)  # 18:00 Berlin
        assert runner.jobs.next_run(DIGEST_JOB) == tomorrow
        [line] = [r.getMessage() for r in caplog.records if "digest time is now" in r.getMessage()]
        assert "2026-11-21 17:00" in line
        clock.t = datetime(2026, 11, 20, 17, tzinfo=UTC)
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 1  # as before: not twice today


async def test_no_collection_is_brought_forward_for_a_digest_that_will_not_be_sent(
        api: FakeBotAPI, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """Today's digest went out at 08:00, and 18:00 set at noon is tomorrow's: the collection
    before the digest is armed for tomorrow's too. It was armed for today's 17:40, and brought
    forward the collections of every source for a digest that was not sent."""
    seed_items(feedbot_env, SLOT, 3)
    url = server.add("/feed.xml", body=atom_feed(feed_entries(2)))
    path = write_sources(tmp_path / "sources.yaml", blogs=(("Test blog", url),))
    clock = Clock(SLOT)
    async with running(sources=path, home=feedbot_env, clock=clock, api=api) as runner:
        await runner.digest_tick()
        assert len(api.sent(CHAT)) == 1
        clock.t = SLOT + timedelta(hours=4, minutes=30)
        await runner.collect_source("Test blog")  # next at 18:30 (+ jitter), after 18:00
        touch(path, path.read_text().replace('"08:00"', '"18:00"'))
        await runner.check_sources()
        await runner.check_sources()
        today, tomorrow = (datetime(2026, 11, d, 17, tzinfo=UTC) for d in (20, 21))
        assert runner.jobs.next_run(DIGEST_JOB) == tomorrow
        assert runner.jobs.next_run(FRESH_JOB) == tomorrow - FRESH_LEAD
        before = runner.jobs.next_run("collect:Test blog")
        assert before > today
        clock.t = today - FRESH_LEAD  # called then all the same: nothing to bring forward
        assert runner.collect_before_digest() == []
        assert runner.jobs.next_run("collect:Test blog") == before


def test_every_collector_says_no_connection_as_the_late_digest_looks_for_it() -> None:
    """A late digest collects its overdue sources once more when none could connect (the
    network not up yet after a wake); it tells that by their errors' words. X's "cannot reach
    the X API" was not among them: with an X source overdue, the digest never waited."""
    import httpx
    import requests

    from feedbot.collectors import arxiv_api, x
    from feedbot.http import _fetch_error
    from feedbot.runner import NO_CONNECTION

    url = "https://feeds.example.org/rss"
    said = [str(_fetch_error(httpx.ConnectError("[Errno -2] Name or service not known"), url,
                             60.0)),
            str(_fetch_error(httpx.ConnectError("[Errno 111] Connection refused"), url, 60.0)),
            arxiv_api.describe_error(requests.ConnectionError("no route")),
            str(x.describe_error(requests.ConnectionError("no route"), datetime.now(UTC)))]
    assert [s.startswith(NO_CONNECTION) for s in said] == [True] * 4, said
    # and what is no want of a network is not taken for one
    assert not str(_fetch_error(httpx.ReadTimeout("slow"), url, 60.0)).startswith(NO_CONNECTION)
