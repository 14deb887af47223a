"""Keeping secrets out of every log line.

`install_redaction` puts a log-record factory in front of `logging`: every record, from any
logger (ours, httpx, requests/urllib3, tweepy, python-telegram-bot) to any handler, has each
secret and its URL-quoted form replaced in its message, arguments, exception text and stack.
Acting where records are made, not in a handler or filter, is what makes it reach records of
libraries whose loggers and handlers we do not own. It must be in place before the first record
that could carry a secret: the CLI installs it first thing, for every secret in the environment
(`install_env_redaction`).

This module reads no configuration and logs nothing itself.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

REDACTED = "<secret>"
# The secrets feedbot reads from the environment, and what each becomes in a log line.
SECRET_ENV = {"TELEGRAM_BOT_TOKEN": "<bot-token>", "X_BEARER_TOKEN": "<x-bearer-token>"}


def install_redaction(*secrets: str, placeholder: str = REDACTED) -> Callable[[], None]:
    """From now on every log record has each of `secrets` replaced by `placeholder` in its
    message, arguments, exception text and stack. Returns a function that undoes it, in any
    order: a redaction undone under another one is switched off at once and unlinked when the
    ones above it go."""
    variants = _variants(secrets)
    if not variants:
        return lambda: None
    factory = _Redactor(logging.getLogRecordFactory(), variants, placeholder)
    logging.setLogRecordFactory(factory)

    def uninstall() -> None:
        factory.active = False
        top = logging.getLogRecordFactory()
        while isinstance(top, _Redactor) and not top.active:
            top = top.previous
        if top is not logging.getLogRecordFactory():
            logging.setLogRecordFactory(top)

    return uninstall


class _Redactor:
    """The log-record factory: the previous factory's record, redacted while `active`."""

    def __init__(self, previous: Callable[..., logging.LogRecord], variants: Sequence[str],
                 placeholder: str) -> None:
        self.previous, self.variants, self.placeholder = previous, variants, placeholder
        self.active = True

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        if self.active:
            redact_record(record, self.variants, self.placeholder)
        return record


# Variables naming a server (a local Bot API, a proxy) whose URL may hold a password.
URL_ENV = ("FEEDBOT_TELEGRAM_API_URL", "FEEDBOT_X_API_URL", "FEEDBOT_ARXIV_API_URL",
           "FEEDBOT_BLUESKY_URL", "FEEDBOT_MASTODON_URL")


def install_url_redaction(url: str) -> Callable[[], None]:
    """A password in `url` (`https://user:pass@proxy.example/`) kept out of log records, where
    the HTTP libraries write request URLs whole: its `user:pass@` becomes `user:***@` (in that
    form only: a short password alone would be replaced in every word that holds it)."""
    try:
        netloc = urlsplit(url.strip()).netloc
    except ValueError:
        return lambda: None
    userinfo, at, _ = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon and password):
        return lambda: None
    return install_redaction(f"{userinfo}@", placeholder=f"{user}:***@")


# `user:password@` in a URL written anywhere in a text (with or without a scheme before it)
_USERINFO = re.compile(r"(^|[\s/'\"(<])([^\s/:@'\"]*):[^\s/@'\"]+@")


def mask_userinfo(text: str) -> str:
    """`text` with the password of every `user:password@` in it shown as `user:***@`: for
    messages that are kept or shown rather than logged (a source's last error, which
    `feedbot sources` and the bot's /sources show), which log redaction does not reach."""
    return _USERINFO.sub(r"\1\2:***@", text)


def install_env_redaction(environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Redaction for every secret set in the environment (`SECRET_ENV`, and a password in a
    server's URL, `URL_ENV`); returns the undo."""
    env = os.environ if environ is None else environ
    undo = [install_redaction(value, placeholder=label) for name, label in SECRET_ENV.items()
            if (value := env.get(name, "").strip())]
    undo += [install_url_redaction(env.get(name, "")) for name in URL_ENV]

    def uninstall() -> None:
        for u in reversed(undo):
            u()

    return uninstall


def _variants(secrets: Sequence[str]) -> list[str]:
    """Each secret as given, stripped, URL-quoted and URL-unquoted; longest first, so that a
    secret that contains another is replaced whole."""
    out: list[str] = []
    for s in secrets:
        s = (s or "").strip()
        if s:
            out += [s, quote(s, safe=""), unquote(s)]
    return sorted((v for v in dict.fromkeys(out) if v), key=len, reverse=True)


def scrub(text: str, variants: Sequence[str], placeholder: str = REDACTED) -> str:
    for v in variants:
        text = text.replace(v, placeholder)
    return text


def redact_record(record: logging.LogRecord, variants: Sequence[str],
                  placeholder: str = REDACTED) -> None:
    """Replace `variants` in one record, in place (the message is formatted now if needed)."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed call; logging reports it later, unredacted args are dropped
        record.msg, record.args = str(record.msg), ()
        message = record.msg
    if any(v in message for v in variants):
        record.msg, record.args = scrub(message, variants, placeholder), ()
    if record.exc_info and record.exc_info[1] is not None:
        text = record.exc_text or "".join(
            traceback.format_exception(*record.exc_info)).rstrip("\n")
        if any(v in text for v in variants):
            record.exc_text = scrub(text, variants, placeholder)
    elif record.exc_text and any(v in record.exc_text for v in variants):
        record.exc_text = scrub(record.exc_text, variants, placeholder)
    if record.stack_info and any(v in record.stack_info for v in variants):
        record.stack_info = scrub(record.stack_info, variants, placeholder)
