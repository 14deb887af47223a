"""The learner's roadmap: ordered stages with what is studied there, topics and resources.

The default roadmap ships in `feedbot/data/roadmap.yaml` (derived from the seed post); a learner
may point `learner.roadmap` in sources.yaml at a file of their own with the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .config import ConfigError

DEFAULT_ROADMAP = Path(__file__).parent / "data" / "roadmap.yaml"
LEVELS = ("foundation", "core", "applied")


@dataclass(frozen=True)
class Resource:
    title: str
    url: str
    kind: str = ""


@dataclass(frozen=True)
class Stage:
    id: str
    title: str
    summary: str
    topics: tuple[str, ...]
    resources: tuple[Resource, ...]
    level: str = "core"
    index: int = 0

    def texts(self) -> dict[str, str]:
        """Labelled texts that describe the stage, to embed: title, summary, topics, resources."""
        out = {"title": self.title, "summary": f"{self.title}. {self.summary}"}
        for t in self.topics:
            out[f"topic:{t}"] = t
        for r in self.resources:
            out[f"resource:{r.title}"] = r.title
        return out


@dataclass(frozen=True)
class Roadmap:
    title: str
    stages: tuple[Stage, ...]
    path: Path

    def get(self, stage_id: str) -> Stage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(f"unknown stage {stage_id!r}; stages: {', '.join(self.ids)}")

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.stages]

    def next_after(self, stage_id: str) -> Stage | None:
        i = self.ids.index(stage_id)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None


def load_roadmap(path: str | Path | None = None) -> Roadmap:
    p = Path(path) if path else DEFAULT_ROADMAP
    try:
        doc = YAML(typ="safe").load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(p, "roadmap file not found") from None
    except (OSError, YAMLError) as e:
        raise ConfigError(p, f"cannot read roadmap: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not doc["stages"]:
        raise ConfigError(p, "a roadmap needs a non-empty 'stages' list")
    stages, seen = [], set()
    for i, raw in enumerate(doc["stages"]):
        key = f"stages[{i}]"
        if not isinstance(raw, dict) or not raw.get("id") or not raw.get("title"):
            raise ConfigError(p, "each stage needs at least 'id' and 'title'", key=key)
        sid = str(raw["id"])
        if sid in seen:
            raise ConfigError(p, f"duplicate stage id {sid!r}", key=key)
        seen.add(sid)
        resources = tuple(
            Resource(str(r.get("title", "")), str(r.get("url", "")), str(r.get("kind", "")))
            for r in raw.get("resources") or [] if isinstance(r, dict)
        )
        level = str(raw.get("level") or "core")
        if level not in LEVELS:
            raise ConfigError(p, f"level must be one of {', '.join(LEVELS)}", key=f"{key}.level")
        stages.append(Stage(
            id=sid, title=str(raw["title"]), summary=" ".join(str(raw.get("summary", "")).split()),
            topics=tuple(str(t) for t in raw.get("topics") or []), resources=resources,
            level=level, index=i,
        ))
    return Roadmap(str(doc.get("title", "Roadmap")), tuple(stages), p)
