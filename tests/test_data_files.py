"""Packaged data files: roadmap.yaml, sources.yaml (and its root copy), demo.jsonl."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "feedbot" / "data"

STAGE_IDS = [
    "algebra-trigonometry", "calculus", "probability-statistics", "linear-algebra",
    "machine-learning", "massive-datasets", "deep-learning", "cnn", "nlp", "python", "gpus",
    "frameworks", "kaggle",
]
LEVELS = {"foundation", "core", "applied"}
RESOURCE_KINDS = {"course", "book", "lectures", "blog", "site", "tutorial"}
DEMO_KEYS = {"title", "url", "kind", "source", "authors", "summary", "days_ago"}


def _load(path: Path):
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def roadmap() -> dict:
    return _load(DATA / "roadmap.yaml")


@pytest.fixture(scope="module")
def demo() -> list[dict]:
    lines = (DATA / "demo.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_roadmap_header(roadmap):
    assert set(roadmap) == {"version", "title", "source", "stages"}
    assert roadmap["version"] == 1
    assert roadmap["title"].strip() and roadmap["source"].strip()


def test_roadmap_has_the_thirteen_stages_in_order(roadmap):
    assert [s["id"] for s in roadmap["stages"]] == STAGE_IDS


def test_every_design_table_id_is_in_the_roadmap(roadmap):
    design = ROOT.parent / "shared" / "design.md"
    if not design.exists():
        pytest.skip(f"{design} is absent (../shared not checked out)")
    table_ids = re.findall(r"^\|\s*`([a-z-]+)`\s*\|", design.read_text(encoding="utf-8"), re.M)
    assert table_ids, "no stage ids found in the design table"
    assert set(table_ids) <= {s["id"] for s in roadmap["stages"]}
    assert table_ids == STAGE_IDS


@pytest.mark.parametrize("index", range(len(STAGE_IDS)), ids=STAGE_IDS)
def test_stage_content(roadmap, index):
    stage = roadmap["stages"][index]
    assert set(stage) <= {"id", "title", "level", "summary", "topics", "resources"}
    assert isinstance(stage["title"], str) and stage["title"].strip()
    assert isinstance(stage["summary"], str) and len(stage["summary"].split()) >= 20
    if "level" in stage:
        assert stage["level"] in LEVELS
    topics = stage["topics"]
    assert len(topics) >= 8
    assert all(isinstance(t, str) and t.strip() for t in topics)
    assert len(set(topics)) == len(topics)
    resources = stage["resources"]
    assert len(resources) >= 1
    for r in resources:
        assert set(r) == {"title", "url", "kind"}
        assert r["title"].strip()
        assert re.match(r"^https?://[^\s/]+", r["url"]), r["url"]
        assert r["kind"] in RESOURCE_KINDS


def test_stage_ids_and_topics_do_not_repeat_across_stages(roadmap):
    seen: dict[str, str] = {}
    for stage in roadmap["stages"]:
        for topic in stage["topics"]:
            key = topic.casefold()
            assert key not in seen, f"{topic!r} in both {seen[key]} and {stage['id']}"
            seen[key] = stage["id"]


def test_root_sources_yaml_is_identical_to_packaged_copy():
    root = ROOT / "sources.yaml"
    packaged = DATA / "sources.yaml"
    assert root.read_bytes() == packaged.read_bytes()


def test_sources_yaml_shape():
    doc = _load(DATA / "sources.yaml")
    assert set(doc) <= {"learner", "defaults", "blogs", "arxiv", "people", "telegram", "ranking"}
    assert doc["learner"]["stage"] in STAGE_IDS
    assert doc["blogs"] and doc["arxiv"] and doc["people"]
    for blog in doc["blogs"]:
        assert re.match(r"^https?://", blog["url"])
    for query in doc["arxiv"]:
        assert bool(query.get("query")) != bool(query.get("category"))
        assert query.get("max_results", 50) <= 50
    names = [e["name"].casefold() for s in ("blogs", "arxiv", "people") for e in doc[s]]
    assert len(names) == len(set(names))


def test_demo_items(demo):
    assert len(demo) >= 5 * 13  # enough for every stage's demo digest to show its own first
    for item in demo:
        assert set(item) == DEMO_KEYS
        assert item["kind"] == "demo"
        assert item["source"] == "feedbot demo"
        assert item["title"].strip() and item["summary"].strip()
        assert item["url"].startswith("https://example.org/feedbot-demo/")
        assert isinstance(item["authors"], list) and item["authors"]
        assert all(isinstance(a, str) and a.strip() for a in item["authors"])
        assert isinstance(item["days_ago"], int) and 0 <= item["days_ago"] <= 6
    urls = [item["url"] for item in demo]
    assert len(set(urls)) == len(urls)


def test_demo_lines_are_one_object_each():
    for n, line in enumerate((DATA / "demo.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"blank line {n}"
        assert isinstance(json.loads(line), dict), f"line {n}"


def test_sources_yaml_validates_with_the_config_loader():
    config = pytest.importorskip("feedbot.config")
    cfg = config.load_config(DATA / "sources.yaml")
    assert cfg.learner.stage == "machine-learning"
    assert cfg.sources()


# --- a roadmap of one's own (learner.roadmap) -------------------------------------------------

def _own(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "my-roadmap.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def _error(tmp_path: Path, text: str | bytes) -> str:
    from feedbot.config import ConfigError
    from feedbot.roadmap import load_roadmap

    p = _own(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_roadmap(p)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{p}:"), message
    return message.removeprefix(f"{p}:")


def test_a_yaml_syntax_error_in_a_roadmap_is_one_line_with_its_line(tmp_path: Path):
    # it was ruamel's four-line message, naming "<unicode string>" instead of the file
    where = _error(tmp_path, "stages:\n  - id: a\n    title: [unclosed\n  - id: b\n")
    assert where.startswith("4: not valid YAML: ") and "unicode string" not in where


def test_a_roadmap_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path):
    # it was a UnicodeDecodeError traceback
    where = _error(tmp_path, b"stages:\n  - id: a\n    title: \xe9t\xe9 (Latin-1)\n")
    assert where == "3: not UTF-8 text: byte 0xe9 (save the file as UTF-8)"


@pytest.mark.parametrize(("text", "expected"), [
    # the same id twice, also in another case: `stage set CNN` could not tell them apart
    ("stages:\n  - {id: a, title: A}\n  - {id: b, title: B}\n  - {id: a, title: C}\n",
     "4: stages[2].id: duplicate stage id 'a' (stages[0] has it already)"),
    ("stages:\n  - {id: CNN, title: A}\n  - {id: cnn, title: B}\n",
     "3: stages[1].id: duplicate stage id 'cnn' (stages[0] has 'CNN', the same in another case)"),
    # a space: /stage ID in Telegram takes one word, so the stage could never be chosen
    ("stages:\n  - {id: a, title: A}\n  - id: My Stage\n    title: B\n",
     "3: stages[1].id: 'My Stage' is not a stage id (e.g. 'My-Stage': one word, not starting "
     "with '-', as `feedbot stage set ID` and /stage ID take it)"),
    ("stages:\n  - {id: next, title: A}\n",
     "2: stages[0].id: 'next' cannot be a stage id (/stage next moves to the next stage)"),
    ("stages:\n  - {id: true, title: A}\n",
     "2: stages[0].id: True is not a stage id (write it as text, e.g. 'basics')"),
    # a typo'd key left the stage without its topics, silently
    ("stages:\n  - id: a\n    title: A\n    topic: [vectors]\n",
     "4: stages[0].topic: unknown key (did you mean 'topics'?)"),
    # one topic as a string became a topic per character
    ("stages:\n  - id: a\n    title: A\n    topics: vectors\n",
     "4: stages[0].topics: must be a list, not 'vectors' (e.g. [vectors, probability])"),
    ("stages:\n  - id: a\n    title: A\n    topics: [vectors, ~]\n",
     "4: stages[0].topics[1]: must be text, not None (put it in quotes)"),
    ("stages:\n  - id: a\n    title: A\n    summary: [not, text]\n",
     "4: stages[0].summary: must be text, not ['not', 'text'] (put it in quotes)"),
    # a resource that is not a mapping was dropped without a word
    ("stages:\n  - id: a\n    title: A\n    resources:\n      - https://example.org/course\n",
     "5: stages[0].resources[0]: each resource needs at least a 'title' (and a 'url')"),
    ("stages:\n  - id: a\n    title: A\n    level: expert\n",
     "4: stages[0].level: level must be one of foundation, core, applied"),
    ("stages:\n  - {id: a, title: A}\n  - {id: b}\n",
     "3: stages[1]: each stage needs at least 'id' and 'title'"),
    ("stages: []\n", "1: stages: a roadmap needs a non-empty 'stages' list"),
], ids=["duplicate-id", "duplicate-in-another-case", "space-in-id", "id-next", "id-not-text",
        "unknown-key", "topics-a-string", "topic-not-text", "summary-not-text",
        "resource-not-mapping", "level", "no-title", "no-stages"])
def test_a_bad_roadmap_is_one_line_naming_the_file_line_and_stage(tmp_path: Path, text: str,
                                                                   expected: str):
    assert _error(tmp_path, text) == expected


def test_what_the_checks_allow_still_loads(tmp_path: Path):
    """Capitals (the commands take ids in any case), one stage, a stage with a title only, 200
    stages: a guard for the checks above, not a bug of its own."""
    from feedbot.roadmap import load_roadmap

    rm = load_roadmap(_own(tmp_path, "title: Mine\nstages:\n  - {id: Basics, title: '  B  '}\n"))
    [st] = rm.stages
    assert (rm.title, st.id, st.title, st.summary, st.topics, st.resources) == \
        ("Mine", "Basics", "B", "", (), ())
    assert rm.next_after("Basics") is None
    text = "stages:\n" + "".join(f"  - {{id: s{i}, title: Stage {i}, topics: [t{i}]}}\n"
                                 for i in range(200))
    rm = load_roadmap(_own(tmp_path, text))
    assert len(rm.ids) == 200 and rm.get("s199").index == 199


def test_the_demo_digest_of_every_stage_leads_with_that_stage(real_embedder, tmp_path):
    """With two demo items per stage, the demo digest (what a new user offline sees first)
    showed 8 items of 10 marked "closer to" another stage."""
    from datetime import UTC, datetime

    from feedbot.config import load_config
    from feedbot.digest import build_digest
    from feedbot.roadmap import load_roadmap
    from feedbot.store import Store

    roadmap = load_roadmap()
    cfg = load_config(text="learner: {stage: cnn}\n")
    store = Store(tmp_path / "db.sqlite")
    now = datetime(2026, 11, 27, tzinfo=UTC)
    own = {}
    for stage in roadmap.stages:
        d = build_digest(cfg, store, real_embedder, roadmap, now=now, stage_id=stage.id)
        assert d.demo and len(d.items) == 10
        own[stage.id] = sum("closer to the stage" not in e.why for e in d.items[:5])
    assert all(n >= 3 for n in own.values()), own
