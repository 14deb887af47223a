"""Secrets never reach a log line: the record factory on its own, and `feedbot -vv collect` with
an X token against a mocked X API (tweepy logs the request headers at debug level)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner

import feedbot.embed
from feedbot.bot import install_token_redaction
from feedbot.cli import main
from feedbot.redact import install_env_redaction, install_redaction, mask_userinfo

from .support import FIXTURES, X_API, x_api

X_TOKEN = "AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0%2BuSeid%2BULvsea4JtiGRiSDSJSI%3DEUifiRBkKG5E2XzMDjR"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
API = X_API


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> Iterator[logging.Logger]:
    caplog.set_level(logging.DEBUG)
    yield logging.getLogger("feedbot.test_redact")
    assert logging.getLogRecordFactory() is logging.LogRecord  # every test undoes its own


def boom(secret: str) -> None:
    raise RuntimeError(f"request to https://api.example.org/?token={secret} failed")


def test_a_secret_is_redacted_from_message_args_and_exception_text(
        log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    undo = install_redaction(X_TOKEN, placeholder="<x>")
    try:
        log.debug(f"Headers: {{'Authorization': 'Bearer {X_TOKEN}'}}")
        log.debug("Headers: %s", {"Authorization": f"Bearer {X_TOKEN}"})
        log.info("url %s", f"https://x.test/?t={quote(X_TOKEN, safe='')}")  # quoted form
        try:
            boom(X_TOKEN)
        except RuntimeError:
            log.exception("collecting failed")
    finally:
        undo()
    log.debug("after %s", X_TOKEN)  # undone: logged as is
    assert X_TOKEN not in caplog.text.replace(f"after {X_TOKEN}", "")
    assert quote(X_TOKEN, safe="") not in caplog.text
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[:3] == ["Headers: {'Authorization': 'Bearer <x>'}"] * 2 + ["url https://x.test/?t=<x>"]
    failed = caplog.records[3]
    assert "token=<x> failed" in (failed.exc_text or "") and X_TOKEN not in failed.exc_text


def test_the_environments_secrets_are_redacted_each_with_its_label(
        log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    undo = install_env_redaction({"X_BEARER_TOKEN": f" {X_TOKEN}\n",
                                  "TELEGRAM_BOT_TOKEN": BOT_TOKEN, "OTHER": "not-a-secret"})
    try:
        log.info("GET /bot%s/getMe with Bearer %s; not-a-secret", BOT_TOKEN, X_TOKEN)
    finally:
        undo()
    assert caplog.records[0].getMessage() == (
        "GET /bot<bot-token>/getMe with Bearer <x-bearer-token>; not-a-secret")



def test_a_password_in_a_servers_url_is_redacted_there_only(
        log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request's URL whole: a proxy's password in FEEDBOT_TELEGRAM_API_URL
    was written to the log with every request."""
    undo = install_env_redaction({
        "FEEDBOT_TELEGRAM_API_URL": "http://proxy:pw@127.0.0.1:8081/",
        "FEEDBOT_ARXIV_API_URL": "http://no-password@127.0.0.1:9/", "FEEDBOT_X_API_URL": "::"})
    try:
        log.info("POST http://proxy:pw@127.0.0.1:8081/bot1/getMe; a pwd is not it")
    finally:
        undo()
    assert caplog.records[0].getMessage() == (
        "POST http://proxy:***@127.0.0.1:8081/bot1/getMe; a pwd is not it")
    assert logging.getLogRecordFactory() is logging.LogRecord


def test_nothing_is_installed_without_secrets(log: logging.Logger) -> None:
    undo = install_env_redaction({})
    assert logging.getLogRecordFactory() is logging.LogRecord
    undo()


def test_undo_out_of_order_leaves_no_redaction_behind(
        log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    undo_bot = install_token_redaction(BOT_TOKEN)  # bot.py goes through the same factory
    undo_x = install_redaction(X_TOKEN)
    log.info("%s %s", BOT_TOKEN, X_TOKEN)
    undo_bot()  # not on top: switched off, unlinked when the one above goes
    undo_x()
    assert caplog.records[0].getMessage() == "<bot-token> <secret>"


def test_feedbot_vv_collect_never_logs_the_x_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_emb: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(feedbot.embed, "Embedder", lambda *a, **k: fake_emb)
    monkeypatch.setenv("X_BEARER_TOKEN", X_TOKEN)
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        "people:\n  - name: Twitter\n    x: Twitter\n", encoding="utf-8")
    page = json.loads((FIXTURES / "x_timeline_shares_arxiv.json").read_text())
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/Twitter",
                 json={"data": {"id": "783214", "name": "X", "username": "Twitter"}})
        rsps.get(f"{API}/users/783214/tweets", json=page)
        result = CliRunner().invoke(main, ["-vv", "collect"], catch_exceptions=False)
        sent = rsps.calls[0].headers["authorization"]
    assert result.exit_code == 0 and "Twitter/x: " in result.stdout and " new" in result.stdout
    assert sent == f"Bearer {X_TOKEN}"  # the real token went to X...
    assert "'Authorization': 'Bearer <x-bearer-token>'" in caplog.text  # ...and was logged...
    assert X_TOKEN not in caplog.text + result.output  # ...only redacted
    for rec in caplog.records:
        assert X_TOKEN not in rec.getMessage() and X_TOKEN not in (rec.exc_text or "")
    assert logging.getLogRecordFactory() is logging.LogRecord  # undone when the command ended


@pytest.mark.parametrize(("text", "masked"), [
    ("No connection adapters were found for 'htps://mirror:s3cret@x.example.org/api'",
     "No connection adapters were found for 'htps://mirror:***@x.example.org/api'"),
    ("mirror:s3cret@x.example.org/api", "mirror:***@x.example.org/api"),
    ("fetching http://:s3cret@x.example.org/ failed", "fetching http://:***@x.example.org/ failed"),
    # no password, or no URL: as it was
    ("http://x.example.org:8080/a@b", "http://x.example.org:8080/a@b"),
    ("ValueError: a:b c@d", "ValueError: a:b c@d"),
    ("mail ada@example.org", "mail ada@example.org"),
])
def test_a_kept_message_shows_no_password_of_a_url(text: str, masked: str) -> None:
    """A source's last error is kept and shown (`feedbot sources`, /sources), out of reach of
    log redaction: `collect` masks a URL's password in it."""
    assert mask_userinfo(text) == masked
