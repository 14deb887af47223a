"""The Telegram side of `feedbot run`: the python-telegram-bot `Application`, its command and
button handlers, access control, sending with flood control and retries, and keeping the bot
token out of every log line.

Handlers are thin (`async def name(update, context) -> None`): they ask the runner, which calls
the same pipeline functions as the CLI, and render with `telegram_render`. Nothing here
schedules, collects, ranks or writes SQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import shlex
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from .redact import install_redaction
from .roadmap import stage_key
from .telegram_render import (
    Button,
    Keyboard,
    TgMessage,
    help_text,
    mark_choice,
    parse_feedback_data,
    parse_stage_data,
    plain,
    refusal,
    render_later,
    render_search,
    render_sources,
    render_stage,
    setup_instructions,
    stage_changed,
    welcome,
)

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger(__name__)

# PTB >= 22.2 warns whenever a time period (e.g. RetryAfter.retry_after) is read as an int; it
# reads this variable at that moment. Opting in to the future `timedelta` form keeps the warnings
# out; `_seconds` reads both forms.
os.environ.setdefault("PTB_TIMEDELTA", "true")

DEFAULT_API_URL = "https://api.telegram.org"
REDACTED = "<bot-token>"
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
# Seconds to wait for Telegram's answer to sendMessage (python-telegram-bot's default is 5). A
# lost answer means the message may have arrived and is not resent, so wait long enough that
# only a real outage gets there.
SEND_TIMEOUT = 30.0
POLLING_TASK = "Updater:start_polling:polling_task"  # python-telegram-bot's name for the task
COMMANDS = (
    ("digest", "A digest now: new items for your stage"),
    ("stage", "Your roadmap stage; /stage ID or /stage next to move"),
    ("later", "Your read-later list"),
    ("search", "Find what feedbot collected: /search WORDS"),
    ("sources", "What feedbot follows, with health"),
    ("follow", "Follow a blog, arXiv query or person"),
    ("unfollow", "Stop following NAME"),
    ("help", "What this bot can do"),
    ("start", "Start here"),
)
ACK = {"up": "👍 Noted: more like this.", "down": "👎 Noted: less like this.",
       "later": "🔖 Saved: /later lists it."}
BUSY = "⏳ Not saved: feedbot's database is busy. Please press the button again in a minute."
T = TypeVar("T")


class SendFailed(Exception):
    """Telegram did not take a message, after the retries."""

    def __init__(self, message: str, retry_after: float = 0.0,
                 migrate_to: int | None = None, topic_gone: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds Telegram asked us to wait (flood control)
        self.migrate_to = migrate_to  # the group is now this supergroup (`chat_migrated`)
        self.topic_gone = topic_gone  # the forum topic it was sent to was deleted or closed


class MaybeSent(Exception):
    """The request reached Telegram but its answer did not come back (a read timeout, a dropped
    connection): the message may have been delivered. Sending it again could show it twice, so
    it is not resent; the caller decides what that means."""


# --- the token stays out of logs ---------------------------------------------------------------

def install_token_redaction(secret: str) -> Callable[[], None]:
    """From now on every log record, from any logger to any handler, has `secret` replaced in its
    message, arguments and exception text. Returns a function that undoes it."""
    return install_redaction(secret, placeholder=REDACTED)


# --- sending ------------------------------------------------------------------------------------

def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _maybe_delivered(e: NetworkError) -> bool:
    """Whether a request that failed with `e` may still have been carried out by Telegram: the
    request went out and the answer was lost. A refused or failed connection, a full pool or an
    error status from the server all mean it was not."""
    import httpx

    return isinstance(e.__cause__, (httpx.ReadTimeout, httpx.ReadError,
                                    httpx.RemoteProtocolError))


_OUT = "feedbot_request_was_out"


def request_was_out(e: BaseException) -> bool:
    """Whether a cancellation that stopped a `retrying(..., resend=False)` came while its
    request was out: the message may have been delivered."""
    return bool(getattr(e, _OUT, False))


async def retrying(call: Callable[[], Awaitable[T]], *, attempts: int = 5, backoff: float = 1.0,
                   max_wait: float = 300.0, resend: bool = True) -> T:
    """Await `call()`; on 429 wait the `retry_after` Telegram asked for, on a network error back
    off exponentially (with jitter). Bad requests and refusals are raised at once.

    With `resend=False` (sending a message), a request that may have been carried out although
    its answer was lost raises `MaybeSent` instead of being made again; and a cancellation (a
    stop) that comes while the request is out is marked so (`request_was_out`), unlike one
    that comes while waiting to retry, when nothing is out.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except asyncio.CancelledError as e:
            if not resend:
                setattr(e, _OUT, True)  # noqa: B010 - an attribute on this exception instance
            raise
        except RetryAfter as e:
            wait = _seconds(e.retry_after)
            if attempt == attempts or wait > max_wait:
                raise
            log.warning("Telegram flood control: waiting %.1fs as asked", wait)
        except (BadRequest, Forbidden, InvalidToken):  # BadRequest is a NetworkError: first
            raise
        except NetworkError as e:
            if not resend and _maybe_delivered(e):
                raise MaybeSent(f"no answer from Telegram ({type(e).__name__}: {e})") from e
            if attempt == attempts:
                raise
            wait = backoff * 2 ** (attempt - 1) * (1 + random.random() / 4)
            log.warning("Telegram unreachable (%s); retry %d of %d in %.1fs", e, attempt,
                        attempts - 1, wait)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def keyboard(rows: Keyboard) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.text, callback_data=b.data) for b in row]
                                 for row in rows])


def keyboard_spec(markup: InlineKeyboardMarkup | None) -> Keyboard:
    if markup is None:
        return ()
    return tuple(tuple(Button(b.text, b.callback_data) for b in row
                       if isinstance(b.callback_data, str)) for row in markup.inline_keyboard)


# Telegram's answers to a message sent to a forum topic that was deleted, or closed (only
# the group's admins may write there then)
TOPIC_GONE = ("message thread not found", "topic_closed", "topic_deleted")


def topic_gone(e: TelegramError) -> bool:
    """Whether Telegram refused a message because its forum topic is deleted or closed."""
    return isinstance(e, BadRequest) and any(t in e.message.lower() for t in TOPIC_GONE)


# Telegram's answers (400) to a message to a group where the bot may not post: an admin took
# its right to send messages, or restricted it, or (a channel) it is no admin that may post.
# The same refusals come as 403 too ("bot is not a member of the supergroup chat", "bot was
# kicked from the supergroup chat"): every 403 is taken as one, see `unreachable`
NO_RIGHTS = ("not enough rights to send", "have no rights to send", "chat_write_forbidden",
             "need administrator rights in the channel")


def no_rights(e: BaseException | None) -> bool:
    """Whether Telegram refused a message because the bot may not post in the chat (400)."""
    return isinstance(e, BadRequest) and any(t in e.message.lower() for t in NO_RIGHTS)


def unreachable(e: BaseException | None) -> bool:
    """Whether Telegram refused a message because the chat is out of the bot's reach, which
    no retry within the day mends: the bot was blocked or removed from the group (403), the
    chat is gone or no longer known to the bot (400 "chat not found"), or the bot may not
    post there (400 `no_rights`)."""
    return isinstance(e, Forbidden) or no_rights(e) or (
        isinstance(e, BadRequest) and "chat not found" in e.message.lower())


def why_refused(e: BaseException | None) -> str:
    """For a message refused because the chat is out of reach (`unreachable`): why, and what
    mends it, for the log; "" for any other error."""
    if no_rights(e):
        return ("the bot may not post there: an admin restricted it. Give the bot the right to "
                "send messages in the chat, or remove the chat from telegram.allowed_chats in "
                "sources.yaml")
    if unreachable(e):
        return ("the bot was blocked, or removed from the group: unblock it or add it back, or "
                "remove the chat from telegram.allowed_chats in sources.yaml")
    return ""


async def send_message(bot: Any, chat_id: int, msg: TgMessage, *, thread: int | None = None,
                       attempts: int = 5, backoff: float = 1.0,
                       timeout: float = SEND_TIMEOUT) -> Message:
    """sendMessage in HTML with the message's buttons, to forum topic `thread` when given,
    waiting up to `timeout` seconds for Telegram's answer. Raises SendFailed when Telegram
    won't take it, and MaybeSent when the answer was lost (the message is then not sent again:
    it may already be there)."""
    try:
        return await retrying(lambda: bot.send_message(
            chat_id, msg.text, parse_mode=ParseMode.HTML, reply_markup=keyboard(msg.buttons),
            link_preview_options=NO_PREVIEW, disable_notification=msg.silent,
            message_thread_id=thread, read_timeout=timeout),
            attempts=attempts, backoff=backoff, resend=False)
    except RetryAfter as e:
        raise SendFailed(f"RetryAfter: {e}", _seconds(e.retry_after)) from e
    except ChatMigrated as e:
        raise SendFailed(f"ChatMigrated: {e}", migrate_to=e.new_chat_id) from e
    except TelegramError as e:
        raise SendFailed(f"{type(e).__name__}: {e}",
                         topic_gone=thread is not None and topic_gone(e)) from e


async def set_commands(bot: Any) -> None:
    """Register the command list (`setMyCommands`); a failure is logged, not fatal."""
    try:
        await retrying(lambda: bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS]))
    except TelegramError as e:
        log.warning("could not register the command list: %s", e)


# --- building the application ------------------------------------------------------------------

def api_url_from_env() -> str:
    """`FEEDBOT_TELEGRAM_API_URL` (a local Bot API server), else Telegram's."""
    return (os.environ.get("FEEDBOT_TELEGRAM_API_URL") or DEFAULT_API_URL).rstrip("/")


def is_custom_api(url: str) -> bool:
    """Whether `url` is another Bot API server than Telegram's own."""
    return url.rstrip("/") != DEFAULT_API_URL.rstrip("/")


GET_UPDATES_CONNECTIONS = 2
REQUEST_CONNECTIONS = 256  # python-telegram-bot's own default for the other requests


class TolerantBot(ExtBot[None]):
    """python-telegram-bot's bot, whose getUpdates survives an update it cannot read.

    python-telegram-bot reads a whole batch of updates at once: one it cannot parse (a field of
    a shape it does not know, as Telegram adds them) fails the batch, the offset never moves
    past it, and the same batch came back at once, for ever: the bot answered no one, and the
    log grew by a megabyte a second. Here the batch is asked for again and read update by
    update; one that cannot be read is logged once and handed on empty (only its id, which no
    handler answers), so that the offset moves past it."""

    async def get_updates(self, offset: int | None = None, limit: int | None = None,
                          timeout: Any = None, allowed_updates: Sequence[str] | None = None,
                          **kw: Any) -> tuple[Update, ...]:
        try:
            return await super().get_updates(offset=offset, limit=limit, timeout=timeout,
                                              allowed_updates=allowed_updates, **kw)
        except TelegramError:  # the network, the API: the updater's own retries handle those
            raise
        except Exception:  # python-telegram-bot could not read the batch
            pass
        raw = await self._post("getUpdates", {"offset": offset, "limit": limit, "timeout": 0,
                                              "allowed_updates": allowed_updates})
        updates: list[Update] = []
        for data in raw if isinstance(raw, list) else []:
            try:
                update = Update.de_json(data, self)
            except Exception as e:  # whatever the parser raises
                update_id = data.get("update_id") if isinstance(data, dict) else None
                log.warning("an update from Telegram that python-telegram-bot cannot read was "
                            "passed over (update %s): %s: %s", update_id, type(e).__name__, e)
                if not isinstance(update_id, int) or isinstance(update_id, bool):
                    continue
                update = Update(update_id=update_id)
            if update is not None:
                self.insert_callback_data(update)
                updates.append(update)
        return tuple(updates)


def _not_invalid_json(record: logging.LogRecord) -> bool:
    """python-telegram-bot logs an answer that is not JSON (a proxy's HTML error page, a URL
    that is no Bot API) as an ERROR with a traceback and the whole page, then raises; feedbot
    reports the error it raises, in one line. Shown with -vv."""
    return (logging.getLogger().getEffectiveLevel() <= logging.DEBUG
            or not record.getMessage().startswith("Can not load invalid JSON data"))


_PTB_REQUEST_LOG = "telegram.request.BaseRequest"
# bot_data key: the bot's two HTTP clients. A stop before getMe ever worked (Telegram
# unreachable at start) finds the application uninitialized, and its shutdown then closes
# nothing: the runner closes them itself (`close_requests`).
REQUESTS = "feedbot.requests"


async def close_requests(app: Application) -> None:
    """Close the bot's HTTP clients, whatever state the application is in (idempotent)."""
    for request in app.bot_data.get(REQUESTS, ()):
        await request.shutdown()


def build_application(token: str, runner: Runner, api_url: str | None = None) -> Application:
    """The Application with every handler; no JobQueue (the runner owns the scheduler)."""
    request_log = logging.getLogger(_PTB_REQUEST_LOG)
    if _not_invalid_json not in request_log.filters:
        request_log.addFilter(_not_invalid_json)
    api = (api_url or api_url_from_env()).rstrip("/")
    # Two connections for getUpdates: a stop that cancels the long poll just as it answers
    # can leave its connection held, and with one the updater's last getUpdates (confirming
    # what it took, so that the next start does not get it again) found none, and logged an
    # ERROR with a traceback ("Pool timeout"): 4 in 100 restarts as a button was pressed.
    requests = (HTTPXRequest(connection_pool_size=REQUEST_CONNECTIONS),
                HTTPXRequest(connection_pool_size=GET_UPDATES_CONNECTIONS))
    bot = TolerantBot(token, base_url=f"{api}/bot", base_file_url=f"{api}/file/bot",
                      request=requests[0], get_updates_request=requests[1])
    app = Application.builder().bot(bot).job_queue(None).concurrent_updates(True).build()
    app.bot_data["runner"] = runner
    app.bot_data[REQUESTS] = requests
    app.add_handler(TypeHandler(Update, gate), group=-1)
    for name, fn in (("start", start), ("help", help_command), ("digest", digest_command),
                     ("stage", stage_command), ("follow", follow_command),
                     ("unfollow", unfollow_command), ("sources", sources_command),
                     ("later", later_command), ("search", search_command)):
        app.add_handler(CommandHandler(name, fn))
    app.add_handler(CallbackQueryHandler(on_feedback, pattern=r"^fb:"))
    app.add_handler(CallbackQueryHandler(on_stage_button, pattern=r"^st:"))
    app.add_handler(CallbackQueryHandler(on_unknown_button))
    app.add_handler(MessageHandler(filters.COMMAND, unknown_command))
    # not a service message (a message pinned, the auto-delete timer set): no reply to those
    app.add_handler(MessageHandler(
        filters.ChatType.PRIVATE & ~filters.COMMAND & ~filters.StatusUpdate.ALL,
        on_other_message))
    app.add_error_handler(on_error)
    return app


# --- helpers for handlers ------------------------------------------------------------------------

def _runner(context: ContextTypes.DEFAULT_TYPE) -> Runner:
    return context.application.bot_data["runner"]  # type: ignore[no-any-return]


def _chat_id(update: Update) -> int:
    assert update.effective_chat is not None  # the gate lets no chat-less update through
    return update.effective_chat.id


def thread_of(update: Update) -> int | None:
    """The forum topic the update came from (a command, or a button on a message there), as
    python-telegram-bot's `Message.reply_text` picks it: `message_thread_id` only when the
    message is in a forum topic (`is_topic_message`). A reply in a forum's General topic, or
    in a group without topics, has a `message_thread_id` too (the message replied to), and
    sending there fails with "message thread not found": None, the chat's main thread."""
    msg = update.effective_message
    if isinstance(msg, Message) and msg.is_topic_message and msg.message_thread_id:
        return msg.message_thread_id
    return None


async def _reply(update: Update, context: ContextTypes.DEFAULT_TYPE,
                 messages: TgMessage | Sequence[TgMessage]) -> None:
    """Answer in the chat, in the forum topic the update came from."""
    runner = _runner(context)
    for msg in [messages] if isinstance(messages, TgMessage) else messages:
        try:
            await runner.send(_chat_id(update), msg, thread=thread_of(update))
        except MaybeSent as e:  # it may be there; sending it again could show it twice
            log.warning("a reply to chat %s may not have arrived: %s", _chat_id(update), e)


# Seconds of flood wait (429 retry_after) worth waiting out to answer a button press.
# Telegram takes the answer only for a short while after the press (the Bot API gives no
# figure; bots report about 15 s, then "query is too old"), and the client's spinner stops by
# itself. A longer wait outlives the answer: waiting it out held up the rest of the handling
# (the tick) for up to 5 minutes, to send an answer Telegram would refuse.
ANSWER_MAX_WAIT = 5.0


async def _answer(update: Update, text: str | None = None) -> None:
    """Answer a button press (stops the client's spinner); best effort. Telegram refuses
    answers to presses older than a few seconds (made while feedbot was down, or answered
    after a long flood wait, which is therefore not waited out): the press still counts, only
    the little notice is lost."""
    q = update.callback_query
    if q is None:
        return
    try:
        await retrying(lambda: q.answer(text), attempts=2, max_wait=ANSWER_MAX_WAIT)
    except RetryAfter as e:
        log.info("gave up answering a button press (flood control: Telegram asked to wait "
                 "%.0fs); the press is handled all the same", _seconds(e.retry_after))
    except TelegramError as e:
        log.info("could not answer a button press: %s", e)


_SMART_QUOTES = str.maketrans("“”„‘’", "\"\"\"''")
# Phones' "smart punctuation" turns a typed `--name` into `—name` (or `–name`)
_SMART_OPTION = re.compile(r"(?<!\S)[—–](?=[^\W\d_])")


def command_args(text: str | None) -> list[str]:
    """Arguments after the command, with shell-style quotes ("My blog"), smart quotes too, and
    options whose `--` a phone made a dash (`—name`). A backslash is a character like any other
    (`\\LaTeX`, `C:\\data`): a chat is not a shell. An unclosed quote (`it's`) splits at blanks."""
    parts = (text or "").split(maxsplit=1)
    rest = parts[1] if len(parts) > 1 else ""
    rest = _SMART_OPTION.sub("--", rest.translate(_SMART_QUOTES))
    lexer = shlex.shlex(rest, posix=True)
    lexer.whitespace_split, lexer.commenters, lexer.escape = True, "", ""
    try:
        return list(lexer)
    except ValueError:
        return rest.split()


def _text(update: Update) -> str:
    msg = update.effective_message
    return (msg.text or "") if msg is not None else ""


def _is_start(update: Update) -> bool:
    words = _text(update).split()
    return bool(words) and words[0].split("@")[0].lower() == "/start"


def _command_word(update: Update) -> str:
    """The message's first word when it is a command (`/digest@feedbot`), else ''."""
    words = _text(update).split()
    return words[0] if words and words[0].startswith("/") else ""


def _for_another_bot(update: Update, username: str | None) -> bool:
    """A command addressed to some other bot in a group (`/start@other_bot`)."""
    word = _command_word(update)
    if "@" not in word:
        return False
    return word.split("@", 1)[1].lower() != (username or "").lower()


def _who(update: Update) -> str:
    user = update.effective_user
    if user is None:
        return "unknown user"
    return f"@{user.username}" if user.username else user.full_name


# --- a group that became a supergroup ---------------------------------------------------------

def _migration(update: Update) -> tuple[int, int] | None:
    """(old chat id, new chat id) when `update` is Telegram's notice that a group became a
    supergroup: `migrate_to_chat_id` in the old group, `migrate_from_chat_id` in the new one."""
    msg = update.message
    if msg is None or update.effective_chat is None:
        return None
    moved = None
    if msg.migrate_to_chat_id:
        moved = update.effective_chat.id, msg.migrate_to_chat_id
    elif msg.migrate_from_chat_id:
        moved = msg.migrate_from_chat_id, update.effective_chat.id
    # Only a basic group becomes a supergroup: a notice naming a private chat or a supergroup
    # as the old one is forged, and must not let its chat in (or take over the old one's).
    if moved is None or not (_basic_group(moved[0]) and _supergroup(moved[1])):
        return None
    return moved


_SUPERGROUP_BELOW = -1_000_000_000_000  # the Bot API's supergroup ids: -(10^12 + channel id)


def _basic_group(chat_id: int) -> bool:
    return _SUPERGROUP_BELOW < chat_id < 0


def _supergroup(chat_id: int) -> bool:
    return chat_id <= _SUPERGROUP_BELOW


def _replace_allowed_chat(path: Any, old: int, new: int) -> None:
    """sources.yaml's `telegram.allowed_chats` with `old` replaced by `new` (comments kept)."""
    from .sources_edit import edit_sources

    def mutate(doc: Any) -> None:
        chats = doc["telegram"]["allowed_chats"]
        at = [i for i, c in enumerate(chats) if str(c).strip() == str(old)]  # -1 or "-1"
        for i in reversed(at):
            del chats[i]
        if new not in chats:
            chats.insert(at[0] if at else len(chats), new)

    edit_sources(path, mutate)


def move_chat_records(store: Any, old: int, new: int, now: Any) -> None:
    """The votes, read-later list, delivered items, digest days and digest topic of chat `old`
    copied to `new` (the same people, now in a supergroup): no item comes again and nothing is
    lost. Runs on the runner's database thread (`Runner.in_db`)."""
    with store.transaction():
        for vote in store.feedback(str(old)):
            store.set_feedback(str(new), vote.item_id, vote.value, vote.at, stage=vote.stage)
        for item_id in reversed(store.bookmarks(str(old))):  # the oldest first: order kept
            store.set_feedback(str(new), item_id, "later", now)
        store.mark_delivered(str(new), store.delivered(str(old)), now)
        for kind in ("digest_day", "digest_slot", "digest_progress"):
            value = store.get_meta(f"telegram.{kind}.{old}")
            if value is not None and store.get_meta(f"telegram.{kind}.{new}") is None:
                store.set_meta(f"telegram.{kind}.{new}", value)
        topic = store.digest_topic(str(old))
        if topic is not None and store.digest_topic(str(new)) is None:
            store.set_digest_topic(str(new), topic, now)


async def chat_migrated(runner: Runner, old: int, new: int) -> None:
    """An allowed group became a supergroup, whose chat id is new: allow the new id in its
    place in sources.yaml and copy the chat's records to it. Telegram tells both chats, and
    both notices may be handled at once: one switches, the other finds it done."""
    async with runner.app.bot_data.setdefault("migrating", asyncio.Lock()):
        if not runner.is_allowed(old) or runner.is_allowed(new):
            return
        try:
            await runner.in_db(move_chat_records, old, new, runner.now())
            await asyncio.to_thread(_replace_allowed_chat, runner.sources, old, new)
            await runner.reload_now()
            log.warning("chat %s became the supergroup %s; feedbot now serves it under its new "
                        "id (telegram.allowed_chats in sources.yaml updated)", old, new)
        except Exception as e:
            log.error("chat %s became the supergroup %s, but feedbot could not switch to it "
                      "(%s); replace %s with %s in telegram.allowed_chats of sources.yaml", old,
                      new, e, old, new)


# --- handlers ----------------------------------------------------------------------------------

async def gate(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Let allowed chats through; refuse anyone else once; tell a fresh install its setup line."""
    if not isinstance(update, Update) or update.effective_chat is None:
        raise ApplicationHandlerStop
    if _for_another_bot(update, context.bot.username):
        raise ApplicationHandlerStop  # not for us: stay silent, allowed chat or not
    runner = _runner(context)
    chat = update.effective_chat.id
    moved = _migration(update)
    if moved is not None:
        await chat_migrated(runner, *moved)
        raise ApplicationHandlerStop  # a service message: nothing to answer
    if runner.is_allowed(chat):
        thread = thread_of(update)
        if thread is not None:
            runner.topic_alive(chat, thread)
        return
    try:
        if update.callback_query is not None:  # a button on an old message: stop its spinner
            await _answer(update, "This is a private feedbot.")
        if not runner.allowed_chats:
            log.warning("chat %s (%s) wrote to the bot; no chat is allowed yet. To allow it, add "
                        "to sources.yaml: telegram: {allowed_chats: [%s]}", chat, _who(update),
                        chat)
            if _is_start(update):
                await runner.send(chat, setup_instructions(chat), thread=thread_of(update))
        else:  # said once a chat: a stranger writing all day must not flood the log
            first = await runner.first_refusal(chat)
            log.log(logging.WARNING if first else logging.DEBUG,
                    "refused chat %s (%s): not in telegram.allowed_chats of sources.yaml",
                    chat, _who(update))
            if first:
                await runner.send(chat, refusal(chat), thread=thread_of(update))
    except (SendFailed, MaybeSent) as e:  # e.g. a stranger who wrote, then blocked the bot
        log.warning("could not answer chat %s: %s", chat, e)
    except Exception:  # an error here must not let the update through to the handlers
        log.exception("could not answer chat %s", chat)
    raise ApplicationHandlerStop


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet the learner and show what the bot can do. In a group with topics, the daily
    digest goes to the topic of the last /start or /digest."""
    runner = _runner(context)
    learner = runner.settings.config.learner
    await _reply(update, context, welcome(learner.digest_time, learner.timezone))
    await runner.remember_topic(_chat_id(update), thread_of(update))


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List the commands."""
    await _reply(update, context, help_text())


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Point an unknown command at /help: in a private chat, or in a group when it names this
    bot (`/foo@feedbot`). A bare `/roll` in a group is another bot's, which Telegram shows
    every bot there: answering it would talk over the group's other bots."""
    chat = update.effective_chat
    if chat is not None and chat.type != chat.PRIVATE and "@" not in _command_word(update):
        return
    await _reply(update, context, plain("I don't know that command; /help lists mine."))


async def on_other_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Text, a sticker or a photo in a private chat: say what the bot understands."""
    await _reply(update, context, plain("I answer commands and buttons; /help lists them."))


async def on_unknown_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button this version of feedbot did not make: answer it so the client stops waiting."""
    await _answer(update, "That button is no longer in use.")


# A command that takes longer than BUSY_AFTER shows "typing…" (renewed every TYPING_EVERY:
# Telegram shows it for 5 s); one that takes longer than BUSY_NOTE_AFTER also says so once.
# The first digest on a new install or model measures the embedding backends and embeds what
# was collected: a minute or more of silence on 2 cores, which read as a bot that was down.
BUSY_AFTER = 1.0
TYPING_EVERY = 4.0
BUSY_NOTE_AFTER = 10.0
BUSY_NOTE = ("⏳ Still working on it. The first digest after an install or a change of model "
             "takes a minute or two: the model is measured, and what was collected is embedded.")
SEARCH_BUSY_NOTE = ("⏳ Still searching: feedbot is busy (loading the model, or embedding what "
                    "it has just collected). The answer comes when that is done.")


async def _busy(update: Update, context: ContextTypes.DEFAULT_TYPE, work: Awaitable[T],
                sending: asyncio.Event | None = None, note: str = BUSY_NOTE) -> T:
    """`work`'s result; meanwhile, past BUSY_AFTER, the chat shows "typing…", and past
    BUSY_NOTE_AFTER it is told once that this can take a while, unless `sending` is set by
    then (a digest's messages are on their way: the note would land among them). Best effort:
    a chat action or a note Telegram refuses changes nothing, and a cancelled command cancels
    `work`."""
    task = asyncio.ensure_future(work)
    chat, thread = _chat_id(update), thread_of(update)
    loop = asyncio.get_running_loop()
    start, noted = loop.time(), False
    try:
        done, _ = await asyncio.wait({task}, timeout=BUSY_AFTER)
        while not done:
            if not noted and loop.time() - start >= BUSY_NOTE_AFTER:
                noted = True
                if sending is None or not sending.is_set():
                    try:
                        await _reply(update, context, plain(note))
                    except Exception as e:  # SendFailed: the digest itself goes on
                        log.info("could not tell chat %s that this takes a while: %s", chat, e)
            try:
                await context.bot.send_chat_action(chat, ChatAction.TYPING,
                                                   message_thread_id=thread)
            except TelegramError as e:
                log.debug("could not show typing in chat %s: %s", chat, e)
            done, _ = await asyncio.wait({task}, timeout=TYPING_EVERY)
        return task.result()
    finally:
        if not task.done():
            task.cancel()


async def digest_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Send a digest now: the best new items for the stage, none of them sent before, in the
    topic it was asked in, where the daily digest goes from now on."""
    runner = _runner(context)
    chat, thread = _chat_id(update), thread_of(update)
    sending = asyncio.Event()
    result = await _busy(update, context, runner.deliver_digest(chat, thread, sending=sending),
                         sending)
    await runner.remember_topic(chat, thread)
    if result.forbidden:  # nothing more can be sent there: no apology, a log line
        log.warning("Telegram refuses messages to chat %s (%s)", chat, result.refusal)
    elif not result.complete:
        await _reply(update, context, plain("Telegram did not take the whole digest; the rest "
                                            "comes with the next /digest or the daily one."))


STAGE_USAGE = ("Usage: /stage to see your stage, /stage ID or /stage next to move "
               "(stage ids are one word: /stage list shows them)")


async def stage_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the stage with a button per stage; `/stage ID` or `/stage next` moves."""
    runner = _runner(context)
    args = command_args(_text(update))
    roadmap, current = runner.settings.roadmap, runner.settings.config.learner.stage
    if not args:
        await _reply(update, context, render_stage(roadmap, current))
        return
    word = stage_key(args[0])
    if word in ("set", "list") and roadmap.find(word, stage_key) is None:
        # the CLI's words: `/stage set ID` as `feedbot stage set ID`, `/stage list`
        if len(args) == 1:
            await _reply(update, context, render_stage(roadmap, current))
            return
        if word == "set":
            args = args[1:]
    if len(args) > 1:  # `/stage next please`, `/stage list all`, `/stage set nlp cnn`: moving
        # to the first word's stage (or showing the list) ignored what the rest meant
        await _reply(update, context, plain(STAGE_USAGE))
        return
    target = args[0]
    if stage_key(target) == "next":
        nxt = roadmap.next_after(current)
        if nxt is None:
            await _reply(update, context, plain("You are at the last stage of the roadmap."))
            return
        target = nxt.id
    await _reply(update, context, await _change_stage(runner, target))


async def _change_stage(runner: Runner, stage_id: str) -> TgMessage:
    roadmap = runner.settings.roadmap
    stage_id = roadmap.find(stage_id, stage_key) or stage_id
    if stage_id not in roadmap.ids:
        close = roadmap.closest(stage_id, stage_key)
        hint = f" Did you mean {close}? (/stage {close})" if close else ""
        return plain(f"Unknown stage {stage_id!r}.{hint} Stages: {', '.join(roadmap.ids)}")
    try:
        await runner.set_stage(stage_id)
    except Exception as e:  # ConfigError from the edit: say why, change nothing
        return plain(f"The stage was not changed: {e}")
    return stage_changed(runner.settings.roadmap, stage_id)


async def on_stage_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Move to the stage whose button was pressed."""
    q = update.callback_query
    assert q is not None
    runner = _runner(context)
    stage_id = parse_stage_data(q.data) or ""
    reply = await _change_stage(runner, stage_id)
    await _answer(update, "Stage changed" if runner.settings.config.learner.stage == stage_id
                  else "Not changed")
    await _reply(update, context, reply)


async def follow_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Follow a blog, arXiv query or person (the same code and checks as `feedbot follow`)."""
    text = await _runner(context).follow(command_args(_text(update)))
    await _reply(update, context, plain(text))


async def unfollow_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop following NAME (the same code and checks as `feedbot unfollow`). The name is the
    text as typed, one pair of quotes around it taken off: split shell-style, with a phone's
    ’ taken for a quote, "Lil’Log" became "Lil'Log" and "Rock 'n' Roll ML" "Rock n Roll ML",
    names that matched nothing, and the "did you mean" typed back failed the same way."""
    parts = _text(update).split(maxsplit=1)
    name = parts[1].strip() if len(parts) > 1 else ""
    if len(name) > 1 and name[0] in "\"“„" and name[-1] in "\"”“":
        name = name[1:-1].strip()
    if not name:
        await _reply(update, context, plain("Usage: /unfollow NAME (see /sources for names)"))
        return
    await _reply(update, context, plain(await _runner(context).unfollow(name)))


async def sources_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List the sources with their health."""
    await _reply(update, context, render_sources(await _runner(context).source_rows()))


async def later_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the read-later list."""
    args = command_args(_text(update))
    if len(args) > 1 or (args and not (args[0].isascii() and args[0].isdigit())):
        await _reply(update, context, plain("Usage: /later, or /later 2 for the next page"))
        return
    runner = _runner(context)
    entries = await runner.later_entries(_chat_id(update))
    await _reply(update, context, render_later(entries, page=int(args[0]) if args else 1,
                                               tz=runner.settings.config.learner.timezone))


SEARCH_LIMIT = 8  # results of /search: one message (MAX_ITEMS_PER_MESSAGE) of them


async def search_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Find stored items by meaning or by their words (`feedbot search`'s code), with the
    digest's buttons under each; the results are not recorded as delivered."""
    from .search import SearchError, search

    # the words as typed: split shell-style, two apostrophes ("O'Reilly's") were taken for a
    # quoted span, and the query became "OReillys", which matched nothing
    parts = _text(update).split(maxsplit=1)
    rest = (parts[1] if len(parts) > 1 else "").translate(_SMART_QUOTES)
    query = " ".join(w.strip("\"") for w in rest.split())
    if not query.strip():
        await _reply(update, context, plain("Usage: /search WORDS, e.g. /search sparse attention"
                                            " (an arXiv id or a link finds that item)"))
        return
    runner = _runner(context)
    cfg, roadmap = runner.settings.config, runner.settings.roadmap
    try:
        found = await _busy(update, context, runner.in_worker(
            # a chat has no --since; embedding items that have no vector (a minute for a
            # thousand on 2 cores) would hold the worker the digests need: words find them
            lambda store: search(cfg, store, runner.embedder, roadmap, query, now=runner.now(),
                                 limit=SEARCH_LIMIT, further="", embeds=0)),
                            note=SEARCH_BUSY_NOTE)
    except SearchError as e:
        await _reply(update, context, plain(str(e)))
        return
    await _reply(update, context, render_search(found.query, found.items, found.notes,
                                                tz=found.timezone))


async def on_feedback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Store 👍 / 👎 / read-later for an item, acknowledge it, tick the pressed button."""
    q = update.callback_query
    assert q is not None
    parsed = parse_feedback_data(q.data)
    if parsed is None:
        await _answer(update)
        return
    value, item_id = parsed
    from .store import AmbiguousRef

    try:
        stored = await _runner(context).record_feedback(_chat_id(update), item_id, value)
    except AmbiguousRef:  # forged or stale data: feedbot's buttons carry an item's id
        await _answer(update, "That button names a page of several items, not one of them: "
                      "nothing was saved.")
        return
    except sqlite3.OperationalError as e:  # held by another process past the busy timeout
        from .store import is_busy

        if not is_busy(e):
            raise
        log.warning("a %s from chat %s on item %s was not recorded: the database is busy "
                    "(%s); the user was asked to press again", value, _chat_id(update),
                    item_id, e)
        await _answer(update, BUSY)
        return
    if not stored:
        withdrawn = await _runner(context).in_db(lambda store: store.was_withdrawn(item_id))
        await _answer(update, "That paper was withdrawn by its authors on arXiv, and feedbot "
                      "removed it." if withdrawn else "That item is no longer stored.")
        return
    await _answer(update, ACK[value])
    if isinstance(q.message, Message) and q.message.reply_markup is not None:
        await _tick(context, _chat_id(update), q, q.message, item_id, value)


MAX_KEYBOARDS = 256  # the latest keyboards ticked, remembered (a few days of digests)


async def _tick(context: ContextTypes.DEFAULT_TYPE, chat: int, q: CallbackQuery,
                message: Message, item_id: str, value: str) -> None:
    """Tick the pressed button on the message. Presses in quick succession each carry the
    keyboard as it was before the others' edits, and their edits can cross: so edits of a
    chat go one at a time, each from the keyboard as feedbot last set it."""
    data = context.bot_data
    lock = data.setdefault("tick_locks", {}).setdefault(chat, asyncio.Lock())
    shown: dict[tuple[int, int], Keyboard] = data.setdefault("keyboards", {})
    key = (chat, message.message_id)
    async with lock:
        before = shown.pop(key, None) or keyboard_spec(message.reply_markup)
        after = mark_choice(before, item_id, value)
        shown[key] = after  # the newest last: the oldest go first
        while len(shown) > MAX_KEYBOARDS:
            del shown[next(iter(shown))]
        if after == before:
            return  # the same button again: nothing to change
        try:
            await retrying(lambda: q.edit_message_reply_markup(reply_markup=keyboard(after)))
        except BadRequest:  # "message is not modified"
            pass
        except MaybeSent as e:  # it may be ticked: taken as done
            log.info("could not confirm the tick on message %s: %s", message.message_id, e)
        except TelegramError as e:
            # only the tick is lost: the vote is stored and acknowledged. It went to the error
            # handler, whose apology asked to do again what had worked; and the next press of
            # the same button, taken as already ticked, changed nothing
            shown[key] = before
            log.info("could not tick the button on message %s: %s", message.message_id, e)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log every error from a handler or the poller, and tell the allowed chat that asked that
    its request failed (without details: they are in the log); the bot keeps running."""
    chat = update.effective_chat.id if isinstance(update, Update) and update.effective_chat \
        else None
    if isinstance(context.error, SendFailed | MaybeSent):
        # Telegram would not take the answer (the bot was blocked, flood control beyond the
        # retries) or its answer was lost: the reason says it all, and an apology would fail
        # the same way or follow an answer that arrived
        log.warning("could not answer chat %s: %s", chat, context.error)
        return
    log.error("error while handling an update (chat %s): %s", chat, context.error,
              exc_info=context.error)
    if not isinstance(update, Update) or chat is None:
        return  # a poller error
    runner = _runner(context)
    if not runner.is_allowed(chat):
        return
    await _answer(update, "Something went wrong")
    try:
        await runner.send(chat, plain(f"Something went wrong on my side "
                                      f"({type(context.error).__name__}); it is in feedbot's "
                                      f"log. Please try again later."), thread=thread_of(update))
    except Exception as e:
        log.warning("could not tell chat %s about the error: %s", chat, e)
