"""When things run: the daily digest in the learner's time zone, the next collection of each
source, and a thin wrapper around APScheduler 3's `AsyncIOScheduler` on the bot's event loop.

The time arithmetic is pure (`now` in, datetimes out), so it is tested across DST changes without
a clock. Rules: a digest time that a spring-forward change skips (02:30 in Europe/Berlin on the
last Sunday of March) fires after the gap, at 03:30; a time that a fall-back change repeats fires
at its first occurrence only. This module never collects, ranks or sends: the runner hands it
coroutine functions to call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time as wallclock
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .collect import jitter, next_due
from .store import SourceState

log = logging.getLogger(__name__)

STARTUP_SPREAD = 120.0  # seconds over which sources that are due now are spread
MAX_SPREAD = 900.0  # most a later collection is pushed back by jitter
MIN_GAP = 60.0  # never collect one source again sooner than this
# The wall clock moved back by more than this between two looks (`Jobs.watch_clock`) was set
# back; NTP's gradual corrections are far smaller.
CLOCK_STEP = 60.0
# However short the grace period, a digest this late is not "missed": the job fires a moment
# after its time, and a send that failed at once is retried on the next ticks.
ON_TIME = timedelta(minutes=15)


def parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def digest_slot(day: date, hhmm: str, tz: str) -> datetime:
    """The UTC instant of the digest on the local calendar `day`.

    `fold=0` does what the module docstring promises: a skipped time lands after the gap and a
    repeated time resolves to its first occurrence.
    """
    local = datetime.combine(day, parse_hhmm(hhmm), tzinfo=ZoneInfo(tz))
    return local.astimezone(UTC)


def local_day(now: datetime, tz: str) -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def next_digest_time(now: datetime, hhmm: str, tz: str) -> datetime:
    """The first digest instant strictly after `now` (UTC)."""
    today = local_day(now, tz)
    for offset in range(-1, 3):
        slot = digest_slot(today + timedelta(days=offset), hhmm, tz)
        if slot > now:
            return slot
    raise AssertionError("unreachable: a digest slot exists within two days")


def digest_grace(grace: timedelta) -> timedelta:
    """How long after its time a missed digest is still sent: `grace`, at least `ON_TIME`."""
    return max(grace, ON_TIME)


def due_digest_day(now: datetime, hhmm: str, tz: str, last_sent: date | None,
                   grace: timedelta) -> date | None:
    """The local day whose digest should go out now, or None.

    Only the latest slot at or before `now` counts: it must be less than `grace` (at least
    `ON_TIME`) ago and not sent yet. So a restart inside the grace period sends a missed digest
    once, a restart after it sends nothing, and an older day is never sent after a newer one.
    A `last_sent` day still to come was recorded by a clock set ahead (and set right since):
    it does not count, or every digest until that day would be skipped
    (`sent_on_a_day_to_come` says so).
    """
    grace = digest_grace(grace)
    today = local_day(now, tz)
    if sent_on_a_day_to_come(last_sent, now, tz):
        last_sent = None
    for back in range(3):
        day = today - timedelta(days=back)
        slot = digest_slot(day, hhmm, tz)
        if slot > now:
            continue
        if now - slot >= grace or (last_sent is not None and last_sent >= day):
            return None
        return day
    return None


def sent_on_a_day_to_come(last_sent: date | None, now: datetime, tz: str) -> bool:
    """Whether the last digest is recorded for a local day after today: only a clock that was
    set ahead when it was sent (or a store copied from such a machine) records that."""
    return last_sent is not None and last_sent > local_day(now, tz)


# The daily prune runs this long before the digest (04:00 for an 08:00 digest): a quiet time,
# when the learner is not waiting for the bot, and the digest that follows reads a smaller file.
PRUNE_BEFORE_DIGEST = timedelta(hours=4)


def next_prune_time(now: datetime, digest_hhmm: str, tz: str) -> datetime:
    """The first instant strictly after `now` of the daily prune: `PRUNE_BEFORE_DIGEST` before
    the local digest time, by the clock on the wall (DST-safe like the digest)."""
    t = parse_hhmm(digest_hhmm)
    minutes = (t.hour * 60 + t.minute - int(PRUNE_BEFORE_DIGEST.total_seconds()) // 60) % 1440
    return next_digest_time(now, f"{minutes // 60:02d}:{minutes % 60:02d}", tz)


def next_collect_time(state: SourceState, interval: float, now: datetime, *,
                      earliest: datetime | None = None,
                      rng: random.Random | None = None) -> datetime:
    """When to collect a source next: when it is due (interval, or backoff after failures, or
    the server's Retry-After), plus a random delay so sources are not all hit at once."""
    due = next_due(state, interval, now)
    floor = max(earliest or now, now)
    if due is None or due <= floor:
        spread = min(interval * 0.05, STARTUP_SPREAD)
        base = floor
    else:
        spread = min(interval * 0.05, MAX_SPREAD)
        base = due
    return base + timedelta(seconds=abs(jitter(spread, 1.0, rng)))


# Before each digest, every source whose next collection would come after it is collected
# (within FRESH_SPREAD seconds from FRESH_LEAD before the digest), so that the digest has what
# was published in the hours before it; see `collect_before_digest`.
FRESH_LEAD = timedelta(minutes=20)
FRESH_SPREAD = 300.0
DAY = 86400.0


def collect_before_digest(state: SourceState, interval: float, kind: str,
                          next_run: datetime | None, now: datetime, slot: datetime) -> bool:
    """Whether to collect a source now, ahead of the digest at `slot`: its next collection
    (`next_run`; None: running now, or not scheduled) comes after the digest; it is collected
    at least daily (a weekly source stays weekly); it is neither failing (its back-off stands)
    nor asked by its server to wait; and its last try is older than a quarter of its interval
    (collected an hour before the digest, it is fresh enough). Not for X accounts: the X API
    counts every request against a monthly quota. One extra request a day at most: the next
    collections then count from this one."""
    if kind == "x" or next_run is None or next_run <= slot or interval > DAY:
        return False
    if state.failures or (state.retry_after is not None and state.retry_after > now):
        return False
    last = state.last_attempt
    return last is None or now - last >= timedelta(seconds=interval / 4)


def after_run_floor(now: datetime, interval: float, ran: bool) -> datetime:
    """The earliest next run after a job: a full interval when nothing ran (source switched
    off), else a minimum gap so a confused state can never make a hot loop."""
    return now + timedelta(seconds=interval if not ran else min(MIN_GAP, interval))


JobFn = Callable[..., Awaitable[Any]]


class Jobs:
    """The few things feedbot asks of APScheduler: run a coroutine at a time or every N seconds,
    cancel, and say when a job runs next. One instance of a job at a time, late runs coalesced
    and never dropped. `run=False` schedules without ever firing (tests drive jobs by hand)."""

    def __init__(self, run: bool = True) -> None:
        self._run = run
        self._sched = AsyncIOScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clock_watch: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._sched.start(paused=not self._run)

    async def shutdown(self) -> None:
        """Stop firing, cancel jobs in flight and wait for them to unwind (promptly: a job is
        cancelled where it waits, not waited for; see `_wrap` for why that is quiet)."""
        if self._clock_watch is not None:
            self._clock_watch.cancel()
            self._clock_watch = None
        if self._sched.running:
            # Paused at once, it submits no job from here on. Its shutdown (which cancels its
            # tasks) runs on a later turn of the loop, and a job submitted in between would be
            # cancelled before entering `_wrap`: APScheduler would report that as a failure.
            self._sched.pause()
            self._sched.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down via call_soon
        while tasks := [t for t in self._tasks if not t.done()]:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _wrap(self, job_id: str, fn: JobFn) -> JobFn:
        async def run(*args: Any) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await fn(*args)
            except asyncio.CancelledError:
                # Only shutdown cancels a job (`shutdown`, or the loop closing), so a stop is
                # not a failure. The task is APScheduler's, the job its outermost coroutine:
                # ending it normally is safe, and re-raised, APScheduler would log an ERROR
                # with a traceback for every job that was running or waiting.
                log.debug("job %s cancelled: shutting down", job_id)
            except Exception:
                log.exception("job %s failed", job_id)
            finally:
                if task is not None:
                    self._tasks.discard(task)
        return run

    def at(self, job_id: str, when: datetime, fn: JobFn, *args: Any) -> None:
        self._sched.add_job(self._wrap(job_id, fn), "date", run_date=when, args=args, id=job_id,
                            name=job_id, replace_existing=True)

    def every(self, job_id: str, seconds: float, fn: JobFn, *args: Any,
              first: datetime | None = None) -> None:
        """Run `fn` every `seconds`. A run that comes while the last one is still going (a
        digest waiting out Telegram's flood control) is skipped here, quietly: APScheduler
        would log a WARNING for each one."""
        busy = False

        async def once(*a: Any) -> None:
            nonlocal busy
            if busy:
                log.debug("job %s is still running; skipping this run", job_id)
                return
            busy = True
            try:
                await fn(*a)
            finally:
                busy = False

        self._sched.add_job(self._wrap(job_id, once), "interval", seconds=seconds, args=args,
                            id=job_id, name=job_id, replace_existing=True, max_instances=2,
                            next_run_time=first or datetime.now(UTC))

    def watch_clock(self, on_set_back: Callable[[], None], every: float = 5.0,
                    wall: Callable[[], float] = wallclock.time) -> None:
        """Look every `every` seconds (timed by the monotonic clock) whether the wall clock
        `wall` was set back (a clock that was ahead, set right by NTP or by hand). APScheduler
        counts an interval job's next run from its last one on the wall clock: the digest tick
        and the watch of sources.yaml stalled for as long as the clock went back, and the jobs
        armed at times the wrong clock gave came that much late. Then the interval jobs run
        at once, and `on_set_back` arms the others afresh."""
        loop = asyncio.get_running_loop()
        last = wall() - wallclock.monotonic()

        def look() -> None:
            nonlocal last
            offset = wall() - wallclock.monotonic()
            if offset < last - CLOCK_STEP:
                log.warning("the system clock was set back by %.0fs; the scheduled jobs are "
                            "armed again by the clock as it is now", last - offset)
                self._run_intervals_now(datetime.fromtimestamp(wall(), UTC))
                try:
                    on_set_back()
                except Exception:  # the interval jobs at least go on; tried at the next step
                    log.exception("could not arm the jobs again after the clock was set back")
            last = offset
            self._clock_watch = loop.call_later(every, look)

        self._clock_watch = loop.call_later(every, look)

    def _run_intervals_now(self, now: datetime) -> None:
        for job in self._sched.get_jobs():
            if isinstance(job.trigger, IntervalTrigger):
                self._sched.modify_job(job.id, next_run_time=now)

    def cancel(self, job_id: str) -> bool:
        try:
            self._sched.remove_job(job_id)
        except JobLookupError:
            return False
        return True

    def next_run(self, job_id: str) -> datetime | None:
        job = self._sched.get_job(job_id)
        return job.next_run_time if job is not None else None

    def ids(self) -> set[str]:
        return {j.id for j in self._sched.get_jobs()}
