"""Build a digest: candidates from the store, vectors from the cache, the ranker, entries out.

This is the one pipeline the CLI, the bot and the scheduler all call. It does not collect,
render or deliver; it never writes delivery state. Scoring itself lives in `rank.py` (pure);
here we only gather what the ranker needs and turn its choices into `DigestEntry`s, merging
the sources of near-duplicates the ranker collapsed into one entry.

Only items of sources the learner still follows are candidates (`following`): after an
unfollow (`feedbot unfollow`, `/unfollow`, or an entry deleted from sources.yaml) that source's
items leave the next digest, unless another followed source brought them too (the same paper
from an arXiv query, a followed person's post sharing it). Nothing is deleted: following the
source again brings them back, and votes and read-later bookmarks on them stay (the votes go
on teaching the ranker, which learns what the learner likes, not whom they follow).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import numpy as np

from .config import Config, SourceSpec
from .embed import Embedder, embed_cached
from .items import Item, content_hash, paper_id_from_link
from .rank import (
    LEVEL_FACTOR,
    PARTS,
    Candidate,
    Candidates,
    Liked,
    Scored,
    StageVectors,
    damaged_rows,
    rank,
    same_numbers,
)
from .roadmap import Roadmap, Stage
from .store import CandidateRows, Store, StoredItem

DEMO_SOURCE = "feedbot demo"

log = logging.getLogger(__name__)


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
    withdrawn: bool = False  # on arXiv since it was saved (a read-later list shows it so)

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
    weights: dict[str, float] = field(default_factory=dict)  # of each score part
    timezone: str = "UTC"  # the learner's, in which the views show dates (the JSON: UTC)

    @property
    def heading(self) -> str:
        """The renderers' header line."""
        s = self.stage
        return f"feedbot digest — stage {s.index + 1}: {s.title} ({s.id})"

    @property
    def nothing(self) -> str:
        """What the renderers say when there are no items ('' to say nothing more)."""
        return "Nothing new for this stage."

    def to_json(self, explain: bool = False) -> dict[str, Any]:
        s = self.stage
        items = []
        for e in self.items:
            d = e.to_json()
            if explain:
                d["parts"] = {k: round(v, 4) for k, v in e.parts.items()}
            items.append(d)
        out = {
            "stage": {"id": s.id, "title": s.title, "index": s.index + 1, "summary": s.summary},
            "generated_at": self.generated_at.isoformat(),
            "demo": self.demo,
            "candidates": self.candidates,
            "notes": self.notes,
            "items": items,
        }
        if explain:  # score = Σ weights[k] · parts[k]; the same keys with or without items
            out["weights"] = dict(self.weights)
        return out


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
    X = embed_cached(store, embedder, texts)  # damaged ones anew: a NaN spoils every score
    return StageVectors(
        ids=tuple(roadmap.ids), labels=tuple(labels),
        rows=tuple(X[a:b] for a, b in spans), levels=tuple(s.level for s in roadmap.stages),
        titles=tuple(s.title for s in roadmap.stages),
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
        out.append(StoredItem(it.id, it, (DEMO_SOURCE,), (), when, content_hash(it.embed_text)))
    return out


FeedbackFn = Callable[[np.ndarray], np.ndarray | None]


@dataclass(frozen=True)
class Following:
    """Which stored source names the digest leaves out, and which it knows by a new name.

    Items are stored under the name of each source that brought them (`item_sources`), so
    this is decided per name, from the sources feedbot knows (it collected them, or saw them
    in sources.yaml: `Store.known_sources`) against the configuration now:

    - `hidden`: known names no longer in the configuration. Their items leave the digest
      unless a followed source brought them too.
    - `renamed`: known names no longer in the configuration whose kind and target (feed URL,
      arXiv query, handle) a configured source has: the same source under a new name, whose
      old items stay (shown under the new name). This needs the target recorded under the
      old name, which every digest does. Not recognised, so taken as an unfollow and a new
      follow (the old items come back as far as the renamed source collects them again): a
      rename and a new target in one edit, and a source collected only by releases before
      this one and renamed before any digest ran.

    A name feedbot never knew as a source (items written by another tool or a test) is
    neither: its items stay, since nothing says the learner stopped following it.
    """

    hidden: frozenset[str] = frozenset()
    renamed: dict[str, str] = field(default_factory=dict)

    def name(self, source: str) -> str:
        """A source's name in the configuration now."""
        return self.renamed.get(source, source)


def source_specs(cfg: Config, follows: Following) -> dict[str, SourceSpec]:
    """Each followed source's spec by name; a renamed source's old name (which its stored
    items still carry) gives the spec it now has."""
    specs = {s.name: s for s in cfg.sources()}
    specs.update((old, specs[new]) for old, new in follows.renamed.items())
    return specs


def labeller(specs: dict[str, SourceSpec]) -> Callable[[str], str]:
    """A source's name → its label as entries show it (the name itself when unknown)."""
    return lambda name: specs[name].label if name in specs else name


def following(cfg: Config, store: Store, record: bool = True) -> Following:
    """The sources the learner follows now (see `Following`); records what each configured
    source fetches, so that a later rename is recognised (unless `record` is False: only
    reads, never waits for a database another process holds)."""
    specs = cfg.sources()
    want = {s.name: (s.kind, s.target) for s in specs}
    # Read once. Only after an edit of sources.yaml is there something to record, and
    # recording may move old names along to a source's new target (see
    # `Store.remember_sources`): only then is it read again, as it now stands.
    known = store.known_sources()
    if record and any(known.get(name) != kt for name, kt in want.items()):
        try:
            if store.remember_sources((s.name, s.kind, s.target) for s in specs):
                known = store.known_sources()
        except sqlite3.OperationalError as e:  # busy or read-only: the next digest records it
            log.debug("could not record the configured sources: %s", e)
    by_target: dict[tuple[str, str], str] = {}
    for s in specs:
        by_target.setdefault((s.kind, s.target), s.name)
    hidden: set[str] = set()
    renamed: dict[str, str] = {}
    for name, (kind, target) in known.items():
        if name in want:
            continue
        new = by_target.get((kind, target)) if target else None
        if new is not None:
            renamed[name] = new
        else:
            hidden.add(name)
    return Following(frozenset(hidden), renamed)


@dataclass
class Pool:
    """The digest's candidates: ids, what the ranker needs, and their vectors (row-aligned).

    Built column-wise from the store (`Store.candidates`) so that 100,000 stored items never
    become 100,000 Python objects; whole items are loaded only for the few that need them.
    """

    ids: list[str]
    cands: Candidates
    X: np.ndarray
    loaded: dict[str, StoredItem] = field(default_factory=dict)  # whole items loaded so far
    follows: Following = field(default_factory=Following)
    sharers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # followed ones only

    def items(self, store: Store, indices: list[int]) -> list[StoredItem]:
        want = [self.ids[i] for i in indices if self.ids[i] not in self.loaded]
        self.loaded.update((s.id, s) for s in store.get_items(want))
        return [self.loaded[self.ids[i]] for i in indices]


def gather(store: Store, embedder: Embedder, *, now: datetime, since: timedelta,
           exclude: Collection[str] = (), duplicate: float | None = None,
           follows: Following | None = None, read: Collection[str] = (),
           claims: bool = False) -> Pool:
    """Candidates published in the window, with their vectors; a shared item replaces the
    posts that shared it (and comes back into the window with them).

    `follows` leaves out the items of sources no longer followed (in the store's query) and
    their shares; the `source` of each candidate is a followed one, by its name now.

    `exclude` (items already delivered) also leaves out what the ranker would have collapsed
    into them: the other items of their story (a paper, posts about it) and, with
    `duplicate`, items whose vectors are at least that close to one of them in the window.
    `read` leaves out those items alone (votes before the window: one a post shares today
    would come back into it; compared with every candidate, 10,000 of them cost seconds).
    `claims`: the level signal counts, so the summaries that may claim a state-of-the-art
    result come whole (`Store.candidates`).
    """
    f = follows or Following()
    rows = store.candidates(embedder.model_id, now - since, hidden=f.hidden, rename=f.renamed,
                            claims=claims)
    _repair(store, embedder, rows)
    keep = [i for i, iid in enumerate(rows.ids) if iid not in exclude and iid not in read]
    gone_groups: set[str] = set()
    sent: list[tuple[np.ndarray, list[str]]] = []  # what was sent, to compare shared items with
    if exclude:
        older = _sent_outside(store, embedder.model_id, rows, exclude) \
            if duplicate is not None and keep else None
        keep, gone_groups, sent = _not_told_before(rows, keep, exclude, duplicate, older)
    post_source = {rows.ids[i]: rows.sources[i] for i in keep if rows.kinds[i] == "social"}
    posts = list(post_source)
    loaded = {s.id: s for s in store.get_items(posts)}
    shared = store.shares(posts)  # post id -> the item it shared
    shared_at: dict[str, datetime] = {}
    shared_from: dict[str, str] = {}  # shared item -> the (followed) source of a post
    for post, target in shared.items():
        when = loaded[post].when
        shared_at[target] = max(when, shared_at.get(target, when))
        shared_from.setdefault(target, post_source[post])
    # a shared item of the window is a candidate there or was left out there (sent, read, or
    # a copy of what was sent): only one from outside it joins
    window = set(rows.ids)
    extra = [s for s in store.get_items(t for t in shared_at if t not in window)
             if s.id not in exclude and s.id not in read
             and not (gone_groups and story_group(s) in gone_groups)]
    extra_X = _vectors(store, embedder, extra) if extra else None
    if extra_X is not None and sent and duplicate is not None:  # a copy of one sent: not news
        fresh = list(range(len(extra)))
        titles = [s.item.title for s in extra]
        for V, sent_titles in sent:
            fresh = _not_near(extra_X, titles, fresh, V, sent_titles, duplicate)
        extra, extra_X = [extra[n] for n in fresh], extra_X[fresh]
    loaded.update((s.id, s) for s in extra)
    keep = [i for i in keep if rows.ids[i] not in shared]
    sharers = store.sharers(hidden=f.hidden)
    ids = [rows.ids[i] for i in keep] + [s.id for s in extra]
    no_vector = set(rows.missing)
    missing = [n for n, i in enumerate(keep) if i in no_vector]
    X = rows.X if len(keep) == len(rows) else rows.X[keep]  # no 150 MB copy at 100k items
    X = _fill(store, embedder, X, missing, ids[:len(keep)])
    if extra and extra_X is not None:
        X = np.concatenate([X, extra_X]) if len(X) else extra_X
    news_at = rows.when.copy()
    if shared_at:  # a share makes an older item news again
        for i, iid in enumerate(rows.ids):
            if iid in shared_at:
                news_at[i] = max(news_at[i], shared_at[iid].timestamp())
    every = len(keep) == len(rows)

    def col(values: list[Any]) -> list[Any]:
        return values if every else [values[i] for i in keep]

    main = Candidates(  # column-wise: no per-item objects at 100k candidates
        sources=col(rows.sources), age_days=(now.timestamp() - news_at[keep]) / 86400,
        titles=col(rows.titles), shared_by=[sharers.get(i, ()) for i in ids[:len(keep)]],
        groups=[_group(i, lk) if lk or i[:6] == "arxiv:" else ""
                for i, lk in zip(ids, col(rows.links), strict=False)],
        summaries=col(rows.heads))
    if not extra:
        return Pool(ids, main, X, loaded, f, sharers)
    more = [Candidate(source=_own_source(s, f) or shared_from[s.id],
                      age_days=(now - max(s.when, shared_at[s.id])).total_seconds() / 86400,
                      title=s.item.title, shared_by=sharers.get(s.id, s.shared_by),
                      group=story_group(s), summary=s.item.summary) for s in extra]
    return Pool(ids, _concat(main, Candidates.of(more)), X, loaded, f, sharers)


def _own_source(s: StoredItem, follows: Following) -> str | None:
    """The first followed source that brought `s` itself (not a share), by its name now."""
    return next((follows.name(n) for n in s.sources if n not in follows.hidden), None)


def _not_told_before(rows: CandidateRows, keep: list[int], exclude: Collection[str],
                     duplicate: float | None,
                     older: tuple[np.ndarray, list[str]] | None = None
                     ) -> tuple[list[int], set[str], list[tuple[np.ndarray, list[str]]]]:
    """`keep` without the story-mates and near-duplicates of excluded items, the story
    groups of the excluded items, and the vectors (with titles) compared with (with
    `duplicate`). `older`: the vectors (and titles) of excluded items outside the window,
    near-duplicates of which are left out too.

    A digest entry stands for every item the ranker collapsed into it, but only its own id is
    recorded as delivered; without this, the blog post about yesterday's paper would be
    "new" today, and the same article posted again under a new URL would come back once the
    one sent had left the window.
    """
    gone = [i for i, iid in enumerate(rows.ids) if iid in exclude]
    groups = {e for e in exclude if e[:6] == "arxiv:"}
    groups.update(g for i in gone if (g := _group(rows.ids[i], rows.links[i])))
    out = [i for i in keep
           if not ((rows.links[i] or rows.ids[i][:6] == "arxiv:")
                   and _group(rows.ids[i], rows.links[i]) in groups)]
    missing = set(rows.missing)
    gone = [i for i in gone if i not in missing]
    if gone:  # a damaged vector is close to nothing (as NaN, it was "close" to everything)
        gone = [i for i, bad in zip(gone, damaged_rows(rows.X[gone]), strict=True) if not bad]
    sent = [(rows.X[gone], [rows.titles[i] for i in gone])] if gone else []
    if older is not None and len(older[0]):
        sent.append(older)
    if duplicate is None:
        return out, groups, []
    for V, titles in sent:
        out = _not_near(rows.X, rows.titles, out, V, titles, duplicate) if out else out
    return out, groups, sent


NEAR_CHUNK = 2048  # candidates compared with the sent items at a time (`_not_near`)


def _not_near(X: np.ndarray, titles: Sequence[str], out: list[int], V: np.ndarray,
              sent_titles: list[str], duplicate: float) -> list[int]:
    """`out` (rows of X, whose titles are `titles`) less the rows within `duplicate` of a
    vector of `V` whose title (`sent_titles`) holds the same numbers (`rank.same_numbers`:
    the next lecture of a series sent is news)."""
    drop: set[int] = set()
    for at in range(0, len(out), NEAR_CHUNK):  # a year of digests × 30,000 candidates: 440 MB
        block = out[at:at + NEAR_CHUNK]
        near = np.nonzero(X[block] @ V.T >= duplicate)  # few hits
        drop.update(block[r] for r, c in zip(*near, strict=True)
                    if same_numbers(titles[block[r]], sent_titles[c]))
    return [i for i in out if i not in drop]


def _sent_outside(store: Store, model: str, rows: CandidateRows,
                  exclude: Collection[str]) -> tuple[np.ndarray, list[str]] | None:
    """The cached vectors of the excluded (delivered) items that are not in `rows`' window,
    with the titles they were sent under."""
    inside = set(rows.ids)
    hashes = store.hashes_and_titles([e for e in exclude if e not in inside])
    found = store.get_vectors(model, [h for h, _ in hashes.values()])
    pairs = [(found[h], title) for h, title in hashes.values() if h in found]
    if not pairs:
        return None
    V = np.stack([v for v, _ in pairs]).astype(np.float32)
    ok = ~damaged_rows(V)
    return V[ok], [t for (_, t), good in zip(pairs, ok, strict=True) if good]


def _concat(a: Candidates, b: Candidates) -> Candidates:
    return Candidates([*a.sources, *b.sources], np.concatenate([a.age_days, b.age_days]),
                      [*a.titles, *b.titles], [*a.shared_by, *b.shared_by],
                      [*a.groups, *b.groups], [*a.summaries, *b.summaries])


def _group(item_id: str, links: tuple[str, ...]) -> str:
    """`story_group` from columns: the arXiv id of the item, or of a paper it links to."""
    if item_id[:6] == "arxiv:":
        return item_id
    for link in links:
        aid = paper_id_from_link(link)
        if aid:
            return f"arxiv:{aid}"
    return ""


def _repair(store: Store, embedder: Embedder, rows: CandidateRows) -> None:
    """Embed again, in place, the candidates whose cached vector is damaged (a NaN, an
    infinity, all zeros: `damaged_rows`), so that they are ranked again."""
    if not rows.X.size:
        return
    bad = damaged_rows(rows.X)
    bad[rows.missing] = False  # not damaged: not embedded yet (`_fill`)
    if not bad.any():
        return
    items = {s.id: s for s in store.get_items(rows.ids[i] for i in np.flatnonzero(bad))}
    idx = [int(i) for i in np.flatnonzero(bad) if rows.ids[i] in items]
    if idx:  # read again by `embed_cached`, found damaged, embedded again
        rows.X[idx] = _vectors(store, embedder, [items[rows.ids[i]] for i in idx])


def _vectors(store: Store, embedder: Embedder, items: list[StoredItem]) -> np.ndarray:
    return embed_cached(store, embedder, [s.item.embed_text for s in items],
                        [s.content_hash for s in items])


def _fill(store: Store, embedder: Embedder, X: np.ndarray, missing: list[int],
          ids: list[str]) -> np.ndarray:
    """Embed the rows that have no vector yet (e.g. collected while the model was missing)."""
    if not missing:
        return X
    todo = {s.id: s for s in store.get_items(ids[n] for n in missing)}
    fresh = _vectors(store, embedder, [todo[ids[n]] for n in missing])
    if X.shape[1] != fresh.shape[1]:  # nothing was embedded with this model before
        X = np.zeros((len(ids), fresh.shape[1]), dtype=np.float32)
    X[missing] = fresh
    return X


def demo_pool(store: Store, embedder: Embedder, now: datetime) -> Pool:
    items = demo_items(now)
    X = embed_cached(store, embedder, [s.item.embed_text for s in items],
                     [s.content_hash for s in items])
    return Pool([s.id for s in items], Candidates.of(candidates(items, now)), X,
                {s.id: s for s in items})


def build_digest(
    cfg: Config, store: Store, embedder: Embedder, roadmap: Roadmap, *, now: datetime,
    stage_id: str | None = None, limit: int | None = None, since: timedelta | None = None,
    exclude: Collection[str] = (), feedback: FeedbackFn | None = None,
    allow_demo: bool = True, read: Collection[str] = (),
) -> Digest:
    stage = roadmap.get(stage_id or cfg.learner.stage)
    limit = limit or cfg.learner.digest_size
    since = digest_window(cfg, since)
    follows = following(cfg, store)
    pool = gather(store, embedder, now=now, since=since, exclude=exclude,
                  duplicate=cfg.ranking.duplicate, follows=follows, read=read,
                  claims=bool(cfg.ranking.level and LEVEL_FACTOR.get(stage.level)))
    demo = False
    notes: list[str] = []
    # The demo set is for a store with nothing in it: not for one whose items all come from
    # sources no longer followed, which the note below says instead.
    if not pool.ids and allow_demo and store.item_count() == 0:
        pool, demo = demo_pool(store, embedder, now), True
        notes.append("nothing collected yet: showing the bundled demo items")
    if not pool.ids:
        # only when the sources followed brought nothing: not when all they brought was sent
        if not demo and (n := store.count_hidden(now - since, follows.hidden)) \
                and not store.count_followed(now - since, follows.hidden):
            notes.append(unfollowed_note(n, since))
        return Digest(stage, now, [], demo=demo, notes=notes, weights=_weights(cfg),
                      timezone=cfg.learner.timezone)
    sv = stage_vectors(store, embedder, roadmap)
    specs = source_specs(cfg, follows)
    pool = _weightiest_sources(store, pool, {n: sp.weight for n, sp in specs.items()})
    fb = feedback(pool.X) if feedback is not None else None
    liked = getattr(feedback, "liked", None)
    scored = rank(pool.X, pool.cands, sv, stage.id, cfg.ranking, limit=limit,
                  feedback=fb, liked=liked if isinstance(liked, Liked) else None,
                  source_weights={n: sp.weight for n, sp in specs.items()})
    label = labeller(specs)
    entries = []
    for sc in scored:
        main, *also = pool.items(store, [sc.index, *sc.also])
        entries.append(_entry(main, also, sc, label, pool, pool.cands.sources[sc.index]))
    return Digest(stage, now, entries, demo=demo, notes=notes, candidates=len(pool.ids),
                  weights=_weights(cfg), timezone=cfg.learner.timezone)


def _weightiest_sources(store: Store, pool: Pool, weights: Mapping[str, float]) -> Pool:
    """`pool` with each item's source the followed one of the highest weight among those
    that brought it (not the posts that shared it). A paper went to the source that found it
    first: a followed person's paper that a category query had stored a minute before lost
    the person's weight (and counted towards the category's cap), as did every paper of a
    weighted query that a plain category also lists."""
    if all(w == 1.0 for w in weights.values()):
        return pool  # every source weighs the same: which one does not matter
    found = store.own_sources(pool.ids)
    if not found:
        return pool
    f = pool.follows
    sources = list(pool.cands.sources)
    for n, iid in enumerate(pool.ids):
        names = [f.renamed.get(x, x) for x in found.get(iid, ()) if x not in f.hidden]
        best = max(names, key=lambda x: weights.get(x, 1.0), default=None)
        if best is not None and weights.get(best, 1.0) > weights.get(sources[n], 1.0):
            sources[n] = best
    return replace(pool, cands=replace(pool.cands, sources=sources))


def digest_window(cfg: Config, since: timedelta | None = None) -> timedelta:
    """How far back a digest looks: `since`, else the learner's `since`."""
    from .config import parse_duration

    return since or timedelta(seconds=parse_duration(cfg.learner.since))


def voted_on(store: Store, cfg: Config, now: datetime, since: timedelta | None = None,
             chat: str | None = None) -> tuple[set[str], set[str]]:
    """What was voted on (by `chat`, else by any chat) is read, delivered or not: the items
    voted on within the digest's window, left out with their copies and near-duplicates,
    and those voted on before it, left out alone (a post sharing one today brings it into the
    window). Votes of the window only are compared with every candidate: 10,000 votes made
    a digest 0.8 s → 11 s."""
    votes = store.feedback(chat)
    start = now - digest_window(cfg, since)
    voted = {v.item_id for v in votes if v.at >= start}
    return voted, {v.item_id for v in votes} - voted


def _weights(cfg: Config) -> dict[str, float]:
    """The weight of each score part (`--explain`: score = Σ weights[k] · parts[k])."""
    return {k: float(getattr(cfg.ranking, k)) for k in PARTS}


def story_group(s: StoredItem) -> str:
    """Items about the same arXiv paper share a group: the paper itself, posts linking to it."""
    return f"arxiv:{s.item.arxiv_id}" if s.item.arxiv_id else _group("", s.item.links)


def candidates(stored: list[StoredItem], now: datetime) -> list[Candidate]:
    return [
        Candidate(source=s.sources[0], age_days=(now - s.when).total_seconds() / 86400,
                  title=s.item.title, shared_by=s.shared_by, group=story_group(s),
                  summary=s.item.summary)
        for s in stored
    ]


def span_text(since: timedelta) -> str:
    """A look-back in words: "7 days", "1 day", "6 hours", "1 hour", "0.5 hours"."""
    if since.days and not since.seconds:
        return f"{since.days} day{'s' if since.days != 1 else ''}"
    hours = since.total_seconds() / 3600
    return f"{hours:g} hour{'s' if hours != 1 else ''}"


def unfollowed_note(n: int, since: timedelta) -> str:
    """What an empty digest says when items in its window were left out as unfollowed."""
    return (f"nothing from the sources you follow in the last {span_text(since)}: the {n} item"
            f"{'s' if n != 1 else ''} collected then came from sources you no longer follow "
            f"(follow one again to see its items)")


def _entry(s: StoredItem, also: list[StoredItem], sc: Scored, label: Callable[[str], str],
           pool: Pool, ranked_as: str) -> DigestEntry:
    """One digest entry; near-duplicates collapsed into it add their sources and sharers.

    Sources no longer followed are not named; an item kept only because a followed post
    shared it is named by that post's source (`ranked_as`, its source in the ranking)."""
    it = s.item
    hidden = pool.follows.hidden
    own = [pool.follows.name(n) for n in s.sources if n not in hidden]
    # ranked as one of its own sources (the weightiest: `_weightiest_sources`), named so
    main = ranked_as if ranked_as in own else (own[0] if own else ranked_as)
    names = [main, *(n for x in [s, *also] for n in x.sources if n not in hidden)]
    shared = list(dict.fromkeys(p for x in [s, *also] for p in pool.sharers.get(x.id, ())))
    return DigestEntry(
        id=s.id, title=it.title, url=it.url, source=label(main), kind=it.kind,
        authors=list(it.authors), published=it.published, score=sc.score, why=sc.why,
        summary=it.summary, sources=list(dict.fromkeys(label(n) for n in names)),
        shared_by=shared, parts=sc.parts,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
