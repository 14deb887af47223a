"""The learner's roadmap: ordered stages with what is studied there, topics and resources.

The default roadmap ships in `feedbot/data/roadmap.yaml` (derived from the seed post); a learner
may point `learner.roadmap` in sources.yaml at a file of their own with the same shape.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .config import ConfigError, _dotted, _line_of, check_expansion, parse_yaml, shown_value

DEFAULT_ROADMAP = Path(__file__).parent / "data" / "roadmap.yaml"
LEVELS = ("foundation", "core", "applied")
STAGE_KEYS = ("id", "title", "level", "summary", "topics", "resources")
RESOURCE_KEYS = ("title", "url", "kind")
# Stage ids are typed as one word (`feedbot stage set ID`, the bot's `/stage ID`), in any case.
_ID = re.compile(r"^[^\s-]\S*$")
MAX_ID_LENGTH = 61  # "st:" + the id fills a Telegram button's 64 bytes of data


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


def stage_key(text: str) -> str:
    """A typed stage id as every command compares it (`stage set`, /stage, `digest --stage`,
    `learner.stage`): in any case, full-width letters (a CJK keyboard's `ｎｌｐ`) as plain
    ones, without the invisible marks a copy and paste brings along."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip().casefold()


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

    def find(self, stage_id: str, key: Callable[[str], str] = stage_key) -> str | None:
        """The id of the stage `stage_id` names, compared by `key` (by default in any case,
        as every command takes ids: `CNN` is `cnn`), or None."""
        want = key(stage_id)
        return next((i for i in self.ids if key(i) == want), None)

    def closest(self, stage_id: str, key: Callable[[str], str] = stage_key) -> str | None:
        """The id of the stage `stage_id` probably meant (`CNNs`, `cnnn` and `Deeplearning`
        mean `cnn`, `cnn` and `deep-learning`), compared by `key` as `find` compares, or None.
        The one suggestion behind every "did you mean": `stage set`, `digest --stage`, a
        `learner.stage` in sources.yaml and a stage given to `feedbot stage` as a command."""
        by_key = {key(i): i for i in self.ids}
        close = difflib.get_close_matches(key(stage_id), list(by_key), n=1)
        return by_key[close[0]] if close else None

    def next_after(self, stage_id: str) -> Stage | None:
        i = self.ids.index(stage_id)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None


def load_roadmap(path: str | Path | None = None) -> Roadmap:
    """The roadmap in `path` (the packaged one when None). Raises ConfigError naming the file,
    the line and the stage when it cannot be used. A relative `path` is taken as it is: the
    caller resolves `learner.roadmap` against the folder of the sources.yaml naming it."""
    p = Path(path) if path else DEFAULT_ROADMAP
    text = _read(p)
    try:  # the C parser first; the round-trip one only to say where a problem is
        doc = YAML(typ="safe").load(text)
        check_expansion(doc, p)
    except YAMLError:
        parse_yaml(text, p)  # raises the located error
        raise ConfigError(p, "not valid YAML") from None
    try:
        stages = _stages(doc)
    except _Problem as e:
        line, _ = _line_of(parse_yaml(text, p), e.loc)
        raise ConfigError(p, e.message, line=line, key=_dotted(e.loc), hint=e.hint) from None
    return Roadmap(str(doc.get("title") or "Roadmap"), stages, p)


MAX_ROADMAP_BYTES = 10_000_000  # the packaged roadmap is 27 kB


def _read(p: Path) -> str:
    try:
        with open(p, "rb") as f:  # at most the limit: /dev/zero or a pipe never ends
            data = f.read(MAX_ROADMAP_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(p, "roadmap file not found") from None
    except IsADirectoryError:
        raise ConfigError(p, "is a directory, not a roadmap file") from None
    except OSError as e:
        raise ConfigError(p, f"cannot read roadmap: {e.strerror or e}") from None
    if len(data) > MAX_ROADMAP_BYTES:
        raise ConfigError(p, f"is over {MAX_ROADMAP_BYTES // 1_000_000} MB; a roadmap file is "
                          "at most that", hint="does `roadmap:` name the right file?")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(p, f"not UTF-8 text: byte 0x{data[e.start]:02x}", line=line,
                          hint="save the file as UTF-8") from None


class _Problem(Exception):
    def __init__(self, loc: list[str | int], message: str, hint: str = "") -> None:
        super().__init__(message)
        self.loc, self.message, self.hint = loc, message, hint


def _stages(doc: Any) -> tuple[Stage, ...]:
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not doc["stages"]:
        raise _Problem(["stages"] if isinstance(doc, dict) else [],
                       "a roadmap needs a non-empty 'stages' list")
    stages: list[Stage] = []
    seen: dict[str, tuple[int, str]] = {}  # casefolded id -> (index, id)
    for i, raw in enumerate(doc["stages"]):
        loc: list[str | int] = ["stages", i]
        if not isinstance(raw, dict) or not raw.get("id") or not raw.get("title"):
            raise _Problem(loc, "each stage needs at least 'id' and 'title'")
        _known_keys(raw, STAGE_KEYS, loc)
        sid = _stage_id(raw["id"], [*loc, "id"])
        if sid.casefold() in seen:  # the commands take ids in any case: CNN is cnn
            first, had = seen[sid.casefold()]
            same = "has it already" if had == sid else f"has {had!r}, the same in another case"
            raise _Problem([*loc, "id"], f"duplicate stage id {sid!r}", f"stages[{first}] {same}")
        seen[sid.casefold()] = (i, sid)
        level = raw.get("level") or "core"
        if level not in LEVELS:
            raise _Problem([*loc, "level"], f"level must be one of {', '.join(LEVELS)}")
        stages.append(Stage(
            id=sid, title=" ".join(_text(raw["title"], [*loc, "title"]).split()),
            summary=" ".join(_text(raw.get("summary") or "", [*loc, "summary"]).split()),
            topics=tuple(_text(t, [*loc, "topics", n], empty=False)
                         for n, t in enumerate(_list(raw.get("topics"), [*loc, "topics"]))),
            resources=tuple(_resource(r, [*loc, "resources", n]) for n, r in
                            enumerate(_list(raw.get("resources"), [*loc, "resources"]))),
            level=level, index=i,
        ))
    return tuple(stages)


def _stage_id(value: Any, loc: list[str | int]) -> str:
    """A stage id as `stage:`, `feedbot stage set ID` and the bot's `/stage ID` take it."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Problem(loc, f"{shown_value(value)} is not a stage id",
                       "write it as text, e.g. 'basics'")
    sid = str(value)
    if not _ID.match(sid) or not sid.isprintable():
        slug = "-".join(sid.split()).lstrip("-")
        hint = f"e.g. {slug!r}: " if slug and _ID.match(slug) and slug.isprintable() else ""
        raise _Problem(loc, f"{shown_value(sid)} is not a stage id",
                       f"{hint}one word, not starting with '-', as `feedbot stage set ID` "
                       "and /stage ID take it")
    if sid.lower() == "next":
        raise _Problem(loc, "'next' cannot be a stage id", "/stage next moves to the next stage")
    if len(sid.encode()) > MAX_ID_LENGTH:
        raise _Problem(loc, f"stage id {sid[:20]}... is {len(sid.encode())} bytes long",
                       f"at most {MAX_ID_LENGTH}, as a Telegram button holds them")
    return sid


def _text(value: Any, loc: list[str | int], empty: bool = True) -> str:
    if not isinstance(value, str):
        raise _Problem(loc, f"must be text, not {shown_value(value)}", "put it in quotes")
    if not empty and not value.strip():
        raise _Problem(loc, "must not be empty")
    return value


def _list(value: Any, loc: list[str | int]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Problem(loc, f"must be a list, not {shown_value(value)}",
                       "e.g. [vectors, probability]" if loc[-1] == "topics"
                       else "e.g. [{title: ..., url: ...}]")
    return value


def _known_keys(raw: dict[Any, Any], allowed: tuple[str, ...], loc: list[str | int]) -> None:
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            raise _Problem([*loc, str(key)], "unknown key", f"did you mean '{close[0]}'?"
                           if close else f"allowed keys: {', '.join(allowed)}")


def _resource(raw: Any, loc: list[str | int]) -> Resource:
    if not isinstance(raw, dict) or not raw.get("title"):
        raise _Problem(loc, "each resource needs at least a 'title' (and a 'url')")
    _known_keys(raw, RESOURCE_KEYS, loc)
    return Resource(_text(raw["title"], [*loc, "title"]),
                    _text(raw.get("url") or "", [*loc, "url"]),
                    _text(raw.get("kind") or "", [*loc, "kind"]))
