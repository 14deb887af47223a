"""Pipeline steps shared by the CLI, the bot and the scheduler.

Each function takes what it needs (config, store, embedder, roadmap, `now`) and returns data;
none of them prints except through the `echo` callback it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from .config import Config, SourceSpec, x_token
from .digest import Digest, build_digest, following
from .embed import Embedder, embed_cached
from .items import embed_text
from .redact import mask_userinfo
from .roadmap import Roadmap
from .store import Store, same_target

EMBED_WINDOW = timedelta(days=60)  # items older than this are embedded only when a digest asks


def embed_pending(store: Store, embedder: Embedder, now: datetime,
                  echo: Callable[[str], None] | None = None, *,
                  since: datetime | None = None, limit: int | None = None) -> int:
    """Embed the items that have no vector yet for the current model (in batches): those of
    the last EMBED_WINDOW, or since `since`, the newest `limit` of them."""
    pending = store.missing_vectors(embedder.model_id, since=since or now - EMBED_WINDOW,
                                    limit=limit)
    if not pending:
        return 0
    if echo is not None and len(pending) > 50:
        echo(f"embedding {len(pending):,} items that have no vector yet…")
    embed_cached(store, embedder, [embed_text(t, s) for _, t, s in pending],
                 [h for h, _, _ in pending])
    return len(pending)


def make_digest(cfg: Config, store: Store, embedder: Embedder, roadmap: Roadmap, *,
                now: datetime, stage_id: str | None = None, limit: int | None = None,
                since: timedelta | None = None, exclude: Collection[str] = (),
                chat: str | None = None, read: Collection[str] = ()) -> Digest:
    """The digest for a learner (or a chat): ranked, with their feedback taken into account."""
    feedback = None
    try:
        from .learn import feedback_scorer
    except ImportError:
        pass
    else:
        if cfg.ranking.feedback != 0:  # `ranking: {feedback: 0}`: no model trained for nothing
            feedback = feedback_scorer(store, embedder, chat=chat, now=now,
                                       stage=stage_id or cfg.learner.stage,
                                       other_stages=cfg.ranking.feedback_other_stages)
    return build_digest(cfg, store, embedder, roadmap, now=now, stage_id=stage_id, limit=limit,
                        since=since, exclude=exclude, feedback=feedback, read=read)


def _ago(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "never"
    from .collect import CLOCK_SLACK

    if dt > now + CLOCK_SLACK:  # recorded by a clock set ahead of this one: not "just now"
        return "later than now (the clock was ahead)"
    secs = max(0, int((now - dt).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return "just now"


def _place(spec: SourceSpec) -> str:
    """How a person's source reads under their name: 'X @karpathy', 'arXiv au:"…"', …"""
    where = spec.name.rsplit("/", 1)[-1]
    return {"x": f"X @{spec.target}", "arxiv": f"arXiv {spec.target}"}.get(
        where, f"{spec.label.removeprefix(spec.person + ' on ')} {spec.target}")


def _disabled(spec: SourceSpec) -> str:
    if spec.kind == "x" and not x_token():
        return "X_BEARER_TOKEN is not set"
    return ""


def source_health(cfg: Config, store: Store, now: datetime) -> list[dict[str, Any]]:
    """One row per configured source: health word, item count, last success, last error, and
    until when it waits (a server's Retry-After, or the back-off after failures)."""
    from .collect import next_due

    olds: dict[str, list[str]] = {}  # a renamed source's old names: its older items carry them
    for old, new in following(cfg, store, record=False).renamed.items():
        olds.setdefault(new, []).append(old)
    fetched = store.known_sources()  # what each source's recorded state was fetched from
    rows = []
    for spec in cfg.sources():
        st = store.source_state(spec.name)
        if spec.name in olds:
            st = replace(st, items=store.items_of([spec.name, *olds[spec.name]]))
        off = _disabled(spec)
        if off:
            health = "off"
        elif st.last_attempt is None:
            health = "new"
        elif st.failures == 0:
            health = "ok"
        elif st.failures < 3:
            health = "failing"
        else:
            health = "broken"
        # a server's Retry-After, or after failures the back-off: when a scheduled or a
        # digest's collection tries it again (`feedbot collect` tries it at once)
        due = next_due(st, spec.interval, now) if st.failures or st.retry_after else None
        waiting = due if due is not None and due > now and not off else None
        rows.append({
            "name": spec.name, "label": spec.label, "kind": spec.kind, "person": spec.person,
            # a feed's URL may hold its password (`https://user:pass@…`): never shown
            "place": mask_userinfo(_place(spec) if spec.person else spec.target),
            "weight": spec.weight,
            "health": health, "items": st.items, "last_success": _ago(st.last_success, now),
            "error": off or (st.last_error if st.failures else ""), "failures": st.failures,
            "waiting_until": waiting,
            # what its last fetch said ("moved permanently to …"), while it still fetches
            # that: a URL updated in sources.yaml and not collected since says nothing more
            "notice": st.notice if not off and same_target(fetched.get(spec.name, ("", "")))
            == same_target((spec.kind, spec.target)) else "",
        })
    return rows
