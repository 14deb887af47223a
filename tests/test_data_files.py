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
    assert len(demo) == 26
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
