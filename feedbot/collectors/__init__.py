"""Collectors: one per kind of source. Each does its I/O and returns plain `Item`s.

A collector raises on failure; `feedbot.collect` records the error against that source and
goes on with the others. Collectors never touch the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import httpx

from ..items import Item

_T = TypeVar("_T")


class SourceError(Exception):
    """A source failed in a way worth telling the user; `retry_after` when the server said when
    to come back. Collectors raise subclasses; `feedbot.collect` records them per source."""

    def __init__(self, message: str, retry_after: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceDisabled(Exception):
    """The source cannot run in this setup (e.g. no X token); shown once, not a failure."""


def first_leaf(e: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups, such as anyio's task groups
    raise; `e` itself when it is not a group."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


@dataclass
class Collected:
    items: list[Item]
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None
    cursor: str | None = None  # e.g. X since_id
    warning: str = ""


@dataclass
class Context:
    """What collectors share during one collection run."""

    now: datetime
    http: httpx.AsyncClient
    arxiv: Any = None  # collectors.arxiv_api.ArxivGate
    x: Any = None  # collectors.x.XGate, when X is configured
    deadline: float = 60.0  # seconds one HTTP fetch may take in all, however slow the server
    extra: dict[str, Any] = field(default_factory=dict)


async def in_daemon_thread(fn: Callable[..., _T], *args: Any, name: str = "collector-request"
                           ) -> _T:
    """`fn(*args)` in a new daemon thread named `name`. Unlike `asyncio.to_thread`, whose
    executor threads are joined at exit (`asyncio.run` waits for them), a thread still running
    cannot keep the process from exiting (Ctrl-C, SIGTERM). `fn` must bound its own time (the
    arXiv session's deadline, the X session's timeout): a caller that stops waiting leaves the
    thread running to its end, its result dropped."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():  # the caller stopped waiting
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting task, whatever it is
            error = e
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await done
