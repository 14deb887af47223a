"""Load and validate `sources.yaml` once, at the edge, and expand it into concrete sources.

Errors name the file, the line, the key and, where we can guess, what was meant. Nothing here
touches the network or the database; editing the file lives in `sources_edit.py`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from .redact import mask_userinfo

DEFAULT_STAGE = "deep-learning"


class ConfigError(Exception):
    """A problem in sources.yaml, located as precisely as we can."""

    def __init__(self, path: str | Path | None, message: str, line: int | None = None,
                 key: str = "", hint: str = "") -> None:
        self.path = str(path) if path else "<sources>"
        self.line = line
        self.key = key
        self.message = message
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path + (f":{self.line}" if self.line else "")
        text = f"{where}: {self.key + ': ' if self.key else ''}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_FORMS = "a number and a unit: 90s, 30m, 6h, 7d or 2w"
# What a duration that is none was probably meant as: `100y` and `3mo` have no unit of their
# own (a year or month is not a fixed length), `-3d` looks forward.
_CALENDAR = re.compile(r"^\s*[\d.]+\s*(?:(y|yrs?|years?)|(mo|mons?|months?))\s*$", re.IGNORECASE)
_NEGATIVE = re.compile(r"^\s*-\s*(\d+(?:\.\d+)?\s*[smhdw]?)\s*$")
# Longer than any look-back or interval makes sense for, short enough that a timedelta or a
# datetime subtraction never overflows.
MAX_DURATION_DAYS = 36500  # 100 years


def parse_duration(value: str | int | float) -> float:
    """`"90s"`, `"30m"`, `"6h"`, `"7d"`, `"2w"` → seconds, at most 100 years. Text needs its
    unit (`since: "7"` could mean seconds or days); a Python number is seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30m, 6h, 1d)")
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"not a duration: {value!r} ({_duration_hint(str(value))})")
        if not m.group(2):
            n = m.group(1)
            raise ValueError(f"{n} needs a unit: {n}d, {n}h, {n}m or {n}s")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"duration {value!r} is too long; the maximum is {MAX_DURATION_DAYS}d "
                         "(100 years)")
    return seconds


def _duration_hint(text: str) -> str:
    """What to write instead of `text`, which is not a duration."""
    if m := _CALENDAR.match(text):
        if m.group(1):
            return "years are not a unit; use days or weeks, e.g. 365d or 52w for a year"
        return "months are not a unit; use days or weeks, e.g. 30d or 4w for a month"
    if m := _NEGATIVE.match(text):
        n = m.group(1).replace(" ", "")
        if n[-1].isdigit():  # "write 7" would be refused next: it needs a unit too
            return f"durations are never negative, and need a unit: {n}d, {n}h, {n}m or {n}s"
        return f"durations are never negative; write {n}"
    return _DURATION_FORMS


def _duration_text(v: Any) -> Any:
    """A bare number in the file (`since: 7`) is ambiguous: seconds, as `parse_duration` reads
    it, or the days the writer probably meant? Ask for the unit rather than guess."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v):
            raise ValueError("not a duration; use e.g. 30m, 6h, 7d")
        n = f"{v:.9f}".rstrip("0").rstrip(".")
        raise ValueError(f"{n} needs a unit: {n}d, {n}h, {n}m or {n}s")
    return v


def _positive_duration(v: str) -> str:
    if parse_duration(v) <= 0:
        raise ValueError("must be longer than zero, e.g. 30m, 6h, 1d")
    return v


# An interval or look-back window: "6h", "7d" or a number of seconds, more than zero.
Duration = Annotated[str, BeforeValidator(_duration_text), AfterValidator(_positive_duration)]

# The shortest `interval`: once a minute, as `feedbot run` never collects one source again
# sooner (`scheduler.MIN_GAP`). `interval: 1s` was taken, and a feed's site (or X, within its
# rate limits) was asked every second. Look-back windows (`since`) have no such floor.
MIN_INTERVAL = "1m"


def _too_often(interval: str, what: str) -> str:
    """Why collecting `what` every `interval` (a valid duration) is refused, or '': more
    often than once every MIN_INTERVAL."""
    if parse_duration(interval) >= parse_duration(MIN_INTERVAL):
        return ""
    return (f"{what} would be collected every {interval}; the shortest interval is "
            f"{MIN_INTERVAL}, so that no site, nor X with its rate limits, is asked more often")


# A Bluesky account by its permanent id, as bsky.app links some profiles and posts.
BLUESKY_DID = re.compile(r"did:(?:plc:[a-z2-7]{24}|web:[A-Za-z0-9.-]+\.[A-Za-z]+)")
X_TOKEN_ENV = "X_BEARER_TOKEN"


def x_token() -> str:
    """The X API token from the environment; '' when unset or blank (a line of an .env file
    with only a space): X sources are off then, for every command alike."""
    return os.environ.get(X_TOKEN_ENV, "").strip()


def control_char(text: str) -> str | None:
    """The first newline, tab, escape or other control character (or line or paragraph
    separator) in `text`, else None: what cannot stand on one line of a digest, log or table."""
    return next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)


MAX_VALUES = 200_000  # values a sources or roadmap file may hold, aliases expanded


def expanded_size(node: Any, limit: int = MAX_VALUES) -> tuple[int, bool]:
    """How many values `node` holds with every alias (`*name`) expanded, counted without
    expanding them (each list's and map's count once), stopped a little past `limit`; and
    whether a list or map is used twice (an alias). Nine aliases of nine aliases of … make a
    file of a few hundred bytes that every reader copying it expands to a billion values
    ("billion laughs")."""
    memo: dict[int, int] = {}
    shared = False

    def size(n: Any) -> int:
        nonlocal shared
        if not isinstance(n, dict | list):
            return 1
        if id(n) in memo:
            shared = True
            return memo[id(n)]
        memo[id(n)] = 0  # a list that contains itself counts once
        total = 1
        for child in (*n.keys(), *n.values()) if isinstance(n, dict) else n:
            total += size(child)
            if total > limit:
                break
        memo[id(n)] = total
        return total

    try:
        return size(node), shared
    except RecursionError:  # nested thousands deep: the parsers' own checks say so
        return 0, shared


def check_expansion(data: Any, path: str | Path | None) -> None:
    """ConfigError for a document whose aliases expand past `MAX_VALUES` values."""
    size, aliased = expanded_size(data)
    if aliased and size > MAX_VALUES:
        raise ConfigError(path, f"its aliases (*name) expand to more than {MAX_VALUES:,} "
                          "values", hint="write the values out, or repeat fewer aliases of "
                          "aliases")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def shown_value(value: Any) -> str:
    """A value from a file as an error shows it: cut to about a line, however deep or long."""
    return _REPR.repr(value)


def name_key(name: str) -> str:
    """What two names must share to be one: the same letters in any case, spacing or Unicode
    form ("José" typed, composed, is the "José" a copy-paste left decomposed, with U+0301)."""
    return " ".join(unicodedata.normalize("NFC", name).split()).casefold()


def _check_name(v: str) -> str:
    if (ch := control_char(v)) is not None:
        raise ValueError(f"a name cannot contain newlines, tabs or other control characters "
                         f"(found {ch!r})")
    return v


Name = Annotated[str, Field(min_length=1), AfterValidator(_check_name)]


NOT_HTTP = "not an http(s) URL"


def url_problem(url: str) -> str:
    """Why `url` is not an http(s) URL that urllib and httpx both accept, with a host and a
    valid port ('not an http(s) URL', 'not a valid URL (…)'), or '' when it is one. The one
    check behind sources.yaml's validation and `feedbot follow` / `import-opml`."""
    if not re.match(r"^https?://[^\s/]+", url, re.IGNORECASE):  # HTTPS://… is one too
        return NOT_HTTP
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        return f"not a valid URL ({e})"
    if not parts.hostname:
        return "not a valid URL (it has no host name)"
    import httpx  # here, not at the top: loading the config stays quick

    try:
        httpx.URL(url)
    except httpx.InvalidURL as e:  # ASCII control characters among others
        return f"not a valid URL ({e})"
    if control_char(url) is not None:  # those httpx would percent-encode (C1, separators)
        return "not a valid URL (it contains a control character)"
    return ""


def _check_url(v: str, what: str) -> str:
    problem = url_problem(v)
    if problem == NOT_HTTP:
        raise ValueError(f"must be an http(s) URL of {what}")
    if problem:
        raise ValueError(problem)
    scheme, rest = v.split("://", 1)
    return f"{scheme.lower()}://{rest}"  # HTTPS://… as https://…, as the store compares them


def _not_bool(v: Any) -> Any:
    """`mmr: true` is no number (pydantic would read it as 1, and `false` as 0)."""
    if isinstance(v, bool):
        raise ValueError(f"must be a number, not {str(v).lower()}")
    return v


MAX_WEIGHT = 1000.0  # the parts are scores of about -1 to 1: more drowns every other part


def _weight(v: float) -> float:
    if v < 0:  # similarity: -1 would rank what fits the stage worst first
        raise ValueError("must be 0 or more (0 turns this part off)")
    if v > MAX_WEIGHT:  # 1e39 (float32's infinity) made every score inf or NaN
        raise ValueError(f"must be at most {MAX_WEIGHT:g}: every part is a score of about "
                         "-1 to 1, so a larger weight only drowns the others (set them to 0 "
                         "instead)")
    return v


# The weight of a score part: a number from 0 to MAX_WEIGHT.
Weight = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_weight)]
Number = BeforeValidator(_not_bool)


class _Model(BaseModel):
    # allow_inf_nan: a weight of .nan or .inf would make every score, and the JSON, invalid
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


class Learner(_Model):
    stage: str = DEFAULT_STAGE
    roadmap: str | None = None  # path to a roadmap YAML of the learner's own
    digest_time: str = "08:00"  # local time of the daily Telegram digest
    timezone: str = "UTC"
    digest_size: Annotated[int, Number] = Field(default=10, ge=1, le=50)
    empty_digest: Literal["say", "silent"] = "say"
    since: Duration = "7d"  # default look-back window of a digest

    @field_validator("stage", mode="before")
    @classmethod
    def _stage(cls, v: Any) -> Any:
        # a roadmap's `id: 1` is stage "1" (`roadmap._stage_id`): so is `stage: 1` here
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("digest_time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", v):
            raise ValueError("must be HH:MM in 24-hour time, e.g. 08:00")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin") from None
        return v


class Defaults(_Model):
    interval: Duration = "6h"  # how often each source is collected
    weight: Annotated[float, Number] = Field(default=1.0, ge=0)
    # per arXiv query / X timeline read
    max_items: Annotated[int, Number] = Field(default=50, ge=1, le=500)

    @field_validator("interval")
    @classmethod
    def _often_enough(cls, v: str) -> str:
        if problem := _too_often(v, "every source without an interval of its own"):
            raise ValueError(problem)
        return v


class _SourceOptions(_Model):
    weight: Annotated[float, Number] | None = Field(default=None, ge=0)
    interval: Duration | None = None

    @model_validator(mode="after")
    def _often_enough(self) -> _SourceOptions:
        """Checked on the entry, not the field, so the message can name the source (every
        entry has a `name`; the field comes before it)."""
        if self.interval is not None and (
                problem := _too_often(self.interval, repr(getattr(self, "name", "")))):
            raise _LocatedError(problem, ("interval",))
        return self


class Blog(_SourceOptions):
    name: Name
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, "an RSS, Atom or JSON feed")


def _read_arxiv_categories() -> frozenset[str]:
    text = resources.files("feedbot").joinpath("data/arxiv_categories.txt") \
        .read_text(encoding="utf-8")
    return frozenset(word for line in text.splitlines() if not line.startswith("#")
                     for word in line.split())


# arXiv's categories (cs.CV, cond-mat.mes-hall, hep-th), kept in data/arxiv_categories.txt, and
# its archives: a category is an archive and a subject class, or an archive alone.
ARXIV_CATEGORIES = _read_arxiv_categories()
ARXIV_ARCHIVES = frozenset(cat.partition(".")[0] for cat in ARXIV_CATEGORIES)
_ARXIV_CANONICAL = {cat.lower(): cat for cat in ARXIV_CATEGORIES | ARXIV_ARCHIVES}
# arXiv's archives of the 1990s that were closed, each merged into a category of today: their
# old papers keep the name (cmp-lg/9404001), but no new paper is listed under it.
ARXIV_CLOSED = {
    "acc-phys": "physics.acc-ph", "adap-org": "nlin.AO", "alg-geom": "math.AG",
    "ao-sci": "physics.ao-ph", "atom-ph": "physics.atom-ph", "bayes-an": "physics.data-an",
    "chao-dyn": "nlin.CD", "chem-ph": "physics.chem-ph", "cmp-lg": "cs.CL",
    "comp-gas": "nlin.CG", "dg-ga": "math.DG", "funct-an": "math.FA",
    "mtrl-th": "cond-mat.mtrl-sci", "patt-sol": "nlin.PS", "plasm-ph": "physics.plasm-ph",
    "q-alg": "math.QA", "solv-int": "nlin.SI", "supr-con": "cond-mat.supr-con"}
_ONE_CATEGORY = re.compile(r"[A-Za-z][A-Za-z-]*(\.[A-Za-z][A-Za-z-]*)?")


def arxiv_category(text: str) -> str:
    """`text` as arXiv writes the category, whatever its case ("cs.lg" is cs.LG,
    "COND-MAT.Mes-Hall" is cond-mat.mes-hall), or ValueError that says why not, with the
    closest one: arXiv answers a category it does not have (`cs.CVV`, the list "cs.LG, cs.CV")
    with nothing, every time, and an archive it closed (`cmp-lg`) with no new paper. The one
    rule for sources.yaml's `category:` and `feedbot follow --category`. The list is
    feedbot's (data/arxiv_categories.txt): a category arXiv opens later is refused here until
    the list has it, so the refusal names the way round it, a `query:` (which is not
    checked)."""
    key = text.strip().lower()
    if key in _ARXIV_CANONICAL:
        return _ARXIV_CANONICAL[key]
    if key in ARXIV_CLOSED:
        now = ARXIV_CLOSED[key]
        raise ValueError(f"{text!r} is an arXiv archive closed long ago, merged into {now}: "
                         f"no new paper is listed under it; follow {now} instead")
    if not _ONE_CATEGORY.fullmatch(key):
        raise ValueError(f"{text!r} is not one arXiv category such as cs.LG; for several, "
                         "follow each, or give sources.yaml a query: 'cat:cs.LG OR cat:cs.CV'")
    subject = key.partition(".")[2]  # cs.ML: stat.ML, the one archive with that class
    close = [c for c in _ARXIV_CANONICAL if subject and c.partition(".")[2] == subject]
    if len(close) != 1:
        close = difflib.get_close_matches(key, sorted(_ARXIV_CANONICAL), n=1)
    hint = f" (did you mean {_ARXIV_CANONICAL[close[0]]}?)" if close else ""
    raise ValueError(f"{text!r} is not an arXiv category such as cs.LG or stat.ML{hint}; "
                     f"one newer than feedbot's list goes in a query: 'cat:{text.strip()}'")


class ArxivQuery(_SourceOptions):
    name: Name
    query: str | None = None  # arXiv API search_query, e.g. 'cat:cs.CV AND abs:tutorial'
    category: str | None = None  # shorthand for query 'cat:<category>'
    max_results: Annotated[int, Number] | None = Field(default=None, ge=1, le=500)

    @model_validator(mode="after")
    def _one_of(self) -> ArxivQuery:
        if bool(self.query) == bool(self.category):
            raise ValueError("give exactly one of 'query' or 'category'")
        return self

    @field_validator("category")
    @classmethod
    def _category(cls, v: str | None) -> str | None:
        """One category as arXiv writes it (`arxiv_category`, the rule `follow --category`
        keeps): "cs.LG, cs.CV" went into `cat:cs.LG, cs.CV`, which arXiv answers with
        nothing, and the source read "ok, 0 items" for ever; so did `cs.CVV` and `cmp-lg`."""
        return v if v is None else arxiv_category(v)

    @property
    def search_query(self) -> str:
        return self.query or f"cat:{self.category}"


class Person(_SourceOptions):
    name: Name
    x: str | None = None  # X handle, without @
    bluesky: str | None = None  # e.g. someone.bsky.social
    mastodon: str | None = None  # @user@instance
    arxiv: str | None = None  # author name as arXiv lists it
    blog: str | None = None  # feed URL of their blog
    replies: bool = False  # X: include replies
    retweets: bool = False  # X: include retweets

    @field_validator("x")
    @classmethod
    def _x(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lstrip("@")
        if not re.fullmatch(r"[A-Za-z0-9_]{1,15}", v):
            raise ValueError("an X handle is 1-15 letters, digits or underscores")
        return v

    @field_validator("arxiv")
    @classmethod
    def _arxiv(cls, v: str | None) -> str | None:
        """An author name goes into `au:"NAME"`: a quote in it ended the phrase early, and
        the query asked arXiv for something else (every paper of another author)."""
        if v is not None and (not v.strip() or '"' in v or control_char(v)):
            raise ValueError('an arXiv author name is a name such as "Yann LeCun", without '
                             "quotes")
        return v

    @field_validator("mastodon")
    @classmethod
    def _mastodon(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"@?[A-Za-z0-9_.]+@[A-Za-z0-9.-]+\.[A-Za-z]+", v):
            raise ValueError("a Mastodon account looks like @user@instance.social")
        return v

    @field_validator("bluesky")
    @classmethod
    def _bluesky(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lstrip("@")
        if not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]+", v) and not BLUESKY_DID.fullmatch(v):
            raise ValueError("a Bluesky handle looks like someone.bsky.social (or the "
                             "account's did:plc:… id)")
        return v

    @field_validator("blog")
    @classmethod
    def _blog(cls, v: str | None) -> str | None:
        return v if v is None else _check_url(v, "the blog's feed")

    @model_validator(mode="after")
    def _something(self) -> Person:
        if not any((self.x, self.bluesky, self.mastodon, self.arxiv, self.blog)):
            raise ValueError("a person needs at least one of x, bluesky, mastodon, arxiv, blog")
        return self


class Telegram(_Model):
    allowed_chats: list[Annotated[int, Number]] = Field(default_factory=list)

    @field_validator("allowed_chats")
    @classmethod
    def _once(cls, v: list[int]) -> list[int]:
        # a chat written twice (pasted from /start again) got every notice twice
        return list(dict.fromkeys(v))




class Ranking(_Model):
    """Ranking weights, all in one place; see `feedbot/rank.py` for what each part measures.

    Override any of them under `ranking:` in sources.yaml, e.g. `ranking: {level: 0}` turns the
    preference for tutorials off. Defaults were chosen on half of the benchmark's dev set (see
    benchmarks/README.md); a score is the weighted sum of the parts that `--explain` prints.
    """

    similarity: Weight = 1.0  # fit to the current stage (stage-centred cosine, about -0.2..0.7)
    contrast: Weight = 0.5  # penalty when another stage fits the item better (0 when none does)
    recency: Weight = 0.15  # bonus for new items, decaying with recency_half_life
    recency_half_life: Duration = "3d"
    source: Weight = 0.1  # per-source weight (log scale) from sources.yaml
    feedback: Weight = 0.5  # the learner's 👍/👎 model (its scores grow with the feedback count)
    # how much a 👍/👎 given at another roadmap stage counts (1 = as much as at this stage)
    feedback_other_stages: Annotated[float, Number] = Field(default=0.1, ge=0, le=1)
    level: Weight = 0.05  # early stages: prefer tutorials and surveys (0 turns it off)
    # maximal marginal relevance lambda (1 = off)
    mmr: Annotated[float, Number] = Field(default=0.85, ge=0, le=1)
    # at most this many items from one source
    per_source_cap: Annotated[int, Number] = Field(default=3, ge=1)
    # cosine at which items are one story
    duplicate: Annotated[float, Number] = Field(default=0.9, gt=0, le=1.01)


NEVER = "never"
_RETENTION_HINT = "use e.g. 365d or 52w, or never to keep every item"


def _retention_text(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() == NEVER:
        return NEVER
    if isinstance(v, bool) or not isinstance(v, str | int | float):  # `off`, empty, a list
        raise ValueError(f"not a duration: {shown_value(v)} ({_RETENTION_HINT})")
    if not isinstance(v, str) and v == 0:
        raise ValueError(f"0 would keep nothing; {_RETENTION_HINT}")
    return _duration_text(v)  # a bare number other than 0: ask for its unit


def _retention_age(v: str) -> str:
    if v == NEVER:
        return v
    try:
        seconds = parse_duration(v)
    except ValueError as e:
        if "not a duration" in str(e):
            raise ValueError(f"not a duration: {shown_value(v)} ({_RETENTION_HINT})") from None
        raise
    if seconds <= 0:
        raise ValueError(f"must be longer than zero; {_RETENTION_HINT}")
    return v


# How long items are kept: a duration ("365d", "52w") or "never" (keep everything).
RetentionAge = Annotated[str, BeforeValidator(_retention_text), AfterValidator(_retention_age)]


class Retention(_Model):
    """What `feedbot prune` (and `feedbot run`, once a day) removes from the database.

    `items`: items published (else first collected) longer ago than this, and first collected
    longer ago too, go with their vectors, unless a chat voted on or saved them. `never` keeps
    every item. It must be at least `learner.since`, the digest's look-back; left out, it is
    365 days, or `learner.since` when that is longer.
    """

    items: RetentionAge = "365d"

    @property
    def items_seconds(self) -> float | None:
        """The retention in seconds, or None for `never`."""
        return None if self.items == NEVER else parse_duration(self.items)


class Config(_Model):
    learner: Learner = Field(default_factory=Learner)
    defaults: Defaults = Field(default_factory=Defaults)
    blogs: list[Blog] = Field(default_factory=list)
    arxiv: list[ArxivQuery] = Field(default_factory=list)
    people: list[Person] = Field(default_factory=list)
    telegram: Telegram = Field(default_factory=Telegram)
    ranking: Ranking = Field(default_factory=Ranking)
    retention: Retention = Field(default_factory=Retention)

    # Set by load_config; not part of the file.
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section left with nothing under it (`blogs:` with every entry commented out,
        `ranking:` above commented-out weights) is an empty one, not "Input should be a valid
        list"."""
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items()
                if not (v is None and k in cls.model_fields and k != "path")}

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: dict[str, str] = {}
        for name, loc in self._names():
            where = _dotted(list(loc[:-1] if loc[-1] == "name" else loc))
            first = seen.setdefault(name_key(name), where)
            if first != where:
                what = "" if loc[-1] == "name" else f" (the source of this person's {loc[-1]})"
                raise _LocatedError(f"duplicate name {name!r}{what}, already used by {first}",
                                    loc)
        return self

    @model_validator(mode="after")
    def _retention_covers_the_digest(self) -> Config:
        keep = self.retention.items_seconds
        if keep is None or keep >= parse_duration(self.learner.since):
            return self
        if "items" not in self.retention.model_fields_set:  # the default: as long as `since`
            self.retention = Retention(items=self.learner.since)
            return self
        raise _LocatedError(
            f"{self.retention.items} is shorter than learner.since ({self.learner.since}), the "
            "digest's look-back: items would be removed before they were shown",
            ("retention", "items"))

    def _names(self) -> Iterator[tuple[str, tuple[str | int, ...]]]:
        """Every name `--source` and the store know, and where it comes from: each blog, query
        and person, then each person's places (`Name/x`, `Name/blog`, ... as `sources()` does)."""
        for section in ("blogs", "arxiv", "people"):
            for i, entry in enumerate(getattr(self, section)):
                yield entry.name, (section, i, "name")
        for i, p in enumerate(self.people):
            for place in _PERSON_PLACES:
                if getattr(p, place):
                    yield f"{p.name}/{place}", ("people", i, place)

    def sources(self) -> list[SourceSpec]:
        return expand_sources(self)


class _LocatedError(ValueError):
    """A problem found across entries, with the path of the entry to blame (for its line)."""

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


@dataclass(frozen=True)
class SourceSpec:
    """One concrete thing to collect: a feed URL, an arXiv query or an X account."""

    name: str  # unique; what `--source` and the store use
    kind: Literal["feed", "arxiv", "x"]
    target: str  # feed URL, arXiv search query or X handle
    label: str  # how the digest names it: "Andrej Karpathy on X"
    weight: float = 1.0
    interval: float = 6 * 3600.0
    person: str = ""
    max_items: int = 50
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


_PERSON_PLACES = {"x": "X", "bluesky": "Bluesky", "mastodon": "Mastodon", "arxiv": "arXiv",
                  "blog": "their blog"}


BLUESKY_URL_ENV = "FEEDBOT_BLUESKY_URL"  # replaces https://bsky.app (a local test server)
MASTODON_URL_ENV = "FEEDBOT_MASTODON_URL"  # replaces https://{instance}; may hold {instance}


def bluesky_feed_url(handle: str) -> str:
    """The RSS feed of a Bluesky account: `https://bsky.app/profile/HANDLE/rss`, with
    FEEDBOT_BLUESKY_URL in place of `https://bsky.app` when it is set."""
    base = os.environ.get(BLUESKY_URL_ENV, "").strip().rstrip("/") or "https://bsky.app"
    return f"{base}/profile/{handle.lstrip('@')}/rss"


def mastodon_feed_url(account: str) -> str:
    """The RSS feed of a Mastodon account `@user@instance`: `https://INSTANCE/@user.rss`, with
    FEEDBOT_MASTODON_URL in place of `https://INSTANCE` when it is set (`{instance}` in it
    stands for the instance, so one local server can serve several)."""
    user, instance = account.lstrip("@").split("@", 1)
    base = os.environ.get(MASTODON_URL_ENV, "").strip().rstrip("/")
    base = base.replace("{instance}", instance) if base else f"https://{instance}"
    return f"{base}/@{user}.rss"


def expand_sources(cfg: Config) -> list[SourceSpec]:
    d = cfg.defaults
    out: list[SourceSpec] = []

    def common(entry: _SourceOptions) -> dict[str, Any]:
        return {
            "weight": entry.weight if entry.weight is not None else d.weight,
            "interval": parse_duration(entry.interval or d.interval),
        }

    for b in cfg.blogs:
        out.append(SourceSpec(b.name, "feed", b.url, b.name, **common(b)))
    for q in cfg.arxiv:
        out.append(SourceSpec(q.name, "arxiv", q.search_query, f"arXiv {q.name}",
                              max_items=q.max_results or d.max_items, **common(q)))
    for p in cfg.people:
        c = common(p)
        places: list[tuple[str, Literal["feed", "arxiv", "x"], str]] = []
        if p.x:
            places.append(("x", "x", p.x))
        if p.bluesky:
            places.append(("bluesky", "feed", bluesky_feed_url(p.bluesky)))
        if p.mastodon:
            places.append(("mastodon", "feed", mastodon_feed_url(p.mastodon)))
        if p.arxiv:
            places.append(("arxiv", "arxiv", f'au:"{p.arxiv}"'))
        if p.blog:
            places.append(("blog", "feed", p.blog))
        for place, kind, target in places:
            out.append(SourceSpec(
                f"{p.name}/{place}", kind, target, f"{p.name} on {_PERSON_PLACES[place]}",
                person=p.name, max_items=d.max_items,
                options={"replies": p.replies, "retweets": p.retweets}, **c))
    return out


# --- locating files -------------------------------------------------------------------------

def feedbot_home() -> Path:
    """The data directory: `$FEEDBOT_HOME`, else the user's data dir."""
    env = os.environ.get("FEEDBOT_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("feedbot", appauthor=False))


def packaged_sources() -> Path:
    return Path(__file__).parent / "data" / "sources.yaml"


def sources_path() -> Path:
    """`$FEEDBOT_SOURCES`, else `./sources.yaml`, else `$FEEDBOT_HOME/sources.yaml`."""
    env = os.environ.get("FEEDBOT_SOURCES")
    if env:
        return Path(env).expanduser()
    local = Path("sources.yaml")
    if local.exists():
        return local
    return feedbot_home() / "sources.yaml"


# --- loading --------------------------------------------------------------------------------

def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    return y


def parse_yaml(text: str, path: str | Path | None = None) -> Any:
    """The round-trip document (comments and all) of a sources file."""
    try:
        return _yaml().load(text)
    except DuplicateKeyError as e:
        raise _duplicate_key(e, text, path) from None
    except MarkedYAMLError as e:
        if "'\\t'" in str(e.problem or e.context):  # a tab, where this parser takes only spaces
            doc = _without_separating_tabs(text)
            if doc is not None:
                return doc
        raise _syntax_error(e, text, path) from None
    except ReaderError as e:  # a control character, e.g. a NUL byte: no mark, a position
        raise _unreadable(e, text, path) from None
    except YAMLError as e:
        raise ConfigError(path, f"not valid YAML: {e}") from None
    except RecursionError:  # `learner: [[[[…` thousands deep
        raise ConfigError(path, "not valid YAML: nested too deeply") from None


_LINE_BREAK = re.compile("\r\n|[\r\n]")  # as ruamel's marks count lines


def _syntax_error(e: MarkedYAMLError, text: str, path: str | Path | None) -> ConfigError:
    """ruamel's words, at their line, with the column and the line itself, and for the common
    slips (a tab, an item or key indented wrong, `a: b` in a value) what to do. A key with no
    `:`, and a problem marked past the last line (an unclosed `[`), are shown where the thing
    ruamel was reading began."""
    lines = _LINE_BREAK.split(text.removeprefix("\ufeff").removesuffix("\n"))
    marks = [m for m in (e.problem_mark, e.context_mark) if m is not None]
    problem = str(e.problem or e.context)
    if problem.startswith("could not find expected ':'"):  # where the key without one began
        marks.reverse()
    mark = next((m for m in marks if m.line < len(lines)), marks[0] if marks else None)
    if mark is None:
        return ConfigError(path, f"not valid YAML: {problem}")
    n, column = mark.line + 1, mark.column + 1
    odd = _odd_indent_at_fault(e, lines, mark.line)
    if odd is not None:  # ruamel's mark is on a line after it, and its words do not say why
        return _odd_indent_error(path, odd[0] + 1, odd[1])
    if mark.line >= len(lines):
        return ConfigError(path, f"not valid YAML: {problem}", line=n)
    shown = lines[mark.line]
    message = f"not valid YAML: {problem} at column {column} of {_shown_line(shown, column)}"
    hint = _without_colon_above(problem, lines, mark.line) or _syntax_hint(problem, shown,
                                                                            column, n)
    if not hint and mark is e.context_mark:  # the line where what is left open begins
        hint = _UNCLOSED.get(str(e.context), "")
    return ConfigError(path, message, line=n, hint=hint)


# Spaces YAML does not take for indentation, which a copy from a web page or a word processor
# brings: no-break (U+00A0), the typographic ones, ideographic, zero-width.
_ODD_SPACES = "\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200E))) + \
    "\u202f\u205f\u2060\u3000\ufeff"


def _odd_indent(line: str) -> str | None:
    """The first character of `line`'s indentation that only looks like a space, or None."""
    indent = line[:len(line) - len(line.lstrip(" \t" + _ODD_SPACES))]
    return next((c for c in indent if c in _ODD_SPACES), None)


def _odd_indent_at_fault(e: MarkedYAMLError, lines: list[str],
                         marked: int) -> tuple[int, str] | None:
    """The line (0-based) at or above `marked` indented with a space YAML does not take for
    one, and that character, when that indentation is what ruamel failed on: retyped with
    plain spaces, the file reads, or fails somewhere else. Such a space is ordinary text in a
    folded or multi-line value, so a line that has one is not to blame for an error further
    down. The nearest such line is tried first; None when no retyping changes the error."""
    failure = _failure(e)
    for i in range(min(marked, len(lines) - 1), -1, -1):
        char = _odd_indent(lines[i])
        if char is None:
            continue
        retyped = lines.copy()
        stripped = lines[i].lstrip(" \t" + _ODD_SPACES)
        retyped[i] = " " * (len(lines[i]) - len(stripped)) + stripped
        try:
            _yaml().load("\n".join(retyped))
        except YAMLError as again:
            if _failure(again) == failure:
                continue
        return i, char
    return None


def _failure(e: YAMLError) -> tuple[str, int | None]:
    """What a YAML error says and the line it marks, to tell whether two are the same."""
    if not isinstance(e, MarkedYAMLError):
        return str(e), None
    mark = e.problem_mark or e.context_mark
    return str(e.problem or e.context), mark.line if mark else None


def _odd_indent_error(path: str | Path | None, n: int, char: str) -> ConfigError:
    """Line `n`, indented with `char`: YAML reads it as part of the text, so ruamel (or the
    keys check) complained about another line, or about a key that looks right."""
    name = f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()
    return ConfigError(path, f"line {n} is indented with {name}, which YAML does not take "
                       "for a space", line=n,
                       hint="retype the indentation of that line with plain spaces")


def _duplicate_key(e: DuplicateKeyError, text: str, path: str | Path | None) -> ConfigError:
    """A key written twice in one mapping (a second `blogs:` at the end of the file), with
    both lines: ruamel's words repeat both values whole, a kilobyte on one line for a
    `blogs:` section."""
    mark = e.problem_mark  # where the second one is
    found = _first_of_key(text, mark.line, mark.column) if mark else None
    if found is None:
        return ConfigError(path, "duplicate key: a key appears twice in one mapping",
                           line=mark.line + 1 if mark else None, hint="keep one")
    key, first, section = found
    n = mark.line + 1
    where = f"twice on line {n}" if first == n else f"on lines {first} and {n}"
    return ConfigError(path, f"duplicate key {shown_value(key)}, {where}", line=n,
                       hint="move what is under the second into the first" if section
                       else "delete one of them")


def _first_of_key(text: str, line: int, column: int) -> tuple[str, int, bool] | None:
    """The key written at `line`, `column` (0-based), the line (1-based) of the first key
    like it in its mapping, and whether it holds a list or mapping (a section such as
    `blogs:`); None when it is not a plain key, or the text does not compose."""
    try:
        todo = [_yaml().compose(text)]  # nodes only: no check for duplicate keys
    except YAMLError:
        return None
    seen: set[int] = set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:  # an alias is a node seen before
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            keys = [k for k, _ in node.value]
            for k, v in node.value:
                if (k.start_mark.line, k.start_mark.column) == (line, column) and \
                        isinstance(k, ScalarNode):
                    first = next(x for x in keys if (x.tag, x.value) == (k.tag, k.value))
                    return k.value, first.start_mark.line + 1, not isinstance(v, ScalarNode)
            todo += [n for pair in node.value for n in pair]
        elif isinstance(node, SequenceNode):
            todo += node.value
    return None


_UNCLOSED = {  # ruamel's context for a problem at the end of the file: what was left open
    "while scanning a quoted scalar": "the quote that opens there is never closed",
    "while parsing a flow sequence": "the `[` that opens there is never closed",
    "while parsing a flow mapping": "the `{` that opens there is never closed",
}


def _shown_line(line: str, column: int, width: int = 80) -> str:
    """A line of the file as a message shows it: quoted, so its indentation and tabs show
    (`'\\tstage: cnn'`), and cut to about `width` characters around `column`. A password in a
    URL (`https://bob:***@…`) is masked: the message goes to the log and to the bot's chats."""
    line = mask_userinfo(line)
    if len(line) > width:
        start = max(0, min(column - width // 2, len(line) - width))
        line = ("…" if start else "") + line[start:start + width] + \
            ("…" if start + width < len(line) else "")
    return repr(line)


_INDENT_HINTS = {  # what ruamel found where a block ended: what is wrong with its indentation
    "<block sequence start>": "the items of a list (`- …`) line up under each other",
    "<scalar>": "a value on a line of its own goes further right than its key",
}
_KEYS_HINT = ("the keys of a mapping line up under each other, and so do the keys of a list's "
              "item: under `- name: …`, `url:` goes right under `name`")


def _without_colon_above(problem: str, lines: list[str], index: int) -> str:
    """`stage cnn` above `timezone: UTC` (or `learner` above `  stage: cnn`): ruamel reads
    the key without its `:` on as a value and stops at the next line's `:`, which is right.
    The hint for the line above, else ""."""
    if not problem.startswith("mapping values are not allowed"):
        return ""
    above = next((i for i in range(index - 1, -1, -1)
                  if lines[i].strip() and not lines[i].lstrip().startswith("#")), None)
    if above is None:
        return ""
    text = lines[above].split(" #")[0].strip()
    if ":" in text or text.startswith(("-", "[", "{", "'", '"', "|", ">")):
        return ""
    return f"line {above + 1} needs ': ' after its key (`key: value`)"


def _syntax_hint(problem: str, line: str, column: int, n: int) -> str:
    """What to do about the YAML syntax errors people make in sources.yaml by hand."""
    if "'\\t'" in problem:
        if not line[:column].strip(" \t"):  # the tab is in the indentation
            return "YAML does not allow tabs for indentation: replace the tab on that line " \
                "with spaces"
        return "replace the tab on that line with spaces"
    indentation = f"check the indentation of line {n}: "
    if problem.startswith("mapping values are not allowed"):
        before = line[:column - 1]
        if ": " in before or before.rstrip().endswith(":"):  # `name: Part 1: Basics`
            return 'a value holding ": " goes in quotes, e.g. name: "Part 1: Basics"'
        return indentation + "the keys of a mapping line up under each other; one indented " \
            "further than the key above it is read as part of that key's value"
    before = line[:column - 1]
    if problem.startswith("expected <block end>") and "<scalar>" in problem \
            and before.strip() and any(q in before for q in "\"'"):  # name: "Lil'Log" (…)
        return "a value in quotes ends at its closing quote: quote the whole value, e.g. " \
            "name: \"Lil'Log (Lilian Weng)\" (inside '…', write ' as '')"
    if problem.startswith(("expected <block end>", "did not find expected key",
                           "did not find expected '-'")):
        found = next((h for token, h in _INDENT_HINTS.items() if token in problem), _KEYS_HINT)
        return indentation + found
    if problem.startswith("could not find expected ':'"):
        return f"line {n} needs ': ' after its key (`key: value`); a value on a line of its " \
            "own goes further right than its key"
    return ""


# A run of blanks with a tab in it, before a comment or at the end of a line.
_SEPARATING_TABS = re.compile(r"[ \t]*\t[ \t]*(?=#|$)", re.MULTILINE)


def _without_separating_tabs(text: str) -> Any:
    """The round-trip parser refuses a tab before a comment (`stage: cnn<TAB># note`) or at
    the end of a line, which YAML allows and the fast loader `load_config` accepts. Such tabs
    become spaces (trailing ones go), but only when that leaves the data exactly as it was,
    so a tab inside a value is never touched. None when that does not work out."""
    fixed = _SEPARATING_TABS.sub(lambda m: "" if m.end() == len(text) or text[m.end()] == "\n"
                                 else m.group().replace("\t", " "), text)
    try:
        if YAML(typ="safe").load(fixed) != YAML(typ="safe").load(text):
            return None
        return _yaml().load(fixed)
    except YAMLError:
        return None


def _unreadable(e: ReaderError, text: str, path: str | Path | None) -> ConfigError:
    code = e.character if isinstance(e.character, int) else ord(e.character)
    line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
    return ConfigError(path, f"not valid YAML: control character U+{code:04X} is not allowed",
                       line=line, hint="delete it; inside double quotes write it as an "
                       "escape such as \\t")


# A sources.yaml of 5,000 imported feeds is about 400 kB; a 50 MB file took 89 s and 2 GB to
# parse, and a log file given by mistake minutes before its error line.
MAX_SOURCES_BYTES = 10_000_000


def read_sources(path: Path, target: Path | None = None, newline: str | None = None) -> str:
    """The text of sources.yaml `path` (read at `target`, a symlink's target, when given;
    `newline=""` keeps CRLF as it is). ConfigError, naming `path`, when it is missing,
    unreadable, not UTF-8 or larger than MAX_SOURCES_BYTES."""
    try:
        with open(target or path, encoding="utf-8", newline=newline) as f:
            size = os.fstat(f.fileno()).st_size
            # read no more than the limit: a device or a pipe (/dev/zero) has no size, and
            # an unbounded read of it never ends
            text = f.read(MAX_SOURCES_BYTES + 1) if size <= MAX_SOURCES_BYTES else ""
            if size > MAX_SOURCES_BYTES or len(text) > MAX_SOURCES_BYTES:
                shown = f"{size / 1e6:.0f} MB" if size > MAX_SOURCES_BYTES else \
                    f"over {MAX_SOURCES_BYTES // 1_000_000} MB"
                raise ConfigError(path, f"is {shown}; a sources file is at most "
                                  f"{MAX_SOURCES_BYTES // 1_000_000} MB",
                                  hint="is FEEDBOT_SOURCES (or --sources) naming the right "
                                  "file?")
            return text
    except FileNotFoundError:
        if Path(path) == feedbot_home() / "sources.yaml":  # nothing named another file
            hint = "set FEEDBOT_SOURCES or run `feedbot init` to create a starter sources.yaml"
        else:  # named by --sources or FEEDBOT_SOURCES
            hint = ("is --sources or FEEDBOT_SOURCES naming the right file? `feedbot init` "
                    "writes a starter file there")
        raise ConfigError(path, "file not found", hint=hint) from None
    except UnicodeDecodeError:
        raw = Path(path).read_bytes()[:MAX_SOURCES_BYTES]
        try:
            raw.decode("utf-8")
            at = len(raw)
        except UnicodeDecodeError as e:
            at = e.start
        raise ConfigError(path, f"not UTF-8 text (byte 0x{raw[at:at + 1].hex() or '??'} on this "
                          "line)", line=raw.count(b"\n", 0, at) + 1,
                          hint="save the file as UTF-8") from None
    except OSError as e:  # a directory, no permission
        raise ConfigError(path, f"cannot read: {e}") from None


def load_config(path: str | Path | None = None, text: str | None = None) -> Config:
    """Read, parse and validate sources.yaml. Raises ConfigError with file, line and key."""
    p = Path(path) if path is not None else sources_path()
    if text is None:
        text = read_sources(p)
    try:  # the C parser first: 10x faster than the round-trip one on a long file
        data = YAML(typ="safe").load(text)
        check_expansion(data, p)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        cfg = Config.model_validate(data)
    except (ValidationError, ValueError, YAMLError):
        cfg = _load_located(text, p)  # again, with line numbers, to say where the problem is
    cfg.path = p
    return cfg


def _load_located(text: str, p: Path) -> Config:
    doc = parse_yaml(text, p)
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise ConfigError(p, "the top level must be a mapping (learner:, blogs:, ...)", line=1)
    try:
        return Config.model_validate(_plain(doc))
    except ValidationError as e:
        raise _located(e, doc, p) from None


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _located(err: ValidationError, doc: Any, path: Path) -> ConfigError:
    # A typo shows up as an unknown key *and* a missing one: report the typo, it is the cause.
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _LocatedError):  # found by Config, on a line of its own
        loc += cause.loc
    line, node = _line_of(doc, loc)
    key = _dotted(loc)
    hint = ""
    if first["type"] == "extra_forbidden" and loc and (odd := _odd_indent(str(loc[-1]))):
        return _odd_indent_error(path, line or 1, odd)  # `\xa0\xa0url:`, a key of its own
    if first["type"] == "extra_forbidden" and loc:
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        msg = "unknown key"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "required key is missing"
        elif first["type"] == "finite_number":
            msg = "must be a finite number, not .nan or .inf"
        elif first["type"] in _SHAPES:  # "a valid dictionary or instance of Blog"
            msg, hint = _wrong_shape(loc, first["type"], first.get("input"))
    parent = tuple(first["loc"][:-1])
    more = [e for e in errors[1:]  # a typo'd key also reports its correct name as missing
            if not (first["type"] == "extra_forbidden" and e["type"] == "missing"
                    and tuple(e["loc"][:-1]) == parent)]
    if more:
        hint = (hint + "; " if hint else "") + f"and {len(more)} more problem(s)"
    return ConfigError(path, msg, line=line, key=key, hint=hint)


# pydantic's types for "not a mapping" and "not a list"; its words name our classes
_SHAPES = {"model_type": "mapping", "model_attributes_type": "mapping", "dict_type": "mapping",
           "list_type": "list"}
# What an entry of each list section looks like, and the command that writes one.
_ENTRIES = {
    "blogs": ("- {name: My blog, url: https://blog.example.org/feed.xml}", "feedbot follow URL"),
    "arxiv": ("- {name: Vision, category: cs.CV}", "feedbot follow --category cs.CV"),
    "people": ("- {name: Ada Lovelace, arxiv: Ada Lovelace}",
               'feedbot follow "NAME" --arxiv "NAME"'),
}


def _wrong_shape(loc: list[Any], kind: str, value: Any) -> tuple[str, str]:
    """The message and hint for a value that is not the mapping or list its place takes:
    what it should look like (`blogs:` as a list of bare URLs, `blogs: {}`), in the file's
    words rather than pydantic's."""
    got = _value_kind(value)
    if len(loc) == 2 and loc[0] in _ENTRIES and isinstance(loc[1], int):  # blogs[0]
        example, command = _ENTRIES[loc[0]]
        return (f"an entry is a mapping of keys, not {got}",
                f"write it as `{example}`, or add one with `{command}`")
    if len(loc) == 1 and loc[0] in _ENTRIES:  # blogs:
        example, command = _ENTRIES[loc[0]]
        return (f"must be a list of entries, each starting with `- `, not {got}",
                f"an entry looks like `{example}`; `{command}` adds one")
    if _SHAPES[kind] == "list":
        return f"must be a list (`[a, b]`, or one `- item` a line), not {got}", ""
    keys = _allowed_keys(loc)
    return (f"must be a mapping of `key: value` lines, not {got}",
            f"its keys: {', '.join(keys)}" if keys else "")


def _value_kind(value: Any) -> str:
    """A value from the file as a message names it: "the text 'https://…'", "a list"."""
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping ({})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):  # a password in a URL is not repeated in a log or a chat
        return f"the text {shown_value(mask_userinfo(value))}"
    return f"the value {shown_value(value)}"


def line_of(path: Path | None, loc: list[Any]) -> int | None:
    """The line of a key in a sources file, for problems found after validation."""
    if path is None:
        return None
    try:
        doc = parse_yaml(path.read_text(encoding="utf-8"), path)
    except (OSError, ConfigError):
        return None
    return _line_of(doc, loc)[0]


def _line_of(doc: Any, loc: list[Any]) -> tuple[int | None, Any]:
    node, line = doc, 1
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part not in node:  # `1: x`: "1" in loc
                part = next((k for k in node if str(k) == str(part)), part)
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, AttributeError, TypeError):
            break
    return line, node


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(loc: list[Any]) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            return []
        ann = info.annotation
        args = getattr(ann, "__args__", None)
        model = args[0] if args and isinstance(args[0], type) else ann
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return [k for k in model.model_fields if k != "path"]
