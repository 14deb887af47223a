"""The real CLI, in process, against feeds and the arXiv API served on 127.0.0.1."""

import errno
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import feedbot.cli
import feedbot.embed
from feedbot.cli import main

from .support import FIXTURES, LocalServer, atom_feed

SOURCES = """\
# My feedbot sources -- comments must survive edits
learner:
  stage: cnn  # I am on CNNs now
  digest_size: 5

blogs:
  # a blog about vision
  - name: Vision Lab
    url: {atom}
  - name: Notes
    url: {rss}
  - name: Broken
    url: {broken}
"""


@pytest.fixture
def use_fake_embedder(fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(feedbot.embed, "Embedder", lambda *a, **k: fake_emb)
    return fake_emb


@pytest.fixture
def sources(server: LocalServer, tmp_path: Path) -> Path:
    atom = server.add("/atom.xml", body=(FIXTURES / "feeds" / "atom.xml").read_bytes(),
                      etag='"a1"')
    rss = server.add("/rss.xml", body=(FIXTURES / "feeds" / "rss2.xml").read_bytes())
    broken = server.add("/broken", status=500, body=b"down")
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text(SOURCES.format(atom=atom, rss=rss, broken=broken), encoding="utf-8")
    return p


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, (*prefix, name))
    return out


@pytest.mark.parametrize("cmd", all_commands(main))
def test_every_command_has_help(cmd: tuple[str, ...]) -> None:
    result = invoke(*cmd, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    command = main
    for part in cmd:
        command = command.commands[part]  # type: ignore[attr-defined]
    assert command.help and command.help.strip(), f"{cmd} has no help text"


def test_version() -> None:
    assert invoke("--version").output.startswith("feedbot ")


def test_collect_reports_every_source_and_exits_0(sources: Path, use_fake_embedder: Any) -> None:
    result = invoke("collect")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "Vision Lab: 2 new (2 in feed)" in lines
    assert "Notes: 2 new (2 in feed)" in lines
    assert any(line.startswith("Broken: error: HTTP 500") for line in lines)
    assert lines[-1] == "3 sources: 2 ok, 1 failed, 4 new items"
    again = invoke("collect", "--source", "vision lab")
    assert again.stdout.splitlines()[0] == "Vision Lab: not modified"
    # several --source: each is collected (only the last one was, silently), each once
    both = invoke("collect", "--source", "Notes", "--source", "vision lab", "--source", "notes")
    assert both.exit_code == 0
    assert sorted(both.stdout.splitlines()[:-1]) == ["Notes: 0 new (2 in feed)",
                                                     "Vision Lab: not modified"]
    assert both.stdout.splitlines()[-1].startswith("2 sources: 2 ok")


def test_collect_gives_every_source_its_line_and_a_digest_one_line_per_reason(
        odd_feed: Path, use_fake_embedder: Any) -> None:
    """design.md: `feedbot collect` prints one line per source. The X sources that are off
    without a token shared one line naming four of them ("and 3 more"): a check looking for
    each source's line missed three. The digest's own collection keeps them to one line."""
    people = "".join(f"  - name: P{i}\n    x: p{i}\n" for i in range(6))
    odd_feed.write_text(odd_feed.read_text() + "people:\n" + people)
    result = invoke("collect")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    names = [ln.split(":")[0] for ln in lines[:-1]]  # in the order they finished
    assert sorted(names) == ["Odd", *(f"P{i}/x" for i in range(6))]
    assert all("X_BEARER_TOKEN is not set" in ln for ln in lines[:-1] if "/x:" in ln)
    assert lines[-1] == "7 sources: 1 ok, 0 failed, 1 new item"
    digest = invoke("digest", "--format", "json")
    off = [ln for ln in digest.stderr.splitlines() if "X_BEARER_TOKEN" in ln]
    assert len(off) == 1 and off[0].startswith("off (6 sources: P0/x, P1/x, P2/x, P3/x and 2 more)")


def test_collect_says_which_source_another_process_held(
        sources: Path, use_fake_embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from feedbot import collect as collect_mod
    from feedbot import locks
    from feedbot.config import feedbot_home

    monkeypatch.setattr(collect_mod, "LOCK_PATIENCE", 0.01)  # × the 60 s deadline: 0.6 s
    feedbot_home().mkdir(parents=True, exist_ok=True)
    lock = collect_mod.source_lock(str(feedbot_home() / "feedbot.db"), "Vision Lab")
    assert lock is not None
    with locks.exclusive(lock):  # as the daemon would while it fetches that blog
        result = invoke("collect")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert ("Vision Lab: skipped: another feedbot process has been collecting it for over "
            "0.6 s") in lines
    assert "Notes: 2 new (2 in feed)" in lines
    assert lines[-1] == "3 sources: 1 ok, 1 failed, 1 skipped, 2 new items"


def test_collect_unknown_source_is_a_usage_error(sources: Path) -> None:
    result = invoke("collect", "--source", "nope")
    assert result.exit_code == 2
    assert "no source named 'nope'" in result.stderr
    result = invoke("collect", "--source", "Notes", "--source", "nope")
    assert result.exit_code == 2 and "no source named 'nope'" in result.stderr


def test_config_error_exits_2_with_file_line_and_key(tmp_path: Path) -> None:
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text("learner:\n  stage: cnn\nblogs:\n  - name: x\n    ulr: https://e.org/f\n")
    result = invoke("collect")
    assert result.exit_code == 2
    assert f"{p}:5: blogs[0].ulr: unknown key (did you mean 'url'?)" in result.stderr


def test_unknown_stage_in_file_is_a_config_error(tmp_path: Path) -> None:
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text("learner:\n  stage: cnns\n")
    result = invoke("digest", "--no-collect")
    assert result.exit_code == 2
    assert f"{p}:2: learner.stage: unknown stage 'cnns'" in result.stderr
    assert "did you mean 'cnn'" in result.stderr


@pytest.mark.parametrize(("stage", "want"), [("CNNs", "cnn"), ("NLP_", "nlp"),
                                            ("DEEPLEARNING", "deep-learning")])
def test_an_unknown_stage_in_the_file_gets_a_suggestion_in_any_case(stage: str,
                                                                     want: str) -> None:
    """`stage: CNNs` in sources.yaml got no "did you mean", while `stage set CNNs` suggested
    cnn: the file's check compared ids in the case typed."""
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text(f"learner:\n  stage: {stage}\n")
    result = invoke("digest", "--no-collect")
    assert result.exit_code == 2
    assert f"{p}:2: learner.stage: unknown stage '{stage}' (did you mean '{want}'? " \
        "`feedbot stage set ID` sets it" in result.stderr
    result = invoke("stage", "set", stage)  # the same suggestion
    assert result.exit_code == 2 and f"(did you mean '{want}'?); stages:" in result.stderr


@pytest.mark.parametrize(("word", "want"), [("nlp", "nlp"), ("NLP", "nlp"), ("cnns", "cnn"),
                                            ("deeplearning", "deep-learning")])
def test_a_stage_given_to_stage_as_a_command_points_to_stage_set(word: str, want: str) -> None:
    """`feedbot stage nlp` said only "No such command 'nlp'"."""
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text("learner:\n  stage: cnn\n")
    result = invoke("stage", word)
    assert result.exit_code == 2
    assert f"No such command {word!r}; did you mean: feedbot stage set {want}" in result.stderr
    assert p.read_text() == "learner:\n  stage: cnn\n"  # nothing moved


def test_a_word_that_is_no_stage_keeps_clicks_own_answer() -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("learner:\n  stage: cnn\n")
    typo = invoke("stage", "lsit")
    assert typo.exit_code == 2 and "No such command 'lsit'. Did you mean 'list'?" in typo.stderr
    other = invoke("stage", "frobnicate")
    assert other.exit_code == 2 and "No such command 'frobnicate'." in other.stderr
    assert "stage set" not in typo.stderr + other.stderr


def test_digest_json_shape_after_collect(sources: Path, use_fake_embedder: Any) -> None:
    result = invoke("digest", "--format", "json", "--since", "3650d")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # progress lines went to stderr
    assert "Broken: error: HTTP 500" in result.stderr
    assert doc["stage"]["id"] == "cnn"
    assert doc["demo"] is False
    assert {"generated_at", "items", "stage"} <= doc.keys()
    assert 1 <= len(doc["items"]) <= 5
    for it in doc["items"]:
        assert {"id", "title", "url", "source", "kind", "authors", "published", "score",
                "why"} <= it.keys()
        assert it["url"].startswith("http") and it["why"]
    sources_seen = {it["source"] for it in doc["items"]}
    assert sources_seen <= {"Vision Lab", "Notes"}
    # the digest collected only what was stale: a second digest fetches nothing
    invoke("digest", "--format", "json")
    assert "Vision Lab" not in invoke("digest", "--format", "json").stderr


@pytest.mark.parametrize(("fmt", "marker"), [("markdown", "# feedbot digest"),
                                             ("html", "<!doctype html>"),
                                             ("text", "feedbot digest")])
def test_digest_formats(sources: Path, use_fake_embedder: Any, fmt: str, marker: str) -> None:
    invoke("collect")
    result = invoke("digest", "--no-collect", "--since", "3650d", "--format", fmt, "--explain")
    assert result.exit_code == 0
    assert marker in result.stdout
    assert "Self-supervised vision transformers" in result.stdout
    assert "similarity" in result.stdout  # --explain shows the score parts


def test_digest_html_escapes_feed_text(server: LocalServer, use_fake_embedder: Any) -> None:
    evil = atom_feed([{"title": "&lt;script&gt;alert(1)&lt;/script&gt; CNNs",
                       "link": "https://e.org/x?a=1&amp;b=2"}])
    url = server.add("/evil.xml", body=evil)
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        f"learner: {{stage: cnn}}\nblogs:\n  - name: Evil\n    url: {url}\n")
    out = invoke("digest", "--since", "3650d", "--format", "html").stdout
    assert "<script>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt; CNNs" in out
    assert 'href="https://e.org/x?a=1&amp;b=2"' in out


def test_offline_newcomer_gets_demo_digest(tmp_path: Path, use_fake_embedder: Any) -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        "learner: {stage: nlp}\nblogs:\n  - name: Gone\n    url: http://127.0.0.1:9/feed\n")
    result = invoke("digest", "--format", "json")
    assert result.exit_code == 0
    assert "Gone: error:" in result.stderr  # said per source
    doc = json.loads(result.stdout)
    assert doc["demo"] is True
    assert doc["items"] and all(it["kind"] == "demo" for it in doc["items"])
    assert all(it["source"] == "feedbot demo" for it in doc["items"])
    text = invoke("digest", "--no-collect").stdout
    assert "DEMO ITEMS" in text


@pytest.mark.parametrize(("args", "option", "command"), [
    (["digest", "--sources", "other.yaml"], "--sources", "digest"),
    (["collect", "-v"], "-v", "collect"),
    (["stage", "set", "--sources", "x.yaml", "nlp"], "--sources", "stage"),
])
def test_feedbots_own_option_after_the_command_says_where_it_goes(
        args: list[str], option: str, command: str) -> None:
    """`feedbot digest --sources f.yaml` answered "Did you mean '--since'?"."""
    result = invoke(*args)
    assert result.exit_code == 2
    assert (f"No such option: {option} here; it goes before the command: feedbot {option} … "
            f"{command} …") in result.stderr
    assert "Did you mean" not in result.stderr
    typo = invoke("digest", "--sincee", "3d")  # other unknown options: click's own answer
    assert typo.exit_code == 2 and "Did you mean '--since'?" in typo.stderr
    # a command with --source: more likely a typo for it, so that comes first
    plural = invoke("collect", "--sources", "Vision")
    assert plural.exit_code == 2 and ("No such option: --sources. Did you mean --source? If "
                                      "you meant feedbot's own --sources, it goes before the "
                                      "command: feedbot --sources … collect …") in plural.stderr


def test_digest_rejects_bad_options(sources: Path) -> None:
    assert invoke("digest", "--stage", "quantum").exit_code == 2
    bad = invoke("digest", "--since", "a while")
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_stage_commands_edit_in_place_keeping_comments(sources: Path) -> None:
    shown = invoke("stage").stdout
    assert "stage 8/13: cnn" in shown
    from feedbot.roadmap import load_roadmap

    cnn = load_roadmap().get("cnn")  # the stage's topics and resources, as the README says
    assert all(f"  - {t}\n" in shown for t in cnn.topics) and cnn.topics
    assert all(r.url in shown for r in cnn.resources) and cnn.resources
    listing = invoke("stage", "list").stdout.splitlines()
    assert len(listing) == 13
    assert listing[7].startswith("*  8. cnn")
    assert invoke("stage", "next").stdout.startswith("stage set to nlp")
    text = sources.read_text()
    assert "stage: nlp  # I am on CNNs now" in text
    assert "# My feedbot sources -- comments must survive edits" in text
    assert "  # a blog about vision" in text
    assert invoke("stage", "set", "gpus").exit_code == 0
    assert "stage: gpus" in sources.read_text()
    bad = invoke("stage", "set", "gpu")
    assert bad.exit_code == 2 and "unknown stage 'gpu'" in bad.stderr
    assert "stage: gpus" in sources.read_text()
    # as /stage takes them: full-width letters (a CJK keyboard), a zero-width space pasted along
    assert invoke("stage", "set", "ｎｌｐ\u200b").exit_code == 0
    assert "stage: nlp" in sources.read_text()


def test_stage_next_at_the_end(sources: Path) -> None:
    invoke("stage", "set", "kaggle")
    before = sources.read_text()
    assert "last stage" in invoke("stage", "next").stdout
    assert sources.read_text() == before


def test_sources_shows_health(sources: Path, use_fake_embedder: Any) -> None:
    before = invoke("sources").stdout
    assert "new" in before
    invoke("collect")
    out = invoke("sources").stdout
    lines = out.splitlines()
    assert lines[0] == "Blogs:"
    line = next(x for x in lines if x.strip().startswith("Vision Lab"))
    assert " ok " in line and " 2 items" in line and "just now" in line
    broken = next(x for x in lines if x.strip().startswith("Broken"))
    assert "failing" in broken and "HTTP 500" in broken and "never" in broken
    # when it is tried again: the back-off after one failure, 5 minutes
    from datetime import UTC, datetime, timedelta

    [until] = re.findall(r"waiting until (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", broken)
    wait = datetime.strptime(until, "%Y-%m-%d %H:%M").replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(minutes=3) < wait <= timedelta(minutes=5), broken
    assert "waiting" not in line


def test_sources_counts_one_item_as_one_item(sources: Path) -> None:
    """It said "1 items"; the column after the count stays in line."""
    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    sources.write_text("learner: {stage: cnn}\nblogs:\n  - {name: One, url: 'https://one."
                       "example.org/feed'}\n  - {name: Two, url: 'https://two.example.org/feed'}\n")
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    with Store.open(feedbot_home()) as store:
        store.upsert_items([Item(f"Post {n}", f"https://{blog.lower()}.example.org/{n}", blog,
                                 published=now) for blog, n in (("One", 1), ("Two", 2),
                                                                ("Two", 3))], now)
    lines = invoke("sources").stdout.splitlines()
    assert lines[1:] == ["  One new         1 item   last ok never",
                         "  Two new         2 items  last ok never"]


def test_sources_shows_names_as_the_digest_does(sources: Path) -> None:
    """A name's bidi override (U+202E) was printed as is: the rest of the line, health and
    count included, read backwards on screen. The digest drops it; so does `sources` now."""
    sources.write_text('learner: {stage: cnn}\nblogs:\n  - name: "Evil\\u202eblog"\n'
                       "    url: https://evil.example.org/feed\n"
                       'people:\n  - {name: "Ann\\u202eX", blog: "https://ann.example.org/f"}\n')
    out = invoke("sources").stdout
    assert "\u202e" not in out
    place = "    their blog https://ann.example.org/f"  # the widest: the names' column
    health = " new         0 items  last ok never"
    assert out.splitlines() == ["Blogs:", "  Evilblog".ljust(len(place)) + health,
                                "People:", "  AnnX", place + health]


def test_a_blank_x_token_is_off_in_sources_as_in_collect(sources: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`X_BEARER_TOKEN=" "` (an .env line with a space) was "not set" to `collect` but set to
    `sources`, which showed the X sources as new, or with old errors, never "off"."""
    monkeypatch.setenv("X_BEARER_TOKEN", "  ")
    sources.write_text(sources.read_text() + "people:\n  - name: Ada\n    x: ada_example\n")
    line = next(x for x in invoke("sources").stdout.splitlines() if "X @ada_example" in x)
    assert " off " in line and "X_BEARER_TOKEN is not set" in line, line


def test_sources_keeps_what_a_feed_said_until_it_is_mended(sources: Path, server: LocalServer,
                                                          use_fake_embedder: Any) -> None:
    """A feed's "moved permanently to …" notice was in that run's `collect` output only: under
    `feedbot run` nobody saw it, and the old address was asked for ever. `sources` keeps it
    while the source still fetches that address, and forgets it once the URL is updated."""
    new = server.add("/new.xml", body=atom_feed([{"title": "t", "link": "https://example.org/1"}]))
    server.add("/old.xml", status=301, headers={"Location": new})
    text = sources.read_text()
    sources.write_text(text.replace(server.url("/rss.xml"), server.url("/old.xml")))
    assert invoke("collect").exit_code == 0
    notice = f"note: moved permanently to {new}: update its URL in sources.yaml"

    def moved_line() -> str:
        return next(x for x in invoke("sources").stdout.splitlines()
                    if x.strip().startswith("Notes"))

    line = moved_line()
    assert " ok " in line and line.endswith(notice), line
    invoke("collect")  # the second fetch says it again: kept
    assert moved_line().endswith(notice)
    # updated as asked: not said any more, even before the next collection
    sources.write_text(text.replace(server.url("/rss.xml"), new))
    assert "note:" not in moved_line()
    invoke("collect")
    assert "note:" not in moved_line()


def test_a_renamed_source_keeps_its_health_and_count(sources: Path, server: LocalServer,
                                                    use_fake_embedder: Any) -> None:
    """Renamed in sources.yaml (the same feed URL), a source kept its items but `feedbot
    sources` showed it as new, with 0 items, never collected; its next fetch was not
    conditional either."""
    invoke("collect")
    sources.write_text(sources.read_text().replace("Vision Lab", "Vision Lab weekly")
                       .replace("name: Broken", "name: Broken feed"))
    fetched = len(server.requests)
    assert invoke("collect", "--source", "Vision Lab weekly").exit_code == 0
    [again] = [r for r in server.requests[fetched:] if r.path == "/atom.xml"]
    assert {k.lower(): v for k, v in again.headers.items()}.get("if-none-match") == '"a1"'
    lines = invoke("sources").stdout.splitlines()
    line = next(x for x in lines if x.strip().startswith("Vision Lab weekly"))
    assert " ok " in line and " 2 items" in line and "just now" in line, line
    broken = next(x for x in lines if x.strip().startswith("Broken feed"))
    assert "failing" in broken and "HTTP 500" in broken, broken  # its back-off goes along


@pytest.mark.parametrize("rename_first", [False, True])
def test_a_source_moved_to_another_url_does_not_send_the_old_urls_validators(
        server: LocalServer, use_fake_embedder: Any, rename_first: bool) -> None:
    """A feed's ETag and Last-Modified belong to its URL. Sent to the new URL of a source
    (renamed first or not, with or without a digest between), they could bring a 304 that
    hides the new feed's items: "C: not modified", 0 items."""
    stamp = "Wed, 01 Jan 2025 00:00:00 GMT"
    a = server.add("/a.xml", body=(FIXTURES / "feeds" / "atom.xml").read_bytes(), etag='"a1"',
                   last_modified=stamp)
    b = server.add("/b.xml", body=(FIXTURES / "feeds" / "rss2.xml").read_bytes(), etag='"a1"',
                   last_modified=stamp)  # the same validators: a 304 if they were sent
    p = Path(os.environ["FEEDBOT_SOURCES"])

    def blogs(name: str, url: str) -> None:
        p.write_text(f"learner: {{stage: cnn}}\nblogs:\n  - name: {name}\n    url: {url}\n")

    blogs("A", a)
    invoke("collect")
    name = "C" if rename_first else "A"
    if rename_first:
        blogs("C", a)
        invoke("digest", "--no-collect")  # records the rename; C takes A's state
    blogs(name, b)
    fetched = len(server.requests)
    out = invoke("collect").stdout
    [asked] = [r for r in server.requests[fetched:] if r.path == "/b.xml"]
    assert "if-none-match" not in asked.headers and "if-modified-since" not in asked.headers
    assert f"{name}: " in out and "not modified" not in out, out


def test_an_item_voted_on_leaves_the_digest(sources: Path, use_fake_embedder: Any) -> None:
    """`feedbot digest` records no deliveries, so a 👍 item came back at the top of every
    digest after it ("; you liked it": the vote made it the best fit). A vote, up or down,
    says it was read; saving it for later does not."""
    invoke("collect")
    args = ["digest", "--no-collect", "--since", "3650d", "--format", "json"]
    ids = [i["id"] for i in json.loads(invoke(*args).stdout)["items"]]
    assert len(ids) >= 3
    assert invoke("feedback", ids[0], "up").exit_code == 0
    assert invoke("feedback", "--chat", "42", ids[1], "down").exit_code == 0
    assert invoke("feedback", ids[2], "later").exit_code == 0
    after = [i["id"] for i in json.loads(invoke(*args).stdout)["items"]]
    assert ids[0] not in after and ids[1] not in after and ids[2] in after
    assert sorted(after) == sorted(ids[2:])



def test_an_item_voted_on_before_the_window_stays_out_when_a_post_shares_it(
        use_fake_embedder: Any) -> None:
    """Only votes of the digest's window were left out: a paper liked 20 days ago and shared
    today by a followed person came back, "shared by Ada Lovelace"."""
    from datetime import UTC, datetime, timedelta

    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        "learner: {stage: cnn}\narxiv:\n  - {name: cs.CV, category: cs.CV}\n"
        "people:\n  - name: Ada Lovelace\n    x: ada\n")
    now = datetime.now(UTC)
    paper = Item("Convolutional networks for image segmentation",
                 "https://arxiv.org/abs/2611.00001", "cs.CV", kind="paper",
                 arxiv_id="2611.00001", published=now - timedelta(days=30),
                 summary="We segment street scenes with a convolutional network.")
    share = Item("Look at this", "https://x.com/ada/status/1", "Ada Lovelace/x", kind="social",
                 person="Ada Lovelace", published=now - timedelta(hours=1), links=(paper.url,))
    feedbot_home().mkdir(parents=True, exist_ok=True)
    with Store.open(feedbot_home()) as store:
        store.upsert_items([paper], now - timedelta(days=30))
        store.upsert_items([share], now)
        store.add_share(paper.id, "Ada Lovelace/x", "Ada Lovelace", share.id, now)
    args = ["digest", "--no-collect", "--format", "json"]
    shown = [i["id"] for i in json.loads(invoke(*args).stdout)["items"]]
    assert shown == [paper.id]  # the share brings it into the week
    with Store.open(feedbot_home()) as store:
        store.set_feedback("cli", paper.id, "up", now - timedelta(days=20), stage="cnn")
    assert json.loads(invoke(*args).stdout)["items"] == []


def test_feedback_by_id_and_url(sources: Path, use_fake_embedder: Any) -> None:
    invoke("collect")
    doc = json.loads(invoke("digest", "--no-collect", "--since", "3650d",
                            "--format", "json").stdout)
    first = doc["items"][0]
    assert invoke("feedback", first["id"], "up").exit_code == 0
    res = invoke("feedback", first["url"] + "?utm_source=tw", "later")
    assert res.exit_code == 0 and first["title"] in res.stdout
    from feedbot.config import feedbot_home, load_config
    from feedbot.store import Store

    store = Store.open(feedbot_home())
    stage = load_config(sources).learner.stage
    # saving it for later keeps the 👍
    assert [(v.item_id, v.value, v.stage) for v in store.feedback("cli")] == \
        [(first["id"], "up", stage)]
    assert store.bookmarks("cli") == [first["id"]]
    store.close()
    # and the CLI lists it (before, only the bot's /later could)
    listed = invoke("later")
    assert listed.exit_code == 0 and first["title"] in listed.stdout
    assert f"[{first['id']}]" in listed.stdout
    assert [i["id"] for i in json.loads(invoke("later", "--format", "json").stdout)["items"]] \
        == [first["id"]]
    assert invoke("feedback", first["id"], "down").exit_code == 0  # read: off the list
    assert "nothing saved for later" in invoke("later").stdout
    missing = invoke("feedback", "nothing-like-this", "down")
    assert missing.exit_code == 2 and "no stored item" in missing.stderr
    # bytes that are not UTF-8, as a terminal passes them (lone surrogates in argv): a
    # UnicodeEncodeError traceback out of SQLite before
    garbled = invoke("feedback", "\udcff\udcfe", "up")
    assert garbled.exit_code == 2 and "'\ufffd\ufffd' is not UTF-8 text" in garbled.stderr


def test_init_writes_the_starter_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "sources.yaml"
    res = invoke("--sources", str(target), "init")
    assert res.exit_code == 0 and target.exists()
    assert invoke("--sources", str(target), "init").exit_code == 2  # never clobbers
    assert "stage" in invoke("--sources", str(target), "stage").stdout


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "feedbot", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("feedbot ")


def test_progress_bar_only_on_a_terminal(server: LocalServer, tmp_path: Path) -> None:
    import pty

    lines = ["learner: {stage: cnn}", "blogs:"]
    for n in range(12):
        url = server.add(f"/f{n}.xml", body=atom_feed([{"title": f"Post {n}",
                                                        "link": f"https://e.org/{n}"}]))
        lines += [f"  - name: Feed {n}", f"    url: {url}"]
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("\n".join(lines) + "\n")
    # An unknown backend fails fast, before torch: this test is about the terminal only.
    env = dict(os.environ, FEEDBOT_EMBED_BACKEND="none-such", COLUMNS="100")
    piped = subprocess.run([sys.executable, "-m", "feedbot", "collect"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert "collecting" not in piped.stdout + piped.stderr
    assert piped.returncode == 0  # collected and stored, even though embedding failed
    assert "12 new items are stored but could not be embedded yet" in piped.stderr

    def on_a_terminal(*args: str) -> str:
        main_fd, child_fd = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "feedbot", "collect", *args], env=env,
                                stdout=child_fd, stderr=subprocess.DEVNULL)
        os.close(child_fd)
        out = b""
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(main_fd)
        assert proc.wait(timeout=120) == 0
        return out.decode(errors="replace")

    text = on_a_terminal()
    assert "collecting" in text and "12/12" in text
    assert "Feed 3: 0 new (1 in feed)" in text  # the piped run above stored it already
    assert text.rstrip().endswith("12 sources: 12 ok, 0 failed, 0 new items")
    # One source of the twelve is no long run: no bar (it counted to 1/12 and vanished).
    text = on_a_terminal("--source", "feed 3")
    assert "collecting" not in text and "/12" not in text
    assert text.rstrip().endswith("1 source: 1 ok, 0 failed, 0 new items")


def test_a_roadmap_of_ones_own(tmp_path: Path) -> None:
    own = Path(os.environ["FEEDBOT_SOURCES"]).parent / "my-roadmap.yaml"
    own.write_text("""\
title: My path
stages:
  - id: basics
    title: Basics
    level: foundation
    summary: Start here.
    topics: [vectors, probability]
  - id: transformers
    title: Transformers
    summary: Attention and language models.
    topics: [self-attention, tokenization]
    resources:
      - {title: The Annotated Transformer, url: 'https://nlp.seas.harvard.edu/annotated-transformer/'}
""")
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    sources.write_text("learner:\n  stage: basics\n  roadmap: my-roadmap.yaml  # relative\n")
    assert invoke("stage", "list").stdout.splitlines() == [
        "*  1. basics                   Basics", "   2. transformers             Transformers"]
    assert invoke("stage", "next").stdout.startswith("stage set to transformers")
    assert "The Annotated Transformer" in invoke("stage").stdout
    assert "roadmap: my-roadmap.yaml  # relative" in sources.read_text()
    bad = invoke("stage", "set", "cnn")  # not a stage of this roadmap
    assert bad.exit_code == 2 and "unknown stage 'cnn'" in bad.stderr


def test_a_roadmap_with_numbered_stages(tmp_path: Path) -> None:
    """A roadmap's `id: 1` is stage "1", but `stage: 1` in sources.yaml (a number to YAML)
    stopped every command, `stage set` included: "learner.stage: Input should be a valid
    string"."""
    own = Path(os.environ["FEEDBOT_SOURCES"]).parent / "weeks.yaml"
    own.write_text("stages:\n  - id: 1\n    title: Week one\n  - id: 2\n    title: Week two\n")
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    sources.write_text("learner: {stage: 1, roadmap: weeks.yaml}\n")
    assert invoke("stage", "list").stdout.splitlines()[0].startswith("*  1. 1 ")
    assert invoke("stage", "next").stdout.startswith("stage set to 2")
    assert invoke("stage", "set", "1").exit_code == 0
    sources.write_text("learner: {stage: true, roadmap: weeks.yaml}\n")  # no number: refused
    assert invoke("stage").exit_code == 2


def test_a_stage_the_roadmap_lacks_is_mended_with_stage_set(tmp_path: Path) -> None:
    """`stage set` and `stage list`, which the error about an unknown stage points to, failed
    with that same error: the file had to be mended by hand."""
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    sources.write_text("learner: {stage: cnnn}  # a typo\n")
    bad = invoke("digest", "--no-collect")
    assert bad.exit_code == 2 and "unknown stage 'cnnn'" in bad.stderr
    assert "did you mean 'cnn'? `feedbot stage set ID` sets it" in bad.stderr
    listed = invoke("stage", "list")
    assert listed.exit_code == 0 and "*" not in listed.stdout
    assert listed.stdout.splitlines()[-1] == (
        "your stage 'cnnn' (learner.stage) is not on this roadmap: `feedbot stage set ID` sets "
        "one that is")
    fixed = invoke("stage", "set", "cnn")
    assert fixed.exit_code == 0 and fixed.stdout.startswith("stage set to cnn")
    assert sources.read_text().startswith("learner: {stage: cnn}") and "# a typo" in \
        sources.read_text()
    assert "*  8. cnn" in invoke("stage", "list").stdout


def test_a_broken_roadmap_file_is_a_clear_error(tmp_path: Path) -> None:
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    (sources.parent / "broken.yaml").write_text("stages: [{id: only-id}]\n")
    sources.write_text("learner:\n  stage: only-id\n  roadmap: broken.yaml\n")
    result = invoke("stage")
    assert result.exit_code == 2
    assert "broken.yaml" in result.stderr and "needs at least 'id' and 'title'" in result.stderr


def test_unknown_stage_in_a_flow_mapping_is_located(tmp_path: Path) -> None:
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text("# stage: is only a comment here\nranking: {mmr: 0.9}\nlearner: {stage: nlpp}\n")
    result = invoke("stage")
    assert result.exit_code == 2
    assert f"{p}:3: learner.stage: unknown stage 'nlpp'" in result.stderr


# --- bad options and settings: a clear message and exit 2, never a traceback ------------------

MINIMAL = "learner: {stage: cnn}\n"


@pytest.mark.parametrize(("since", "seconds", "message"), [
    ("99999999999d", None, "--since"),
    ("800000d", None, "--since"),
    ("0", None, "0 needs a unit"),
    ("7", None, "7 needs a unit: 7d, 7h, 7m or 7s"),
    ("0d", None, "--since: '0d' is no time at all"),
    ("1e15s", 1e15, "looks back too far"),  # what a parse_duration without a maximum gives
    ("800000d", 800000 * 86400.0, "looks back too far"),  # before year 1
])
def test_digest_since_out_of_range_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch, since: str, seconds: float | None,
        message: str) -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    if seconds is not None:
        monkeypatch.setattr(feedbot.cli, "parse_duration", lambda _: seconds)
    result = invoke("digest", "--no-collect", "--since", since)
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.parametrize(("since", "message"), [
    ("100y", "--since: not a duration: '100y' (years are not a unit; use days or weeks, "
             "e.g. 365d or 52w for a year)"),
    ("3mo", "months are not a unit; use days or weeks, e.g. 30d or 4w for a month"),
    ("-3d", "--since: not a duration: '-3d' (durations are never negative; write 3d)"),
    ("7days", "--since: not a duration: '7days' (a number and a unit: 90s, 30m, 6h, 7d or 2w)"),
    ("99999d", "--since: duration '99999d' is too long; the maximum is 36500d (100 years)"),
])
def test_digest_since_that_is_no_duration_names_the_forms_that_work(since: str,
                                                                    message: str) -> None:
    """`--since 100y` was told "use e.g. 30m, 6h, 1d": no word that years are no unit, nor of
    weeks; `-3d` was not told what was wrong with it."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    result = invoke("digest", "--no-collect", "--since", since)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_interval_in_years_in_sources_yaml_is_told_to_use_days() -> None:
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text(MINIMAL + "defaults: {interval: 1y}\n")
    result = invoke("sources")
    assert result.exit_code == 2
    assert (f"{p}:2: defaults.interval: not a duration: '1y' (years are not a unit; use days "
            "or weeks, e.g. 365d or 52w for a year)") in result.stderr


@pytest.mark.parametrize("command", ["sources", "collect"])
def test_an_interval_under_a_minute_in_sources_yaml_is_refused(command: str) -> None:
    """`interval: 1s` was taken: `feedbot run` asked the blog's site every second."""
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text(MINIMAL + "blogs:\n  - {name: Fast, url: 'https://a.example.org/f', "
                 "interval: 1s}\n")
    result = invoke(command)
    assert result.exit_code == 2
    assert (f"{p}:3: blogs[0].interval: 'Fast' would be collected every 1s; the shortest "
            "interval is 1m") in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("since", "window"), [
    ("90s", timedelta(seconds=90)), ("1.5d", timedelta(hours=36)), ("36h", timedelta(hours=36)),
    ("2w", timedelta(days=14)), ("36500d", timedelta(days=36500)),
])
def test_digest_since_forms_that_work(since: str, window: timedelta) -> None:
    class Now:
        def now(self) -> datetime:
            return datetime(2026, 11, 10, tzinfo=UTC)

    app: Any = Now()
    assert feedbot.cli.look_back(app, since, zero_hint="", far_hint="") == window


def test_collect_with_an_empty_source_name_is_a_usage_error(sources: Path,
                                                           server: LocalServer) -> None:
    result = invoke("collect", "--source", "")
    assert result.exit_code == 2
    assert "--source needs the name of a source or person" in result.stderr
    assert server.requests == []


@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_an_unusable_feedbot_home_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   where: str) -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    (tmp_path / "a-file").write_text("not a directory")
    home = tmp_path / where
    monkeypatch.setenv("FEEDBOT_HOME", str(home))
    for args in (["sources"], ["digest", "--no-collect"], ["doctor"]):
        result = invoke(*args)
        assert result.exit_code == 2, args
        assert f"FEEDBOT_HOME={home} cannot be used as the data directory" in result.stderr


@pytest.mark.parametrize(("content", "words"), [
    ("damaged", "is damaged or not a feedbot database"),
    ("newer", "was written by a newer feedbot (schema 99"),
])
def test_an_unusable_database_is_one_clear_line(feedbot_env: Path, content: str,
                                                words: str) -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    feedbot_env.mkdir(parents=True, exist_ok=True)
    db = feedbot_env / "feedbot.db"
    if content == "damaged":
        db.write_bytes(b"\x13not sqlite" * 500)
    else:
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = 99")
        con.close()
    for args in (["sources"], ["digest", "--no-collect"], ["feedback", "abc", "up"]):
        result = invoke(*args)
        assert result.exit_code == 1, args  # not a setting (2): the database is the problem
        assert words in result.stderr and "Traceback" not in result.stderr
        assert "FEEDBOT_HOME" not in result.stderr  # the directory is fine; the file is not


@pytest.mark.parametrize(("var", "value", "valid"), [
    ("FEEDBOT_EMBED_BACKEND", "fast", "use one of auto, fp32, bf16, fp16, onnx-fp32"),
    ("FEEDBOT_DEVICE", "tpu", "use one of auto, cpu, cuda, cuda:N"),
])
def test_bad_embedding_settings_are_usage_errors(monkeypatch: pytest.MonkeyPatch, var: str,
                                                 value: str, valid: str) -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    monkeypatch.setenv(var, value)
    result = invoke("digest", "--no-collect")
    assert result.exit_code == 2
    assert f"{var}={value!r} is not" in result.stderr and valid in result.stderr
    result = invoke("doctor")  # shows it in place, and the rest (see below)
    assert result.exit_code == 1
    assert f"{var}={value!r} is not" in result.stdout and valid in result.stdout


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps", "CPU"])
def test_valid_devices_are_accepted(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    monkeypatch.setenv("FEEDBOT_DEVICE", device)
    assert feedbot.embed.Embedder().device_pref == device.lower()  # torch is not loaded


@pytest.mark.parametrize(("device", "names"), [("cuda", "CUDA"), ("cuda:1", "CUDA"),
                                               ("mps", "MPS")])
def test_a_gpu_that_is_not_here_is_a_setting_error(monkeypatch: pytest.MonkeyPatch, device: str,
                                                   names: str) -> None:
    """FEEDBOT_DEVICE=cuda on a machine without CUDA gave `AssertionError: Torch not compiled
    with CUDA enabled` (a new device makes `auto` measure, on that device)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    monkeypatch.setenv("FEEDBOT_DEVICE", device)
    for backend in ("auto", "fp32"):
        monkeypatch.setenv("FEEDBOT_EMBED_BACKEND", backend)
        result = invoke("digest", "--no-collect")
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"feedbot: FEEDBOT_DEVICE={device}: no {names} device here (torch ")
        assert line.endswith("; use auto or cpu")


@pytest.mark.parametrize("offline", [True, False])
def test_a_model_that_cannot_be_downloaded_is_a_setting_error(
        monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    """FEEDBOT_MODEL naming a model that is not on this machine, offline, gave a 40-line
    OSError traceback (after a minute of retries where the network is down)."""
    import huggingface_hub.constants

    if not offline:  # online as far as the hub knows, but no network (the autouse guard)
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    name = "sentence-transformers/paraphrase-MiniLM-L3-v2"
    monkeypatch.setenv("FEEDBOT_MODEL", name)
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", os.environ["FEEDBOT_HOME"])  # empty cache
    result = invoke("digest", "--no-collect")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"feedbot: FEEDBOT_MODEL={name}: the model is not on this machine "
                           "and cannot be downloaded (offline")
    assert "packaged all-MiniLM-L6-v2, which needs no network" in line

    monkeypatch.setenv("FEEDBOT_MODEL", "/no/such/model")
    result = invoke("digest", "--no-collect")
    assert result.exit_code == 2
    assert result.stderr.strip() == "feedbot: FEEDBOT_MODEL=/no/such/model: no such directory " \
                                    "on this machine"


# --- what a daily user's terminal, pipe or script gets ----------------------------------------

ODD_TITLE = "Łukasz’s CNN tricks 🎉"


@pytest.fixture
def odd_feed(server: LocalServer) -> Path:
    url = server.add("/odd.xml", body=atom_feed([{"title": ODD_TITLE,
                                                  "link": "https://e.org/odd"}]))
    p = Path(os.environ["FEEDBOT_SOURCES"])
    p.write_text(f"learner: {{stage: cnn}}\nblogs:\n  - name: Odd\n    url: {url}\n")
    return p


# `python -m feedbot` with the tests' fake embedder (no model to load: the test stays fast)
FAKE_EMBEDDER_MAIN = ("import feedbot.embed, tests.support as s; fake = s.fake_embedder(); "
                      "feedbot.embed.Embedder = lambda *a, **k: fake; "
                      "from feedbot.cli import main; main(prog_name='feedbot')")
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def test_every_command_under_the_c_locale(odd_feed: Path, use_fake_embedder: Any) -> None:
    """Under `LANG=C` (cron, a minimal Docker image) Python's stdout is ASCII: the text digest
    and `search` died with a UnicodeEncodeError traceback at the first "—" or "Ł" (rich writes
    to stdout itself; click's own lines were UTF-8 already). Every line is UTF-8 now, and
    JSON stays JSON."""
    invoke("collect")
    digest = ("digest", "--no-collect", "--since", "3650d")
    text = run_c_locale_ok(*digest)
    assert ODD_TITLE in text and "DEMO" not in text
    assert json.loads(run_c_locale_ok(*digest, "--format", "json"))["items"][0]["title"] == \
        ODD_TITLE
    assert ODD_TITLE in run_c_locale_ok("search", "CNN", "tricks")


def run_c_locale(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    """`feedbot ARGS` in a child process under the C locale, with the fake embedder; never a
    traceback. Arguments given as bytes reach it as they are (a file name that is not UTF-8)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONIOENCODING"} | C_LOCALE
    out = subprocess.run([sys.executable, "-c", FAKE_EMBEDDER_MAIN, *args], env=env,
                         cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         timeout=120)
    assert b"Traceback" not in out.stderr, out.stderr.decode("utf-8", "replace")
    return out


def run_c_locale_ok(*args: str | bytes) -> str:
    """The standard output of `feedbot ARGS` under the C locale, which must exit 0."""
    out = run_c_locale(*args)
    assert out.returncode == 0, out.stderr.decode("utf-8", "replace")
    return out.stdout.decode("utf-8")


def test_text_arguments_under_the_c_locale_are_utf8(odd_feed: Path, use_fake_embedder: Any,
                                                    tmp_path: Path) -> None:
    """Under the C locale (cron, a minimal Docker image) Python keeps each non-ASCII byte of
    the command line as a lone surrogate: `feedbot follow "José Pérez"` was refused as invalid
    text, `unfollow "Łukasz Kaiser"` found no one and `search "Łukasz"` looked for "��ukasz".
    Text arguments are the UTF-8 they were typed in now; bytes that are not UTF-8 are refused
    naming the argument; a file's name keeps its bytes, UTF-8 or not."""
    invoke("collect")
    assert "following José Pérez on X (@jpz)" in run_c_locale_ok("follow", "José Pérez",
                                                                  "--x", "jpz")
    assert "- name: José Pérez" in odd_feed.read_text(encoding="utf-8")
    assert "unfollowed José Pérez (X)" in run_c_locale_ok("unfollow", "José Pérez")
    found = json.loads(run_c_locale_ok("search", "Łukasz", "--format", "json"))
    assert found["query"] == "Łukasz" and found["items"][0]["title"] == ODD_TITLE
    for args, said in ((("stage", "set", "cnñ"), "unknown stage 'cnñ'"),
                       (("feedback", "Łukasz", "up"), "no stored item 'Łukasz'")):
        out = run_c_locale(*args)
        assert out.returncode == 2 and said in out.stderr.decode("utf-8"), out.stderr

    before = odd_feed.read_bytes()
    latin1 = run_c_locale("unfollow", "Müller".encode("latin-1"))  # a Latin-1 terminal's
    assert latin1.returncode == 2 and odd_feed.read_bytes() == before
    assert "Invalid value for 'NAME...': 'M\ufffdller' is not UTF-8 text" in \
        latin1.stderr.decode("utf-8")

    named = tmp_path / os.fsdecode(b"\xff sources.yaml")  # file names are bytes, as they are
    named.write_bytes(before)
    assert run_c_locale_ok("--sources", os.fsencode(named), "stage").startswith("stage 8/")
    opml = tmp_path / os.fsdecode(b"f\xe9eds.opml")  # Latin-1, as an old export names it
    opml.write_text('<opml version="2.0"><body><outline xmlUrl="https://blog.example.org/'
                    'feed.xml"/></body></opml>')
    assert "1 added" in run_c_locale_ok("import-opml", os.fsencode(opml))
    assert "https://blog.example.org/feed.xml" in odd_feed.read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt", ["text", "markdown", "html", "json"])
def test_digest_on_a_stdout_that_is_not_utf8(odd_feed: Path, use_fake_embedder: Any,
                                             fmt: str) -> None:
    """`feedbot digest > out.json` on Windows (a cp1252 pipe) died with a UnicodeEncodeError
    traceback at the first character cp1252 lacks (an emoji, 'Ł'), leaving half a digest."""
    invoke("collect")
    runner = CliRunner(charset="cp1252")
    result = runner.invoke(main, ["digest", "--no-collect", "--since", "3650d", "--format", fmt],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    if fmt == "json":  # escaped to ASCII: the same JSON, nothing lost
        assert out.isascii()
        assert json.loads(out)["items"][0]["title"] == ODD_TITLE
    elif fmt == "html":  # character references: valid whatever charset the page is read in
        assert out.isascii() and "&#321;ukasz&#8217;s CNN tricks &#127881;" in out
    else:
        assert "ukasz’s CNN tricks ?" in out  # what cp1252 cannot show becomes "?"


def test_digest_text_with_columns_0(sources: Path, use_fake_embedder: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """COLUMNS=0 (set by some CI runners and by ptys that report no size) made rich 0 columns
    wide: `feedbot digest` printed nothing at all and exited 0."""
    invoke("collect")
    monkeypatch.setenv("COLUMNS", "0")
    result = invoke("digest", "--no-collect", "--since", "3650d")
    assert result.exit_code == 0
    assert "feedbot digest — stage 8" in result.stdout
    assert "Self-supervised vision transformers" in result.stdout


def test_an_unknown_digest_stage_names_the_valid_ones(sources: Path, server: LocalServer) -> None:
    """`digest --stage CNN` said only "see `feedbot stage list`"; `stage set` listed the ids
    but suggested nothing."""
    for args in (["digest", "--stage", "CNNs"], ["stage", "set", "gpu"]):
        result = invoke(*args)
        assert result.exit_code == 2
        want = "cnn" if "CNNs" in args else "gpus"
        assert f"(did you mean '{want}'?); stages: algebra-trigonometry, calculus," in \
            result.stderr
        assert "kaggle" in result.stderr
    assert server.requests == []  # refused before collecting anything


def test_doctor_reports_a_database_that_digest_refuses(feedbot_env: Path,
                                                       use_fake_embedder: Any) -> None:
    """doctor said nothing about the database: with one from a newer feedbot it reported
    everything fine while `sources` and `digest` refused to start."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    ok = invoke("doctor")
    assert ok.exit_code == 0
    assert f"database: {feedbot_env / 'feedbot.db'} (schema " in ok.stdout
    assert ", 0 items)" in ok.stdout
    con = sqlite3.connect(feedbot_env / "feedbot.db")
    con.execute("PRAGMA user_version = 99")
    con.close()
    result = invoke("doctor")
    assert result.exit_code == 1  # a check that found a problem says so to scripts too
    assert result.stderr == "feedbot: 1 problem found (above)\n"
    assert "database problem: " in result.stdout
    assert "was written by a newer feedbot (schema 99" in result.stdout
    assert "stage: cnn; 0 sources" in result.stdout  # and the rest is still shown


def test_doctor_reports_a_database_it_may_read_but_not_write(
        feedbot_env: Path, use_fake_embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feedbot.db this user may only read (another user's, while `feedbot run` keeps its -wal
    and -shm files there; a read-only mount) opens and reads as usual: doctor reported
    "database: ... (schema N, M items)", exit 0, and then every collect failed. Tests run as
    root, who may write any file: the database is opened read-only instead."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    assert invoke("doctor").exit_code == 0  # a new home: its database is made, and writable
    db = feedbot_env / "feedbot.db"
    connect = sqlite3.connect

    def read_only(path: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    result = invoke("doctor")
    assert result.exit_code == 1 and result.stderr == "feedbot: 1 problem found (above)\n"
    assert f"database: {db} (schema " in result.stdout  # what it could read is still shown
    assert (f"database problem: {db} is not writable: attempt to write a readonly database; "
            in result.stdout)
    assert "Run feedbot as the user that owns it" in result.stdout
    assert "stage: cnn; 0 sources" in result.stdout  # and the rest is still shown
    monkeypatch.setattr(sqlite3, "connect", connect)
    assert invoke("doctor").exit_code == 0
    with sqlite3.connect(db) as con:  # the check left nothing behind
        assert con.execute("SELECT name FROM sqlite_master WHERE name LIKE '%check%'"
                           ).fetchall() == []


def test_doctor_waits_no_30_s_for_a_database_another_process_writes(
        feedbot_env: Path, use_fake_embedder: Any) -> None:
    """Another feedbot writing the database is no problem, and doctor does not wait the busy
    timeout (30 s) for it to finish."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    assert invoke("doctor").exit_code == 0
    con = sqlite3.connect(feedbot_env / "feedbot.db", isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # held, as by a collect in progress
    try:
        start = time.monotonic()
        result = invoke("doctor")
        assert time.monotonic() - start < 10
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert result.exit_code == 0, result.stdout
    assert "not writable" not in result.stdout


def test_doctor_says_a_missing_configuration_before_loading_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_fake_embedder: Any) -> None:
    """On a new home without sources.yaml, doctor measured the embedding backends (about
    25 s) before saying the file was missing, and exited 0."""
    monkeypatch.setenv("FEEDBOT_SOURCES", str(tmp_path / "missing.yaml"))
    result = invoke("doctor")
    assert result.exit_code == 1 and result.stderr == "feedbot: 1 problem found (above)\n"
    lines = result.stdout.splitlines()
    problem = next(i for i, line in enumerate(lines) if line.startswith("configuration problem"))
    model = next(i for i, line in enumerate(lines) if line.startswith("model: "))
    assert f"{tmp_path / 'missing.yaml'}: file not found" in lines[problem]
    assert problem < model  # said before the model is loaded
    assert any(line.startswith("disk: ") for line in lines)  # and the rest still shown



@pytest.mark.parametrize(("var", "value", "said"), [
    ("FEEDBOT_DEVICE", "tpu", "FEEDBOT_DEVICE='tpu' is not a device"),
    ("FEEDBOT_EMBED_BACKEND", "bogus", "FEEDBOT_EMBED_BACKEND='bogus' is not an embedding "
                                       "backend"),
])
def test_doctor_shows_a_bad_embedding_setting_in_place_and_goes_on(
        feedbot_env: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str,
        said: str) -> None:
    """A bad FEEDBOT_DEVICE or FEEDBOT_EMBED_BACKEND stopped doctor half-way, exit 2, with
    neither retention nor disk use shown: the one command meant to show such problems."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    monkeypatch.setenv(var, value)
    result = invoke("doctor")
    assert result.exit_code == 1 and result.stderr == "feedbot: 1 problem found (above)\n"
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"embedding problem: {said}") for line in lines), lines
    assert any(line.startswith("retention: ") for line in lines)
    assert any(line.startswith("disk: database ") for line in lines)


def test_sources_on_a_stdout_that_is_not_utf8(tmp_path: Path) -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        "learner: {stage: cnn}\nblogs:\n  - name: Łukasz 🎉\n    url: https://e.org/feed\n")
    result = CliRunner(charset="cp1252").invoke(main, ["sources"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "ukasz ?" in result.stdout and "new" in result.stdout


def test_a_feeds_escape_sequences_never_reach_the_terminal(server: LocalServer,
                                                           use_fake_embedder: Any) -> None:
    """A JSON Feed item whose URL held `ESC ]0;…` and `ESC [2J`: `feedbot digest` printed them
    raw, so reading the digest retitled the terminal and cleared the screen."""
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Esc", "items": [
        {"id": "1", "url": "https://e.org/a\u001b]0;pwned\u0007b\u001b[2Jc",
         "title": "Convolutional networks", "content_text": "convolution",
         "date_published": "2026-11-20T10:00:00Z"}]}
    url = server.add("/esc.json", body=json.dumps(feed).encode(),
                     content_type="application/feed+json")
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        f"learner: {{stage: cnn}}\nblogs:\n  - name: Esc\n    url: {url}\n")
    result = invoke("digest", "--since", "3650d")
    assert result.exit_code == 0
    assert "Convolutional networks" in result.stdout
    assert "\x1b" not in result.stdout
    assert "https://e.org/a%1B]0;pwned%07b%1B[2Jc" in result.stdout


class _FullDisk(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("stdout", ["full disk", "closed"])
def test_digest_into_a_full_disk_or_a_closed_stdout(sources: Path, use_fake_embedder: Any,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str],
                                                    fmt: str, stdout: str) -> None:
    """`feedbot digest > out.txt` on a full disk ended in an OSError traceback, and
    `feedbot digest >&-` (no stdout at all) in `AttributeError: 'NoneType' object has no
    attribute 'isatty'`."""
    invoke("collect")
    stream = io.TextIOWrapper(io.BufferedWriter(_FullDisk()), encoding="utf-8") \
        if stdout == "full disk" else None
    monkeypatch.setattr(sys, "stdout", stream)
    with pytest.raises(SystemExit) as done:
        main(["digest", "--no-collect", "--since", "3650d", "--format", fmt])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if stdout == "full disk":
        assert done.value.code == 1
        assert err.strip() == "feedbot: cannot write the output: No space left on device"
    else:
        assert done.value.code == 0 and err == ""


def test_doctor_says_whether_x_can_be_read(feedbot_env: Path, use_fake_embedder: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """X people followed and no token: `doctor` said nothing about X, exit 0."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        MINIMAL + "people:\n  - {name: Ada, x: ada_ex}\n  - {name: Bo, x: bo_ex}\n")
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    out = invoke("doctor").stdout
    assert "X: 2 accounts followed; X_BEARER_TOKEN is not set: they are off" in out
    monkeypatch.setenv("X_BEARER_TOKEN", "secret-token-value")
    out = invoke("doctor").stdout
    assert "X_BEARER_TOKEN is set" in out and "secret-token-value" not in out


def test_doctor_reports_disk_use(feedbot_env: Path, use_fake_embedder: Any) -> None:
    """What feedbot keeps: the database and every ONNX export (113 MB each for the packaged
    model), the current one, older ones of the same model and those of other models."""
    from feedbot import backends

    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    current = backends.onnx_dir(use_fake_embedder.model_ref)
    slug = current.name.rsplit("-", 1)[0]
    exports = {"current": (current, 0), "stale": (current.with_name(f"{slug}-0000000001"), 3),
               "recent": (current.with_name(f"{slug}-0000000002"), 0.1),
               "other": (current.with_name("someone_other-0000000001"), 3)}
    for directory, days in exports.values():
        directory.mkdir(parents=True)
        (directory / backends.ONNX_META).write_text(json.dumps({"source": "fake-model"}))
        (directory / "model.onnx").write_bytes(b"x" * 2_000_000)
        when = time.time() - days * 86400
        for p in (*directory.iterdir(), directory):
            os.utime(p, (when, when))
    (current.parent / "not-an-export").mkdir()
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    disk = next(i for i, line in enumerate(lines) if line.startswith("disk: "))
    db = sum(p.stat().st_size for p in feedbot_env.glob("feedbot.db*"))
    assert lines[disk] == (f"disk: database {feedbot.cli._megabytes(db)}; ONNX exports 8.0 MB "
                           f"in {current.parent}")
    assert db > 0 and feedbot.cli._megabytes(113_000_000) == "113.0 MB"
    assert lines[disk + 1] == f"  {current.name}  2.0 MB  current"
    shown = "\n".join(lines[disk + 2:])
    assert f"{exports['stale'][0].name}  2.0 MB  stale (an older export of this model: the " \
           "next export removes it)" in shown
    assert f"{exports['recent'][0].name}  2.0 MB  stale (an older export of this model, used " \
           "2 h ago: kept until unused for a day)" in shown
    assert f"{exports['other'][0].name}  2.0 MB  another model" in shown
    assert "not-an-export" not in shown
    assert sorted(p.name for p in current.parent.iterdir()) == sorted(  # doctor removes nothing
        [*(d.name for d, _ in exports.values()), "not-an-export"])


def test_doctor_without_exports(feedbot_env: Path, use_fake_embedder: Any) -> None:
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    result = invoke("doctor")
    assert result.exit_code == 0
    assert "disk: database " in result.stdout and "; no ONNX exports" in result.stdout


def test_stage_ids_are_taken_in_any_case_as_the_bot_takes_them(sources: Path,
                                                               use_fake_embedder: Any) -> None:
    """`/stage NLP` worked in Telegram while `feedbot stage set NLP` was refused."""
    result = invoke("stage", "set", "NLP")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("stage set to nlp")
    assert "stage: nlp" in sources.read_text()
    shown = invoke("digest", "--no-collect", "--stage", " Cnn ", "--format", "json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["stage"]["id"] == "cnn"


def test_sources_status_column_lines_up_whatever_the_name_length() -> None:
    from datetime import UTC, datetime

    from feedbot.cli import format_sources

    def row(name: str, kind: str = "feed", person: str = "", place: str = "") -> dict[str, Any]:
        return {"name": name, "kind": kind, "person": person, "place": place, "weight": 1.0,
                "health": "ok", "items": 3, "last_success": "just now", "error": "",
                "waiting_until": None}

    long = "The Gradient: Perspectives on AI (long!)"  # 40 characters
    huge = "x" * 200
    lines = format_sources([row("Short"), row(long), row(huge), row("cs.CV", "arxiv"),
                            row("Ann/x", person="Ann", place="x: @ann")], datetime.now(UTC))
    rows = [x for x in lines if x.rstrip().endswith("just now")]
    assert len(rows) == 5
    assert len({x.index(" ok ") for x in rows}) == 1  # one column for every section
    assert any(long in x for x in rows)  # a name of 40 characters is shown whole
    cut = next(x for x in rows if x.lstrip().startswith("xxx"))
    assert "…" in cut and len(cut.split(" ok ")[0]) <= 60


def test_a_stage_in_sources_yaml_is_taken_in_any_case(feedbot_env: Path,
                                                      use_fake_embedder: Any) -> None:
    """`stage: CNN` in sources.yaml was "unknown stage", while `stage set CNN` and /stage CNN
    took it; it is used as the roadmap spells it (votes record `cnn`)."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("learner: {stage: CNN}\n")
    shown = invoke("stage")
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.startswith("stage 8/13: cnn — ")
    out = invoke("digest", "--no-collect", "--format", "json")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["stage"]["id"] == "cnn"


def test_a_roadmap_path_from_the_home_directory(tmp_path: Path, feedbot_env: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`roadmap: ~/my-roadmap.yaml` was read as `<sources folder>/~/my-roadmap.yaml`."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "my-roadmap.yaml").write_text(
        "title: Mine\nstages:\n  - {id: basics, title: The basics of vectors}\n"
        "  - {id: next-one, title: Something after}\n")
    monkeypatch.setenv("HOME", str(home))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        "learner:\n  stage: basics\n  roadmap: ~/my-roadmap.yaml\n")
    listed = invoke("stage", "list")
    assert listed.exit_code == 0, listed.stderr
    assert "basics" in listed.stdout and "next-one" in listed.stdout


# --- the interface outside checks rely on (design.md, "Interface the outside world relies on") -

def _is_iso(value: object) -> bool:
    from datetime import datetime

    if not isinstance(value, str):
        return False
    return datetime.fromisoformat(value).tzinfo is not None


def test_digest_json_fields_have_the_types_the_design_names(sources: Path,
                                                             use_fake_embedder: Any) -> None:
    """`{"stage": {...}, "generated_at": ..., "items": [{"id", "title", "url", "source",
    "kind", "authors", "published", "score", "why"}, ...]}`, and the README's additions."""
    invoke("collect")
    for explain in (False, True):
        args = ["digest", "--no-collect", "--since", "3650d", "--format", "json"]
        doc = json.loads(invoke(*args, *(["--explain"] if explain else [])).stdout)
        assert doc["stage"] == {"id": "cnn", "title": doc["stage"]["title"], "index": 8,
                                "summary": doc["stage"]["summary"]}
        assert isinstance(doc["stage"]["title"], str) and doc["stage"]["title"]
        assert isinstance(doc["stage"]["summary"], str)
        assert _is_iso(doc["generated_at"])
        assert doc["demo"] is False and isinstance(doc["candidates"], int)
        assert doc["candidates"] >= len(doc["items"]) and isinstance(doc["notes"], list)
        assert ("weights" in doc) is explain
        assert doc["items"]
        for it in doc["items"]:
            for key in ("id", "title", "url", "source", "kind", "why", "summary"):
                assert isinstance(it[key], str), key
            assert isinstance(it["score"], float)
            assert it["published"] is None or _is_iso(it["published"])
            for key in ("authors", "sources", "shared_by"):
                assert isinstance(it[key], list) and all(isinstance(a, str) for a in it[key])
            assert ("parts" in it) is explain
            if explain:
                assert set(it["parts"]) == set(doc["weights"])
        paper = next(it for it in doc["items"] if "2411.01234" in it["url"])
        assert paper["id"] == "arxiv:2411.01234"  # the arXiv id for papers...
        other = next(it for it in doc["items"] if it["id"] != paper["id"])
        assert len(other["id"]) == 12  # ...and a 12-character hash for everything else
        assert invoke("feedback", other["id"], "up").exit_code == 0  # the id feedback takes
    # with no item in the window, `weights` still holds every part's weight (it was {})
    empty = json.loads(invoke("digest", "--no-collect", "--since", "1m", "--format", "json",
                              "--explain").stdout)
    assert empty["items"] == [] and empty["weights"] == doc["weights"]
    assert empty["weights"]["similarity"] == 1.0 and empty["weights"]["contrast"] == 0.5


@pytest.mark.parametrize(("since", "shown"), [("90s", 0), ("30m", 0), ("6h", 1), ("7d", 2),
                                              ("2w", 3), (" 2w ", 3)])
def test_digest_since_takes_every_unit(server: LocalServer, use_fake_embedder: Any,
                                       since: str, shown: int) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    ages = {"two hours": timedelta(hours=2), "three days": timedelta(days=3),
            "ten days": timedelta(days=10)}
    url = server.add("/dated.xml", body=atom_feed([
        {"title": f"Convolutions {name} ago", "link": f"https://e.org/{n}",
         "updated": (now - age).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for n, (name, age) in enumerate(ages.items())]))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        f"learner: {{stage: cnn}}\nblogs:\n  - name: Dated\n    url: {url}\n")
    assert invoke("collect").exit_code == 0
    result = invoke("digest", "--no-collect", "--since", since, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["items"]) == shown


@pytest.mark.parametrize("limit", ["0", "-1", "101", "99999999999999999999", "1e3", "two"])
def test_digest_limit_out_of_range_is_a_usage_error(sources: Path, server: LocalServer,
                                                    limit: str) -> None:
    result = invoke("digest", "--limit", limit)
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.stderr and "Traceback" not in result.stderr
    assert server.requests == []  # refused before collecting anything


def test_digest_limit_caps_the_items(sources: Path, use_fake_embedder: Any) -> None:
    invoke("collect")
    args = ["digest", "--no-collect", "--since", "3650d", "--format", "json"]
    assert len(json.loads(invoke(*args).stdout)["items"]) == 4  # digest_size 5, 4 stored
    assert len(json.loads(invoke(*args, "--limit", "1").stdout)["items"]) == 1
    assert len(json.loads(invoke(*args, "--limit", "100").stdout)["items"]) == 4


@pytest.mark.parametrize("fmt", ["yaml", "JSONL", ""])
def test_an_unknown_format_is_a_usage_error(sources: Path, server: LocalServer, fmt: str) -> None:
    for cmd in (["digest"], ["search", "cnn"], ["later"]):
        result = invoke(*cmd, "--format", fmt)
        assert result.exit_code == 2, cmd
        assert "Invalid value for '--format'" in result.stderr
    assert server.requests == []


def test_digest_is_read_only_towards_delivery_state(sources: Path, use_fake_embedder: Any,
                                                    feedbot_env: Path) -> None:
    """`feedbot digest` records nothing as delivered: the daily Telegram digest still sends
    what the terminal showed, and a second digest shows the same items."""
    invoke("collect")
    args = ["digest", "--no-collect", "--since", "3650d", "--format", "json"]
    first = [it["id"] for it in json.loads(invoke(*args).stdout)["items"]]
    assert first and [it["id"] for it in json.loads(invoke(*args).stdout)["items"]] == first
    con = sqlite3.connect(feedbot_env / "feedbot.db")
    assert con.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    con.close()


def test_feedback_takes_an_arxiv_id_with_or_without_its_prefix(server: LocalServer,
                                                               use_fake_embedder: Any,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               feedbot_env: Path) -> None:
    server.add("/api/query", body=(FIXTURES / "arxiv_author_batch.xml").read_bytes(),
               content_type="application/atom+xml")
    monkeypatch.setenv("FEEDBOT_ARXIV_API_URL", server.url("/api/query?{}"))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        "learner: {stage: nlp}\narxiv:\n  - {name: Mine, query: 'all:attention'}\n")
    assert "Mine: 7 new" in invoke("collect").stdout
    for n, ref, value in [(1, "2611.05001", "up"), (2, "arxiv:2611.05002", "down"),
                          (3, "ARXIV:2611.05003", "later"),
                          (4, "https://arxiv.org/abs/2611.05004v1", "up"),
                          (5, "[arxiv:2611.05005]", "down")]:
        result = invoke("feedback", ref, value)
        assert result.exit_code == 0, (ref, result.stderr)
        assert result.stdout.startswith(f"{value}: ")
        assert result.stdout.rstrip().endswith(f"[arxiv:2611.0500{n}]")
    from feedbot.store import Store

    store = Store.open(feedbot_env)
    assert sorted((v.item_id, v.value) for v in store.feedback("cli")) == [
        ("arxiv:2611.05001", "up"), ("arxiv:2611.05002", "down"), ("arxiv:2611.05004", "up"),
        ("arxiv:2611.05005", "down")]
    assert store.bookmarks("cli") == ["arxiv:2611.05003"]
    store.close()


def test_which_sources_file_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    feedbot_env: Path, use_fake_embedder: Any) -> None:
    """--sources, then FEEDBOT_SOURCES, then ./sources.yaml when present, then
    $FEEDBOT_HOME/sources.yaml; with none, one line saying how to make one."""
    def stage_file(where: Path, stage: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        (where / "sources.yaml").write_text(f"learner: {{stage: {stage}}}\n")
        return where / "sources.yaml"

    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("FEEDBOT_SOURCES")
    missing = invoke("stage")
    assert missing.exit_code == 2
    assert missing.stderr.strip() == (
        f"feedbot: {feedbot_env / 'sources.yaml'}: file not found (set FEEDBOT_SOURCES or run "
        "`feedbot init` to create a starter sources.yaml)")
    typo = {"FEEDBOT_SOURCES": str(tmp_path / "typo.yaml")}
    named = CliRunner().invoke(main, ["stage"], env=typo)
    assert named.exit_code == 2  # already set: the hint asks whether it names the right file
    assert named.stderr.strip() == (
        f"feedbot: {tmp_path / 'typo.yaml'}: file not found (is --sources or FEEDBOT_SOURCES "
        "naming the right file? `feedbot init` writes a starter file there)")
    stage_file(feedbot_env, "calculus")
    assert "calculus" in invoke("stage").stdout
    assert f"sources: {feedbot_env / 'sources.yaml'}" in invoke("doctor").stdout
    stage_file(cwd, "nlp")
    assert "nlp" in invoke("stage").stdout  # ./sources.yaml when present
    monkeypatch.setenv("FEEDBOT_SOURCES", str(stage_file(tmp_path / "env", "gpus")))
    assert "gpus" in invoke("stage").stdout
    flag = stage_file(tmp_path / "flag", "kaggle")
    assert "kaggle" in invoke("--sources", str(flag), "stage").stdout
    assert invoke("--sources", str(flag), "stage", "set", "python").exit_code == 0
    assert "stage: python" in flag.read_text()  # the edit went to the file in use
    assert "gpus" in (tmp_path / "env" / "sources.yaml").read_text()


# --- a hostile environment: full disks, Ctrl-C, files where folders belong ----------------------

def _feedbot_with_file_size_limit(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`feedbot ARGS` in a process that may write no file past `limit` bytes: a full disk, as
    SQLite and Python see one (EFBIG: Python ignores SIGXFSZ), without root or a tmpfs."""
    resource = pytest.importorskip("resource")

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, FEEDBOT_EMBED_BACKEND="none-such")  # fails fast, after collecting
    return subprocess.run([sys.executable, "-m", "feedbot", *args], env=env, text=True,
                          capture_output=True, timeout=120, preexec_fn=limited)


def test_a_disk_that_fills_up_during_collect_is_one_line(server: LocalServer,
                                                        feedbot_env: Path) -> None:
    """`feedbot collect` on a full disk ended in a 40-line `sqlite3.OperationalError: disk I/O
    error` traceback; what was stored before stays, and the next run stores the rest."""
    small = server.add("/small.xml", body=atom_feed([{"title": "First", "link": "https://e.org/1"}]))
    big = server.add("/big.xml", body=atom_feed([
        {"title": f"Post {n}", "link": f"https://e.org/big/{n}", "summary": "words " * 400}
        for n in range(200)]))
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    sources.write_text(f"learner: {{stage: cnn}}\nblogs:\n  - name: Small\n    url: {small}\n")
    assert _feedbot_with_file_size_limit(10_000_000, "collect").returncode == 0
    sources.write_text(sources.read_text() + f"  - name: Big\n    url: {big}\n")
    full = _feedbot_with_file_size_limit(200_000, "collect")
    assert full.returncode == 1
    assert "Traceback" not in full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith(f"feedbot: cannot write to the database in {feedbot_env}: disk I/O "
                           "error. What was stored before is kept; free some space")
    con = sqlite3.connect(feedbot_env / "feedbot.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT title FROM items").fetchall() == [("First",)]
    con.close()
    again = _feedbot_with_file_size_limit(10_000_000, "collect")
    assert again.returncode == 0 and "Big: 200 new" in again.stdout


def test_a_full_disk_is_not_called_a_damaged_database(tmp_path: Path, feedbot_env: Path) -> None:
    """A new database on a full disk was "damaged or not a feedbot database … Move it aside",
    which sends the user to move a good database away."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(MINIMAL)
    for args in (["sources"], ["feedback", "abc", "up"]):
        result = _feedbot_with_file_size_limit(4096, *args)
        assert result.returncode == 1  # as a full disk mid-command (cli.py)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"feedbot: cannot write to the database in {feedbot_env}: ")
        assert "damaged" not in line and "Move it aside" not in line


def test_ctrl_c_during_collect_is_one_line_and_keeps_what_was_stored(
        server: LocalServer, feedbot_env: Path) -> None:
    import signal
    import threading

    from .support import Request

    release = threading.Event()

    def hang(req: Request) -> tuple[int, dict[str, str], bytes]:
        release.wait(60)
        return 200, {"Content-Type": "application/xml"}, atom_feed([])

    fast = server.add("/fast.xml", body=atom_feed([{"title": "Kept", "link": "https://e.org/k"}]))
    server.add("/hung.xml", handler=hang)
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        f"learner: {{stage: cnn}}\nblogs:\n  - name: Fast\n    url: {fast}\n"
        f"  - name: Hung\n    url: {server.url('/hung.xml')}\n")
    env = dict(os.environ, FEEDBOT_EMBED_BACKEND="none-such")
    proc = subprocess.Popen([sys.executable, "-m", "feedbot", "collect"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "Fast: 1 new (1 in feed)\n"  # stored, then said
        deadline = time.monotonic() + 60
        while not server.hits("/hung.xml"):
            assert time.monotonic() < deadline, "the hung feed was never asked"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        release.set()
        proc.kill()
    assert proc.returncode == 130
    assert err == "feedbot: interrupted\n"
    con = sqlite3.connect(feedbot_env / "feedbot.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT title FROM items").fetchall() == [("Kept",)]
    con.close()


def test_init_where_it_cannot_write_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                feedbot_env: Path) -> None:
    """`feedbot init` with FEEDBOT_HOME set to a file ended in a FileExistsError traceback."""
    monkeypatch.delenv("FEEDBOT_SOURCES")
    monkeypatch.chdir(tmp_path)
    feedbot_env.write_text("not a directory")
    result = invoke("init")
    assert result.exit_code == 2
    assert result.stderr == (f"feedbot: cannot write {feedbot_env / 'sources.yaml'}: "
                             f"{feedbot_env} is a file, not a directory\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for force in ([], ["--force"]):  # it said "exists; use --force", then "Is a directory"
        refused = invoke("--sources", str(folder), "init", *force)
        assert refused.exit_code == 2 and refused.stderr == (
            f"feedbot: cannot write {folder}: it is a directory; name the file, as in "
            f"`feedbot --sources {folder / 'sources.yaml'} init`\n"), force
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_init_force_on_a_full_disk_keeps_the_old_file(tmp_path: Path) -> None:
    """`init --force` wrote the starter file in place: on a full disk the file it replaces
    was left cut short. Now it is replaced whole or not at all."""
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    sources.write_text(MINIMAL)
    result = _feedbot_with_file_size_limit(1000, "init", "--force")
    assert result.returncode == 2
    assert result.stderr == f"feedbot: cannot write {sources}: File too large\n"
    assert sources.read_text() == MINIMAL
    assert sorted(p.name for p in sources.parent.iterdir() if p.name != "home") == \
        ["sources.yaml"]


def test_feedback_on_a_pruned_item_says_it_may_have_been_pruned(sources: Path,
                                                                use_fake_embedder: Any,
                                                                feedbot_env: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from feedbot.prune import prune
    from feedbot.store import Store

    invoke("collect")
    doc = json.loads(invoke("digest", "--no-collect", "--since", "3650d", "--format",
                            "json").stdout)
    kept, gone = doc["items"][0], doc["items"][1]
    assert invoke("feedback", kept["id"], "later").exit_code == 0
    store = Store.open(feedbot_env)
    prune(store, older_than=86400.0, label="1d", now=datetime.now(UTC) + timedelta(days=3650),
          keep_hashes=set())
    store.close()
    for ref in (gone["id"], gone["url"]):
        result = invoke("feedback", ref, "up")
        assert result.exit_code == 2
        assert result.stderr == (
            f"feedbot: no stored item {ref!r} (never collected, or removed since by a prune, "
            "which keeps only what was voted on or saved); use an id from a recent `feedbot "
            "digest` or the item's URL\n")
    assert invoke("feedback", kept["id"], "up").exit_code == 0  # a saved item was kept


@pytest.mark.parametrize("what", ["a directory", "binary", "missing"])
@pytest.mark.parametrize("command", [["unfollow", "Vision Lab"], ["stage", "set", "nlp"],
                                     ["follow", "--no-check", "https://e.org/feed.xml"],
                                     ["import-opml", "OPML"]])
def test_every_editing_command_on_an_unreadable_sources_file_is_one_line(
        tmp_path: Path, what: str, command: list[str]) -> None:
    """`feedbot unfollow` on a sources.yaml that was a directory or not UTF-8 ended in an
    IsADirectoryError or UnicodeDecodeError traceback (the other commands said one line)."""
    sources = tmp_path / "odd.yaml"
    if what == "a directory":
        sources.mkdir()
    elif what == "binary":
        sources.write_bytes(b"\x8c\xff\x00binary" * 100)
    before = sources.read_bytes() if sources.is_file() else None
    opml = tmp_path / "feeds.opml"
    opml.write_text('<opml version="2.0"><body><outline xmlUrl="https://e.org/f"/></body></opml>')
    args = [str(opml) if a == "OPML" else a for a in command]
    result = invoke("--sources", str(sources), *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"feedbot: {sources}" + (":1: " if what == "binary" else ": "))
    assert {"missing": "file not found", "binary": "not UTF-8 text"}.get(what, "cannot read") \
        in line
    if what == "missing":
        assert "feedbot init" in line
    assert (sources.read_bytes() if sources.is_file() else None) == before
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "home")
    assert left == ["feeds.opml", *([sources.name] if what != "missing" else [])]


@pytest.mark.parametrize("command", [["unfollow", "Vision Lab"], ["stage", "set", "nlp"],
                                     ["follow", "--no-check", "https://e.org/feed.xml"]])
def test_editing_sources_yaml_on_a_full_disk_is_one_line_and_changes_nothing(
        tmp_path: Path, command: list[str]) -> None:
    """The write of the edited file failing (a full disk, a read-only folder) ended in an
    OSError traceback. Now one line; the file is as it was and no temporary file stays."""
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    text = SOURCES.format(atom="https://e.org/a.xml", rss="https://e.org/r.xml",
                          broken="https://e.org/b") + "# " + "padding " * 100 + "\n"
    sources.write_text(text)
    result = _feedbot_with_file_size_limit(100, *command)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"feedbot: {sources}: cannot write: File too large; nothing was " \
                            "changed\n"
    assert sources.read_text() == text
    assert sorted(p.name for p in sources.parent.iterdir() if p.name != "home") == \
        ["sources.yaml"]


def test_feedback_and_later_keep_each_chat_apart(sources: Path, use_fake_embedder: Any) -> None:
    invoke("collect")
    doc = json.loads(invoke("digest", "--no-collect", "--since", "3650d", "--format",
                            "json").stdout)
    first, second = doc["items"][0]["id"], doc["items"][1]["id"]
    assert invoke("feedback", first, "later").exit_code == 0  # --chat cli, the default
    assert invoke("feedback", "--chat", "12345", second, "later").exit_code == 0
    ids = {chat: [i["id"] for i in json.loads(invoke("later", *args, "--format",
                                                     "json").stdout)["items"]]
           for chat, args in (("cli", []), ("12345", ["--chat", "12345"]))}
    assert ids == {"cli": [first], "12345": [second]}
    assert "nothing saved for later (chat 999)" in invoke("later", "--chat", "999").stdout


def test_the_saved_list_names_sources_as_the_digest_and_search_do(
        sources: Path, use_fake_embedder: Any) -> None:
    """`later` gave "cs.CL" and "Some One/blog" (the stored names) where the digest and the
    search give "arXiv cs.CL" and "Some One on their blog" for the same items."""
    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    sources.write_text("learner: {stage: nlp}\narxiv:\n  - {name: cs.CL, category: cs.CL}\n"
                       "people:\n  - {name: Some One, blog: 'https://one.example.org/feed'}\n")
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    items = [Item("Attention", "https://arxiv.org/abs/2611.00001", "cs.CL", "paper",
                  published=now, arxiv_id="2611.00001", arxiv_version=1),
             Item("My notes", "https://one.example.org/notes", "Some One/blog", person="Some One",
                  published=now)]
    with Store.open(feedbot_home()) as store:
        store.upsert_items(items, now)
    for it in items:
        assert invoke("feedback", it.id, "later").exit_code == 0
    saved = json.loads(invoke("later", "--format", "json").stdout)["items"]
    assert [i["source"] for i in saved] == ["Some One on their blog", "arXiv cs.CL"]
    for i in saved:
        [found] = json.loads(invoke("search", i["url"], "--format", "json").stdout)["items"]
        assert found["source"] == i["source"]
    text = invoke("later").stdout
    assert "    Some One on their blog — https://one.example.org/notes" in text
    assert "    arXiv cs.CL — https://arxiv.org/abs/2611.00001" in text


def test_the_saved_list_is_shown_with_a_broken_sources_yaml(sources: Path) -> None:
    """The list is the store's; `later` reads sources.yaml only to name the sources. A typo
    there stopped it with the config's error: the saved items, stored names and all, go on."""
    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    item = Item("My notes", "https://one.example.org/notes", "Some One/blog", published=now)
    with Store.open(feedbot_home()) as store:
        store.upsert_items([item], now)
    assert invoke("feedback", item.id, "later").exit_code == 0
    sources.write_text("learner: {stage: nlp\n")  # an unclosed brace
    result = invoke("later")
    assert result.exit_code == 0, result.output
    assert "    Some One/blog — https://one.example.org/notes" in result.stdout
    assert "sources are shown by their stored names" in result.stderr


@pytest.mark.parametrize("chat", ["foo", "", "12.5", "4_2", "@me", "CLI"])
def test_a_chat_that_is_neither_cli_nor_a_chat_id_is_refused(sources: Path,
                                                             chat: str) -> None:
    """`feedback --chat foo` saved a vote no chat would ever see (it trains the model all the
    same), and `later --chat foo` said the list was empty."""
    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    item = Item("Note", "https://blog.example.org/note", "Notes", published=now)
    with Store.open(feedbot_home()) as store:
        store.upsert_items([item], now)
    for args in (["feedback", item.id, "up"], ["later"]):
        res = invoke(*args, "--chat", chat)
        assert res.exit_code == 2 and f"Invalid value for '--chat': {chat!r} is no chat: give " \
            "cli (the default, the terminal's own) or a Telegram chat id, a whole number " \
            "(negative for a group)" in res.stderr, (args, res.stderr)
    with Store.open(feedbot_home()) as store:
        assert store.bookmarked_items("cli") == [] and not store.db.execute(
            "SELECT count(*) FROM feedback").fetchone()[0]


def test_a_chat_id_is_taken_as_the_bot_records_it(sources: Path) -> None:
    """A group's negative id, and an id written with a sign or zeros in front, are the chat
    the bot records (by the number)."""
    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    item = Item("Note", "https://blog.example.org/note", "Notes", published=now)
    with Store.open(feedbot_home()) as store:
        store.upsert_items([item], now)
    assert invoke("feedback", item.id, "later", "--chat", "-1001234").exit_code == 0
    assert invoke("feedback", item.id, "later", "--chat", " +042 ").exit_code == 0
    with Store.open(feedbot_home()) as store:
        assert [s.id for s in store.bookmarked_items("-1001234")] == [item.id]
        assert [s.id for s in store.bookmarked_items("42")] == [item.id]
    assert json.loads(invoke("later", "--chat", "042", "--format", "json").stdout)["chat"] == "42"


def test_the_saved_list_marks_a_paper_withdrawn_since(sources: Path) -> None:
    from feedbot.config import feedbot_home

    from .fake_bot_api import withdrawn_and_saved

    paper = withdrawn_and_saved(feedbot_home(), "cli")
    listed = invoke("later")
    assert listed.exit_code == 0 and " 1. Deep nets (withdrawn)\n" in listed.stdout
    [item] = json.loads(invoke("later", "--format", "json").stdout)["items"]
    assert (item["id"], item["withdrawn"]) == (paper, True)


def test_feedback_on_a_paper_removed_for_its_withdrawal_says_so(sources: Path) -> None:
    """It said "never collected, or removed since by a prune"."""
    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    v1 = Item("Deep nets", "https://arxiv.org/abs/2611.00001v1", "cs.CV", "paper",
              published=now, arxiv_id="2611.00001", arxiv_version=1)
    with Store.open(feedbot_home()) as store:
        store.upsert_items([v1], now)
        store.upsert_items([replace(v1, arxiv_version=2, withdrawn=True)], now)
    res = invoke("feedback", "arXiv:2611.00001", "up")
    assert res.exit_code == 2 and res.stderr.strip() == (
        "feedbot: 'arXiv:2611.00001' was withdrawn by its authors on arXiv, and feedbot "
        "removed it (no chat had voted on it or saved it); a withdrawn paper takes no feedback")


def test_feedback_by_a_pages_url_names_its_entries_and_saves_nothing(sources: Path) -> None:
    """Eight posts of one day on one page, told apart by their #fragment: the page's URL (or
    an anchor none has) saved the vote on one of them, silently. Its exact URL still works."""
    from feedbot.config import feedbot_home
    from feedbot.items import Item
    from feedbot.store import Store

    page = "http://blog.example.org/2017/06/26.html"
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    notes = [Item(f"Note {n}", f"{page}#a{n}", "Blog", guid=f"{page}#a{n}", published=now)
             for n in range(8)]
    with Store.open(feedbot_home()) as store:
        store.upsert_items(notes, now)
    for ref in (page, f"{page}#nonexistent"):
        res = invoke("feedback", ref, "later")
        assert res.exit_code == 2 and res.stderr == (
            "feedbot: ambiguous: 8 stored items are on this page; give the id or the exact URL "
            "(with its #fragment) of one:\n"
            + "".join(f"  [{n.id}] Note {i} — {n.url}\n" for i, n in enumerate(notes[:5]))
            + f"  … and 3 more: `feedbot search {ref}` lists them all\n"), ref
    assert json.loads(invoke("later", "--format", "json").stdout)["items"] == []
    assert invoke("feedback", f"{page}#a6", "later").stdout == f"later: Note 6 [{notes[6].id}]\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--grace", "6"], "6 needs a unit"), (["--grace", "soon"], "not a duration"),
    (["--watch-interval", "0.1"], "0.1 is not in the range x>=0.5"),
    (["--watch-interval", "often"], "'often' is not a valid float range"),
])
def test_run_refuses_bad_options_before_starting(sources: Path, server: LocalServer,
                                                 args: list[str], message: str) -> None:
    result = invoke("run", *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert server.requests == []


def test_the_console_script() -> None:
    script = Path(sys.executable).with_name("feedbot")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}: not installed with pip")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("feedbot ")


def test_prune_on_a_full_disk_is_not_called_busy(server: LocalServer, feedbot_env: Path) -> None:
    """A prune that could not write (VACUUM needs room for a copy of the database) said "the
    database is busy …; try again when the other feedbot command is done"."""
    url = server.add("/old.xml", body=atom_feed([
        {"title": f"Post {n}", "link": f"https://e.org/{n}", "summary": "words " * 300,
         "updated": "2020-01-01T00:00:00Z"} for n in range(100)]))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        f"learner: {{stage: cnn, since: 1d}}\nblogs:\n  - name: Old\n    url: {url}\n")
    assert _feedbot_with_file_size_limit(10_000_000, "collect").returncode == 0
    con = sqlite3.connect(feedbot_env / "feedbot.db")
    con.execute("UPDATE items SET first_seen = first_seen - 30 * 86400")  # seen a month ago
    con.commit()
    size = (feedbot_env / "feedbot.db").stat().st_size
    result = _feedbot_with_file_size_limit(size // 2, "prune", "--older-than", "2d")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"feedbot: cannot write to the database in {feedbot_env}: ")
    assert "busy" not in line
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_export_opml_over_a_file_on_a_full_disk_keeps_the_previous_export(
        tmp_path: Path) -> None:
    """`export-opml -o FILE` wrote FILE in place: on a full disk the previous export was left
    cut short (and said so only by the error line)."""
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    sources.write_text("learner: {stage: cnn}\nblogs:\n" + "".join(
        f"  - name: Blog {n}\n    url: https://b{n}.example.org/feed.xml\n" for n in range(50)))
    out = tmp_path / "feeds.opml"
    assert invoke("export-opml", "-o", str(out)).exit_code == 0
    previous = out.read_bytes()
    sources.write_text(sources.read_text().replace("Blog 0\n", "Blog zero\n"))
    result = _feedbot_with_file_size_limit(len(previous) // 2, "export-opml", "-o", str(out))
    assert result.returncode == 2
    assert result.stderr == f"feedbot: cannot write {out}: File too large\n"
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == \
        ["feeds.opml", "sources.yaml"]
    assert invoke("export-opml", "-o", str(out)).exit_code == 0  # and with room, it is replaced
    assert b"Blog zero" in out.read_bytes()


def test_a_database_held_past_the_busy_timeout_is_one_line(sources: Path, use_fake_embedder: Any,
                                                          feedbot_env: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holding the database longer than the busy timeout (a long VACUUM) ended
    `feedbot feedback` in a traceback; the vote is not half-written, and goes in once free."""
    import sqlite3

    from feedbot.store import Store

    invoke("collect")
    item = json.loads(invoke("digest", "--no-collect", "--since", "3650d", "--format",
                             "json").stdout)["items"][0]
    real_open = Store.open
    monkeypatch.setattr(Store, "open", classmethod(
        lambda cls, home, timeout=30.0: real_open(home, timeout=0.2)))  # the test's patience
    holder = sqlite3.connect(feedbot_env / "feedbot.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = invoke("feedback", item["id"], "up")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1
    assert result.stderr.startswith(f"feedbot: the database in {feedbot_env} is busy (")
    assert "try again when it is done" in result.stderr and "Traceback" not in result.output
    assert invoke("feedback", item["id"], "up").exit_code == 0  # free again: it goes in
    store = real_open(feedbot_env)
    assert [(v.item_id, v.value) for v in store.feedback("cli")] == [(item["id"], "up")]
    store.close()


def _three_feeds(server: LocalServer, **routes: Any) -> dict[str, str]:
    """sources.yaml with the blogs First, Middle and Last (two posts each, with an ETag);
    `routes` replaces a blog's route."""
    from .support import Route

    urls = {}
    for name in ("First", "Middle", "Last"):
        body = atom_feed([{"title": f"{name} post {n}", "link": f"https://e.org/{name}/{n}"}
                          for n in range(2)])
        urls[name] = server.add(f"/{name}.xml", routes.get(name) or Route(
            body=body, etag=f'"{name}"'))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("learner: {stage: cnn}\nblogs:\n" + "".join(
        f"  - name: {name}\n    url: {url}\n" for name, url in urls.items()))
    return urls


def test_a_source_recorded_while_the_database_is_busy_stops_no_other(
        server: LocalServer, feedbot_env: Path, use_fake_embedder: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process held the database past the busy timeout while one source was being
    recorded: `feedbot collect` ended there with "the database is busy", the sources after it
    were neither recorded nor reported. Now every source has its line, the busy one says
    so, the others are stored, one line on stderr says which to collect again, the exit
    status is 0 as for any failed source (design.md), and the next run stores the busy one's
    items (its ETag was not kept, so no 304 hides them)."""
    from feedbot.store import Store

    from .support import Request, Route

    monkeypatch.setenv("FEEDBOT_FETCH_CONCURRENCY", "1")  # one at a time, in the file's order
    body = atom_feed([{"title": f"Middle post {n}", "link": f"https://e.org/Middle/{n}"}
                      for n in range(2)])

    def middle(req: Request) -> tuple[int, dict[str, str], bytes]:
        if req.headers.get("if-none-match") == '"Middle"':
            return 304, {"ETag": '"Middle"'}, b""
        if len(server.hits("/Middle.xml")) == 1:  # the first run: held while it is recorded
            holder.execute("BEGIN IMMEDIATE")
        return 200, {"Content-Type": "application/xml", "ETag": '"Middle"'}, body

    def last(req: Request) -> tuple[int, dict[str, str], bytes]:
        if holder.in_transaction:  # Middle is done (not recorded): let go
            holder.execute("ROLLBACK")
        return 200, {"Content-Type": "application/xml"}, atom_feed(
            [{"title": "Last post", "link": "https://e.org/Last/0"}])

    _three_feeds(server, Middle=Route(handler=middle), Last=Route(handler=last))
    assert invoke("sources").exit_code == 0  # the database is there
    holder = sqlite3.connect(feedbot_env / "feedbot.db", isolation_level=None,
                             check_same_thread=False)  # another process, as SQLite sees it
    real_open = Store.open
    monkeypatch.setattr(Store, "open", classmethod(
        lambda cls, home, timeout=30.0: real_open(home, timeout=0.2)))  # the test's patience
    try:
        result = invoke("collect")
    finally:
        holder.close()
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "First: 2 new (2 in feed)",
        "Middle: error: the database was busy; nothing of it was lost, run again",
        "Last: 1 new (1 in feed)",
        "3 sources: 2 ok, 1 failed, 3 new items",
    ]
    assert result.stderr == (
        f"feedbot: 1 source (Middle) could not be recorded: the database in {feedbot_env} was "
        "busy (another feedbot process held it past the busy timeout); nothing of it was lost: "
        "run `feedbot collect` again\n")
    store = real_open(feedbot_env)
    assert store.item_count("First") == 2 and store.item_count("Last") == 1
    assert store.item_count("Middle") == 0 and store.source_state("Middle").etag == ""
    store.close()
    again = invoke("collect", "--source", "Middle")
    assert again.exit_code == 0
    assert again.stdout.splitlines()[0] == "Middle: 2 new (2 in feed)"


def test_a_full_disk_mid_collect_still_reports_every_source(
        server: LocalServer, feedbot_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk filled up while one source was recorded: the run ended with the disk-full line
    alone, and the sources after it were never reported. Now each has its line (those after
    the full disk are not even fetched), the disk-full line follows on stderr with exit 1, and
    with room again the next run stores them all (no ETag was kept for the one that failed)."""
    small = server.add("/small.xml", body=atom_feed([{"title": "First", "link": "https://e.org/1"}]))
    big = server.add("/big.xml", etag='"big1"', body=atom_feed([
        {"title": f"Post {n}", "link": f"https://e.org/big/{n}", "summary": "words " * 400}
        for n in range(200)]))
    after = server.add("/after.xml", body=atom_feed([{"title": "After", "link": "https://e.org/a"}]))
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    sources.write_text(f"learner: {{stage: cnn}}\nblogs:\n  - name: Small\n    url: {small}\n")
    assert _feedbot_with_file_size_limit(10_000_000, "collect").returncode == 0
    sources.write_text(sources.read_text() + f"  - name: Big\n    url: {big}\n"
                       f"  - name: After\n    url: {after}\n")
    monkeypatch.setenv("FEEDBOT_FETCH_CONCURRENCY", "1")  # one at a time, in the file's order
    full = _feedbot_with_file_size_limit(200_000, "collect")
    assert full.returncode == 1
    assert full.stdout.splitlines() == [
        "Small: 0 new (1 in feed)",
        "Big: error: cannot write to the database (disk I/O error); nothing of it was lost, "
        "run again once there is room",
        "After: error: cannot write to the database (disk I/O error); nothing of it was lost, "
        "run again once there is room",
        "3 sources: 1 ok, 2 failed, 0 new items",
    ]
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith(f"feedbot: cannot write to the database in {feedbot_env}: disk I/O "
                           "error. What was stored before is kept; free some space")
    assert not server.hits("/after.xml")  # not fetched for nothing
    con = sqlite3.connect(feedbot_env / "feedbot.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT name, etag FROM source_state WHERE last_attempt IS NOT NULL "
                       "OR etag != ''").fetchall() == [("Small", "")]  # nothing kept of Big
    con.close()
    again = _feedbot_with_file_size_limit(10_000_000, "collect")
    assert again.returncode == 0
    assert "Big: 200 new (200 in feed)" in again.stdout.splitlines()
    assert "After: 1 new (1 in feed)" in again.stdout.splitlines()


def test_digest_goes_on_when_a_source_cannot_be_recorded(sources: Path, use_fake_embedder: Any,
                                                         feedbot_env: Path) -> None:
    """`feedbot digest` collects stale sources first; a database error recording one of them
    (SQLite refusing its rows: a damaged row, a constraint) ended the digest in a traceback.
    Now that source's line says so on stderr and the digest shows what the others brought."""
    assert invoke("sources").exit_code == 0  # the database is there
    con = sqlite3.connect(feedbot_env / "feedbot.db")
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON item_sources WHEN NEW.source = 'Notes' "
                "BEGIN SELECT RAISE(ABORT, 'damaged row'); END")
    con.commit()
    con.close()
    result = invoke("digest", "--format", "json", "--since", "3650d")
    assert result.exit_code == 0
    assert ("Notes: error: could not be recorded (IntegrityError: damaged row); nothing of it "
            "was kept, and the next run fetches it again\n") in result.stderr
    assert result.stderr.endswith(
        "feedbot: 1 source (Notes) could not be recorded (IntegrityError); nothing of it was "
        "kept, and the next `feedbot collect` fetches it again\n")
    assert "Traceback" not in result.stderr
    assert {it["source"] for it in json.loads(result.stdout)["items"]} == {"Vision Lab"}


def test_feedbot_sources_with_a_tilde_is_the_file_in_home(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """click read FEEDBOT_SOURCES itself and kept `~/feeds.yaml` as it was (systemd's
    Environment= and .env files expand nothing): "file not found", and `init` made a folder
    named "~" in the working directory."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "feeds.yaml").write_text(MINIMAL)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FEEDBOT_SOURCES", "~/feeds.yaml")
    monkeypatch.chdir(tmp_path)
    result = invoke("stage")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("FEEDBOT_SOURCES", "~/new.yaml")
    result = invoke("init")
    assert result.exit_code == 0, result.output
    assert (home / "new.yaml").is_file() and not (tmp_path / "~").exists()


def test_feedbot_help_on_a_stdout_that_is_not_utf8() -> None:
    """`feedbot --help > help.txt` on Windows (cp1252) died on the 👍 of `feedback`'s line:
    click prints the group's help while parsing, before `main` made the output tolerant."""
    for args in (["--help"], ["feedback", "--help"]):
        out = subprocess.run([sys.executable, "-m", "feedbot", *args], capture_output=True,
                             env=dict(os.environ, PYTHONIOENCODING="cp1252"), timeout=60)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        assert b"Traceback" not in out.stderr
        assert b"feedback" in out.stdout and b"?" in out.stdout  # 👍 shown as "?"


@pytest.mark.parametrize("value", ["htps://mirror:s3cretpw@arxiv-mirror.example.org/api/query",
                                   "mirror:s3cretpw@arxiv-mirror.example.org/api/query",
                                   "http://mirror:s3cretpw@[::1/api"])
def test_a_server_url_that_is_no_url_is_a_setting_error_without_its_password(
        server: LocalServer, feedbot_env: Path, monkeypatch: pytest.MonkeyPatch,
        value: str) -> None:
    """A mistyped FEEDBOT_ARXIV_API_URL was a fetch error for every arXiv source: shown,
    kept as the sources' last error (for `sources` and /sources) with its password in it, and
    the sources marked broken for hours, past the fix."""
    monkeypatch.setenv("FEEDBOT_ARXIV_API_URL", value)
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        "learner: {stage: nlp}\narxiv:\n  - {name: Mine, query: 'all:attention'}\n")
    for command in (["collect"], ["digest"], ["run"]):
        result = invoke(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "FEEDBOT_ARXIV_API_URL=" in result.stderr and "mirror:***@" in result.stderr
        assert "s3cretpw" not in result.output
    shown = invoke("sources")
    assert "s3cretpw" not in shown.output and "failed" not in shown.output
    assert "error" not in shown.output, shown.output
    checked = invoke("doctor")  # the command meant to show such problems says it too
    assert checked.exit_code == 1 and "s3cretpw" not in checked.output
    assert "setting problem: FEEDBOT_ARXIV_API_URL=" in checked.stdout



def test_feedback_and_later_show_titles_as_the_digest_does(server: LocalServer,
                                                          use_fake_embedder: Any) -> None:
    """A title's bidi override (U+202E) was printed by `feedback` and `later`, reversing the
    rest of the line on screen, the id the user copies included; the digest drops it. So
    does `later` from its source's name."""
    url = server.add("/bidi.xml", body=atom_feed([
        {"title": "Logistic regression \u202eevil tutorial", "link": "https://e.org/bidi"}]))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        f'learner: {{stage: cnn}}\nblogs:\n  - name: "Bi\\u202edi"\n    url: {url}\n')
    invoke("collect")
    item = json.loads(invoke("digest", "--no-collect", "--since", "3650d", "--format",
                             "json").stdout)["items"][0]
    said = invoke("feedback", item["id"], "later").stdout
    assert said == f"later: Logistic regression evil tutorial [{item['id']}]\n"
    listed = invoke("later").stdout
    assert "\u202e" not in listed and "Logistic regression evil tutorial" in listed
    assert "\n    Bidi — https://e.org/bidi" in listed


def test_collect_with_nothing_new_does_not_speak_of_new_items(tmp_path: Path) -> None:
    """With a backend that cannot load and no new items, `collect` said "new items are stored
    but could not be embedded yet: SettingError: …"."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("learner: {stage: cnn}\n")
    env = dict(os.environ, FEEDBOT_EMBED_BACKEND="none-such")
    out = subprocess.run([sys.executable, "-m", "feedbot", "collect"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "new items" not in out.stderr and "SettingError" not in out.stderr
    assert out.stderr.startswith("feedbot: stored items cannot be embedded: "
                                 "FEEDBOT_EMBED_BACKEND='none-such'"), out.stderr


def test_a_prune_whose_vacuum_finds_no_room_says_what_it_removed(feedbot_env: Path) -> None:
    """The removal is committed before VACUUM, which needs about the database's size free
    again: on a nearly full disk `prune` removed the items, then failed with "What was stored
    before is kept … run the command again", and the next run found nothing to remove."""
    from datetime import UTC, datetime, timedelta

    from feedbot.items import Item
    from feedbot.store import Store

    now = datetime.now(UTC)
    with Store.open(feedbot_env) as store:
        store.upsert_items([Item(
            title=f"Post {n}", url=f"https://e.example.org/{n}", source="S", kind="post",
            published=now - timedelta(days=400 if n % 4 else 1), summary=f"words {n} " * 300)
            for n in range(600)], now - timedelta(days=400))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("learner: {stage: cnn}\n")
    size = (feedbot_env / "feedbot.db").stat().st_size
    result = _feedbot_with_file_size_limit(int(size * 1.1), "prune", "--older-than", "30d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed 450 items older than 30d")
    assert "the file was not compacted (" in result.stdout
    assert "new items reuse the space freed" in result.stdout
    with Store.open(feedbot_env) as store:
        assert store.item_count() == 150
    again = invoke("prune", "--older-than", "30d")  # with room: nothing left but compacting
    assert again.exit_code == 0 and again.stdout.startswith("removed 0 items"), again.stdout


def test_a_database_this_user_may_only_read_is_one_clear_line(
        server: LocalServer, feedbot_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database file of another user (made by `sudo feedbot …`) or restored read-only:
    `feedback` was a traceback, `prune` said the database was busy, and `collect` said a
    source "could not be recorded (OperationalError)" and spoke of new items stored. SQLite's
    own read-only refusal (`query_only`), as root gets none from file modes."""
    from feedbot.store import Store

    url = server.add("/feed.xml", body=atom_feed([{"title": "First", "link": "https://e.org/1"}]))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(
        f"learner: {{stage: cnn}}\nblogs:\n  - name: Mine\n    url: {url}\n")
    assert invoke("collect").exit_code == 0
    opened = Store.__init__

    def read_only(self: Store, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        self.db.execute("PRAGMA query_only = 1")

    monkeypatch.setattr(Store, "__init__", read_only)
    said = f"feedbot: cannot write {feedbot_env / 'feedbot.db'}: attempt to write a readonly " \
           "database; this user may read it but not change it"
    for args in (["feedback", "https://e.org/1", "up"], ["prune", "--older-than", "30d"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(said) and len(result.stderr.splitlines()) == 1, \
            (args, result.stderr)
    result = invoke("collect")
    assert said in result.stderr and "busy" not in result.stderr
    assert "OperationalError" not in result.output and "embedded" not in result.stderr
