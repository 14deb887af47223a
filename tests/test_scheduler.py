"""Scheduling with a controllable clock: the digest at the learner's local time across DST
changes (skipped and repeated times included), once after a restart inside the grace period,
never twice; collection times with backoff and jitter; the APScheduler wrapper."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from feedbot.scheduler import (
    FRESH_LEAD,
    Jobs,
    after_run_floor,
    collect_before_digest,
    digest_slot,
    due_digest_day,
    next_collect_time,
    next_digest_time,
    next_prune_time,
    sent_on_a_day_to_come,
)
from feedbot.store import SourceState

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"
GRACE = timedelta(hours=6)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def simulate(start: datetime, end: datetime, hhmm: str, tz: str, *,
             down: tuple[datetime, datetime] | None = None,
             step: timedelta = timedelta(minutes=5)) -> list[tuple[datetime, date]]:
    """Tick a fake clock from start to end (skipping `down`, when the process was not running);
    return every (time, day) a digest went out. `last_sent` persists like the store's meta."""
    sent: list[tuple[datetime, date]] = []
    last: date | None = None
    now = start
    while now < end:
        if not (down and down[0] <= now < down[1]):
            day = due_digest_day(now, hhmm, tz, last, GRACE)
            if day is not None:
                sent.append((now, day))
                last = day
        now += step
    return sent


@pytest.mark.parametrize(("now", "tz", "expected"), [
    # Europe/Berlin springs forward on 2026-03-29: 08:00 is 07:00Z before and 06:00Z after
    (utc(2026, 3, 27, 12), BERLIN, utc(2026, 3, 28, 7)),
    (utc(2026, 3, 28, 12), BERLIN, utc(2026, 3, 29, 6)),
    # ... and falls back on 2026-10-25
    (utc(2026, 10, 24, 12), BERLIN, utc(2026, 10, 25, 7)),
    (utc(2026, 10, 23, 12), BERLIN, utc(2026, 10, 24, 6)),
    # America/New_York: 2026-03-08 and 2026-11-01
    (utc(2026, 3, 7, 18), NEW_YORK, utc(2026, 3, 8, 12)),
    (utc(2026, 10, 31, 18), NEW_YORK, utc(2026, 11, 1, 13)),
    # exactly at the slot: the next one is tomorrow's
    (utc(2026, 6, 1, 6), BERLIN, utc(2026, 6, 2, 6)),
])
def test_next_digest_time_is_local_time_across_dst(now: datetime, tz: str,
                                                   expected: datetime) -> None:
    assert next_digest_time(now, "08:00", tz) == expected


def test_daily_digest_fires_at_local_time_every_day_across_both_changes() -> None:
    for start in (utc(2026, 3, 27), utc(2026, 10, 23)):
        sent = simulate(start, start + timedelta(days=4), "08:00", BERLIN)
        days = [d for _, d in sent]
        assert days == sorted(set(days)) and len(days) == 4  # one a day, never twice
        for when, day in sent:
            assert when == digest_slot(day, "08:00", BERLIN)
            local = when.astimezone(ZoneInfo(BERLIN))
            assert (local.hour, local.minute) == (8, 0)


def test_a_time_skipped_by_spring_forward_fires_once_after_the_gap() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00 CET → 03:00 CEST)
    assert digest_slot(date(2026, 3, 29), "02:30", BERLIN) == utc(2026, 3, 29, 1, 30)  # 03:30
    sent = simulate(utc(2026, 3, 28), utc(2026, 3, 31), "02:30", BERLIN)
    assert [d for _, d in sent] == [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]
    assert sent[1][0] == utc(2026, 3, 29, 1, 30)


def test_a_time_repeated_by_fall_back_fires_once_at_the_first() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25: 00:30Z (CEST) and 01:30Z (CET)
    sent = simulate(utc(2026, 10, 24), utc(2026, 10, 27), "02:30", BERLIN)
    assert [d for _, d in sent] == [date(2026, 10, 24), date(2026, 10, 25), date(2026, 10, 26)]
    assert sent[1][0] == utc(2026, 10, 25, 0, 30)


def test_restart_inside_the_grace_period_sends_the_missed_digest_once() -> None:
    slot = utc(2026, 3, 29, 6)  # 08:00 CEST
    sent = simulate(utc(2026, 3, 29), utc(2026, 3, 29, 23), "08:00", BERLIN,
                    down=(utc(2026, 3, 29, 5), slot + timedelta(hours=2)))
    assert sent == [(slot + timedelta(hours=2), date(2026, 3, 29))]


def test_restart_after_the_grace_period_skips_that_day() -> None:
    slot = utc(2026, 3, 29, 6)
    sent = simulate(utc(2026, 3, 29), utc(2026, 3, 30, 12), "08:00", BERLIN,
                    down=(utc(2026, 3, 29, 5), slot + GRACE + timedelta(minutes=5)))
    assert [d for _, d in sent] == [date(2026, 3, 30)]


def test_restart_after_it_was_sent_sends_nothing() -> None:
    slot = utc(2026, 3, 29, 6)
    assert due_digest_day(slot, "08:00", BERLIN, None, GRACE) == date(2026, 3, 29)
    for later in (slot, slot + timedelta(hours=1), slot + timedelta(hours=5, minutes=59)):
        assert due_digest_day(later, "08:00", BERLIN, date(2026, 3, 29), GRACE) is None
    assert due_digest_day(slot - timedelta(seconds=1), "08:00", BERLIN, None, GRACE) is None


def test_a_late_evening_digest_missed_is_sent_after_midnight_within_grace() -> None:
    # 23:30 Berlin on 2026-06-01 is 21:30Z; at 01:00 local the next day it is 1.5 h late
    now = utc(2026, 6, 1, 23)
    assert due_digest_day(now, "23:30", BERLIN, date(2026, 5, 31), GRACE) == date(2026, 6, 1)


def test_a_grace_of_zero_still_sends_the_digest_on_time() -> None:
    """`feedbot run --grace 0s`: no missed digests, but today's at its time all the same."""
    slot = utc(2026, 3, 29, 6)
    zero = timedelta(0)
    assert due_digest_day(slot, "08:00", BERLIN, None, zero) == date(2026, 3, 29)
    assert due_digest_day(slot + timedelta(minutes=2), "08:00", BERLIN, None,
                          zero) == date(2026, 3, 29)  # a send retried on the next tick
    assert due_digest_day(slot + timedelta(hours=1), "08:00", BERLIN, None, zero) is None
    sent = simulate(utc(2026, 3, 28), utc(2026, 3, 31), "08:00", BERLIN, step=timedelta(
        seconds=40))
    assert [d for _, d in sent] == [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]


NOW = utc(2026, 11, 20, 12)
HOUR = 3600.0


@pytest.mark.parametrize(
    ("now", "hhmm", "tz", "expected"),
    [
        (utc(2026, 11, 20, 12), "08:00", BERLIN, utc(2026, 11, 21, 3)),  # 04:00 CET
        (utc(2026, 11, 20, 2), "08:00", BERLIN, utc(2026, 11, 20, 3)),
        (utc(2026, 3, 28, 12), "08:00", BERLIN, utc(2026, 3, 29, 2)),  # 04:00 CEST
        (utc(2026, 11, 20, 12), "02:30", NEW_YORK, utc(2026, 11, 21, 3, 30)),  # 22:30 EST
    ],
)
def test_the_daily_prune_comes_four_hours_before_the_digest(now: datetime, hhmm: str, tz: str,
                                                            expected: datetime) -> None:
    assert next_prune_time(now, hhmm, tz) == expected


def test_a_never_collected_source_runs_soon_but_spread_out() -> None:
    times = {next_collect_time(SourceState("s"), 6 * HOUR, NOW, rng=random.Random(i))
             for i in range(50)}
    assert all(NOW <= t <= NOW + timedelta(seconds=120) for t in times)
    assert len(times) > 40  # jitter: sources are not all hit at once


def test_a_fresh_source_waits_for_its_interval_plus_jitter() -> None:
    state = SourceState("s", last_attempt=NOW - timedelta(hours=1), last_success=NOW)
    t = next_collect_time(state, 6 * HOUR, NOW, rng=random.Random(1))
    assert NOW + timedelta(hours=5) <= t <= NOW + timedelta(hours=5, minutes=15)


def test_failures_back_off_and_retry_after_wins() -> None:
    failing = SourceState("s", last_attempt=NOW, failures=2)
    t = next_collect_time(failing, 6 * HOUR, NOW, rng=random.Random(2))
    assert NOW + timedelta(minutes=10) <= t <= NOW + timedelta(minutes=25)
    told = SourceState("s", last_attempt=NOW, failures=1, retry_after=NOW + timedelta(hours=2))
    assert next_collect_time(told, 6 * HOUR, NOW) >= NOW + timedelta(hours=2)


@pytest.mark.parametrize(("case", "expected"), [
    ({}, True),  # collected 5 h ago; next at the digest + 1 h
    ({"last": timedelta(hours=1)}, False),  # collected within a quarter of its interval
    ({"last": timedelta(hours=1, minutes=31)}, True),
    ({"last": None}, True),  # never collected, and not scheduled before the digest
    ({"next": timedelta(minutes=-1)}, False),  # its collection comes before the digest anyway
    ({"next": None}, False),  # being collected now
    ({"interval": 7 * 24 * HOUR}, False),  # weekly stays weekly
    ({"interval": 24 * HOUR}, False),  # a quarter of a day: 6 h, and it was 5 h ago
    ({"interval": 24 * HOUR, "last": timedelta(hours=7)}, True),  # daily is fine
    ({"kind": "x"}, False),  # the X API's quota
    ({"kind": "arxiv"}, True),
    ({"failures": 1}, False),  # its back-off stands
    ({"retry_after": timedelta(hours=2)}, False),  # the server asked to wait
    ({"retry_after": timedelta(hours=-1)}, True),  # …until a time now past
])
def test_a_source_is_collected_before_the_digest_when_it_would_come_after(
        case: dict, expected: bool) -> None:
    slot = NOW + FRESH_LEAD
    last = case.get("last", timedelta(hours=5))
    retry = case.get("retry_after")
    state = SourceState("s", last_attempt=None if last is None else NOW - last,
                        failures=case.get("failures", 0),
                        retry_after=None if retry is None else NOW + retry)
    nxt = case.get("next", timedelta(hours=1))
    assert collect_before_digest(state, case.get("interval", 6 * HOUR), case.get("kind", "feed"),
                                 None if nxt is None else slot + nxt, NOW, slot) is expected


def test_the_floor_after_a_run_prevents_hot_loops() -> None:
    state = SourceState("s")  # e.g. a source that was switched off: its state never changes
    floor = after_run_floor(NOW, 6 * HOUR, ran=False)
    assert next_collect_time(state, 6 * HOUR, NOW, earliest=floor) >= NOW + timedelta(hours=6)
    assert after_run_floor(NOW, 6 * HOUR, ran=True) == NOW + timedelta(seconds=60)


async def test_jobs_run_coroutines_once_and_survive_errors(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    jobs = Jobs()
    jobs.start()
    ran: list[str] = []
    done = asyncio.Event()

    async def ok(tag: str) -> None:
        ran.append(tag)
        done.set()

    async def broken() -> None:
        raise RuntimeError("boom")

    jobs.at("broken", datetime.now(UTC), broken)
    jobs.at("past", datetime.now(UTC) - timedelta(hours=1), ok, "late-but-run")
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.05)
    assert ran == ["late-but-run"]
    assert "job broken failed" in caplog.text
    assert jobs.ids() == set()  # date jobs are gone after they ran
    jobs.at("later", datetime.now(UTC) + timedelta(hours=1), ok, "x")
    assert jobs.next_run("later") is not None and jobs.cancel("later")
    assert not jobs.cancel("later") and jobs.next_run("later") is None
    await jobs.shutdown()


async def test_an_interval_job_never_overlaps_itself() -> None:
    jobs = Jobs()
    jobs.start()
    running, overlaps, runs = 0, 0, 0

    async def slow() -> None:
        nonlocal running, overlaps, runs
        running += 1
        runs += 1
        overlaps += running > 1
        await asyncio.sleep(0.15)
        running -= 1

    jobs.every("slow", 0.05, slow)
    await asyncio.sleep(0.5)
    await jobs.shutdown()
    assert runs >= 2 and overlaps == 0


async def test_an_overrunning_interval_job_is_skipped_without_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    """The digest tick waiting out a flood wait overruns its minute: the runs meanwhile are
    skipped without a WARNING line each (an operator would think something is wrong)."""
    jobs = Jobs()
    jobs.start()
    running, overlaps, runs = 0, 0, 0
    release = asyncio.Event()

    async def stuck() -> None:
        nonlocal running, overlaps, runs
        running += 1
        runs += 1
        overlaps += running > 1
        await release.wait()
        running -= 1

    jobs.every("tick", 0.02, stuck)
    await asyncio.sleep(0.3)  # about fifteen runs come due meanwhile
    release.set()
    for _ in range(250):  # and it runs again once the long run is over
        if runs >= 2:
            break
        await asyncio.sleep(0.02)
    await jobs.shutdown()
    assert runs >= 2 and overlaps == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []


async def test_a_clock_set_back_stalls_no_job(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """The system clock set back an hour (it was ahead, and NTP set it right): APScheduler
    counts an interval job's next run from its last one by the wall clock, so the digest tick
    and the watch of sources.yaml did not run for that hour, and the jobs armed by the wrong
    clock came an hour late. Now the interval jobs go on, and the others are armed again."""
    import apscheduler.schedulers.base

    back = [0.0]  # seconds the system clock is set back by

    class SystemClock(datetime):  # the wall clock as APScheduler reads it
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) - timedelta(seconds=back[0])

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", SystemClock)
    runs: list[float] = []
    armed_again: list[float] = []

    async def tick() -> None:
        runs.append(back[0])

    jobs = Jobs()
    jobs.start()
    jobs.watch_clock(lambda: armed_again.append(back[0]), every=0.05,
                     wall=lambda: time.time() - back[0])
    jobs.every("tick", 0.1, tick)
    try:
        await asyncio.sleep(0.35)
        assert runs and armed_again == []
        back[0] = 3600.0
        await asyncio.sleep(0.5)
    finally:
        await jobs.shutdown()
    assert runs.count(3600.0) >= 3 and armed_again == [3600.0]
    assert "the system clock was set back by 3600s" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_paused_jobs_are_scheduled_but_never_fire() -> None:
    jobs = Jobs(run=False)
    jobs.start()
    fired: list[int] = []

    async def f() -> None:
        fired.append(1)

    when = datetime.now(UTC) - timedelta(minutes=1)
    jobs.at("x", when, f)
    await asyncio.sleep(0.1)
    assert fired == [] and jobs.next_run("x") == when
    await jobs.shutdown()


async def test_shutdown_cancels_jobs_in_flight_promptly_and_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    jobs = Jobs()
    jobs.start()
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)  # a request that does not answer
        finally:
            cleaned_up.set()

    jobs.at("stuck", datetime.now(UTC), stuck)
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(jobs.shutdown(), 2)  # cancels, does not wait the hour
    assert cleaned_up.is_set()
    assert [r for r in caplog.records if r.levelno >= 40] == []  # a stop is not an error
    assert "job stuck cancelled" in caplog.text


@pytest.mark.parametrize("turns", range(4))
async def test_a_job_submitted_just_before_shutdown_is_not_an_error(
        turns: int, caplog: pytest.LogCaptureFixture) -> None:
    jobs = Jobs()
    jobs.start()

    async def stuck() -> None:
        await asyncio.sleep(3600)

    jobs.at("now", datetime.now(UTC), stuck)
    for _ in range(turns):  # shut down at each point of the job's submission and start
        await asyncio.sleep(0)
    await asyncio.wait_for(jobs.shutdown(), 2)
    await asyncio.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []


def test_a_digest_recorded_on_a_day_to_come_does_not_hold_back_todays() -> None:
    """The clock was a month ahead when a digest went out, and is right again: today's digest
    goes out, not the next one after that month."""
    slot = utc(2026, 3, 29, 6)
    ahead = date(2026, 4, 28)
    assert sent_on_a_day_to_come(ahead, slot, BERLIN)
    assert due_digest_day(slot, "08:00", BERLIN, ahead, GRACE) == date(2026, 3, 29)
    assert not sent_on_a_day_to_come(date(2026, 3, 29), slot, BERLIN)
    assert due_digest_day(slot, "08:00", BERLIN, date(2026, 3, 29), GRACE) is None
