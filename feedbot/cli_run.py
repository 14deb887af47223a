"""`feedbot run`: the long-running process (scheduler + Telegram bot) as a CLI command.

Only wiring: settings from `feedbot.cli.App`, the token from the environment, then
`Runner.run_forever()` until SIGTERM or SIGINT. The work itself lives in `feedbot.runner`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta

import click

from .cli import App, fail, main, pass_app
from .config import parse_duration


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.option("--grace", default="6h", show_default=True, callback=_duration, metavar="AGE",
              help="Send a daily digest missed (feedbot was down) by less than this, once; "
                   "at least 15m.")
@click.option("--watch-interval", default=5.0, show_default=True, type=click.FloatRange(0.5),
              metavar="SECONDS", help="How often to look for edits of sources.yaml.")
@pass_app
def run(app: App, grace: timedelta, watch_interval: float) -> None:
    """Run until stopped: collect on schedule, send the daily Telegram digest, answer the bot.

    The bot needs TELEGRAM_BOT_TOKEN (from @BotFather); without it only the collection
    scheduler runs. FEEDBOT_TELEGRAM_API_URL points the bot at a local Bot API server.
    """
    from .cli import check_server_urls
    from .runner import Runner, RunOptions, Settings

    settings = Settings(app.config, app.roadmap)  # a broken sources.yaml stops us here (exit 2)
    check_server_urls()
    token = os.environ.get("TELEGRAM_BOT_TOKEN", "").strip() or None  # None: the runner says so
    _quiet_noisy_loggers()
    timestamped_logs()
    runner = Runner(settings, home=app.home, sources=app.sources_file, embedder=app.embedder,
                    token=token, options=RunOptions(grace=grace, watch=watch_interval))
    try:
        asyncio.run(runner.run_forever())
    except Exception as e:
        from telegram.error import InvalidToken

        from .bot import api_url_from_env, is_custom_api
        from .http import shown_url
        from .store import StoreError

        if isinstance(e, InvalidToken):
            api = api_url_from_env()
            fail("Telegram rejected TELEGRAM_BOT_TOKEN; copy it again from @BotFather"
                 + (f" (or FEEDBOT_TELEGRAM_API_URL={shown_url(api)} is not a Bot API server: an "
                    "unknown address answers as a wrong token does)"
                    if is_custom_api(api) else ""), 2)
        if isinstance(e, StoreError):
            fail(str(e), 2)
        raise


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_TIME = "%Y-%m-%d %H:%M:%S%z"


def timestamped_logs(environ: dict[str, str] | None = None) -> None:
    """`feedbot run` lives for days: its log lines on stderr say when, in local time with the
    offset, unless journald takes stderr (systemd sets JOURNAL_STREAM), which stamps each line
    itself."""
    env = os.environ if environ is None else environ
    if _stderr_is_journal(env.get("JOURNAL_STREAM", "")):
        return
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # basicConfig's, not a test's or a user's
            handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_TIME))


def _stderr_is_journal(stream: str) -> bool:
    """Whether stderr is the journal stream systemd named in JOURNAL_STREAM ("device:inode"):
    the variable is inherited by whatever the service starts, and may reach a terminal."""
    dev, _, ino = stream.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _quiet_noisy_loggers() -> None:
    """feedbot's own progress at INFO; httpx and APScheduler only when something is wrong."""
    root = logging.getLogger().getEffectiveLevel()
    if root > logging.INFO:
        logging.getLogger("feedbot").setLevel(logging.INFO)
    if root > logging.DEBUG:  # -vv shows everything (secrets are redacted all the same)
        for name in ("httpx", "apscheduler"):
            logging.getLogger(name).setLevel(logging.WARNING)
