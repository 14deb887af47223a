"""Build a digest: candidates from the store, vectors from the cache, the ranker, entries out.

This is the one pipeline the CLI, the bot and the scheduler all call. It does not collect,
render or deliver; it never writes delivery state. Scoring itself lives in `rank.py` (pure);
here we only gather what the ranker needs and turn its choices into `DigestEntry`s, merging
the sources of near-duplicates the ranker collapsed into one entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import numpy as np

from .config import Config
from .embed import Embedder, embed_cached
from .items import Item, arxiv_id_from_url
from .rank import Candidate, Liked, Scored, StageVectors, rank
from .roadmap import Roadmap, Stage
from .store import Store, StoredItem

DEMO_SOURCE = "feedbot demo"


@dataclass
class DigestEntry:
    id: str
    title: str
    url: str
    source: str  # human label of the main source: "arXiv cs.CV", "Andrej Karpathy on X"
    kind: str
    authors: list[str]
    published: datetime | None
    score: float
    why: str
    summary: str = ""
    sources: list[str] = field(default_factory=list)  # every source label, main first
    shared_by: list[str] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "url": self.url, "source": self.source,
            "kind": self.kind, "authors": self.authors,
            "published": self.published.isoformat() if self.published else None,
            "score": round(self.score, 4), "why": self.why, "summary": self.summary,
            "sources": self.sources, "shared_by": self.shared_by,
        }


@dataclass
class Digest:
    stage: Stage
    generated_at: datetime
    items: list[DigestEntry]
    demo: bool = False
    notes: list[str] = field(default_factory=list)
    candidates: int = 0

    def to_json(self, explain: bool = False) -> dict[str, Any]:
        s = self.stage
        items = []
        for e in self.items:
            d = e.to_json()
            if explain:
                d["parts"] = {k: round(v, 4) for k, v in e.parts.items()}
            items.append(d)
        return {
            "stage": {"id": s.id, "title": s.title, "index": s.index + 1, "summary": s.summary},
            "generated_at": self.generated_at.isoformat(),
            "demo": self.demo,
            "candidates": self.candidates,
            "notes": self.notes,
            "items": items,
        }

    def dumps(self, explain: bool = False) -> str:
        return json.dumps(self.to_json(explain), ensure_ascii=False, indent=2)


def stage_vectors(store: Store, embedder: Embedder, roadmap: Roadmap) -> StageVectors:
    """Embedded texts of every stage (cached like item vectors)."""
    labels: list[tuple[str, ...]] = []
    texts: list[str] = []
    spans: list[tuple[int, int]] = []
    for st in roadmap.stages:
        t = st.texts()
        spans.append((len(texts), len(texts) + len(t)))
        labels.append(tuple(t))
        texts.extend(t.values())
    X = embed_cached(store, embedder, texts)
    return StageVectors(
        ids=tuple(roadmap.ids), labels=tuple(labels),
        rows=tuple(X[a:b] for a, b in spans), levels=tuple(s.level for s in roadmap.stages),
    )


def demo_items(now: datetime) -> list[StoredItem]:
    """The bundled demo set (written for feedbot), dated relative to `now`."""
    text = resources.files("feedbot").joinpath("data/demo.jsonl").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        when = now - timedelta(days=float(d.get("days_ago", 0)))
        it = Item(title=d["title"], url=d["url"], source=DEMO_SOURCE, kind="demo",
                  authors=tuple(d.get("authors", ())), published=when, summary=d["summary"])
        from .items import content_hash

        out.append(StoredItem(it.id, it, (DEMO_SOURCE,), (), when, content_hash(it.embed_text)))
    return out


FeedbackFn = Callable[[np.ndarray, list[StoredItem]], np.ndarray | None]


def merge_shares(store: Store, recent: list[StoredItem],
                 exclude: Collection[str] = ()) -> list[StoredItem]:
    """One entry per story: a post that shares a stored item gives way to that item.

    The shared item joins the candidates (even if older than the window) and carries
    "shared by"; the post itself is dropped.
    """
    posts = {s.id: s for s in recent if s.item.kind == "social"}
    shared = store.shares(posts)
    have = {s.id for s in recent}
    extra = store.get_items(t for t in set(shared.values()) if t not in have)
    latest: dict[str, datetime] = {}
    for post_id, target in shared.items():
        when = posts[post_id].when
        latest[target] = max(when, latest.get(target, when))
    out = []
    for s in recent + extra:
        if s.id in shared or s.id in exclude:
            continue
        if s.id in latest:  # a share makes an older item news again
            s = replace(s, shared_at=latest[s.id])
        out.append(s)
    return out


def build_digest(
    cfg: Config, store: Store, embedder: Embedder, roadmap: Roadmap, *, now: datetime,
    stage_id: str | None = None, limit: int | None = None, since: timedelta | None = None,
    exclude: Collection[str] = (), feedback: FeedbackFn | None = None,
    allow_demo: bool = True,
) -> Digest:
    stage = roadmap.get(stage_id or cfg.learner.stage)
    limit = limit or cfg.learner.digest_size
    if since is None:
        from .config import parse_duration

        since = timedelta(seconds=parse_duration(cfg.learner.since))
    stored = merge_shares(store, store.items_since(now - since), exclude)
    demo = False
    notes: list[str] = []
    if not stored and allow_demo and store.item_count() == 0:
        stored, demo = demo_items(now), True
        notes.append("nothing collected yet: showing the bundled demo items")
    if not stored:
        return Digest(stage, now, [], demo=demo, notes=notes)
    X = embed_cached(store, embedder, [s.item.embed_text for s in stored],
                     [s.content_hash for s in stored])
    sv = stage_vectors(store, embedder, roadmap)
    specs = {s.name: s for s in cfg.sources()}
    fb = feedback(X, stored) if feedback is not None else None
    liked = getattr(feedback, "liked", None)
    scored = rank(X, candidates(stored, now), sv, stage.id, cfg.ranking, limit=limit,
                  feedback=fb, liked=liked if isinstance(liked, Liked) else None,
                  source_weights={n: sp.weight for n, sp in specs.items()})

    def label(name: str) -> str:
        return specs[name].label if name in specs else name

    entries = [_entry(stored[sc.index], [stored[j] for j in sc.also], sc, label)
               for sc in scored]
    return Digest(stage, now, entries, demo=demo, notes=notes, candidates=len(stored))


def story_group(s: StoredItem) -> str:
    """Items about the same arXiv paper share a group: the paper itself, posts linking to it."""
    if s.item.arxiv_id:
        return f"arxiv:{s.item.arxiv_id}"
    for link in s.item.links:
        aid = arxiv_id_from_url(link)
        if aid:
            return f"arxiv:{aid}"
    return ""


def candidates(stored: list[StoredItem], now: datetime) -> list[Candidate]:
    return [
        Candidate(source=s.sources[0], age_days=(now - s.when).total_seconds() / 86400,
                  title=s.item.title, shared_by=s.shared_by, group=story_group(s),
                  summary=s.item.summary)
        for s in stored
    ]


def _entry(s: StoredItem, also: list[StoredItem], sc: Scored,
           label: Callable[[str], str]) -> DigestEntry:
    """One digest entry; near-duplicates collapsed into it add their sources and sharers."""
    it = s.item
    names = list(dict.fromkeys(n for x in [s, *also] for n in x.sources))
    shared = list(dict.fromkeys(p for x in [s, *also] for p in x.shared_by))
    return DigestEntry(
        id=s.id, title=it.title, url=it.url, source=label(s.sources[0]), kind=it.kind,
        authors=list(it.authors), published=it.published, score=sc.score, why=sc.why,
        summary=it.summary, sources=list(dict.fromkeys(label(n) for n in names)),
        shared_by=shared, parts=sc.parts,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
