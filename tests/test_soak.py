"""A month of daily use, simulated: a real `Runner` (real APScheduler jobs, a real
python-telegram-bot Application polling the fake Bot API, feeds over real HTTP on 127.0.0.1)
driven through 30 days by a fake clock, across the end of summer time, for a learner in
Berlin (digest at 08:00) and one in New York (at 23:30, after midnight UTC).

Every day the blogs change: new entries come, old ones drop off; one is down for three days
(503 with Retry-After, a holding page, 404), one starts answering 304 (ETag, then
Last-Modified), one changes its entry ids and links, one lists two pinned posts all month
(one undated). The jobs that are due fire in time order, as APScheduler would fire them; the
digest goes out; the learner votes, bookmarks, and reads bookmarks from /later. Once in the
month: Telegram fails the digest's first sends, sources.yaml is edited by hand (a blog
unfollowed, another followed), `/stage next`, `/digest`, a button under a pruned item, a
restart while a button is pressed, a six-day holiday with nothing new, and two days with the
machine off. The daily prune keeps 10 days (`learner.since` is 5).

Invariants checked every day: one digest a day, at its local time and labelled with its local
day (an honest empty one counts); no item ever delivered twice, or stored twice; votes and
bookmarks kept through prunes and restarts (and /later lists the bookmarks); every press
answered once; the database bounded by the retention (items, vectors, deliveries,
tombstones, file size); no blog asked more than a dozen times a day; the 👍/👎 model retrained
after new votes and only then (or, with votes of other stages only, after a new day's items
too), saved, and used. At the end: no ERROR, no unexpected WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import feedbot.learn
from feedbot.items import canonical_url
from feedbot.prune import protected_hashes
from feedbot.roadmap import load_roadmap
from feedbot.runner import TICK_JOB, WATCH_JOB, Runner, load_settings
from feedbot.scheduler import digest_slot
from feedbot.store import Store

from .fake_bot_api import CHAT, TOPICS, Clock, FakeBotAPI, options
from .support import LocalServer, Route, fake_embedder

START = datetime(2026, 10, 12, tzinfo=UTC)  # summer time ends in Berlin on 25 October
DAYS = 30
RETENTION = timedelta(days=10)
SOAK_DIM = 256  # the fake embedder's dimensions (see `entry`)
DOWN = range(8, 11)  # days the "Down" blog answers 503
FROZEN = range(12, 20)  # days the "Etag" blog has nothing new and answers 304
NEW_IDS = 15  # from this day the "Ids" blog gives its entries new ids (same posts)
EDIT_DAY, STAGE_DAY, RESTART_DAY = 14, 16, 20
FLAKY_DAY = 5  # Telegram answers 502 to the day's first five sends
HOLIDAY = range(21, 27)  # nobody posts: by its end, nothing is newer than `since` (5d)
ASLEEP = range(27, 29)  # the machine is off from day 27, 01:00 UTC to day 29, 08:00 UTC
# WARNINGs a month like this one may log (anything else fails the test): the flaky day's
EXPECTED_WARNINGS = (r"^Telegram unreachable", r"^digest to chat 4242 stopped after 0 message")


@pytest.fixture
def seed() -> Iterator[int]:
    """The collections' random delays (`jitter`) come from `random`, so a month is reproduced
    by its seed: printed with a failure, and `SOAK_SEED=N` runs month N again. A new seed
    each run: over runs, the collections fall at other times around the digest."""
    chosen = int(os.environ.get("SOAK_SEED") or random.randrange(2**32))
    state = random.getstate()
    random.seed(chosen)
    print(f"soak seed: {chosen} (SOAK_SEED={chosen} runs this month again)")
    yield chosen
    random.setstate(state)


@pytest.fixture
def api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as a:
        yield a


def day_start(d: int) -> datetime:
    return START + timedelta(days=d)


def entry(feed: str, d: int, k: int, *, guid: str = "", link_suffix: str = "",
          dated: bool = True) -> str:
    """One Atom entry of blog `feed`, published on day `d`; words of its own keep it apart
    from the others for the (fake) embedder: eight of them, in 256 dimensions, keep two posts
    on one topic below the near-duplicate threshold (0.9); with three in 64 dimensions, more
    than half of the posts had a "duplicate", and a digest came up short or not depending on
    when the (jittered) collections ran."""
    topic = TOPICS[(d * 3 + k + len(feed)) % len(TOPICS)]
    slug = f"{feed.lower()}{d}x{k}"
    link = f"https://{feed.lower()}.example.org/posts/{d}-{k}{link_suffix}"
    updated = (f"<updated>{(day_start(d) + timedelta(minutes=10 * k)).isoformat()}</updated>"
               if dated else "")
    return (f"<entry><title>{topic.capitalize()}, part {slug}</title>"
            f'<link href="{link.replace("&", "&amp;")}"/><id>{guid or link}</id>{updated}'
            f"<summary>Notes on {topic}: {' '.join(f'w{slug}{c}' for c in 'abcdefgh')}."
            "</summary></entry>")


def feed(title: str, entries: list[str]) -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{title}</title><id>urn:soak:{title}</id>"
            "<updated>2026-10-12T00:00:00Z</updated>" + "".join(entries) + "</feed>").encode()


def window(name: str, d: int, per_day: int = 1, **kw: Any) -> list[str]:
    """What blog `name` lists on day `d`: its posts of the last four days, newest first."""
    return [entry(name, day, k, **kw) for day in range(d, max(d - 4, -1), -1)
            for k in range(per_day)]


def serve_day(server: LocalServer, d: int) -> None:
    """Every blog as it is on day `d`."""
    if d in HOLIDAY:
        d = HOLIDAY.start - 1
    pinned = [entry("Busy", 0, 9), entry("Busy", 0, 8, dated=False)]  # listed all month
    server.add("/busy.xml", body=feed("Busy", pinned + window("Busy", d, per_day=2)))
    if d in DOWN:  # down in three ways: 503 (come back at noon), a holding page, 404
        page = b"<html><head><title>Down for maintenance</title></head><body>Soon!</body></html>"
        # Retry-After as a date, past by the afternoon: it is then no reason to come back
        # at once (it was: every minute all day). Not in seconds: those count from the wall
        # clock (when the answer came), not from the runner's fake one.
        noon = format_datetime(day_start(d) + timedelta(hours=12), usegmt=True)
        server.add("/down.xml", [
            Route(page, 503, "text/html", headers={"Retry-After": noon}),
            Route(page, 200, "text/html; charset=utf-8"),
            Route(b"not found", 404, "text/plain")][d - DOWN.start])
    else:
        server.add("/down.xml", body=feed("Down", window("Down", d)))
    shown = FROZEN.start if d in FROZEN else d  # then, from FROZEN.stop, Last-Modified only
    server.add("/etag.xml", Route(
        body=feed("Etag", window("Etag", shown)),
        etag=f'"etag-{shown}"' if d in FROZEN else "",
        last_modified=(day_start(shown).strftime("%a, %d %b %Y %H:%M:%S GMT")
                       if d >= FROZEN.stop else "")))
    if d < NEW_IDS:
        ids = [entry("Ids", day, 0, guid=f"urn:uuid:ids-{day}")
               for day in range(d, max(d - 4, -1), -1)]
    else:  # a new blog engine: tag: ids, links with www, a slash and tracking parameters
        ids = [entry("Ids", day, 0, guid=f"tag:ids.example.org,2026:{day}",
                     link_suffix="/?utm_source=rss&utm_medium=feed").replace(
                         "https://ids.", "http://www.ids.")
               for day in range(d, max(d - 4, -1), -1)]
    server.add("/ids.xml", body=feed("Ids", ids))
    server.add("/gone.xml", body=feed("Gone", window("Gone", d)))
    server.add("/new.xml", body=feed("New", window("New", d)))


def blogs_up(d: int) -> list[str]:
    """The blogs followed on day `d` that post that day and answer (so each is collected
    before the digest, which then has their post of the day): not the one down (nor on the
    day it is back: its back-off stands), not the one with nothing new, none on holiday, and
    none the day the machine wakes after the digest time."""
    if d in HOLIDAY or d in ASLEEP or d == ASLEEP.stop:
        return []
    names = ["Busy", "Ids", "New" if d > EDIT_DAY else "Gone"]
    if d not in DOWN and d != DOWN.stop:
        names.append("Down")
    if d not in FROZEN[1:]:
        names.append("Etag")
    return names


def write_soak_sources(path: Path, server: LocalServer, place: tuple[str, str], *,
                       edited: bool = False) -> None:
    blogs = ["Busy", "Down", "Etag", "Ids", "New" if edited else "Gone"]
    tz, at = place
    lines = ["learner:", "  stage: machine-learning", f'  digest_time: "{at}"',
             f"  timezone: {tz}", "  digest_size: 3", "  since: 5d",
             "telegram:", f"  allowed_chats: [{CHAT}]", "retention: {items: 10d}", "blogs:"]
    for name in blogs:
        lines += [f"  - name: {name}", f"    url: {server.url(f'/{name.lower()}.xml')}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rows(msg: dict[str, Any]) -> list[list[dict[str, str]]]:
    return list((msg.get("reply_markup") or {}).get("inline_keyboard", []))


def item_ids(msg: dict[str, Any]) -> list[str]:
    return [row[0]["callback_data"].split(":", 2)[2] for row in rows(msg)]


def message_id(api: FakeBotAPI, msg: dict[str, Any]) -> int:
    return next(m for m, v in api.messages.items() if v.get("_params") is msg)


async def until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


class Month:
    """The simulated month: the runner, what was sent and what the learner did."""

    def __init__(self, api: FakeBotAPI, server: LocalServer, home: Path, sources: Path,
                 place: tuple[str, str]) -> None:
        self.api, self.server, self.home, self.sources = api, server, home, sources
        self.tz, self.at = place
        self.sent_at: dict[int, datetime] = {}  # message id -> the (fake) time it went out
        self.clock = Clock(START)
        self.runner: Runner | None = None
        self.delivered: list[str] = []  # every item id in every digest, in order
        self.digests: dict[int, dict[str, Any]] = {}  # day -> its digest message
        self.votes: dict[str, str] = {}  # item id -> 'up' / 'down', as pressed last
        self.later: set[str] = set()  # bookmarks
        self.answers = 0  # answerCallbackQuery calls expected so far

    async def start(self) -> None:
        self.note_sent()
        self.runner = Runner(load_settings(self.sources), home=self.home, sources=self.sources,
                             embedder=fake_embedder(SOAK_DIM), token=self.api.token,
                             api_url=self.api.url, options=options(), clock=self.clock)
        await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    async def fire(self, job_id: str) -> None:
        """Run a job as APScheduler does: a date job is taken off before it runs (it re-arms
        itself); the interval jobs stay."""
        assert self.runner is not None
        job = self.runner.jobs._sched.get_job(job_id)
        fn, args = job.func, job.args
        if job_id not in (TICK_JOB, WATCH_JOB):
            self.runner.jobs.cancel(job_id)
        await fn(*args)

    async def run_until(self, end: datetime) -> list[str]:
        """Fire every date job due by `end` at its own time, in time order; then the digest
        tick and the sources.yaml watcher once, at `end`."""
        assert self.runner is not None
        fired = []
        for _ in range(200):
            jobs = self.runner.jobs
            due = sorted((t, i) for i in jobs.ids() if i not in (TICK_JOB, WATCH_JOB)
                         and (t := jobs.next_run(i)) is not None and t <= end)
            if not due:
                break
            when, job_id = due[0]
            self.clock.t = max(self.clock.t, when)
            await self.fire(job_id)
            self.note_sent()
            fired.append(job_id)
        else:
            raise AssertionError(f"jobs keep coming due before {end}: {fired[-10:]}")
        self.clock.t = end
        await self.fire(WATCH_JOB)
        await self.fire(TICK_JOB)
        self.note_sent()
        return fired

    def note_sent(self) -> None:
        for mid, m in list(self.api.messages.items()):
            if m.get("_params") is not None:
                self.sent_at.setdefault(mid, self.clock())

    def slot(self, d: int) -> datetime:
        """The digest time that falls in the first ten hours (UTC) of day `d`."""
        for local in (day_start(d).date() - timedelta(days=1), day_start(d).date()):
            at = digest_slot(local, self.at, self.tz)
            if day_start(d) <= at < day_start(d) + timedelta(hours=10):
                return at
        raise AssertionError(f"no digest time in the morning (UTC) of day {d}")

    async def press(self, msg: dict[str, Any], row: int, value: str, wait: bool = True) -> str:
        """The learner presses 👍 ('up'), 👎 ('down') or 🔖 ('later') under item `row`
        (and, with `wait`, sees the answer)."""
        button = {"up": 0, "down": 1, "later": 2}[value]
        data = rows(msg)[row][button]["callback_data"]
        item = data.split(":", 2)[2]
        self.api.press(CHAT, message_id(self.api, msg), data)
        self.answers += 1
        if wait:
            await self.api.wait_for("answerCallbackQuery", self.answers, timeout=10)
        if value == "later":
            self.later.add(item)
        else:
            self.votes[item] = value
            self.later.discard(item)
        return item

    async def ask(self, text: str) -> list[dict[str, Any]]:
        """Send a command; the bot's answer (every message of it)."""
        before = len(self.api.sent(CHAT))
        self.api.command(CHAT, text)
        await until(lambda: len(self.api.sent(CHAT)) > before, f"an answer to {text}")
        if text == "/later":  # as many messages as it takes for the count in its header
            head = re.search(r"\((\d+)\)", self.api.sent(CHAT)[before]["text"])
            count = int(head.group(1)) if head else 0
            await until(lambda: sum(len(item_ids(m)) for m in self.api.sent(CHAT)[before:])
                        >= count, "the whole read-later list")
        return self.api.sent(CHAT)[before:]

    async def check_later(self) -> list[dict[str, Any]]:
        """`/later` lists exactly the bookmarks."""
        answer = await self.ask("/later")
        listed = [i for m in answer for i in item_ids(m)]
        assert sorted(listed) == sorted(self.later), answer[0]["text"]
        if not self.later:
            assert "Nothing saved for later" in answer[0]["text"]
        return answer


@pytest.mark.real_clock  # file times against the clock: see tests/clock_ahead.py
@pytest.mark.parametrize("place", [("Europe/Berlin", "08:00"), ("America/New_York", "23:30")],
                         ids=["berlin-0800", "new-york-2330"])
async def test_a_month_of_daily_use(api: FakeBotAPI, server: LocalServer, tmp_path: Path,
                                    feedbot_env: Path, caplog: pytest.LogCaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch,
                                    place: tuple[str, str], seed: int) -> None:
    """Summer time ends on 25 October in Berlin and on 1 November in New York; a digest at
    23:30 there goes out after midnight UTC, and is labelled with its own (local) day."""
    began = time.monotonic()
    caplog.set_level(logging.INFO, logger="feedbot")
    model = ModelSpy(monkeypatch)
    sources = tmp_path / "sources.yaml"
    serve_day(server, 0)
    write_soak_sources(sources, server, place)
    month = Month(api, server, feedbot_env, sources, place)
    await month.start()
    try:
        await soak(month, model)
    finally:
        await month.stop()

    problems = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
                if r.levelno >= logging.ERROR or (
                    r.levelno >= logging.WARNING
                    and not any(re.search(p, r.getMessage()) for p in EXPECTED_WARNINGS))]
    assert problems == []
    assert "stopped after 0 message" in caplog.text  # the flaky day's, once
    assert caplog.text.count("stopped after 0 message") == 1
    assert len(month.digests) == DAYS - len(ASLEEP)
    assert len(month.votes) >= 20 and len(month.later) >= 10
    assert time.monotonic() - began < 120  # generous: about 10 s here


class ModelSpy:
    """Watches the real 👍/👎 model at work: each training, and each digest's scorer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trained: list[str] = []  # the feedback key of each model trained
        self.with_background: list[bool] = []  # whether each was trained with unlabelled items
        self.scorers: list[Any] = []  # what each ranking got from feedback_scorer
        self.newest: list[str] = []  # the store's newest day when each ranking asked for it
        real_train, real_scorer = feedbot.learn.train, feedbot.learn.feedback_scorer

        def train(*a: Any, **k: Any) -> Any:
            m = real_train(*a, **k)
            self.trained.append(m.key)
            self.with_background.append(k.get("background") is not None)
            return m

        def scorer(store: Store, *a: Any, **k: Any) -> Any:
            self.newest.append(feedbot.learn.background_mark(store))
            self.scorers.append(real_scorer(store, *a, **k))
            return self.scorers[-1]

        monkeypatch.setattr(feedbot.learn, "train", train)
        monkeypatch.setattr(feedbot.learn, "feedback_scorer", scorer)
        # stage -> the votes of its last training, and the newest day then if it was trained
        # with unlabelled items (votes of other stages only, after `/stage next`)
        self.trained_on: dict[str, tuple[frozenset[tuple[str, str]], str | None]] = {}

    def check_digest(self, month: Month, d: int, trained_before: int,
                     scored_before: int) -> None:
        """The day's digest asked for the scorer (once more for each failed send); it was
        retrained exactly when the votes (or the stage) changed since the last training, or,
        for a model trained with unlabelled items, a new day's items came, and the one on disk
        is it."""
        assert month.runner is not None
        stage = month.runner.settings.config.learner.stage
        assert len(self.scorers) == scored_before + 1 + (d == FLAKY_DAY), f"day {d}"
        votes = frozenset(month.votes.items())
        if not votes:
            assert self.scorers[-1] is None and len(self.trained) == trained_before
            return
        scorer = self.scorers[-1]
        assert scorer is not None, f"day {d}: votes, but no model"
        last = self.trained_on.get(stage)
        changed = last is None or last[0] != votes or last[1] not in (None, self.newest[-1])
        assert len(self.trained) == trained_before + changed, (
            f"day {d}: {'not ' if changed else ''}retrained after "
            f"{'new' if changed else 'no new'} votes or items")
        if changed:
            self.trained_on[stage] = (votes,
                                      self.newest[-1] if self.with_background[-1] else None)
        path = feedbot.learn.model_path(str(CHAT), month.home, stage=stage)
        saved = feedbot.learn.load_model(path, scorer.model.model_id, scorer.model.key)
        assert saved is not None, f"day {d}: the model used is not the one on disk"


async def soak(month: Month, model: ModelSpy) -> None:
    api, server = month.api, month.server
    pinned = {f"https://busy.example.org/posts/0-{k}" for k in (8, 9)}
    gone_hits = 0
    for d in range(DAYS):
        serve_day(server, d)  # the blogs as they are today, from midnight UTC
        hits = len(server.requests)
        before = len(api.sent(CHAT))
        trained, scored = len(model.trained), len(model.scorers)
        if d == FLAKY_DAY:
            api.fail("sendMessage", times=5, status=502)
        if d in ASLEEP:
            if d == ASLEEP.start:
                await month.run_until(day_start(d) + timedelta(hours=1))
                await month.stop()
            assert len(api.sent(CHAT)) == before
            continue
        first = 1
        if d == ASLEEP.stop:  # woken up after the digest time (inside the grace period)
            month.clock.t = day_start(d) + timedelta(hours=8)
            await month.start()
            await month.fire(TICK_JOB)  # APScheduler runs it at once
            first = 9
        for hour in range(first, 10):  # the night and morning (UTC): prune, digest
            await month.run_until(day_start(d) + timedelta(hours=hour))
        today = api.sent(CHAT)[before:]
        assert len(today) == 1, f"day {d}: {len(today)} digests: {[m['text'] for m in today]}"
        [digest] = today
        month.digests[d] = digest
        slot = month.slot(d)
        label = slot.astimezone(ZoneInfo(month.tz)).strftime("%a %d %b")
        assert f"digest</b> · {label}\n" in digest["text"], f"day {d}: {digest['text'][:80]}"
        sent_at = month.sent_at[message_id(api, digest)]
        late = {FLAKY_DAY: timedelta(hours=1, minutes=1), ASLEEP.stop: timedelta(hours=6)}
        assert slot <= sent_at <= slot + late.get(d, timedelta(0)), f"day {d}: sent {sent_at}"
        model.check_digest(month, d, trained, scored)
        ids = item_ids(digest)
        assert ids or "Nothing new for your stage today." in digest["text"], digest["text"]
        if d >= HOLIDAY.start + 5 and d < HOLIDAY.stop:  # honestly empty
            assert not ids and "Nothing new" in digest["text"], f"day {d}: {digest['text']}"
        if d < HOLIDAY.start:
            assert len(ids) == 3, f"day {d}: {digest['text']}"
        month.delivered += ids
        dupes = {i for i in month.delivered if month.delivered.count(i) > 1}
        assert not dupes, f"day {d}: delivered again: {dupes}"
        if d > EDIT_DAY:
            assert "gone.example.org" not in digest["text"], f"day {d}: an unfollowed blog"

        # the learner reads the digest
        pattern = {0: [(0, "up"), (1, "later")], 1: [(0, "down"), (2, "later")],
                   2: [(1, "later")], 3: [(0, "up"), (1, "down")]}[d % 4]
        for n, (row, value) in enumerate(pattern):
            if row < len(ids):  # the restart comes as the last button is pressed
                await month.press(digest, row, value,
                                  wait=d != RESTART_DAY or n < len(pattern) - 1)

        if d == RESTART_DAY:  # after the digest: it must not come again today
            await month.stop()
            await month.start()
            await api.wait_for("answerCallbackQuery", month.answers, timeout=10)
        if d in (11, RESTART_DAY, DAYS - 1):  # after prunes, after the restart
            await month.check_later()
        if d == 18:  # more now, with /digest: the next digests leave those out
            [more] = await month.ask("/digest")
            assert item_ids(more), more["text"]
            month.delivered += item_ids(more)
        if d == 22:  # read one from the list: 👍 takes it off
            [listing, *_] = await month.check_later()
            await month.press(listing, 0, "up")
            await month.check_later()
        if d == 25:  # a button under a digest of day 2, on an item pruned since
            msg = month.digests[2]
            row = next(n for n, i in enumerate(item_ids(msg))
                       if i not in month.votes and i not in month.later)
            api.press(CHAT, message_id(api, msg), rows(msg)[row][1]["callback_data"])
            month.answers += 1
            [*_, answer] = await api.wait_for("answerCallbackQuery", month.answers)
            assert "no longer stored" in answer.params["text"]
        if d == STAGE_DAY:
            [moved] = await month.ask("/stage next")
            assert "massive-datasets" in moved["text"], moved["text"]
            assert "stage: massive-datasets" in month.sources.read_text()
        mark = len(api.sent(CHAT))  # the runner sends nothing more today

        if d == EDIT_DAY:  # by hand, in an editor: "Gone" unfollowed, "New" followed
            write_soak_sources(month.sources, server, (month.tz, month.at), edited=True)
        for hour in range(10, 25):
            await month.run_until(day_start(d) + timedelta(hours=hour))
        assert len(api.sent(CHAT)) == mark, f"day {d}: more than one digest"
        if d == EDIT_DAY:
            assert month.runner is not None
            assert {"collect:New"} <= month.runner.jobs.ids()
            assert "collect:Gone" not in month.runner.jobs.ids()
            gone_hits = len(server.hits("/gone.xml"))

        # every button press answered once: none handled again after the restart
        assert len(api.calls_to("answerCallbackQuery")) == month.answers, f"day {d}"
        asked = Counter(r.path for r in server.requests[hits:])
        assert max(asked.values(), default=0) <= 12, f"day {d}: a blog asked too often: {asked}"

        # what the store holds at the end of the day
        with Store.open(month.home) as store:
            votes = {v.item_id: v.value for v in store.feedback(str(CHAT))}
            assert votes == month.votes, f"day {d}"
            assert set(store.bookmarks(str(CHAT))) == month.later, f"day {d}"
            assert store.delivered(str(CHAT)) <= set(month.delivered)
            now = month.clock()
            kept = set(votes) | month.later
            items = store.items_since()
            stale = [s.item.title for s in items if s.id not in kept
                     and max(s.when, s.first_seen) < now - RETENTION - timedelta(days=1)]
            assert stale == [], f"day {d}: kept past the retention: {stale}"
            assert len(items) <= 11 * 8 + len(kept), f"day {d}: the database grows"
            urls = [canonical_url(s.item.url) for s in items]
            assert len(urls) == len(set(urls)), f"day {d}: one post stored twice"
            if d == DOWN.stop:  # the blog that was down: what it posted meanwhile is in
                assert {f"https://down.example.org/posts/{x}-0" for x in DOWN} <= set(urls)
            late = [name for name in blogs_up(d) if not any(
                canonical_url(s.item.url) == canonical_url(f"https://{name.lower()}.example.org"
                                                           f"/posts/{d}-0")
                and s.first_seen <= slot for s in items)]
            assert late == [], f"day {d}: today's post of {late} came after the digest"
            if d > 11:  # the pinned posts were pruned, and never came back
                assert not {s.id for s in items if s.item.url in pinned} - kept, f"day {d}"
            assert store.disk_bytes() < 16_000_000, f"day {d}: {store.disk_bytes()} bytes"
            assert len(store.delivered(str(CHAT))) <= len(items)
            assert store.tombstone_count() <= 2  # the pinned undated post (URL, guid)
            texts = protected_hashes(load_roadmap(), now)  # stage texts and demo items
            assert store.vector_count() <= len(items) + len(texts), f"day {d}: vectors grow"
    assert len(list((month.home / "models").glob("*.joblib"))) == 2  # one model a stage

    assert len(server.hits("/gone.xml")) == gone_hits  # unfollowed: never fetched again
    assert server.hits("/new.xml")
    asked = server.hits("/etag.xml")
    assert any(r.headers.get("if-none-match") for r in asked), "never asked with its ETag"
    assert any(r.headers.get("if-modified-since") for r in asked), "never with Last-Modified"
    with Store.open(month.home) as store:
        urls = {s.item.url for s in store.items_since()}
    assert {f"https://etag.example.org/posts/{d}-0" for d in range(DAYS - 3, DAYS)} <= urls
    assert {f"https://new.example.org/posts/{d}-0" for d in range(DAYS - 3, DAYS)} <= urls

