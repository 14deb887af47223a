"""A fake Telegram Bot API on 127.0.0.1 for tests, built on `support.LocalServer`.

It answers `/bot<token>/<method>` with JSON shaped like the real API, hands queued Updates
(shaped like the nutgram fixtures in ../shared/corpus/telegram/nutgram) to long-polling
getUpdates, checks sendMessage like Telegram does (HTML parse mode: allowed tags, balanced,
escaped; at most 4096 characters after entity parsing; at most 100 buttons, 8 a row; a
`message_thread_id` only to an open forum topic), can be told to fail a method (429 with
`retry_after`, 5xx), and records every call for assertions.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from .support import LocalServer, Request

TOKEN = "123456789:AAHfakeTokenForFeedbotTests-0123456789"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "feedbot",
            "username": "feedbot_test_bot", "can_join_groups": True,
            "can_read_all_group_messages": False, "supports_inline_queries": False}
JSON_FIELDS = ("reply_markup", "commands", "allowed_updates", "link_preview_options", "scope")
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                "blockquote", "tg-spoiler", "span", "tg-emoji"}
MAX_TEXT = 4096
MAX_BUTTONS, MAX_BUTTONS_PER_ROW = 100, 8  # inline keyboards: Telegram's, not in the spec


# --- Telegram's HTML rules, as a checker -----------------------------------------------------

class _TgHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}> is not supported")
        names = {k for k, _ in attrs}
        allowed = {"a": {"href"}, "span": {"class"}, "code": {"class"}, "tg-emoji": {"emoji-id"},
                   "blockquote": {"expandable"}}.get(tag, set())
        if names - allowed:
            self.problems.append(f"<{tag}> has unsupported attributes {sorted(names - allowed)}")
        if tag == "a" and not dict(attrs).get("href"):
            self.problems.append("<a> without href")
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.append(f"self-closing <{tag}/> is not supported")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> does not close the open tag {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.problems.append(f"unescaped < or > in text: {data[:40]!r}")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.problems.append(f"unsupported entity &{name};")
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))

    # Telegram's HTML knows its few tags and four entities, nothing of the rest of HTML
    # (feedbot never sends these: a renderer that did would be caught here)
    def handle_comment(self, data: str) -> None:
        self.problems.append("a comment <!--…--> is not supported")

    def handle_decl(self, decl: str) -> None:
        self.problems.append(f"a declaration <!{decl[:20]}> is not supported")

    def handle_pi(self, data: str) -> None:
        self.problems.append(f"a processing instruction <?{data[:20]}> is not supported")

    def unknown_decl(self, data: str) -> None:
        self.problems.append(f"<![{data[:20]}]> is not supported")


_BARE_AMP = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


def telegram_html_problems(text: str) -> list[str]:
    """Why Telegram's HTML parse mode would reject `text` (empty when it would not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: the Bot API takes UTF-8 only
        return [f"not UTF-8: {e.reason} at {e.start}"]
    p = _TgHTML()
    p.feed(text)
    p.close()
    problems = list(p.problems)
    if p.stack:
        problems.append(f"unclosed tags {p.stack}")
    if _BARE_AMP.search(text):
        problems.append("a bare & that is not an entity")
    return problems


def telegram_length(text: str) -> int:
    """Length after entity parsing, in UTF-16 code units (how Telegram counts)."""
    p = _TgHTML()
    p.feed(text)
    p.close()
    return len("".join(p.text).encode("utf-16-le", "surrogatepass")) // 2


# --- the server ------------------------------------------------------------------------------

@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeBotAPI:
    """`with FakeBotAPI() as api:` then point the bot at `api.url`."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.server = LocalServer()
        self.server.fallback = self._handle
        # answer shutdown in 50 ms instead of serve_forever's default 0.5 s poll
        self.server.thread = threading.Thread(target=self.server.httpd.serve_forever,
                                              kwargs={"poll_interval": 0.05}, daemon=True)
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self._updates: list[dict[str, Any]] = []
        self._failures: dict[str, list[tuple[int, dict[str, Any]] | None]] = {}
        self._delays: dict[str, list[float]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._next_update = 500
        self._next_message = 1
        # forum topics: (chat, message_thread_id) -> "open" or "closed"; a deleted one is gone
        self.topics: dict[tuple[int, int], str] = {}

    @property
    def url(self) -> str:
        return self.server.base

    def __enter__(self) -> FakeBotAPI:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.server.__exit__(*exc)

    # --- scripting -------------------------------------------------------------------------

    def fail(self, method: str, times: int = 1, status: int = 500,
             retry_after: int | None = None, after: int = 0,
             migrate_to: int | None = None, description: str | None = None) -> None:
        """After `after` more successful calls, the next `times` calls of `method` fail: 429
        with retry_after, 400 "upgraded to a supergroup" with migrate_to, or `status` (with
        Telegram's `description` when given)."""
        if description is not None:
            body = {"ok": False, "error_code": status, "description": description}
        elif migrate_to is not None:
            body = {"ok": False, "error_code": 400,
                    "description": "Bad Request: group chat was upgraded to a supergroup chat",
                    "parameters": {"migrate_to_chat_id": migrate_to}}
            status = 400
        elif retry_after is not None:
            body = {"ok": False, "error_code": 429,
                    "description": f"Too Many Requests: retry after {retry_after}",
                    "parameters": {"retry_after": retry_after}}
            status = 429
        elif status == 403:  # Telegram's words when the learner blocked the bot
            body = {"ok": False, "error_code": 403,
                    "description": "Forbidden: bot was blocked by the user"}
        else:
            body = {"ok": False, "error_code": status, "description": "Internal Server Error"}
        self._failures.setdefault(method, []).extend([None] * after + [(status, body)] * times)

    def heal(self, method: str) -> None:
        """The failures still queued for `method` are dropped: it answers normally again."""
        self._failures.pop(method, None)

    def slow(self, method: str, seconds: float, times: int = 1) -> None:
        """The next `times` calls of `method` are carried out, but answered `seconds` late."""
        self._delays.setdefault(method, []).extend([seconds] * times)

    def open_topic(self, chat_id: int, name: str = "Papers") -> int:
        """A new forum topic in the supergroup `chat_id`; returns its `message_thread_id` (the
        id of its `forum_topic_created` service message, as in Telegram)."""
        thread = self._new_message_id()
        self.topics[(chat_id, thread)] = "open"
        self.messages[thread] = {
            "message_id": thread, "from": {"id": 31337, "is_bot": False, "first_name": "Ada"},
            "chat": self._forum(chat_id), "date": int(time.time()), "message_thread_id": thread,
            "forum_topic_created": {"name": name, "icon_color": 13338331},
            "is_topic_message": True}
        return thread

    def close_topic(self, chat_id: int, thread: int) -> None:
        self.topics[(chat_id, thread)] = "closed"

    def delete_topic(self, chat_id: int, thread: int) -> None:
        del self.topics[(chat_id, thread)]

    @staticmethod
    def _forum(chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "title": "ML reading group", "is_forum": True,
                "type": "supergroup"}

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            self._next_update += 1
            update = {"update_id": self._next_update, **update}
            self._updates.append(update)
            self._cond.notify_all()
        return update

    def command(self, chat_id: int, text: str, username: str = "learner",
                thread: int | None = None, reply_to: int | None = None) -> dict[str, Any]:
        """A message, shaped like nutgram's Updates/command.json: in a private chat, or in a
        supergroup for a negative `chat_id`. In forum topic `thread` (from `open_topic`) like
        nutgram's message_topic.json; as a reply to message `reply_to` in a forum's General
        topic like message_general_topic_reply.json (a `message_thread_id`, the replied-to
        message's, but no `is_topic_message`)."""
        person = {"id": abs(chat_id) % 10**9, "is_bot": False, "first_name": "Ada",
                  "username": username, "language_code": "en"}
        entities = ([{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}]
                    if text.startswith("/") else [])
        chat = ({"id": chat_id, "first_name": "Ada", "username": username, "type": "private"}
                if chat_id > 0 else {"id": chat_id, "title": "ML reading group",
                                     "type": "supergroup"})
        message: dict[str, Any] = {
            "message_id": self._new_message_id(), "from": person, "chat": chat,
            "date": int(time.time())}
        if thread is not None or reply_to is not None:
            message["chat"] = self._forum(chat_id)
            replied = thread if thread is not None else reply_to
            assert replied is not None
            message["message_thread_id"] = replied
            message["reply_to_message"] = {k: v for k, v in self.messages[replied].items()
                                           if k != "_params"}
            if thread is not None:
                message["is_topic_message"] = True
        return self.push({"message": {**message, "text": text, "entities": entities}})

    def migrate(self, old: int, new: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """A group `old` upgraded to the supergroup `new`: Telegram's two service messages,
        shaped like nutgram's migrate_to_chat_id.json and migrate_from_chat_id.json."""
        person = {"id": 31337, "is_bot": False, "first_name": "Ada", "username": "ada",
                  "language_code": "en", "is_premium": False}
        to = self.push({"message": {
            "message_id": self._new_message_id(), "from": person,
            "chat": {"id": old, "title": "ML reading group", "type": "group"},
            "date": int(time.time()), "migrate_to_chat_id": new}})
        came = self.push({"message": {
            "message_id": 1, "from": person,
            "chat": {"id": new, "title": "ML reading group", "type": "supergroup"},
            "date": int(time.time()), "migrate_from_chat_id": old}})
        return to, came

    def press(self, chat_id: int, message_id: int, data: str) -> dict[str, Any]:
        """A button press on a message the bot sent, shaped like nutgram's callback_query.json."""
        return self.push({"callback_query": {
            "id": f"cq{self._next_update}", "chat_instance": "1628661761791766620",
            "from": {"id": chat_id, "is_bot": False, "first_name": "Ada"},
            "message": {k: v for k, v in self.messages[message_id].items() if k != "_params"},
            "data": data}})

    # --- reading what happened -------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in list(self.calls) if c.method == method]

    def sent(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Parameters of every sendMessage Telegram accepted (to `chat_id`)."""
        return [m["_params"] for m in self.messages.values() if m.get("_params") is not None
                and (chat_id is None or m["chat"]["id"] == chat_id)]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls_to(method)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {method} call(s), got "
                                     f"{len(self.calls_to(method))}: "
                                     f"{[c.method for c in self.calls]}")
            await asyncio.sleep(0.02)
        return self.calls_to(method)

    # --- the API ---------------------------------------------------------------------------

    def _new_message_id(self) -> int:
        with self._cond:
            self._next_message += 1
            return self._next_message

    def _handle(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        prefix = f"/bot{self.token}/"
        if not req.path.startswith(prefix):
            return self._reply(401, {"ok": False, "error_code": 401,
                                     "description": "Unauthorized"})
        method = req.path[len(prefix):]
        params = self._params(req)
        self.calls.append(Call(method, params))
        failures = self._failures.get(method)
        failure = failures.pop(0) if failures else None
        if failure is not None:
            return self._reply(*failure)
        handler = getattr(self, f"_m_{method}", None)
        result = handler(params) if handler else True
        delays = self._delays.get(method)
        if delays:
            time.sleep(delays.pop(0))
        if isinstance(result, tuple):  # an error reply
            return self._reply(*result)
        return self._reply(200, {"ok": True, "result": result})

    @staticmethod
    def _reply(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    @staticmethod
    def _params(req: Request) -> dict[str, Any]:
        ctype = req.headers.get("content-type", "")
        if "json" in ctype:
            params: dict[str, Any] = json.loads(req.body or b"{}")
        else:
            params = dict(parse_qsl(req.body.decode(), keep_blank_values=True))
        for k in JSON_FIELDS:
            if isinstance(params.get(k), str):
                params[k] = json.loads(params[k])
        return params

    def _m_getMe(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 5.0)
        with self._cond:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self._cond.wait_for(lambda: self._updates or self._closed, timeout)
            return list(self._updates)

    def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        text = params.get("text", "")
        if params.get("parse_mode") == "HTML":
            problems = telegram_html_problems(text)
            if problems:
                return 400, {"ok": False, "error_code": 400,
                             "description": f"Bad Request: can't parse entities: {problems[0]}"}
            length = telegram_length(text)
        else:
            length = len(text.encode("utf-16-le")) // 2
        if length > MAX_TEXT:  # the reply in nutgram's Responses/too_long.json
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: message is too long"}
        rows = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        if sum(map(len, rows)) > MAX_BUTTONS or any(len(r) > MAX_BUTTONS_PER_ROW for r in rows):
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: reply markup is too long"}
        chat_id = int(params["chat_id"])
        thread = params.get("message_thread_id")
        if thread is not None:
            params["message_thread_id"] = thread = int(thread)
            state = self.topics.get((chat_id, thread))
            if state != "open":  # Telegram's words for a deleted (or never made) or closed one
                problem = "message thread not found" if state is None else "TOPIC_CLOSED"
                return 400, {"ok": False, "error_code": 400,
                             "description": f"Bad Request: {problem}"}
        mid = self._new_message_id()
        msg: dict[str, Any] = {
            "message_id": mid, "from": BOT_USER, "date": int(time.time()), "text": text,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"}}
        if thread is not None:
            msg["chat"] = self._forum(chat_id)
            msg |= {"message_thread_id": thread, "is_topic_message": True}
        if params.get("reply_markup"):
            msg["reply_markup"] = params["reply_markup"]
        self.messages[mid] = {**msg, "_params": params}
        return msg

    def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:
        mid = int(params["message_id"])
        msg = {k: v for k, v in self.messages[mid].items() if k != "_params"}
        msg["reply_markup"] = params.get("reply_markup") or {"inline_keyboard": []}
        self.messages[mid] = {**self.messages[mid], "reply_markup": msg["reply_markup"]}
        return msg


# --- helpers for tests that run the whole runner -----------------------------------------------

CHAT = 4242
STRANGER = 777


class Clock:
    """A controllable clock for `Runner(clock=...)`."""

    def __init__(self, now: datetime) -> None:
        self.t = now

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> datetime:
        self.t += timedelta(**kw)
        return self.t


def write_sources(path: Path, *, chats: tuple[int, ...] = (CHAT,),
                  blogs: tuple[tuple[str, str], ...] = (), stage: str = "machine-learning",
                  digest_time: str = "08:00", tz: str = "Europe/Berlin", size: int = 3,
                  empty: str = "say") -> Path:
    lines = ["learner:", f"  stage: {stage}   # where the learner is",
             f'  digest_time: "{digest_time}"', f"  timezone: {tz}", f"  digest_size: {size}",
             f"  empty_digest: {empty}",
             "telegram:", f"  allowed_chats: [{', '.join(str(c) for c in chats)}]"]
    if blogs:
        lines.append("blogs:")
        for name, url in blogs:
            lines += [f"  - name: {name}", f"    url: {url}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TOPICS = ("gradient descent for linear regression", "support vector machines explained",
          "regularization and overfitting in classification", "logistic regression from scratch",
          "bias and variance in machine learning", "cross-validation done right",
          "decision trees and random forests", "k-nearest neighbours classification")


def seed_items(home: Path, now: datetime, n: int, tag: str = "", long: bool = False
               ) -> list[str]:
    """`n` distinct new posts on machine-learning topics from three blogs (the ranker takes at
    most three a source), published an hour before `now`; `long` ones fill about a fifth of a
    Telegram message each."""
    from feedbot.items import Item
    from feedbot.store import Store

    def words(i: int, k: int) -> str:  # distinct words per item keep them apart for the ranker
        return " " + " ".join(f"term{tag}{i}x{j}" for j in range(k)) if long else ""

    items = [Item(f"{TOPICS[i % len(TOPICS)].capitalize()} {tag}{i}{words(i, 20)}",
                  f"https://blog.example.org/{tag}{i}", f"Blog {'ABC'[i % 3]}", "post",
                  published=now - timedelta(hours=1),
                  summary=f"A tutorial on {TOPICS[i % len(TOPICS)]} & why <it> matters." +
                  words(i + 1000, 40))
             for i in range(n)]
    with Store.open(home) as store:
        store.upsert_items(items, now)
    return [it.id for it in items]


def withdrawn_and_saved(home: Path, chat: str) -> str:
    """A paper saved by `chat`, then withdrawn by its next arXiv version; its id."""
    from feedbot.items import Item
    from feedbot.store import Store

    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    v1 = Item("Deep nets", "https://arxiv.org/abs/2611.00001v1", "cs.CV", "paper",
              published=now, summary="We train deep nets.", arxiv_id="2611.00001",
              arxiv_version=1)
    with Store.open(home) as store:
        store.upsert_items([v1], now)
        store.set_feedback(chat, v1.id, "later", now)
        store.upsert_items([Item("Deep nets", v1.url, "cs.CV", "paper", arxiv_id="2611.00001",
                                 arxiv_version=2, withdrawn=True)], now)
    return v1.id


def options(**kw: Any) -> Any:
    from feedbot.runner import RunOptions

    base: dict[str, Any] = dict(poll_timeout=1.0, send_backoff=0.01, run_jobs=False)
    return RunOptions(**(base | kw))


@asynccontextmanager
async def running(sources: Path, home: Path, clock: Clock, api: FakeBotAPI | None = None,
                  **kw: Any) -> AsyncIterator[Any]:
    """A started Runner with the fake embedder, pointed at `api` (no bot when None)."""
    from feedbot.runner import Runner, load_settings

    from .support import fake_embedder

    runner = Runner(load_settings(sources), home=home, sources=sources,
                    embedder=fake_embedder(), token=api.token if api else None,
                    api_url=api.url if api else None, options=options(**kw), clock=clock)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


async def eventually(check: Any, timeout: float = 5.0) -> None:
    """Wait until `check()` is true (the bot acts on a reply after the server recorded it)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.02)
