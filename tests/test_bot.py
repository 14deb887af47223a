"""The bot end to end: a real python-telegram-bot `Application` polling a fake Bot API on
127.0.0.1. We assert what the server received: commands answered, digests valid and never
repeated, feedback stored and acknowledged, strangers refused once, flood control waited out,
and the token in no log line."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from feedbot.items import Item
from feedbot.store import Store

from .fake_bot_api import (
    CHAT,
    STRANGER,
    TOKEN,
    Clock,
    FakeBotAPI,
    eventually,
    running,
    seed_items,
    telegram_html_problems,
    telegram_length,
    withdrawn_and_saved,
    write_sources,
)
from .support import CORPUS, LocalServer, atom_feed


@pytest.fixture
def api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as a:
        yield a


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 2, 9, tzinfo=UTC))


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    return write_sources(tmp_path / "sources.yaml",
                         blogs=(("Test blog", "http://127.0.0.1:9/feed.xml"),))


@pytest.fixture
async def bot(api: FakeBotAPI, sources: Path, feedbot_env: Path,
              clock: Clock) -> AsyncIterator[Any]:
    seed_items(feedbot_env, clock(), 5)
    async with running(sources, feedbot_env, clock, api) as runner:
        yield runner


async def ask(api: FakeBotAPI, text: str, chat: int = CHAT, replies: int = 1,
              timeout: float = 5.0, **where: Any) -> list[dict[str, Any]]:
    """Send `text` as the user and return the bot's next `replies` messages to that chat
    (`where`: `thread=` a forum topic, `reply_to=` a message replied to; see api.command)."""
    before = len(api.sent(chat))
    api.command(chat, text, **where)
    deadline = time.monotonic() + timeout
    while len(api.sent(chat)) < before + replies:
        assert time.monotonic() < deadline, f"no reply to {text!r}: {api.sent(chat)}"
        await asyncio.sleep(0.02)
    return api.sent(chat)[before:]


async def test_startup_registers_the_commands(bot: Any, api: FakeBotAPI) -> None:
    [call] = await api.wait_for("setMyCommands")
    names = [c["command"] for c in call.params["commands"]]
    assert {"start", "help", "digest", "stage", "follow", "unfollow", "sources",
            "later", "search"} == set(names)
    assert api.calls_to("getMe")


async def test_a_flood_wait_on_the_command_list_holds_up_neither_the_bot_nor_a_stop(
        api: FakeBotAPI, sources: Path, feedbot_env: Path, clock: Clock) -> None:
    """`setMyCommands` answered with a flood wait (429, retry after 30 s) at start: the bot
    waited it out, up to 5 times, before polling (a /help sent at 2 s was answered at 120 s),
    and a stop in the meantime waited too."""
    api.fail("setMyCommands", times=10, retry_after=30)
    started = time.monotonic()
    async with running(sources, feedbot_env, clock, api):
        [helptext] = await ask(api, "/help")
        assert "/digest" in helptext["text"]
        assert time.monotonic() - started < 10  # answered while the flood wait goes on
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 10


async def test_start_help_and_unknown_commands_are_answered(bot: Any, api: FakeBotAPI) -> None:
    [hello] = await ask(api, "/start")
    assert "08:00" in hello["text"] and "Europe/Berlin" in hello["text"]
    [helptext] = await ask(api, "/help")
    assert "/digest" in helptext["text"] and hello["parse_mode"] == "HTML"
    [hint] = await ask(api, "/frobnicate")
    assert "/help" in hint["text"]


async def test_digest_is_valid_html_and_never_repeats(bot: Any, api: FakeBotAPI,
                                                      feedbot_env: Path) -> None:
    [msg] = await ask(api, "/digest")
    assert telegram_html_problems(msg["text"]) == [] and telegram_length(msg["text"]) <= 4096
    assert "Stage 5: <b>" in msg["text"]
    assert "&amp; why &lt;it&gt; matters" in msg["text"]  # feed text escaped
    rows = msg["reply_markup"]["inline_keyboard"]
    assert len(rows) == 3 and [b["text"] for b in rows[0]] == ["1 👍", "1 👎", "1 🔖"]
    first = {r[0]["callback_data"].split(":", 2)[2] for r in rows}
    with Store.open(feedbot_env) as store:
        await eventually(lambda: store.delivered(str(CHAT)) == first)
    [second] = await ask(api, "/digest")
    second_ids = {r[0]["callback_data"].split(":", 2)[2]
                  for r in second["reply_markup"]["inline_keyboard"]}
    assert len(second_ids) == 2 and not second_ids & first  # the rest, nothing again
    [third] = await ask(api, "/digest")
    assert "Nothing new" in third["text"] and "reply_markup" not in third



async def test_a_tick_that_fails_after_the_vote_is_stored_asks_nothing_again(
        bot: Any, api: FakeBotAPI, feedbot_env: Path) -> None:
    """Ticking the button is cosmetic: when Telegram refused the edit, the error handler
    apologised and asked to try again what had worked, and the next press of the same button,
    taken as ticked already, changed nothing."""
    [msg] = await ask(api, "/digest")
    up = msg["reply_markup"]["inline_keyboard"][0][0]
    item_id = up["callback_data"].split(":", 2)[2]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.fail("editMessageReplyMarkup", status=403, description="Forbidden: try again later")
    api.press(CHAT, mid, up["callback_data"])
    [answer] = await api.wait_for("answerCallbackQuery")
    assert answer.params["text"].startswith("👍")
    with Store.open(feedbot_env) as store:
        await eventually(lambda: [v.item_id for v in store.feedback(str(CHAT))] == [item_id])
    await asyncio.sleep(0.3)
    assert len(api.sent(CHAT)) == 1  # the digest, no apology
    api.press(CHAT, mid, up["callback_data"])  # pressed again: ticked this time
    await api.wait_for("answerCallbackQuery", 2)
    edit = (await api.wait_for("editMessageReplyMarkup", 2))[-1]  # the refused one first
    assert edit.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "✅ 1 👍"


async def test_unfollow_takes_the_name_as_typed_apostrophes_and_all(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock) -> None:
    """The name was split shell-style, a phone's ’ taken for a quote: "Lil’Log" became
    "Lil'Log" and "Rock 'n' Roll ML" "Rock n Roll ML", which matched nothing."""
    pytest.importorskip("feedbot.follow")
    names = ("Lil’Log", "Rock 'n' Roll ML", "Bob's and Alice's blog")
    sources = write_sources(tmp_path / "sources.yaml", blogs=tuple(
        (n, f"https://blog{i}.example.org/feed.xml") for i, n in enumerate(names)))
    async with running(sources, feedbot_env, clock, api):
        for name in names:
            [answer] = await ask(api, f"/unfollow {name}")
            assert answer["text"] == f"unfollowed {name}", answer["text"]
        [quoted] = await ask(api, "/unfollow “Nobody’s”")
        assert "not following anyone or anything named" in quoted["text"]
        assert "Nobody’s" in quoted["text"]


async def test_feedback_button_is_stored_acknowledged_and_ticked(bot: Any, api: FakeBotAPI,
                                                                 feedbot_env: Path) -> None:
    [msg] = await ask(api, "/digest")
    later = msg["reply_markup"]["inline_keyboard"][1][2]
    item_id = later["callback_data"].split(":", 2)[2]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.press(CHAT, mid, later["callback_data"])
    [answer] = await api.wait_for("answerCallbackQuery")
    assert "Saved" in answer.params["text"]
    [edit] = await api.wait_for("editMessageReplyMarkup")
    labels = [[b["text"] for b in row] for row in edit.params["reply_markup"]["inline_keyboard"]]
    assert labels[1] == ["2 👍", "2 👎", "✅ 2 🔖"] and labels[0] == ["1 👍", "1 👎", "1 🔖"]
    with Store.open(feedbot_env) as store:
        await eventually(lambda: store.bookmarks(str(CHAT)) == [item_id])
    [later_list] = await ask(api, "/later")
    assert "Read later" in later_list["text"] and f"fb:up:{item_id}" in json.dumps(
        later_list["reply_markup"])
    [same] = await ask(api, "/later 7")  # past the last page: the last
    assert same["text"] == later_list["text"]
    [usage] = await ask(api, "/later soon")
    assert usage["text"] == "Usage: /later, or /later 2 for the next page"
    api.press(CHAT, mid, f"fb:up:{item_id}")  # 👍 replaces "later"
    await api.wait_for("answerCallbackQuery", 2)
    with Store.open(feedbot_env) as store:
        await eventually(lambda: [v.value for v in store.feedback(str(CHAT))] == ["up"])
        [vote] = store.feedback(str(CHAT))
        assert (vote.item_id, vote.stage) == (item_id, bot.settings.config.learner.stage)
        assert store.bookmarks(str(CHAT)) == []  # voted on: read, off the list


async def test_the_saved_list_marks_a_paper_withdrawn_since(
        api: FakeBotAPI, sources: Path, feedbot_env: Path, clock: Clock) -> None:
    withdrawn_and_saved(feedbot_env, str(CHAT))
    async with running(sources, feedbot_env, clock, api):
        [later] = await ask(api, "/later")
    assert "Deep nets</a></b> (withdrawn)" in later["text"], later["text"]


async def test_the_saved_list_and_search_show_dates_in_the_learners_time_zone(
        api: FakeBotAPI, sources: Path, feedbot_env: Path, clock: Clock) -> None:
    """A post of 23:30 UTC on 1 March came out on 2 March in Berlin (the learner's zone):
    /later and /search showed it as the 1st's."""
    from feedbot.items import Item

    post = Item("Kernel tricks at midnight", "https://blog.example.org/kernels", "Test blog",
                published=datetime(2026, 3, 1, 23, 30, tzinfo=UTC), summary="Kernels.")
    with Store.open(feedbot_env) as store:
        store.upsert_items([post], clock())
        store.set_feedback(str(CHAT), post.id, "later", clock())
    async with running(sources, feedbot_env, clock, api):
        [later] = await ask(api, "/later")
        [found] = await ask(api, "/search kernel tricks")
    for answer in (later, found):
        assert "2026-03-02" in answer["text"] and "2026-03-01" not in answer["text"], answer


async def test_the_saved_list_names_a_renamed_source_as_it_is_named_now(
        api: FakeBotAPI, sources: Path, feedbot_env: Path, clock: Clock) -> None:
    """A post saved before its blog was renamed in sources.yaml (the same feed) carries the old
    name: /later showed it, where `feedbot later` and the digest give the name of now."""
    from feedbot.config import load_config

    [spec] = [s for s in load_config(sources).sources() if s.name == "Test blog"]
    post = Item("Kernel tricks", "https://blog.example.org/kernels", "Old blog name",
                published=clock(), summary="Kernels.")
    with Store.open(feedbot_env) as store:
        store.remember_sources([("Old blog name", spec.kind, spec.target)])
        store.upsert_items([post], clock())
        store.set_feedback(str(CHAT), post.id, "later", clock())
    async with running(sources, feedbot_env, clock, api):
        [later] = await ask(api, "/later")
    assert "Test blog" in later["text"] and "Old blog name" not in later["text"], later


async def test_quick_votes_on_one_message_keep_every_tick(bot: Any, api: FakeBotAPI,
                                                          feedbot_env: Path) -> None:
    """Three presses before any edit arrives: each update carries the untouched keyboard, and
    the last edit must not wipe the ticks of the first two."""
    [msg] = await ask(api, "/digest")
    rows = msg["reply_markup"]["inline_keyboard"]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    for row, col in ((0, 0), (1, 1), (2, 2), (2, 2)):  # the last one pressed twice
        api.press(CHAT, mid, rows[row][col]["callback_data"])
    expected = [["✅ 1 👍", "1 👎", "1 🔖"], ["2 👍", "✅ 2 👎", "2 🔖"],
                ["3 👍", "3 👎", "✅ 3 🔖"]]

    def shown() -> list[list[str]]:
        return [[b["text"] for b in row]
                for row in api.messages[mid]["reply_markup"]["inline_keyboard"]]

    await api.wait_for("answerCallbackQuery", 4)
    await eventually(lambda: len(api.calls_to("editMessageReplyMarkup")) >= 3
                     and shown() == expected)
    with Store.open(feedbot_env) as store:
        await eventually(lambda: len(store.feedback(str(CHAT))) == 2)
        assert store.bookmarks(str(CHAT)) != []


@pytest.mark.parametrize(("text", "args"), [
    ("/follow —name “My blog” https://e.org/feed", ["--name", "My blog", "https://e.org/feed"]),
    ("/follow Ada Lovelace –arxiv 'Lovelace, A'", ["Ada", "Lovelace", "--arxiv", "Lovelace, A"]),
    ("/follow Ada —x ada_l —replies", ["Ada", "--x", "ada_l", "--replies"]),
    ("/unfollow Tips — tricks", ["Tips", "—", "tricks"]),  # a dash in a name stays
    ("/unfollow Ünïcödé—blog", ["Ünïcödé—blog"]),
])
def test_options_typed_on_a_phone_are_understood(text: str, args: list[str]) -> None:
    """Phones' smart punctuation turns `--name` into `—name`, like quotes into “…”."""
    from feedbot.bot import command_args

    assert command_args(text) == args


async def test_feedback_on_an_unknown_item_is_answered_not_stored(bot: Any, api: FakeBotAPI,
                                                                  feedbot_env: Path) -> None:
    [msg] = await ask(api, "/help")
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.press(CHAT, mid, "fb:down:ffffffffffff")
    [answer] = await api.wait_for("answerCallbackQuery")
    assert "no longer stored" in answer.params["text"]
    with Store.open(feedbot_env) as store:
        assert store.feedback() == []


async def test_feedback_on_a_page_of_several_items_is_answered_not_stored(
        bot: Any, api: FakeBotAPI, feedbot_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A button whose data is the URL of a page holding several stored items (forged, or
    stale: feedbot's buttons carry an id) names none of them: the press was never answered,
    and the handler logged a traceback."""
    page = "https://blog.example.org/2017/06/26.html"
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    notes = [Item(f"Note {n}", f"{page}#a{n}", "Blog", guid=f"{page}#a{n}", published=now)
             for n in range(3)]
    with Store.open(feedbot_env) as store:
        store.upsert_items(notes, now)
    [msg] = await ask(api, "/help")
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.press(CHAT, mid, f"fb:up:{page}")
    [answer] = await api.wait_for("answerCallbackQuery")
    assert answer.params["text"] == "That button names a page of several items, not one of " \
        "them: nothing was saved."
    api.press(CHAT, mid, f"fb:up:{page}#a1")  # the exact URL names its one item
    await eventually(lambda: len(api.calls_to("answerCallbackQuery")) == 2)
    with Store.open(feedbot_env) as store:
        assert [(f.item_id, f.value) for f in store.feedback()] == [(notes[1].id, "up")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Something went wrong" not in api.sent(CHAT)[-1]["text"]


async def test_feedback_on_a_paper_since_withdrawn_says_so(bot: Any, api: FakeBotAPI,
                                                           feedbot_env: Path) -> None:
    """A 👍 under an old digest's paper that arXiv's authors withdrew since (feedbot removed
    it): "no longer stored" said nothing of why; `feedbot feedback` says it was withdrawn."""
    paper = Item("Deep nets", "https://arxiv.org/abs/2401.00001v1", "arXiv cs.LG", "paper",
                 published=datetime(2026, 3, 1, tzinfo=UTC), summary="Deep nets, v1.",
                 arxiv_id="2401.00001", arxiv_version=1)
    withdrawal = replace(paper, url="https://arxiv.org/abs/2401.00001v2", arxiv_version=2,
                         summary="This paper has been withdrawn by the author.", withdrawn=True)
    with Store.open(feedbot_env) as store:
        store.upsert_items([paper], datetime(2026, 3, 1, 8, tzinfo=UTC))
        store.upsert_items([withdrawal], datetime(2026, 3, 1, 9, tzinfo=UTC))
    [msg] = await ask(api, "/help")
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.press(CHAT, mid, f"fb:up:{paper.id}")
    [answer] = await api.wait_for("answerCallbackQuery")
    assert "withdrawn by its authors on arXiv" in answer.params["text"]
    with Store.open(feedbot_env) as store:
        assert store.feedback() == []


async def test_stage_show_change_and_next(bot: Any, api: FakeBotAPI, sources: Path) -> None:
    [shown] = await ask(api, "/stage")
    assert "Stage 5/13" in shown["text"]
    buttons = [b for row in shown["reply_markup"]["inline_keyboard"] for b in row]
    assert len(buttons) == 13 and buttons[4]["text"].startswith("✅ 5.")
    [moved] = await ask(api, "/stage next")
    assert "massive-datasets" in moved["text"]
    text = sources.read_text()
    assert "stage: massive-datasets" in text and "# where the learner is" in text
    assert bot.settings.config.learner.stage == "massive-datasets"
    [bad] = await ask(api, "/stage quantum")
    assert "Unknown stage" in bad["text"] and bot.settings.config.learner.stage != "quantum"
    [near] = await ask(api, "/stage cnns")  # the CLI's "did you mean", here too
    assert "Unknown stage 'cnns'. Did you mean cnn? (/stage cnn)" in near["text"]
    [nlp] = await ask(api, "/stage NLP")  # ids are matched whatever the case
    assert "stage: nlp" in sources.read_text() and "Unknown" not in nlp["text"]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is shown)
    api.press(CHAT, mid, "st:cnn")
    await api.wait_for("answerCallbackQuery")
    assert "stage: cnn" in sources.read_text() and bot.settings.config.learner.stage == "cnn"


async def test_sources_lists_health(bot: Any, api: FakeBotAPI) -> None:
    [msg] = await ask(api, "/sources")
    assert "Test blog" in msg["text"] and "🆕" in msg["text"]


async def test_sources_counts_one_item_as_one_item(bot: Any, api: FakeBotAPI, feedbot_env: Path,
                                                   clock: Clock) -> None:
    """It said "1 items"."""
    with Store.open(feedbot_env) as store:
        store.upsert_items([Item("Only post", "https://blog.example.org/only", "Test blog",
                                 published=clock())], clock())
    [msg] = await ask(api, "/sources")
    assert "<b>Test blog</b> — 1 item, last ok" in msg["text"]


async def test_follow_and_unfollow_use_the_cli_code_path(bot: Any, api: FakeBotAPI,
                                                         sources: Path, server: LocalServer
                                                         ) -> None:
    pytest.importorskip("feedbot.follow")
    url = server.add("/feed.xml", body=atom_feed([{"title": "Hello", "link": "https://e.org/1"}],
                                                 title="Distill & friends"))
    [followed] = await ask(api, f"/follow {url}")
    assert url in sources.read_text(), followed["text"]
    new = next(s for s in bot.settings.config.sources() if s.target == url)
    assert f"collect:{new.name}" in bot.jobs.ids()  # collected from now on
    assert "&amp;" in followed["text"] or "&" not in followed["text"]  # replies are escaped
    [again] = await ask(api, f"/follow {url}")
    assert again["text"].startswith("Already so: already following")  # nothing refused
    assert again["text"].endswith("nothing to change")
    [nothing] = await ask(api, "/unfollow")
    assert "Usage" in nothing["text"]
    [gone] = await ask(api, '/unfollow "Test blog"')
    assert "Test blog" not in sources.read_text(), gone["text"]
    assert all(s.name != "Test blog" for s in bot.settings.config.sources())
    [refused] = await ask(api, "/unfollow Nobody")
    assert "Not unfollowed" in refused["text"]


async def test_a_very_long_name_from_follow_does_not_break_sources(
        bot: Any, api: FakeBotAPI, sources: Path, server: LocalServer) -> None:
    """A name as long as a Telegram message allows is followed; /sources still answers (in
    one message that Telegram takes), with the name cut short."""
    pytest.importorskip("feedbot.follow")
    url = server.add("/feed.xml", body=atom_feed([{"title": "Hi", "link": "https://e.org/1"}]))
    name = " ".join(["R&D"] * 1000)  # 4000 characters, 8000 once escaped
    [followed] = await ask(api, f"/follow --name {name!r} {url}")
    assert name in sources.read_text(), followed["text"]
    assert telegram_length(followed["text"]) <= 4096
    listing = await ask(api, "/sources")
    assert telegram_html_problems(listing[0]["text"]) == []
    assert all(telegram_length(m["text"]) <= 4096 for m in listing)
    assert "Test blog" in listing[0]["text"] and "R&amp;D R&amp;D" in listing[0]["text"]
    assert len(api.sent(CHAT)) == 2  # the two answers, no apology


async def test_a_stranger_gets_one_polite_refusal_and_nothing_else(
        bot: Any, api: FakeBotAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="feedbot")
    for text in ("/start", "/digest", "hello", "/sources"):
        api.command(STRANGER, text)
    await ask(api, "/help")  # the allowed chat is still served
    await asyncio.sleep(0.3)
    [refusal] = api.sent(STRANGER)
    assert "private feedbot" in refusal["text"]
    # the id the owner adds to let a group in (before, only the log had it)
    assert f"this chat's id is <code>{STRANGER}</code>" in refusal["text"]
    # one warning, not one per message: a stranger writing all day flooded the log
    refused = [r for r in caplog.records if f"refused chat {STRANGER}" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING


async def test_a_stranger_who_blocked_the_bot_is_one_warning(
        bot: Any, api: FakeBotAPI, caplog: pytest.LogCaptureFixture) -> None:
    await api.wait_for("setMyCommands")
    api.fail("sendMessage", status=403)
    api.command(STRANGER, "/start")
    await blocked_warning(caplog, STRANGER)
    await ask(api, "/help")  # the allowed chat is still served


async def blocked_warning(caplog: pytest.LogCaptureFixture, chat: int) -> None:
    """Wait for the one warning that Telegram refused an answer to `chat` (403, blocked)."""
    for _ in range(250):
        if "could not answer chat" in caplog.text:
            break
        await asyncio.sleep(0.02)
    [refused] = [r for r in caplog.records if "could not answer chat" in r.getMessage()]
    assert refused.levelno == logging.WARNING and refused.exc_info is None
    assert f"chat {chat}" in refused.getMessage()
    assert "bot was blocked by the user" in refused.getMessage()


async def test_first_run_tells_whoever_starts_the_line_to_add(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    sources = write_sources(tmp_path / "sources.yaml", chats=())
    caplog.set_level(logging.WARNING, logger="feedbot")
    async with running(sources, feedbot_env, clock, api):
        [setup] = await ask(api, "/start", chat=STRANGER)
        api.command(STRANGER, "/digest")
        await asyncio.sleep(0.3)
    assert f"allowed_chats: [{STRANGER}]" in setup["text"]
    assert len(api.sent(STRANGER)) == 1  # nothing else for them
    assert f"allowed_chats: [{STRANGER}]" in caplog.text


async def test_flood_control_retry_after_is_waited_out(bot: Any, api: FakeBotAPI) -> None:
    await api.wait_for("setMyCommands")
    api.fail("sendMessage", retry_after=1)
    [reply] = await ask(api, "/help")
    refused, accepted = api.calls_to("sendMessage")[-2:]
    assert accepted.at - refused.at >= 1.0
    assert "/digest" in reply["text"]


async def test_network_errors_are_retried_with_backoff(bot: Any, api: FakeBotAPI) -> None:
    api.fail("sendMessage", times=2, status=502)
    [reply] = await ask(api, "/help")
    assert len(api.calls_to("sendMessage")) == 3 and "/digest" in reply["text"]


async def test_one_error_handler_logs_and_the_bot_lives_on(
        bot: Any, api: FakeBotAPI, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("source health exploded")

    monkeypatch.setattr(bot, "source_rows", broken)
    [apology] = await ask(api, "/sources")
    assert "Something went wrong on my side (RuntimeError)" in apology["text"]
    assert "exploded" not in apology["text"]  # the details are for the log, not the chat
    await ask(api, "/help")
    for _ in range(100):
        if "source health exploded" in caplog.text:
            break
        await asyncio.sleep(0.02)
    assert "error while handling an update (chat 4242)" in caplog.text
    assert "source health exploded" in caplog.text


async def test_a_reply_telegram_refuses_is_one_warning_and_no_apology(
        bot: Any, api: FakeBotAPI, caplog: pytest.LogCaptureFixture) -> None:
    """The learner blocked the bot: Telegram's reason is the whole story, so it is logged as one
    warning without a traceback, and no apology is sent after it (it would be refused too)."""
    await api.wait_for("setMyCommands")
    api.fail("sendMessage", status=403)
    api.command(CHAT, "/help")
    await blocked_warning(caplog, CHAT)
    await asyncio.sleep(0.2)  # room for an apology, were one sent
    assert len([r for r in caplog.records if "could not answer chat" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(api.calls_to("sendMessage")) == 1  # the refused answer, no apology after it
    [reply] = await ask(api, "/help")  # unblocked: the bot answers again
    assert "/digest" in reply["text"]


async def test_a_failing_button_is_answered_and_explained(
        bot: Any, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    [msg] = await ask(api, "/digest")
    data = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]

    def broken(*args: Any) -> bool:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(bot, "record_feedback", broken)
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.press(CHAT, mid, data)
    [answer] = await api.wait_for("answerCallbackQuery")
    assert answer.params["text"] == "Something went wrong"
    await eventually(lambda: "Something went wrong on my side" in api.sent(CHAT)[-1]["text"])


async def test_a_vote_counts_when_telegram_refuses_the_late_answer(
        bot: Any, api: FakeBotAPI, feedbot_env: Path) -> None:
    """Presses made while feedbot was down are too old to answer (400); the vote is stored
    and its button ticked all the same."""
    [msg] = await ask(api, "/digest")
    up = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.fail("answerCallbackQuery", status=400)
    api.press(CHAT, mid, up)
    [edit] = await api.wait_for("editMessageReplyMarkup")
    assert edit.params["reply_markup"]["inline_keyboard"][0][0]["text"].startswith("✅")
    with Store.open(feedbot_env) as store:
        assert [v.value for v in store.feedback(str(CHAT))] == ["up"]


async def test_a_long_flood_wait_on_the_answer_to_a_press_holds_up_nothing(
        bot: Any, api: FakeBotAPI, feedbot_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The answer to a press met Telegram's flood control (429, retry after 60 s): feedbot
    waited the minute out before ticking the button, for an answer Telegram takes only for
    seconds after the press. The answer is given up, in one line; the vote is stored and its
    button ticked at once."""
    [msg] = await ask(api, "/digest")
    up = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.fail("answerCallbackQuery", retry_after=60)
    with caplog.at_level(logging.INFO, logger="feedbot.bot"):
        api.press(CHAT, mid, up)
        [edit] = await api.wait_for("editMessageReplyMarkup")
    assert edit.params["reply_markup"]["inline_keyboard"][0][0]["text"].startswith("✅")
    assert len(api.calls_to("answerCallbackQuery")) == 1  # not asked again
    said = [r.getMessage() for r in caplog.records if "button press" in r.getMessage()]
    assert said == ["gave up answering a button press (flood control: Telegram asked to wait "
                    "60s); the press is handled all the same"]
    with Store.open(feedbot_env) as store:
        assert [v.value for v in store.feedback(str(CHAT))] == ["up"]


async def test_every_button_press_is_answered(bot: Any, api: FakeBotAPI,
                                              feedbot_env: Path) -> None:
    """Unanswered presses leave a spinner on the learner's screen: a button of no known kind,
    and a press in a chat that is no longer allowed (on a digest sent to it before), are
    answered too, and change nothing."""
    [msg] = await ask(api, "/digest")
    up = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.press(CHAT, mid, "garbage")
    [answer] = await api.wait_for("answerCallbackQuery")
    assert "no longer in use" in answer.params["text"]
    old_mid = api._new_message_id()  # the same digest, sent to STRANGER while it was allowed
    api.messages[old_mid] = {**api.messages[mid], "message_id": old_mid,
                             "chat": {"id": STRANGER, "type": "private"}, "_params": None}
    api.press(STRANGER, old_mid, up)
    _, refused = await api.wait_for("answerCallbackQuery", 2)
    assert "private feedbot" in refused.params["text"]
    with Store.open(feedbot_env) as store:
        assert store.feedback() == []


async def test_commands_for_other_bots_in_a_group_are_left_alone(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock) -> None:
    group, other_group = -100123, -100456
    sources = write_sources(tmp_path / "sources.yaml", chats=(group,))
    async with running(sources, feedbot_env, clock, api):
        for text in ("/start@dice_bot", "/roll@dice_bot", "/digest@another_bot"):
            api.command(group, text)
        api.command(other_group, "/start@dice_bot")  # a group that is not allowed
        [ours] = await ask(api, "/help@feedbot_test_bot", chat=group)
        await asyncio.sleep(0.3)
    assert "/digest" in ours["text"]
    assert len(api.sent(group)) == 1 and api.sent(other_group) == []


async def test_plain_text_in_a_private_chat_points_at_help(bot: Any, api: FakeBotAPI) -> None:
    [hint] = await ask(api, "hello bot")
    assert "/help" in hint["text"]


async def test_the_token_never_appears_in_a_log_line(
        api: FakeBotAPI, sources: Path, feedbot_env: Path, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(sources, feedbot_env, clock, api):
        api.fail("sendMessage", times=1, status=500)
        await ask(api, "/help")
    assert "/bot<bot-token>/getMe" in caplog.text  # URLs were logged...
    assert TOKEN not in caplog.text  # ...without the token
    for rec in caplog.records:
        assert TOKEN not in rec.getMessage() and TOKEN not in (rec.exc_text or "")
    assert logging.getLogRecordFactory() is logging.LogRecord  # redaction undone at stop


def test_fake_updates_are_shaped_like_real_ones(api: FakeBotAPI) -> None:
    """Our fake Updates carry the same keys as nutgram's recorded ones."""
    fixtures = CORPUS / "telegram" / "nutgram" / "Fixtures" / "Updates"
    if not fixtures.is_dir():
        pytest.skip(f"nutgram fixtures not found at {fixtures}")
    real_cmd = json.loads((fixtures / "command.json").read_text())
    real_cb = json.loads((fixtures / "callback_query.json").read_text())
    ours = api.command(CHAT, "/start")
    assert set(ours) == set(real_cmd) and set(ours["message"]) == set(real_cmd["message"])
    api.messages[9] = {**real_cb["callback_query"]["message"], "message_id": 9}
    cb = api.press(CHAT, 9, "fb:up:x")
    assert set(cb["callback_query"]) == set(real_cb["callback_query"])
    for ours, name in zip(api.migrate(-1, -1001), ("migrate_to_chat_id", "migrate_from_chat_id"),
                          strict=True):
        real = json.loads((fixtures / f"{name}.json").read_text())
        assert set(ours["message"]) == set(real["message"]) and name in ours["message"]
    topic = api.open_topic(-1001)
    for where, name in (({"thread": topic}, "message_topic"),
                        ({"reply_to": topic}, "message_general_topic_reply")):
        ours = api.command(-1001, "/help", **where)["message"]
        real = json.loads((fixtures / f"{name}.json").read_text())["message"]
        assert set(ours) - {"entities"} == set(real)  # "username": only a public group's
        assert set(ours["chat"]) == set(real["chat"]) - {"username"}
        assert ours["reply_to_message"].keys() >= real["reply_to_message"].keys() - {"text"}


@pytest.mark.parametrize(("text", "stage"), [("/stage set nlp", "nlp"),
                                             ("/stage set CNN", "cnn"),
                                             ('/stage@feedbot_test_bot set "gpus"', "gpus")])
async def test_stage_set_id_works_as_on_the_command_line(bot: Any, api: FakeBotAPI,
                                                         sources: Path, text: str,
                                                         stage: str) -> None:
    """`feedbot stage set ID` is how the CLI moves; typed to the bot as `/stage set nlp` it
    answered "Unknown stage 'set'" and moved nowhere."""
    [moved] = await ask(api, text)
    assert "Unknown" not in moved["text"] and f"<code>{stage}</code>" in moved["text"]
    assert f"stage: {stage}" in sources.read_text()
    assert bot.settings.config.learner.stage == stage


async def test_stage_list_and_a_bare_set_show_the_stages(bot: Any, api: FakeBotAPI,
                                                         sources: Path) -> None:
    before = sources.read_text()
    for text in ("/stage list", "/stage set"):
        [shown] = await ask(api, text)
        assert "Unknown" not in shown["text"] and "Stage 5/13" in shown["text"]
        assert len([b for row in shown["reply_markup"]["inline_keyboard"] for b in row]) == 13
    assert sources.read_text() == before


@pytest.mark.parametrize("text", ["/stage next please", "/stage nlp cnn",
                                  "/stage set nlp cnn", "/stage list all"])
async def test_stage_with_words_it_does_not_take_moves_nowhere_and_says_its_usage(
        bot: Any, api: FakeBotAPI, sources: Path, text: str) -> None:
    """`/stage next please` moved on, `/stage nlp cnn` and `/stage set nlp cnn` moved to nlp,
    and `/stage list all` showed the stages, each ignoring the words after: the usage now,
    as /later and /search answer words they do not take, and nothing moves."""
    before, stage = sources.read_text(), bot.settings.config.learner.stage
    [usage] = await ask(api, text)
    assert usage["text"].startswith("Usage: /stage") and "/stage next" in usage["text"]
    assert "reply_markup" not in usage
    assert sources.read_text() == before and bot.settings.config.learner.stage == stage


async def test_another_bots_bare_command_in_a_group_gets_no_answer(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock) -> None:
    """In a group Telegram hands every bot a bare `/roll` (meant for a dice bot): feedbot
    answered each with "I don't know that command", talking over the group's other bots."""
    group = -100123
    sources = write_sources(tmp_path / "sources.yaml", chats=(group,))
    async with running(sources, feedbot_env, clock, api):
        api.command(group, "/roll")
        [hint] = await ask(api, "/frobnicate@feedbot_test_bot", chat=group)
        [helptext] = await ask(api, "/help", chat=group)  # our own commands, bare, still work
        await asyncio.sleep(0.3)
    assert "/help" in hint["text"] and "/digest" in helptext["text"]
    assert len(api.sent(group)) == 2


async def test_a_group_that_becomes_a_supergroup_is_still_served(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock) -> None:
    """A group upgraded to a supergroup gets a new chat id: feedbot refused the very group it
    served ("this chat is not on its list"), and the votes, read-later list and delivered
    items stayed with the old id. Now the new id takes the old one's place in sources.yaml
    and the records follow it: nothing is lost, nothing comes again."""
    old, new = -4012345, -1000004012345
    sources = write_sources(tmp_path / "sources.yaml", chats=(old, CHAT))
    ids = seed_items(feedbot_env, clock(), 5)
    with Store.open(feedbot_env) as store:
        store.set_feedback(str(old), ids[0], "up", clock())
        store.set_feedback(str(old), ids[1], "later", clock())
        store.set_feedback(str(old), ids[2], "later", clock())
        store.mark_delivered(str(old), ids[:3], clock())
        store.set_digest_topic(str(old), 33, clock())
    async with running(sources, feedbot_env, clock, api) as runner:
        api.migrate(old, new)
        await eventually(lambda: runner.is_allowed(new))
        assert await runner.in_db(Store.digest_topic, str(new)) == 33  # its digest's topic too
        [helptext] = await ask(api, "/help@feedbot_test_bot", chat=new)
        [later] = await ask(api, "/later@feedbot_test_bot", chat=new)
        [digest] = await ask(api, "/digest@feedbot_test_bot", chat=new)
        assert runner.allowed_chats == [new, CHAT]
    assert "/digest" in helptext["text"] and len(api.sent(new)) == 3  # no refusal
    assert api.sent(old) == []
    assert "allowed_chats: [-1000004012345, 4242]" in sources.read_text()
    assert "# where the learner is" in sources.read_text()  # comments kept
    saved = [r[0]["callback_data"].split(":", 2)[2]
             for r in later["reply_markup"]["inline_keyboard"]]
    assert saved == [ids[2], ids[1]]  # the latest saved first, as before
    sent = {r[0]["callback_data"].split(":", 2)[2]
            for r in digest["reply_markup"]["inline_keyboard"]}
    assert sent == set(ids[3:])  # not the three the group had already
    with Store.open(feedbot_env) as store:
        assert [(v.item_id, v.value) for v in store.feedback(str(new))] == [(ids[0], "up")]


@pytest.mark.parametrize(("old", "new"), [(CHAT, -1000000000666), (-1000000000777, -1000000000666),
                                        (-4012345, 666)],
                         ids=["from-a-private-chat", "from-a-supergroup", "to-no-supergroup"])
async def test_a_forged_migration_notice_lets_no_chat_in(
        old: int, new: int, tmp_path: Path, feedbot_env: Path, clock: Clock,
        api: FakeBotAPI) -> None:
    """Only a basic group becomes a supergroup. A notice that names a private chat or a
    supergroup as the old chat (only a Bot API server, or FEEDBOT_TELEGRAM_API_URL, can send
    one) let its chat take the allowed chat's place, with its votes and read-later list."""
    sources = write_sources(tmp_path / "sources.yaml", chats=(old,))
    before = sources.read_text()
    async with running(sources, feedbot_env, clock, api) as runner:
        api.migrate(old, new)
        await asyncio.sleep(0.5)
        assert runner.allowed_chats == [old]
    assert sources.read_text() == before


async def test_an_update_python_telegram_bot_cannot_read_is_passed_over(
        bot: Any, api: FakeBotAPI, caplog: pytest.LogCaptureFixture) -> None:
    """One update python-telegram-bot cannot parse failed its whole batch, and the offset never
    moved past it: the same batch came back at once, for ever (565 getUpdates and 1,128
    CRITICAL log records in 3 s), and /help was never answered."""
    bad = api.push({"message": {"message_id": 1, "date": "bad", "text": "x",
                                "chat": {"id": CHAT, "type": "private"}}})
    [helptext] = await ask(api, "/help")
    assert "/digest" in helptext["text"]
    await asyncio.sleep(0.5)
    polls = len(api.calls_to("getUpdates"))
    await asyncio.sleep(1.0)
    assert len(api.calls_to("getUpdates")) - polls < 10  # long polls again, not a busy loop
    passed = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(passed) == 1 and f"(update {bad['update_id']})" in passed[0]


async def test_forged_button_data_with_a_lone_surrogate_is_answered_quietly(
        bot: Any, api: FakeBotAPI, caplog: pytest.LogCaptureFixture) -> None:
    """No SQLite text holds a lone surrogate: looking the item up raised UnicodeEncodeError,
    logged with a traceback, and the chat got "Something went wrong"."""
    [msg] = await ask(api, "/digest")
    api.press(CHAT, mid_of(api, msg), "fb:up:\ud800")
    [answer] = await api.wait_for("answerCallbackQuery")
    assert answer.params.get("text") != "Something went wrong"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("text", "stage"), [("/stage ｎｌｐ", "nlp"),
                                             ("/stage cnn\u200b", "cnn"),
                                             ("/stage \u2066GPUs\u2069", "gpus"),
                                             ("/stage ｎｅｘｔ", "massive-datasets")])
async def test_a_stage_typed_full_width_or_pasted_with_invisible_marks_is_found(
        bot: Any, api: FakeBotAPI, sources: Path, text: str, stage: str) -> None:
    """A CJK keyboard types `ｎｌｐ`, and a stage id copied from a web page or another chat
    brings a zero-width space or bidi isolates along: /stage answered "Unknown stage 'ｎｌｐ'"
    for an id that looks exactly right."""
    [moved] = await ask(api, text)
    assert "Unknown" not in moved["text"] and f"<code>{stage}</code>" in moved["text"]
    assert bot.settings.config.learner.stage == stage


async def test_a_send_to_a_group_that_became_a_supergroup_says_where_it_went(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock) -> None:
    """When the notices were missed (feedbot was down), Telegram's answer to a send names the
    new chat: SendFailed carries it, and `chat_migrated` switches to it as the notices do."""
    from feedbot.bot import SendFailed, chat_migrated, send_message
    from feedbot.telegram_render import plain

    old, new = -4012345, -1000004012345
    sources = write_sources(tmp_path / "sources.yaml", chats=(old,))
    async with running(sources, feedbot_env, clock, api) as runner:
        api.fail("sendMessage", migrate_to=new)
        with pytest.raises(SendFailed) as failed:
            await send_message(runner.app.bot, old, plain("hello"), backoff=0.01)
        assert failed.value.migrate_to == new and "supergroup" in str(failed.value)
        await chat_migrated(runner, old, new)
        assert runner.allowed_chats == [new]
        await send_message(runner.app.bot, new, plain("hello"))
    assert [m["text"] for m in api.sent(new)] == ["hello"]


# --- /search --------------------------------------------------------------------------------------

async def test_search_answers_with_the_items_and_their_buttons(bot: Any, api: FakeBotAPI,
                                                               feedbot_env: Path) -> None:
    """`feedbot search`'s code in the chat: the results as digest items, 👍/👎/🔖 under each
    (a vote counts as on a digest item), nothing recorded as delivered."""
    from feedbot.digest import _vectors

    from .support import fake_embedder

    with Store.open(feedbot_env) as store:  # embedded, as after a collect
        _vectors(store, fake_embedder(), store.items_since())
    [msg] = await ask(api, "/search support vector machines")
    assert telegram_html_problems(msg["text"]) == [] and telegram_length(msg["text"]) <= 4096
    assert msg["text"].startswith("🔎 <b>Search</b>: support vector machines")
    assert "Support vector machines explained 1" in msg["text"]
    assert "“support”, “vector”, “machines” in the title" in msg["text"]
    rows = msg["reply_markup"]["inline_keyboard"]
    assert [b["text"] for b in rows[0]] == ["1 👍", "1 👎", "1 🔖"]
    item_id = rows[0][0]["callback_data"].split(":", 2)[2]
    mid = next(m for m, v in api.messages.items() if v.get("_params") is msg)
    api.press(CHAT, mid, f"fb:up:{item_id}")
    await api.wait_for("editMessageReplyMarkup")
    with Store.open(feedbot_env) as store:
        await eventually(lambda: [(v.item_id, v.value) for v in store.feedback(str(CHAT))]
                         == [(item_id, "up")])
        assert store.get_item(item_id).item.title == "Support vector machines explained 1"
        assert store.delivered(str(CHAT)) == set()  # a search is not a digest
    [none] = await ask(api, "/search quantum chromodynamics")
    assert "nothing matches “quantum chromodynamics”" in none["text"]
    assert "reply_markup" not in none


async def test_search_of_an_empty_window_offers_no_command_line_option(
        bot: Any, api: FakeBotAPI, clock: Clock) -> None:
    """`feedbot search` says a longer --since looks further back; a chat has no --since."""
    clock.advance(days=400)  # every item is older than the search's window
    [none] = await ask(api, "/search support vector machines")
    assert "nothing published in the last 365 days" in none["text"]
    assert "--since" not in none["text"]


async def test_search_with_a_lone_surrogate_is_answered_with_the_query_mended(
        bot: Any, api: FakeBotAPI) -> None:
    """JSON may carry half a UTF-16 pair ("\\ud800"), which no reply can hold: the query is
    searched and echoed with U+FFFD in its place, instead of "something went wrong"."""
    [msg] = await ask(api, "/search support \ud800vector machines")
    assert msg["text"].startswith("🔎 <b>Search</b>: support \ufffdvector machines")


@pytest.mark.parametrize(("text", "args"), [
    ("/search \\LaTeX tables", ["\\LaTeX", "tables"]),
    ("/search C:\\data\\papers", ["C:\\data\\papers"]),
    ("/search \"a\\b c\" d", ["a\\b c", "d"]),
    ("/search it's \\n", ["it's", "\\n"]),  # an unclosed quote: split at blanks
    ("/follow \"My blog\" https://e.org/feed", ["My blog", "https://e.org/feed"]),
])
def test_a_backslash_is_kept_as_typed(text: str, args: list[str]) -> None:
    """A chat is not a shell: `\\LaTeX` is searched as written, not as `LaTeX`."""
    from feedbot.bot import command_args

    assert command_args(text) == args


async def test_search_echoes_a_backslash_as_typed(bot: Any, api: FakeBotAPI) -> None:
    [msg] = await ask(api, "/search \\LaTeX tables")
    assert msg["text"].startswith("🔎 <b>Search</b>: \\LaTeX tables")


async def test_search_without_words_gets_the_usage_and_a_stranger_nothing(
        bot: Any, api: FakeBotAPI) -> None:
    [usage] = await ask(api, "/search")
    assert usage["text"].startswith("Usage: /search WORDS")
    api.command(STRANGER, "/search support vector machines")
    [helptext] = await ask(api, "/help")  # the allowed chat is still served
    assert "/search WORDS" in helptext["text"]
    await asyncio.sleep(0.3)
    [refusal] = api.sent(STRANGER)
    assert "private feedbot" in refusal["text"]


# --- groups with forum topics ---------------------------------------------------------------------

FORUM = -1001234567489


@pytest.fixture
async def forum(api: FakeBotAPI, tmp_path: Path, feedbot_env: Path,
                clock: Clock) -> AsyncIterator[Any]:
    """feedbot serving a supergroup with topics, items to send."""
    seed_items(feedbot_env, clock(), 5)
    sources = write_sources(tmp_path / "sources.yaml", chats=(FORUM,))
    async with running(sources, feedbot_env, clock, api) as runner:
        yield runner


def mid_of(api: FakeBotAPI, msg: dict[str, Any]) -> int:
    """The message id Telegram gave a message the bot sent (by its recorded parameters)."""
    return next(m for m, v in api.messages.items() if v.get("_params") is msg)


def in_topic(api: FakeBotAPI, thread: int | None) -> list[dict[str, Any]]:
    """What the bot sent to the forum, in topic `thread` (None: General)."""
    return [m for m in api.sent(FORUM) if m.get("message_thread_id") == thread]


async def test_a_command_in_a_forum_topic_is_answered_in_that_topic(forum: Any,
                                                                    api: FakeBotAPI) -> None:
    """Every answer went to the forum's General topic (or failed when General is closed):
    now it goes where the command was given. A reply in General carries a message_thread_id
    too (the replied-to message's) without being in a topic: that one is answered in General,
    as python-telegram-bot's `reply_text` does, not sent to a thread that does not exist."""
    papers = api.open_topic(FORUM, "Papers")
    [helptext] = await ask(api, "/help", chat=FORUM, thread=papers)
    assert helptext["message_thread_id"] == papers and "/digest" in helptext["text"]
    [hint] = await ask(api, "/frobnicate@feedbot_test_bot", chat=FORUM, thread=papers)
    assert hint["message_thread_id"] == papers and "/help" in hint["text"]
    [general] = await ask(api, "/sources", chat=FORUM)
    assert "message_thread_id" not in general
    [reply] = await ask(api, "/help", chat=FORUM, reply_to=mid_of(api, general))
    assert "message_thread_id" not in reply and "/digest" in reply["text"]
    assert len(api.calls_to("sendMessage")) == 4  # none refused


async def test_the_daily_digest_goes_to_the_topic_of_the_last_digest_or_start(
        forum: Any, api: FakeBotAPI, feedbot_env: Path, clock: Clock) -> None:
    """/digest in a topic is answered there, its buttons tick there, and the chat's daily
    digest goes to that topic from then on (remembered in the store); /start or /digest in
    General takes it back to General."""
    papers = api.open_topic(FORUM, "Papers")
    [digest] = await ask(api, "/digest", chat=FORUM, thread=papers)
    assert digest["message_thread_id"] == papers and "reply_markup" in digest
    data = digest["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    api.press(FORUM, mid_of(api, digest), data)
    [answer] = await api.wait_for("answerCallbackQuery")
    [edit] = await api.wait_for("editMessageReplyMarkup")
    assert "Noted" in answer.params["text"] and int(edit.params["message_id"]) == mid_of(
        api, digest)
    assert edit.params["reply_markup"]["inline_keyboard"][0][0]["text"].startswith("✅")
    with Store.open(feedbot_env) as store:
        await eventually(lambda: store.digest_topic(str(FORUM)) == papers)
        await eventually(lambda: len(store.feedback(str(FORUM))) == 1)
    await forum.digest_tick()  # today's (08:00 Berlin) digest: the other two items
    assert len(in_topic(api, papers)) == 2 and in_topic(api, None) == []
    [moved] = await ask(api, "/start", chat=FORUM)
    assert "message_thread_id" not in moved
    with Store.open(feedbot_env) as store:
        await eventually(lambda: store.digest_topic(str(FORUM)) is None)
    clock.advance(days=1)
    await forum.digest_tick()
    assert len(in_topic(api, None)) == 2 and len(in_topic(api, papers)) == 2
    assert "Nothing new" in in_topic(api, None)[-1]["text"]  # the next day's, in General


@pytest.mark.parametrize("gone", ["deleted", "closed"])
async def test_a_deleted_or_closed_topic_falls_back_to_general_once_and_is_forgotten(
        forum: Any, api: FakeBotAPI, feedbot_env: Path, clock: Clock,
        caplog: pytest.LogCaptureFixture, gone: str) -> None:
    """The daily digest's topic was deleted or closed: Telegram answers "message thread not
    found" or "TOPIC_CLOSED". The digest goes to General instead, with one log line, and the
    topic is forgotten: the next day's goes to General at once, not failing every day."""
    papers = api.open_topic(FORUM, "Papers")
    [hello] = await ask(api, "/start", chat=FORUM, thread=papers)
    assert hello["message_thread_id"] == papers
    with Store.open(feedbot_env) as store:
        await eventually(lambda: store.digest_topic(str(FORUM)) == papers)
    (api.delete_topic if gone == "deleted" else api.close_topic)(FORUM, papers)
    await forum.digest_tick()
    [digest] = in_topic(api, None)
    assert "reply_markup" in digest and len(in_topic(api, papers)) == 1
    assert caplog.text.count(f"topic {papers} of chat {FORUM} is deleted or closed") == 1
    with Store.open(feedbot_env) as store:
        assert store.digest_topic(str(FORUM)) is None
        assert store.delivered(str(FORUM))  # sent, recorded
    clock.advance(days=1)
    await forum.digest_tick()
    tried = [c for c in api.calls_to("sendMessage")
             if c.params.get("message_thread_id") == papers]
    assert len(tried) == 2 and len(in_topic(api, None)) == 2  # the welcome, one failure
    if gone == "closed":  # an admin may still write there: answered in General
        [helptext] = await ask(api, "/help", chat=FORUM, thread=papers)
        assert "message_thread_id" not in helptext
        api.topics[(FORUM, papers)] = "open"  # reopened: answered there again
        [helptext] = await ask(api, "/help", chat=FORUM, thread=papers)
        assert helptext["message_thread_id"] == papers


# --- the database held by another connection ---------------------------------------------------

OTHER = 4343


class HeldDatabase:
    """Another connection holding feedbot's database for writing (a long collection
    transaction, a prune, VACUUM, another feedbot process) until `release()` or `seconds`."""

    def __init__(self, home: Path, seconds: float) -> None:
        self.path, self.seconds = home / "feedbot.db", seconds
        self.held, self.done = threading.Event(), threading.Event()
        self.released_at = 0.0
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        self.held.set()
        self.done.wait(self.seconds)
        self.released_at = time.monotonic()
        db.execute("COMMIT")
        db.close()

    def __enter__(self) -> HeldDatabase:
        self.thread.start()
        self.held.wait(5)
        return self

    def release(self) -> None:
        self.done.set()
        self.thread.join(5)

    def __exit__(self, *exc: object) -> None:
        self.release()


async def test_a_busy_database_stalls_no_chat_and_loses_no_vote(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock) -> None:
    """The handlers called SQLite on the event loop: a vote pressed while another connection
    held the database froze the whole bot until it was free (up to the 30 s busy timeout),
    every other chat's commands unanswered. Now the vote waits on feedbot's database thread:
    another chat's /help is answered meanwhile, and the vote is recorded once the database is
    free, acknowledged and ticked."""
    seed_items(feedbot_env, clock(), 5)
    sources = write_sources(tmp_path / "sources.yaml", chats=(CHAT, OTHER))
    async with running(sources, feedbot_env, clock, api) as runner:
        [msg] = await ask(api, "/digest")
        data = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        with HeldDatabase(feedbot_env, seconds=1.5) as held:
            api.press(CHAT, mid_of(api, msg), data)
            await asyncio.sleep(0.2)  # the press is taken, and waits for the database
            [helptext] = await ask(api, "/help", chat=OTHER)
            answered = time.monotonic()
            assert not api.calls_to("answerCallbackQuery")  # the vote still waits
        assert "/digest" in helptext["text"] and answered < held.released_at
        [answer] = await api.wait_for("answerCallbackQuery")
        assert "Noted" in answer.params["text"]
        await api.wait_for("editMessageReplyMarkup")
        votes = await runner.in_db(Store.feedback, str(CHAT))
        assert [(v.item_id, v.value) for v in votes] == [(data.split(":", 2)[2], "up")]


async def test_a_vote_the_busy_database_could_not_take_asks_to_press_again(
        api: FakeBotAPI, tmp_path: Path, feedbot_env: Path, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    """Held past the busy timeout ("database is locked"): the vote is not recorded, and the
    button's answer says so and asks to press again, instead of a bare "Something went wrong"
    (or, before, the whole bot frozen for the 30 s); pressed again later, it counts."""
    seed_items(feedbot_env, clock(), 5)
    sources = write_sources(tmp_path / "sources.yaml")
    async with running(sources, feedbot_env, clock, api, db_timeout=0.3) as runner:
        [msg] = await ask(api, "/digest")
        data = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        with HeldDatabase(feedbot_env, seconds=5) as held:
            api.press(CHAT, mid_of(api, msg), data)
            [answer] = await api.wait_for("answerCallbackQuery")
            assert time.monotonic() < held.released_at or not held.released_at
        assert "press the button again" in answer.params["text"]
        assert "database is busy" in caplog.text
        assert not api.calls_to("editMessageReplyMarkup") and len(api.sent(CHAT)) == 1
        assert await runner.in_db(Store.feedback, str(CHAT)) == []
        api.press(CHAT, mid_of(api, msg), data)
        await api.wait_for("editMessageReplyMarkup")
        assert len(await runner.in_db(Store.feedback, str(CHAT))) == 1


@pytest.mark.parametrize("typed", ["O’Reilly’s book", "O'Reilly's book"])
async def test_search_with_two_apostrophes_searches_the_words_as_typed(
        bot: Any, api: FakeBotAPI, typed: str) -> None:
    """Split shell-style, two apostrophes were a quoted span: "O'Reilly's book" was searched
    as "OReillys book", which matches nothing ("Bayes' rule and Fisher's …" the same)."""
    [msg] = await ask(api, f"/search {typed}")
    head = html.unescape(msg["text"].splitlines()[0])
    assert head == "🔎 Search: O'Reilly's book".replace("Search", "<b>Search</b>"), head


async def test_a_service_message_in_the_private_chat_gets_no_reply(bot: Any,
                                                                  api: FakeBotAPI) -> None:
    """Pinning the digest in the chat (a service message) got "I answer commands and
    buttons; /help lists them."; a plain message still gets it."""
    [digest] = await ask(api, "/help")
    api.push({"message": {"message_id": 9001, "date": int(time.time()),
                          "chat": {"id": CHAT, "first_name": "Ada", "type": "private"},
                          "from": {"id": CHAT, "is_bot": False, "first_name": "Ada"},
                          "pinned_message": {
                              "message_id": 9000, "date": int(time.time()),
                              "text": digest["text"], "from": {"id": 1, "is_bot": True,
                                                               "first_name": "feedbot"},
                              "chat": {"id": CHAT, "first_name": "Ada", "type": "private"}}}})
    await asyncio.sleep(0.5)
    assert api.sent(CHAT)[-1] is digest, api.sent(CHAT)[-1]
    [answer] = await ask(api, "hello")
    assert answer["text"].startswith("I answer commands and buttons")
    assert len([m for m in api.sent(CHAT) if m["text"].startswith("I answer")]) == 1


def slow_down(bot: Any, monkeypatch: pytest.MonkeyPatch, method: str, seconds: float,
              note_after: float = 0.3) -> Any:
    """The bot's "busy" timings in tenths of seconds, and `bot.<method>` taking `seconds`
    more; the original method."""
    import feedbot.bot as botmod

    monkeypatch.setattr(botmod, "BUSY_AFTER", 0.05)
    monkeypatch.setattr(botmod, "TYPING_EVERY", 0.1)
    monkeypatch.setattr(botmod, "BUSY_NOTE_AFTER", note_after)
    original = getattr(bot, method)

    async def slow(*args: Any, **kw: Any) -> Any:
        await asyncio.sleep(seconds)
        return await original(*args, **kw)

    monkeypatch.setattr(bot, method, slow)
    return original


async def test_a_slow_digest_shows_typing_and_says_once_that_it_takes_a_while(
        bot: Any, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first digest on a new install measures the model: a minute of silence read as a
    bot that was down. Now the chat shows "typing…" and is told once why it waits."""
    import feedbot.bot as botmod

    slow_down(bot, monkeypatch, "deliver_digest", 0.8)
    note, digest = await ask(api, "/digest", replies=2)
    assert note["text"] == botmod.BUSY_NOTE and "reply_markup" not in note
    assert "Stage 5: <b>" in digest["text"] and digest["reply_markup"]["inline_keyboard"]
    typing = api.calls_to("sendChatAction")
    assert len(typing) >= 3
    assert {(c.params["chat_id"], c.params["action"]) for c in typing} == {(str(CHAT), "typing")}
    calls = len(typing)
    await asyncio.sleep(0.3)
    assert len(api.calls_to("sendChatAction")) == calls  # it stops with the digest


async def test_the_slow_digest_note_neither_stops_the_digest_nor_lands_after_it(
        bot: Any, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The note is best effort: Telegram refusing it cancelled the digest being built. And it
    is about the wait before a digest: once the digest's messages went out (an answer slow to
    come), it came after them, saying the digest was still on its way."""

    deliver = slow_down(bot, monkeypatch, "deliver_digest", 0.8)
    api.fail("sendMessage", status=400, description="Bad Request: can't parse entities")
    [digest] = await ask(api, "/digest")
    assert "Stage 5: <b>" in digest["text"]
    monkeypatch.setattr(bot, "deliver_digest", deliver)
    seed_items(bot.home, bot.now(), 5, tag="b")
    api.slow("sendMessage", 0.6)  # delivered at once, answered late
    [digest] = await ask(api, "/digest")
    await asyncio.sleep(0.8)
    assert api.sent(CHAT)[-1] == digest and "Stage 5: <b>" in digest["text"]


async def test_a_slow_search_says_it_is_still_searching(
        bot: Any, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the digest's words about a first digest: a search waits on a busy worker."""
    import feedbot.bot as botmod

    slow_down(bot, monkeypatch, "in_worker", 0.5, note_after=0.2)
    note, found = await ask(api, "/search gradient descent", replies=2)
    assert note["text"] == botmod.SEARCH_BUSY_NOTE
    assert "gradient descent" in found["text"].lower()


@pytest.mark.parametrize(("status", "description"), [
    (400, "Bad Request: not enough rights to send text messages to the chat"),
    (403, "Forbidden: bot was blocked by the user"),
])
async def test_a_digest_asked_where_the_bot_may_not_post_is_one_log_line_that_says_what_to_do(
        bot: Any, api: FakeBotAPI, caplog: pytest.LogCaptureFixture, status: int,
        description: str) -> None:
    """/digest in a group where an admin took the bot's right to post: after the refused
    digest it sent "Telegram did not take the whole digest" there too, refused the same way,
    and the log did not say how to mend it."""
    await api.wait_for("setMyCommands")
    api.fail("sendMessage", status=status, times=5, description=description)
    api.command(CHAT, "/digest")
    await eventually(lambda: f"Telegram refuses messages to chat {CHAT}" in caplog.text)
    await asyncio.sleep(0.2)  # room for an apology, were one sent
    assert len(api.calls_to("sendMessage")) == 1  # the refused digest, nothing after it
    [said] = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith(f"Telegram refuses messages to chat {CHAT}")]
    assert "remove the chat from telegram.allowed_chats in sources.yaml" in said
    if status == 400:
        assert "Give the bot the right to send messages in the chat" in said
