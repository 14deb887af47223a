"""Shared fixtures. Every test runs with no network (only loopback), its own FEEDBOT_HOME,
and no sources.yaml from the developer's machine."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import CORPUS, LocalServer, fake_embedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class NetworkBlocked(RuntimeError):
    pass


def _is_local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection or name lookup that is not loopback."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: object) -> None:
        if sock.family == getattr(socket, "AF_UNIX", None):
            return
        host = address[0] if isinstance(address, tuple) else address
        if not _is_local(host):
            raise NetworkBlocked(f"test tried to reach {address!r}: no network in tests")

    def connect(self: socket.socket, address: object) -> None:
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _is_local(host):
            raise socket.gaierror(socket.EAI_NONAME, f"no network in tests (lookup of {host!r})")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def feedbot_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private FEEDBOT_HOME per test; no stray sources.yaml, model or secrets from outside."""
    home = tmp_path / "home"
    monkeypatch.setenv("FEEDBOT_HOME", str(home))
    monkeypatch.setenv("FEEDBOT_SOURCES", str(tmp_path / "sources.yaml"))
    for var in ("FEEDBOT_MODEL", "FEEDBOT_DEVICE", "FEEDBOT_EMBED_BACKEND", "TELEGRAM_BOT_TOKEN",
                "X_BEARER_TOKEN", "FEEDBOT_TELEGRAM_API_URL", "FEEDBOT_ARXIV_API_URL",
                "FEEDBOT_X_API_URL", "FEEDBOT_BLUESKY_URL", "FEEDBOT_MASTODON_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


@pytest.fixture
def fake_emb():  # type: ignore[no-untyped-def]
    return fake_embedder()


@pytest.fixture(scope="session")
def real_embedder():  # type: ignore[no-untyped-def]
    """The real packaged all-MiniLM-L6-v2 on CPU, loaded once per test session."""
    from feedbot.embed import Embedder

    emb = Embedder(device="cpu", backend="fp32")
    emb.encoder  # noqa: B018 - load now, once
    return emb


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"../shared/corpus not found at {CORPUS}: real-world data tests skipped")
    return CORPUS
