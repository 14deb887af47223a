"""Telegram renderer: the digest and the bot's other replies as Telegram HTML messages.

Pure: data in, `TgMessage`s (HTML text and an inline keyboard spec) out. Every text that came
from a feed is escaped; only tags Telegram's HTML parse mode accepts are produced (b, i, a href,
code, pre); a message never exceeds Telegram's limit, counted both as Telegram counts it (the
visible text in UTF-16 code units) and as raw HTML; an item is never split across messages.
This module must not send anything, read the clock or touch the store.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .render import COMMAND, link_url, local_date
from .text import UNSHOWN, mend_surrogates, shorten

if TYPE_CHECKING:
    from .digest import Digest, DigestEntry
    from .roadmap import Roadmap

MAX_TEXT = 4096  # sendMessage: "1-4096 characters after entities parsing"
MAX_CALLBACK_DATA = 64  # InlineKeyboardButton.callback_data: "1-64 bytes"
MAX_ITEMS_PER_MESSAGE = 8  # keeps a message readable and its keyboard short
# Not in the spec, but Telegram refuses an inline keyboard of more than 100 buttons, or one
# whose markup is too large, with "reply markup is too long": /stage shows the stages around
# the learner's, at most this many (a roadmap of the learner's own may have any number).
MAX_STAGE_BUTTONS = 48
FEEDBACK = {"up": "👍", "down": "👎", "later": "🔖"}
CHOSEN = "✅ "
HEALTH = {"ok": "✅", "new": "🆕", "failing": "⚠️", "broken": "❌", "off": "•"}


@dataclass(frozen=True)
class Button:
    text: str
    data: str  # callback_data


Keyboard = tuple[tuple[Button, ...], ...]


@dataclass(frozen=True)
class TgMessage:
    text: str  # Telegram HTML
    buttons: Keyboard = ()
    item_ids: tuple[str, ...] = ()  # digest items this message delivers
    silent: bool = False  # no notification sound (every digest message after the first)


# --- escaping and measuring -----------------------------------------------------------------

# Dropped from every text: the control characters Telegram drops itself (all but line break
# and tab), so that a message is measured as it will be shown, and the bidi overrides and
# isolates (U+202A-U+202E, U+2066-U+2069), which reorder what follows them; a lone surrogate
# (no UTF-8 can carry it: the message could not be sent, and measuring it raised) becomes
# U+FFFD.
_DROPPED = dict.fromkeys(c for c in UNSHOWN if c not in (0x09, 0x0A))


def clean(text: str) -> str:
    """`text` as Telegram may be sent it (see `_DROPPED`)."""
    return mend_surrogates(text.translate(_DROPPED))


def escape(text: str) -> str:
    """Text for Telegram HTML: `&`, `<` and `>` escaped (the only three it requires), and
    `clean`."""
    return clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def note_html(text: str) -> str:
    """A note of ours (a search's "nothing matches …", "… no vector yet") as Telegram HTML:
    in italics, escaped, with the commands it names in backticks (`render.COMMAND`) as <code>,
    outside the italics (Telegram lets no italic entity hold a code one)."""
    parts = COMMAND.split(escape(text))  # the commands at odd places
    return "".join(f"<code>{p}</code>" if k % 2 else f"<i>{p}</i>" if p else ""
                   for k, p in enumerate(parts))


def escape_attr(text: str) -> str:
    return escape(text).replace('"', "&quot;")


def safe_url(url: str) -> str | None:
    """The URL to link to, or None: http(s) with a host (no javascript:, no tg:), at most
    2,048 characters once what a URL cannot hold as such (blanks, control characters, bidi
    marks, lone surrogates) is percent-encoded, as the other views link it."""
    url = link_url(url) or ""
    return url if url and len(url) <= 2048 else None


_TAG = re.compile(r"<[^>]*>")


def visible_text(markup: str) -> str:
    """What Telegram shows for our HTML: tags dropped, entities decoded."""
    return html.unescape(_TAG.sub("", markup))


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def fits(markup: str, limit: int = MAX_TEXT) -> bool:
    """Within the limit as Telegram counts (visible UTF-16 units) and as raw HTML."""
    return len(markup) <= limit and utf16_len(visible_text(markup)) <= limit


def text_message(markup: str, limit: int = MAX_TEXT) -> TgMessage:
    """One message of our own HTML; should it ever be too long, its shortened plain text."""
    if fits(markup, limit):
        return TgMessage(markup)
    return TgMessage(escape(shorten(visible_text(markup), limit // 5)))  # ≤ 5 chars per char


def plain(text: str) -> TgMessage:
    """A plain-text reply (escaped)."""
    return text_message(escape(text))


# --- callback data ----------------------------------------------------------------------------

def feedback_data(value: str, item_id: str) -> str | None:
    data = f"fb:{value}:{item_id}"
    return data if len(data.encode()) <= MAX_CALLBACK_DATA else None


def parse_feedback_data(data: str | None) -> tuple[str, str] | None:
    """`fb:up:<item id>` → ("up", item id); None when it is not feedback."""
    parts = (data or "").split(":", 2)
    if len(parts) == 3 and parts[0] == "fb" and parts[1] in FEEDBACK and parts[2]:
        return parts[1], mend_surrogates(parts[2])  # forged data: no SQLite text holds one
    return None


def stage_data(stage_id: str) -> str | None:
    data = f"st:{stage_id}"
    return data if len(data.encode()) <= MAX_CALLBACK_DATA else None


def parse_stage_data(data: str | None) -> str | None:
    return data[3:] if data and data.startswith("st:") and len(data) > 3 else None


def feedback_row(n: int, item_id: str, values: Sequence[str] = ("up", "down", "later")
                 ) -> tuple[Button, ...]:
    row = []
    for v in values:
        data = feedback_data(v, item_id)
        if data is not None:
            row.append(Button(f"{n} {FEEDBACK[v]}", data))
    return tuple(row)


def mark_choice(keyboard: Keyboard, item_id: str, value: str) -> Keyboard:
    """The keyboard with the pressed feedback button ticked, as the store records it: a vote
    (👍/👎) unticks the other vote and 🔖 (a vote means the item was read, which takes it off
    the read-later list); 🔖 is a bookmark beside the vote and leaves the vote's tick alone."""
    out = []
    for row in keyboard:
        new_row = []
        for b in row:
            parsed = parse_feedback_data(b.data)
            if parsed and parsed[1] == item_id:
                text = b.text.removeprefix(CHOSEN)
                if parsed[0] == value:
                    b = Button(CHOSEN + text, b.data)
                elif value != "later":  # a vote: only it stays ticked
                    b = Button(text, b.data)
            new_row.append(b)
        out.append(tuple(new_row))
    return tuple(out)


# --- packing blocks into messages ---------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    text: str
    row: tuple[Button, ...] = ()
    item_id: str = ""


def pack(header: str, blocks: Iterable[Block], *, limit: int = MAX_TEXT,
         max_items: int = MAX_ITEMS_PER_MESSAGE, silent_after_first: bool = False
         ) -> list[TgMessage]:
    """Greedily fill messages with whole blocks, the header on the first one only."""
    messages: list[TgMessage] = []
    text = header
    rows: list[tuple[Button, ...]] = []
    ids: list[str] = []

    def flush() -> None:
        if text:
            messages.append(TgMessage(text, tuple(r for r in rows if r), tuple(ids),
                                      silent=silent_after_first and bool(messages)))

    for block in blocks:
        joined = f"{text}\n\n{block.text}" if text else block.text
        if text and (len(rows) >= max_items or not fits(joined, limit)):
            flush()
            text, rows, ids = block.text, [], []
        else:
            text = joined
        rows.append(block.row)
        if block.item_id:
            ids.append(block.item_id)
    flush()
    return messages


# --- the digest -----------------------------------------------------------------------------

def _meta(e: DigestEntry, tz: str) -> str:
    parts = [" · ".join(dict.fromkeys(e.sources or [e.source]))]
    if e.shared_by:
        parts.append("shared by " + ", ".join(e.shared_by[:3]))
    if e.published is not None:
        parts.append(local_date(e.published, tz))
    return " · ".join(p for p in parts if p)


def render_entry(n: int, e: DigestEntry, *, summary_chars: int = 300, link: bool = True,
                 field_chars: int = 300, tz: str = "UTC") -> str:
    """One item: numbered linked title, source line (its date in the learner's time zone
    `tz`), why it fits, a short summary."""
    title = escape(shorten(e.title, field_chars)).strip() or "(untitled)"  # bidi marks alone
    url = safe_url(e.url) if link else None
    head = f'<a href="{escape_attr(url)}">{title}</a>' if url else title
    lines = [f"<b>{n}.</b> <b>{head}</b>" + (" (withdrawn)" if e.withdrawn else "")]
    meta = _meta(e, tz)
    if meta:
        lines.append(f"<i>{escape(shorten(meta, min(field_chars, 200)))}</i>")
    if e.why:
        lines.append(f"💡 {escape(shorten(e.why, min(field_chars, 200)))}")
    if e.summary and summary_chars:
        lines.append(escape(shorten(e.summary, summary_chars)))
    return "\n".join(lines)


def fit_entry(n: int, e: DigestEntry, budget: int = MAX_TEXT, tz: str = "UTC") -> str:
    """`render_entry`, giving up summary, then link, then length until it fits `budget`."""
    for kw in ({}, {"summary_chars": 120}, {"summary_chars": 0}, {"summary_chars": 0,
               "link": False}, {"summary_chars": 0, "link": False, "field_chars": 80}):
        text = render_entry(n, e, tz=tz, **kw)  # type: ignore[arg-type]
        if fits(text, budget):
            return text
    return f"<b>{n}.</b> {escape(shorten(e.title, 60)).strip() or '(untitled)'}"


def digest_header(d: Digest, *, date_label: str = "", continued: bool = False) -> str:
    s = d.stage
    title = "📚 <b>Your feedbot digest</b>" + (f" · {escape(date_label)}" if date_label else "")
    if continued:
        title += " (continued)"
    return (f"{title}\nStage {s.index + 1}: <b>{escape(shorten(s.title, 120))}</b> "
            f"(<code>{escape(shorten(s.id, 60))}</code>)")


def render_digest(d: Digest, *, empty: str = "say", date_label: str = "",
                  continued: bool = False, limit: int = MAX_TEXT) -> list[TgMessage]:
    """The digest as messages; each item carries its 👍 / 👎 / read-later buttons.

    An empty digest (or the demo set, which is never delivered) is one short message, or none
    when `empty` is "silent".
    """
    header = digest_header(d, date_label=date_label, continued=continued)
    if d.demo or not d.items:
        if empty == "silent":
            return []
        why = ("Nothing has been collected yet; feedbot fetches your sources on a schedule."
               if d.demo else "Nothing new for your stage today.")
        if not d.demo:  # e.g. everything in the window came from sources no longer followed
            why += "".join(f"\n{escape(n[:1].upper() + n[1:])}." for n in d.notes)
        return [text_message(f"{header}\n\n{why}", limit)]
    budget = limit - len(header) - 2
    blocks = [Block(fit_entry(n, e, budget, d.timezone), feedback_row(n, e.id), e.id)
              for n, e in enumerate(d.items, 1)]
    return pack(header, blocks, limit=limit, silent_after_first=True)


# --- other replies ----------------------------------------------------------------------------

LATER_PAGE = 3 * MAX_ITEMS_PER_MESSAGE  # items of the read-later list per /later answer


def render_later(entries: Sequence[DigestEntry], limit: int = MAX_TEXT, page: int = 1,
                 per_page: int = LATER_PAGE, tz: str = "UTC") -> list[TgMessage]:
    """The read-later list, newest first, a page of `per_page` items at a time (hundreds of
    bookmarks were dozens of messages for one /later, and Telegram's flood waits); 👍 or 👎
    on an item takes it off the list. A page past the end shows the last."""
    if not entries:
        return [text_message("🔖 Nothing saved for later. Press 🔖 under a digest item "
                             "to keep it here.")]
    pages = -(-len(entries) // per_page)
    page = min(max(page, 1), pages)
    start = (page - 1) * per_page
    shown = entries[start:start + per_page]
    header = f"🔖 <b>Read later</b> ({len(entries)})"
    if pages > 1:
        more = f"; /later {page + 1} for older ones" if page < pages else ""
        header = (f"🔖 <b>Read later</b> ({start + 1}–{start + len(shown)} of {len(entries)}, "
                  f"newest first{more})")
    budget = limit - len(header) - 2
    blocks = [Block(fit_entry(n, e, budget, tz), feedback_row(n, e.id, ("up", "down")), e.id)
              for n, e in enumerate(shown, start + 1)]
    return [TgMessage(m.text, m.buttons) for m in pack(header, blocks, limit=limit)]


def render_search(query: str, entries: Sequence[DigestEntry], notes: Sequence[str] = (),
                  limit: int = MAX_TEXT, tz: str = "UTC") -> list[TgMessage]:
    """`/search`: the results as digest items, with their 👍 / 👎 / 🔖 buttons; without
    results, the one line (in `notes`) that says why. Not recorded as delivered."""
    header = f"🔎 <b>Search</b>: {escape(shorten(query, 200))}"
    said = "".join(f"\n{note_html(shorten(n, 300))}" for n in notes)
    if not entries:
        return [text_message(header + (said or "\nNothing found."), limit)]
    header += said
    budget = limit - len(header) - 2
    blocks = [Block(fit_entry(n, e, budget, tz), feedback_row(n, e.id), e.id)
              for n, e in enumerate(entries, 1)]
    return [TgMessage(m.text, m.buttons) for m in pack(header, blocks, limit=limit)]


def render_sources(rows: Sequence[dict[str, Any]], limit: int = MAX_TEXT) -> list[TgMessage]:
    """`/sources`: one line per source with its health, like `feedbot sources`."""
    if not rows:
        return [text_message("No sources yet. Follow one with /follow or by editing "
                             "sources.yaml.")]
    counts = {h: sum(r["health"] == h for r in rows) for h in HEALTH}
    summary = " · ".join(f"{HEALTH[h]} {n} {h}" for h, n in counts.items() if n)
    header = f"<b>Sources</b> ({len(rows)}): {summary}"
    blocks = []
    for r in rows:
        name = escape(shorten(str(r["name"]), 200))  # names may be as long as a message
        items = f"{r['items']} item{'s' if r['items'] != 1 else ''}"
        line = (f"{HEALTH.get(r['health'], '•')} <b>{name}</b> — {items},"
                f" last ok {escape(str(r['last_success']))}")
        if r.get("error"):
            line += f"\n    <i>{escape(shorten(str(r['error']), 200))}</i>"
        if r.get("notice"):
            line += f"\n    📝 <i>{escape(shorten(str(r['notice']), 200))}</i>"
        blocks.append(Block(line))
    return pack(header, blocks, limit=limit, max_items=10_000)


def render_stage(roadmap: Roadmap, current: str) -> TgMessage:
    """`/stage`: where the learner is, and a button per stage to move."""
    st = roadmap.get(current)
    lines = [f"🧭 Stage {st.index + 1}/{len(roadmap.stages)}: <b>{escape(st.title)}</b> "
             f"(<code>{escape(st.id)}</code>)", escape(shorten(st.summary, 600))]
    links = [f'• <a href="{escape_attr(u)}">{escape(shorten(r.title, 100))}</a>'
             for r in st.resources[:8] if (u := safe_url(r.url))]
    if links:
        lines += ["", "<b>Resources</b>", *links]
    shown = roadmap.stages
    if len(shown) > MAX_STAGE_BUTTONS:  # the stages around the current one
        start = min(max(0, st.index - MAX_STAGE_BUTTONS // 2), len(shown) - MAX_STAGE_BUTTONS)
        shown = shown[start:start + MAX_STAGE_BUTTONS]
    lines += ["", "Pick a stage below, or send /stage next." if shown == roadmap.stages else
              f"Pick one of the {len(shown)} stages around yours below, send /stage next, or "
              "/stage ID for any other."]
    buttons: list[Button] = []
    for s in shown:
        data = stage_data(s.id)
        if data is not None:
            mark = CHOSEN if s.id == current else ""
            buttons.append(Button(f"{mark}{s.index + 1}. {clean(shorten(s.title, 28))}", data))
    rows = tuple(tuple(buttons[i:i + 2]) for i in range(0, len(buttons), 2))
    return TgMessage(text_message("\n".join(lines)).text, rows)


def stage_changed(roadmap: Roadmap, stage_id: str) -> TgMessage:
    st = roadmap.get(stage_id)
    return text_message(f"🧭 Stage set to {st.index + 1}/{len(roadmap.stages)}: "
                        f"<b>{escape(st.title)}</b> (<code>{escape(st.id)}</code>). "
                        "The next digest ranks for it.")


HELP = """<b>feedbot</b> follows researchers, blogs and arXiv for you and sends a daily digest \
ranked for your stage of the deep-learning roadmap.

/digest — a digest now (only items you have not had)
/stage — your stage; <code>/stage ID</code> or <code>/stage next</code> to move on
/later — your read-later list (/later 2: the next page)
/search WORDS — find what feedbot collected, by meaning or by name (an arXiv id or a link finds \
that item)
/sources — what feedbot follows, with health
/follow … — follow a blog, arXiv query or person (same arguments as <code>feedbot follow</code>)
/unfollow NAME — stop following
/start — your digest time; in a group with topics, the daily digest goes to this topic
/help — this message

Under each item: 👍 more like this, 👎 less like this, 🔖 read later."""


def help_text() -> TgMessage:
    return TgMessage(HELP)


def welcome(digest_time: str, timezone: str) -> TgMessage:
    return TgMessage(f"👋 Hello! Your digest arrives every day at <b>{escape(digest_time)}</b> "
                     f"({escape(timezone)}).\n\n{HELP}")


def refusal(chat_id: int) -> TgMessage:
    """The one answer a chat not on the list gets. Its id is in it: the owner who adds the bot
    to a group learns the group's id there (it is in the log too)."""
    return TgMessage("Sorry, this is a private feedbot and this chat is not on its list. "
                     f"Its owner can let you in: this chat's id is <code>{int(chat_id)}</code>.")


def setup_instructions(chat_id: int) -> TgMessage:
    """What the owner of a fresh install adds to sources.yaml to let this chat in."""
    return TgMessage(
        "👋 feedbot is not set up for any chat yet. To let this chat use it, put its id in "
        "the <code>allowed_chats</code> list under <code>telegram:</code> in sources.yaml "
        "(the bundled file has it, empty, near its end), so that it reads:\n\n"
        f"<pre>telegram:\n  allowed_chats: [{int(chat_id)}]</pre>\n\n"
        "feedbot notices the change by itself within a few seconds; then send /start again.")


def config_problem(error: str) -> TgMessage:
    """Cut, not squeezed: the line a YAML error shows keeps its indentation (`'   - name: b'`),
    which its hint is about."""
    shown = error if len(error) <= 600 else error[:599] + "…"
    return text_message("⚠️ sources.yaml has a problem, so feedbot keeps running the last good "
                        f"configuration:\n<pre>{escape(shown)}</pre>")


def config_ok() -> TgMessage:
    return TgMessage("✅ sources.yaml is valid again; feedbot now uses it.")
