"""The Telegram renderer: valid Telegram HTML, escaped feed text, limits from the Bot API spec,
items never split, buttons whose callback data fits."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedbot import telegram_render as tr
from feedbot.config import load_config
from feedbot.digest import Digest, DigestEntry
from feedbot.roadmap import load_roadmap

from .fake_bot_api import telegram_html_problems, telegram_length
from .support import CORPUS

NOW = datetime(2026, 3, 2, 7, tzinfo=UTC)
SPEC = CORPUS / "telegram" / "bot-api-spec" / "api.json"


def _spec_number(fields: list[dict], name: str, unit: str) -> int:
    desc = next(f["description"] for f in fields if f["name"] == name)
    return int(re.search(rf"1-(\d+) {unit}", desc).group(1))  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def limits() -> dict[str, int]:
    """Telegram's limits as the Bot API spec states them."""
    if not SPEC.exists():
        pytest.skip(f"Bot API spec not found at {SPEC}: limit tests need ../shared/corpus")
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    return {
        "text": _spec_number(spec["methods"]["sendMessage"]["fields"], "text", "characters"),
        "callback_data": _spec_number(spec["types"]["InlineKeyboardButton"]["fields"],
                                      "callback_data", "bytes"),
    }


def entry(n: int, **kw: object) -> DigestEntry:
    base: dict = dict(id=f"{n:012x}", title=f"Gradient descent, part {n}",
                      url=f"https://blog.example.org/posts/{n}", source="Example blog",
                      kind="post", authors=["Ada"], published=NOW, score=0.5,
                      why="about gradient descent and regularization",
                      summary="A gentle walk through the method. " * 3,
                      sources=["Example blog"])
    base.update(kw)
    return DigestEntry(**base)


def digest(entries: list[DigestEntry], demo: bool = False) -> Digest:
    roadmap = load_roadmap()
    return Digest(roadmap.get("machine-learning"), NOW, entries, demo=demo)


def assert_valid(messages: list[tr.TgMessage], limit: int) -> None:
    for m in messages:
        m.text.encode("utf-8")  # the Bot API takes UTF-8 only (a lone surrogate is not)
        for row in m.buttons:
            for b in row:
                b.text.encode("utf-8")
        assert telegram_html_problems(m.text) == [], m.text
        assert telegram_length(m.text) <= limit
        assert len(m.text) <= limit
        assert tr.utf16_len(tr.visible_text(m.text)) == telegram_length(m.text)


def test_renderer_limits_match_the_bot_api_spec(limits: dict[str, int]) -> None:
    assert tr.MAX_TEXT == limits["text"] == 4096
    assert limits["callback_data"] == tr.MAX_CALLBACK_DATA


def test_feed_text_is_escaped_and_links_are_safe(limits: dict[str, int]) -> None:
    evil = entry(1, title='<script>alert("x")</script> & <b>bold</b>',
                 url='https://e.org/?q="a"&b=<c>', source="A & B <feeds>",
                 why="fits <stage>", summary="x < y && y > z; &amp; stays literal")
    js = entry(2, url="javascript:alert(1)", title="Not a link")
    [msg] = tr.render_digest(digest([evil, js]))
    assert_valid([msg], limits["text"])
    shown = tr.visible_text(msg.text)
    assert '<script>alert("x")</script> & <b>bold</b>' in shown
    assert "x < y && y > z; &amp; stays literal" in shown
    assert 'href="https://e.org/?q=&quot;a&quot;&amp;b=&lt;c&gt;"' in msg.text
    assert "javascript:" not in msg.text
    assert "Stage 5: <b>" in msg.text  # the header names the stage


def test_each_item_has_title_link_source_why_and_summary() -> None:
    [msg] = tr.render_digest(digest([entry(1, shared_by=["Ada Lovelace"])]))
    assert '<a href="https://blog.example.org/posts/1">Gradient descent, part 1</a>' in msg.text
    assert "<i>Example blog · shared by Ada Lovelace · 2026-03-02</i>" in msg.text
    assert "💡 about gradient descent" in msg.text
    assert "A gentle walk" in msg.text
    assert msg.item_ids == (entry(1).id,)


def test_long_digest_is_split_between_items_within_the_limit(limits: dict[str, int]) -> None:
    # astral characters count twice in UTF-16: a Python-length check alone would overflow
    entries = [entry(n, title="𝔊𝔯𝔞𝔡𝔦𝔢𝔫𝔱 " * 40, summary="𝔰𝔲𝔪𝔪𝔞𝔯𝔶 " * 60)
               for n in range(1, 31)]
    messages = tr.render_digest(digest(entries))
    assert len(messages) > 1
    assert_valid(messages, limits["text"])
    delivered = [i for m in messages for i in m.item_ids]
    assert delivered == [e.id for e in entries]  # every item exactly once, in order
    for m in messages:
        ids_in_buttons = {tr.parse_feedback_data(b.data)[1] for row in m.buttons for b in row}
        assert ids_in_buttons == set(m.item_ids)  # an item's buttons travel with it
        for item_id in m.item_ids:
            assert f"/posts/{int(item_id, 16)}\"" in m.text  # the whole item is in this message
    assert "Your feedbot digest" in messages[0].text
    assert all("Your feedbot digest" not in m.text for m in messages[1:])
    assert not messages[0].silent and all(m.silent for m in messages[1:])


def test_a_monstrous_item_still_fits_one_message(limits: dict[str, int]) -> None:
    monster = entry(1, title="&" * 5000, url="https://e.org/" + "a" * 5000,
                    why="<" * 3000, summary="&<>" * 3000, source="S" * 2000)
    messages = tr.render_digest(digest([monster, entry(2)]))
    assert_valid(messages, limits["text"])
    assert [i for m in messages for i in m.item_ids] == [monster.id, entry(2).id]


def test_callback_data_fits_and_round_trips(limits: dict[str, int]) -> None:
    for item_id in ("arxiv:2401.00001", "arxiv:math.GT/0309136", "0123456789ab"):
        for value in ("up", "down", "later"):
            data = tr.feedback_data(value, item_id)
            assert data is not None and len(data.encode()) <= limits["callback_data"]
            assert tr.parse_feedback_data(data) == (value, item_id)
    assert tr.feedback_data("up", "x" * 80) is None
    assert tr.parse_feedback_data("st:cnn") is None and tr.parse_feedback_data(None) is None


def test_mark_choice_ticks_only_the_pressed_button() -> None:
    [msg] = tr.render_digest(digest([entry(1), entry(2)]))
    ticked = tr.mark_choice(msg.buttons, entry(1).id, "later")
    assert [b.text for b in ticked[0]] == ["1 👍", "1 👎", "✅ 1 🔖"]
    assert ticked[1] == msg.buttons[1]
    again = tr.mark_choice(ticked, entry(1).id, "up")
    assert [b.text for b in again[0]] == ["✅ 1 👍", "1 👎", "1 🔖"]


def test_a_bookmark_keeps_the_vote_ticked_and_a_vote_clears_both_others() -> None:
    """As the store records them: 🔖 sits beside a vote; a vote replaces the other vote and
    takes the item off the read-later list."""
    [msg] = tr.render_digest(digest([entry(1)]))
    liked = tr.mark_choice(msg.buttons, entry(1).id, "up")
    saved = tr.mark_choice(liked, entry(1).id, "later")
    assert [b.text for b in saved[0]] == ["✅ 1 👍", "1 👎", "✅ 1 🔖"]
    disliked = tr.mark_choice(saved, entry(1).id, "down")
    assert [b.text for b in disliked[0]] == ["1 👍", "✅ 1 👎", "1 🔖"]


def test_empty_digest_says_so_or_stays_silent() -> None:
    [msg] = tr.render_digest(digest([]))
    assert "Nothing new for your stage today." in msg.text and not msg.buttons
    assert tr.render_digest(digest([]), empty="silent") == []
    [demo] = tr.render_digest(digest([entry(1)], demo=True))
    assert "Nothing has been collected yet" in demo.text and not demo.item_ids


def test_the_sources_summary_counts_every_source() -> None:
    """Sources that are off (X without a token) had their lines but were left out of the
    counts at the top, which then did not add up."""
    rows = [{"name": n, "health": h, "items": 0, "last_success": "never", "error": ""}
            for n, h in [("a", "ok"), ("b", "off"), ("c", "off"), ("d", "new")]]
    [msg] = tr.render_sources(rows)
    assert msg.text.splitlines()[0] == "<b>Sources</b> (4): ✅ 1 ok · 🆕 1 new · • 2 off"


def test_help_lists_every_command() -> None:
    from feedbot.bot import COMMANDS

    assert all(f"/{name} " in tr.HELP for name, _ in COMMANDS)


def test_other_replies_are_valid(limits: dict[str, int]) -> None:
    rows = [{"name": f"Blog <{n}> & co", "health": h, "items": n, "last_success": "2h ago",
             "error": "HTTP 500 <html>" if h != "ok" else "",
             "notice": "moved permanently to https://example.org/a?b=1&c=<2>" if h == "ok" else ""}
            for n, h in enumerate(["ok", "new", "failing", "broken"] * 60)]
    sources = tr.render_sources(rows)
    assert len(sources) > 1
    # what a feed said beside its items (kept by the store) is shown under its line
    assert "📝 <i>moved permanently to https://example.org/a?b=1&amp;c=&lt;2&gt;</i>" in \
        sources[0].text
    assert_valid(sources, limits["text"])
    stage = tr.render_stage(load_roadmap(), "cnn")
    assert_valid([stage, tr.help_text(), tr.refusal(-1001234567890),
                  tr.config_problem("a < b & c" * 500),
                  tr.welcome("08:00", "Europe/Berlin"), *tr.render_later([entry(1)]),
                  *tr.render_later([])], limits["text"])
    datas = [b.data for row in stage.buttons for b in row]
    assert len(datas) == 13 and all(len(d.encode()) <= limits["callback_data"] for d in datas)
    assert any(b.text.startswith("✅ 8.") for row in stage.buttons for b in row)


def test_setup_instructions_are_a_line_that_loads(tmp_path: Path) -> None:
    msg = tr.setup_instructions(-1001234567890)
    assert telegram_html_problems(msg.text) == []
    block = re.search(r"<pre>(.*)</pre>", msg.text, re.S).group(1)  # type: ignore[union-attr]
    cfg = load_config(tmp_path / "sources.yaml", text=block)
    assert cfg.telegram.allowed_chats == [-1001234567890]
    # the bundled file already has `telegram:`: a second block would be a duplicate key
    assert "the bundled file has it, empty" in msg.text


def test_an_empty_digest_says_why_when_a_note_explains_it() -> None:
    """Everything in the window came from sources no longer followed: the chat is told, as
    `feedbot digest` tells the terminal, rather than only "nothing new"."""
    d = digest([])
    d.notes.append("nothing from the sources you follow in the last 7 days: the 3 items "
                   "collected then came from sources you no longer follow <b>")
    [msg] = tr.render_digest(d)
    assert "Nothing new for your stage today.\nNothing from the sources you follow" in msg.text
    assert telegram_html_problems(msg.text) == []


def test_a_long_roadmap_of_ones_own_keeps_the_stage_keyboard_within_telegrams_limits() -> None:
    """/stage put a button for every stage: a roadmap of 150 stages made a keyboard of 150
    buttons, which Telegram refuses ("reply markup is too long"), and /stage answered
    nothing. It shows the stages around the current one; /stage ID still reaches any."""
    from feedbot.roadmap import Roadmap, Stage

    stages = tuple(Stage(f"lesson-{i}", f"Lesson {i}", "", (), (), index=i) for i in range(150))
    roadmap = Roadmap("A long course", stages, Path("course.yaml"))
    for current, first, last in (("lesson-0", 1, 48), ("lesson-100", 77, 124),
                                 ("lesson-149", 103, 150)):
        msg = tr.render_stage(roadmap, current)
        buttons = [b for row in msg.buttons for b in row]
        assert len(buttons) <= 100 and all(len(row) <= 8 for row in msg.buttons)
        numbers = [int(b.text.removeprefix(tr.CHOSEN).split(".")[0]) for b in buttons]
        assert (numbers[0], numbers[-1]) == (first, last)
        assert any(b.text.startswith(tr.CHOSEN) and b.data == f"st:{current}" for b in buttons)
        assert "/stage ID" in msg.text and telegram_html_problems(msg.text) == []


def test_a_lone_surrogate_or_a_control_character_in_feed_text_still_gives_a_digest(
        limits: dict[str, int]) -> None:
    """A lone surrogate in a title, a name or a URL (a JSON feed's "\\ud83c", a roadmap's
    own stage title) made measuring the message raise UnicodeEncodeError: no digest, no
    /search, no /later, no /stage at all; and no UTF-8 could have carried it to Telegram.
    It becomes U+FFFD (percent-encoded in a link); the control characters Telegram drops and
    the bidi overrides and isolates (U+202E shows "txt.exe" as "exe.txt") are dropped."""
    from feedbot.roadmap import Roadmap, Stage

    odd = "half \ud83c emoji\x1b[2J \x00\u202etxt.exe\u2067 \x9b"
    e = entry(1, title=odd, summary=odd, why=odd, source=odd, sources=[odd], shared_by=[odd],
              url="https://e.org/a\ud83cb")
    messages = [*tr.render_digest(digest([e, entry(2)])), *tr.render_search(odd, [e]),
                *tr.render_later([e])]
    assert_valid(messages, limits["text"])
    assert [i for m in tr.render_digest(digest([e, entry(2)])) for i in m.item_ids] == \
        [e.id, entry(2).id]
    for m in messages:
        assert "half \ufffd emoji[2J txt.exe" in m.text
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", m.text)
    assert '<a href="https://e.org/a%ED%A0%BCb">half' in messages[0].text
    stages = (Stage("odd", odd, odd, (), (), index=0), Stage("next", "Next", "", (), (), index=1))
    stage = tr.render_stage(Roadmap("Mine", stages, Path("mine.yaml")), "odd")
    assert_valid([stage], limits["text"])
    assert "half \ufffd emoji" in stage.text and "\ufffd" in stage.buttons[0][0].text


def test_a_long_read_later_list_comes_a_page_at_a_time() -> None:
    """Hundreds of bookmarks were dozens of messages for one /later (8 items each), each
    send subject to Telegram's flood waits."""
    entries = [entry(n) for n in range(1, 51)]
    first = tr.render_later(entries)
    assert len(first) == 3 and sum(len(m.buttons) for m in first) == tr.LATER_PAGE == 24
    assert first[0].text.startswith("🔖 <b>Read later</b> (1–24 of 50, newest first; "
                                    "/later 2 for older ones)")
    assert first[0].buttons[0][0].data == f"fb:up:{entries[0].id}"
    last = tr.render_later(entries, page=3)
    assert last[0].text.startswith("🔖 <b>Read later</b> (49–50 of 50, newest first)")
    assert [row[0].data for m in last for row in m.buttons] == [
        f"fb:up:{e.id}" for e in entries[48:]]
    assert "<b>49.</b>" in last[0].text  # numbered through the whole list
    assert [m.text for m in tr.render_later(entries, page=99)] == [m.text for m in last]
    assert tr.render_later(entries[:5])[0].text.startswith("🔖 <b>Read later</b> (5)\n")
    assert all(telegram_html_problems(m.text) == [] for m in first + last)


@pytest.mark.parametrize("title", ["\u2067\u2069", "\u202e", " \u2066 "])
def test_a_title_of_marks_telegram_drops_is_untitled_not_an_empty_link(title: str) -> None:
    """The "(untitled)" fallback was tested before the bidi marks were taken out: the item
    showed as "1." and a link with no text to click."""
    e = entry(1, title=title)
    text = tr.render_entry(1, e)
    assert '">(untitled)</a>' in text and "></a>" not in text
    assert tr.fit_entry(1, e, budget=20).endswith("(untitled)")


def test_a_config_problem_keeps_the_indentation_of_the_line_it_shows() -> None:
    """A YAML error says "check the indentation of line 4" beside the line, quoted: squeezed
    to single spaces in the chat, the line showed no wrong indentation at all."""
    error = ("sources.yaml:4: not valid YAML: expected <block end>, but found "
             "'<block sequence start>' at column 4 of '   - name: b'")
    assert "'   - name: b'" in html.unescape(tr.config_problem(error).text)


def test_dates_are_shown_in_the_learners_time_zone() -> None:
    """A paper published at 23:12 UTC on the 4th came out on the 5th in Berlin: the digest,
    the read-later list and search results showed the 4th."""
    e = entry(1, published=datetime(2026, 12, 4, 23, 12, tzinfo=UTC))
    d = Digest(load_roadmap().get("machine-learning"), NOW, [e], timezone="Europe/Berlin")
    for messages in (tr.render_digest(d), tr.render_later([e], tz="Europe/Berlin"),
                     tr.render_search("gradient", [e], tz="Europe/Berlin")):
        assert "2026-12-05" in messages[0].text and "2026-12-04" not in messages[0].text
    assert "2026-12-04" in tr.render_later([e])[0].text  # a learner in UTC
