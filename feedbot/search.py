"""Search what feedbot collected: `feedbot search QUERY` and the bot's `/search QUERY`.

A learner who saw a paper last week wants it back ("that paper on sparse attention"). Stored
items have their vectors cached, so the query is embedded once (a single text: the light ONNX
encoder where it exists, no torch start) and compared with the whole window's matrix from
`Store.candidates`, in numpy. Items of the window that have none (collection embeds only the
last `pipeline.EMBED_WINDOW`: a new blog's older posts) are embedded when a search meets them,
the newest `SEARCH_EMBEDS` at a time, outside its read transaction; the bot's search leaves
them to their words.

Embeddings are weak at names and acronyms ("Karpathy", "LoRA"), so the cosine is blended with
a lexical signal: the words of the query found in an item's title, authors or summary, each
word weighted by how rare it is in the window (IDF), a title or author hit counting twice a
summary hit. `LEXICAL_WEIGHT` was chosen by `benchmarks/search.py` on the dev
set (figures below, at the constant). An arXiv id, an item id or a URL (with or without its
scheme) as the whole query finds that item directly, whatever its date, but only from
`--source` when one is given.

Summaries are searched whole through the store's index of their words (SQLite FTS5, see
`Store.summary_matches`): scanning whole abstracts in Python made a search over 100,000 items
about a fifth slower, the index makes it no slower than scanning their first 400 characters
(see `benchmarks/search.py`). The start of a summary (`SUMMARY_HEAD` characters) is still
scanned where the index cannot answer: for words of scripts written without spaces (FTS5's
unicode61 cuts text at spaces and punctuation, so "注意力" is no word of "稀疏注意力机制"; the
summaries whose start shows such a script are read whole for them, `_whole_unspaced`), for
words with a combining mark the index cuts at (see `Word.indexed`), and for every word where
this SQLite has no FTS5 (some distributions build it without).

Words are compared folded (`text.fold`): lower case, Latin letters without their accents, in
the query, titles, authors and summaries alike, so "Muller" finds "Müller" (and "Müller" finds
"Muller"). The word index folds them the same way (`store.WORDS_TOKENIZER`).

Like the digest: only items of sources the learner follows (`digest.following`), near-
duplicates collapsed into one entry that lists their sources (`rank.select`), and the entries
are `DigestEntry`s, so the digest's renderers show them and 👍/👎/🔖 work on their ids. Unlike
the digest: no stage, recency or feedback in the score (a search is about the query), no
diversity (MMR off), no per-source cap, and it writes nothing but those vectors (the query
is not cached).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import numpy as np

from .config import Config
from .digest import (
    Digest,
    Following,
    Pool,
    _entry,
    _group,
    following,
    labeller,
    source_specs,
    span_text,
    unfollowed_note,
)
from .embed import Embedder
from .items import split_arxiv_id
from .rank import SELECT_POOL, Candidates, Scored, damaged_rows, select
from .roadmap import Roadmap
from .store import ITEM_ID, AmbiguousRef, Store, StoredItem, index_keeps, unwrap_ref
from .text import fold, is_word_char, mend_surrogates, shorten, word_marks

log = logging.getLogger(__name__)

DEFAULT_SINCE = timedelta(days=365)
DEFAULT_LIMIT = 10
# score = cosine + LEXICAL_WEIGHT · (lexical + EVERY_WORD for an item with every query word)
# (cosine and lexical both about 0..1). Measured by benchmarks/search.py
# on 300 dev papers (MRR@10; cosine alone / 0.25 / 0.5 / 0.75 / 1): title without its first
# word 0.966 / 0.998 / 0.998 / 0.998 / 0.998; first author's surname and a title word 0.033 /
# 0.669 / 0.835 / 0.853 / 0.854; a middle sentence of the abstract without the title's words
# (a paraphrase) 0.530 / 0.593 / 0.615 / 0.625 / 0.603 (2: 0.525). 0.5 takes nearly all of the
# gain on names and helps paraphrases too; 0.75 is no better on the half of the queries a
# weight may be chosen on (paraphrase 0.627 against 0.626), so 0.5 stays. (Those figures are
# from before summaries were searched whole; since, at 0.5: title 0.998, surname and a word
# 0.834, paraphrase 0.927, a distinctive word from late in the abstract and a title word 0.877
# (0.483 before). The weight was not chosen again.)
LEXICAL_WEIGHT = 0.5
# Below this blended score an item is not a result: MiniLM gives unrelated texts cosines of
# about -0.1..0.2, so without it every query would "find" ten random items.
MIN_SCORE = 0.3
SEARCH_EMBEDS = 1000  # items of the window without a vector that a search embeds first
# Added to the word signal of an item that holds every word of the query: a rare word found
# only in a summary scored 0.25 and came below items that hold no query word ("TensorRT":
# the three papers naming it came 1st, 4th and 26th). Chosen on half A of
# benchmarks/search.py's queries: MRR@10 with 0, 0.25 and 0.5 there, paraphrase 0.935, 0.988,
# 1.000 and late word 0.862, 0.935, 0.942; half B 0.931 → 1.000 and 0.881 → 0.960.
EVERY_WORD = 0.5
CLOSE_IN_MEANING = 0.45  # a cosine worth calling "close in meaning" next to matched words
SUMMARY_HIT = 0.5  # a word found only in the summary counts half a title or author hit
MAX_WORDS = 12  # query words looked up in the text (a pasted abstract is not a query)
# Longer "words" are left to the meaning: no word is this long, and SQLite refuses a LIKE
# pattern over 50,000 bytes (a 60,000-letter word ended `feedbot search` in a traceback)
MAX_WORD_LENGTH = 100
SUMMARY_HEAD = 400  # characters of a summary scanned for words the word index cannot answer
_ASCII_TOKEN = re.compile(r"\w(?:[\w+#]|[-.'’](?=\w))*")


def _token(query: str = "") -> re.Pattern[str]:
    """A word of the query: a letter or digit, then letters, digits, marks (`word_marks`:
    "मशीन" is one word), "+" and "#" ("c++", "c#"), and "-", ".", "'" between them. An
    ASCII query has no mark: the plain pattern, without compiling the marks' 771 ranges
    (50 ms, once a process)."""
    return _ASCII_TOKEN if query.isascii() else _marked_token()


@cache
def _marked_token() -> re.Pattern[str]:
    return re.compile(rf"\w(?:[\w{word_marks()}+#]|[-.'’](?=\w))*")


def _word_edge(stem: str) -> str:
    """What may not stand before or after a word: a letter, a digit, "_", and for a word of
    another script than ASCII also a mark ("मश" is no word of "मशीन")."""
    return r"\w" if stem.isascii() else rf"[\w{word_marks()}]"


_ASCII_PIECE = re.compile(r"\w+")


def _piece(stem: str) -> re.Pattern[str]:
    return _ASCII_PIECE if stem.isascii() else _marked_piece()


@cache
def _marked_piece() -> re.Pattern[str]:
    return re.compile(rf"[\w{word_marks()}]+")


_STOP_WORDS = """a about above after again al all also am an and any are as at be been before
being below between both but by can could did do does doing down during each et few for from
further had has have having he her here hers him his how i if in into is it its itself just me
more most my no nor not now of off on once only or other our out over own paper papers post
same she should so some such than that the their them then there these they this those through
to too under until up very was we were what when where which while who whom why will with would
you your"""
_STOP = frozenset(_STOP_WORDS.split())
SHOWN = 80  # characters of the query repeated in a heading or a one-line answer
# Said by `feedbot search` and the bot's /search alike (which shows these lines as plain text:
# no command name, no Markdown backticks).
_EXAMPLE = "e.g. “sparse attention”, an arXiv id or a link"
# A link pasted without its scheme: a host with a dot and a path ("lab.example.org/post").
_BARE_LINK = re.compile(r"(?:[\w-]+\.)+[a-z]{2,}(?::\d+)?/\S*", re.IGNORECASE)


class SearchError(ValueError):
    """The search cannot run as asked (no words, an unknown --source): one line for the user."""


@dataclass
class SearchResult(Digest):
    """A search's answer, shaped like a digest (so its renderers and JSON keys apply), with the
    query and what was searched. `stage` is the learner's current stage, for the JSON."""

    query: str = ""
    since: timedelta = DEFAULT_SINCE
    source: str | None = None
    searched: int = 0  # items in the window (of followed sources, of --source)
    unembedded: int = 0  # of those, items without a vector yet: matched by their words only
    direct: bool = False  # the query named one item (arXiv id, item id, URL)
    empty: str = ""  # the one line that says why there are no results

    @property
    def heading(self) -> str:
        """The renderers' header line in place of the digest's stage."""
        where = f" from {self.source}" if self.source else ""
        if self.direct:
            return f"feedbot search — “{_shown(self.query)}”{where}"
        return (f"feedbot search — “{_shown(self.query)}”{where} "
                f"(last {span_text(self.since)}, {self.searched:,} item"
                f"{'s' if self.searched != 1 else ''} searched)")

    @property
    def nothing(self) -> str:
        return ""  # `empty`, among the notes, says why

    def to_json(self, explain: bool = False) -> dict[str, Any]:
        out = super().to_json(explain)
        return {"query": self.query, "since": span_text(self.since), "source": self.source,
                "searched": self.searched, "unembedded": self.unembedded,
                "direct": self.direct, **out}


def _shown(query: str) -> str:
    """The query as a heading or a one-line answer repeats it: a pasted abstract is cut."""
    return shorten(query, SHOWN)


# --- the query's words ----------------------------------------------------------------------

@dataclass(frozen=True)
class Word:
    text: str  # as typed, for "why"
    stem: str  # folded (`text.fold`), without a plural "s": what SQLite looks for
    pattern: re.Pattern[str]  # the stems (and their plurals), not inside another word
    scan: re.Pattern[str]  # the same without the look-behind (see `_rows_matching`)
    whole: bool = True  # False: found inside longer words too (scripts written without spaces)
    also: tuple[str, ...] = ()  # other stems of the word: "class" for "classes" (`_other_stems`)

    @property
    def stems(self) -> tuple[str, ...]:
        return (self.stem, *self.also)

    @property
    def indexed(self) -> bool:
        """Whether the store's word index answers for it as `pattern` would: a whole word
        whose marks the index keeps as they are (`store.index_keeps`: the vowel signs and
        viramas of Indic scripts, not the accents remove_diacritics takes off, nor any where
        this SQLite cuts words at marks). Another is looked for in the start of each summary,
        as before the index."""
        if not self.whole:
            return False
        marks = {c for s in self.stems for c in s if unicodedata.category(c)[0] == "M"}
        return not marks or marks <= index_keeps()


# Scripts written without spaces between words (Chinese, Japanese kana, Thai, Lao, Khmer,
# Myanmar): a "word" of the query is found inside a longer run of such characters.
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff"
                       "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


_NOT_PLURAL = frozenset({"news", "series", "species", "lens", "physics", "ethics"})


def _plural(tok: str) -> bool:
    """Whether a query word ending in "s" is taken for a plural, its singular looked up too:
    a word in lower case ("transformers") or an acronym's plural ("LLMs", "NeRFs"), but not a
    capitalised word, most often a name ("Williams" is not "William", "Adams" not "Adam",
    "Pandas" not "panda"), nor "news" (not "new")."""
    if tok.lower() in _NOT_PLURAL:
        return False
    return tok.islower() or tok[:-1].isupper() or tok[-2].isupper()  # "NeRFs", "ViTs"


_SIBILANT = ("ss", "sh", "ch", "x", "z")  # "-es" after these is a plural's: "classes", "boxes"
_SIBILANT_S = ("as", "is", "us")  # ... and after these, in a longer word: "biases", "viruses"


def _other_stems(low: str, plural: bool) -> tuple[str, ...]:
    """Stems a word has beside its own (`low` folded, `plural`: taken for a plural).

    A plural in "-es" is its stem with "es" ("classes" → "class", "patches" → "patch",
    "biases" → "bias") when what is left ends as such a singular does; "caches", "uses",
    "cases" keep "cache", "use", "case" (and "cach" beside "cache" finds nothing more). A
    word in "-as" is also its own stem ("bias" finds "biases", as "ideas" finds "idea"). A
    plural in "-ies" is its stem with "y" ("policies" → "policy"), and a word in "-y" after a
    consonant has its "-ies" plural looked up too ("library" finds "libraries"): each stem is
    looked for with "", "s" or "es" after it, so "librari" finds "libraries"."""
    if plural:
        if len(low) > 5 and low.endswith("ies"):
            return (low[:-3] + "y",)
        if low.endswith("es"):
            rest = low[:-2]
            if len(rest) >= 3 and rest.endswith(_SIBILANT) \
                    or len(rest) >= 4 and rest.endswith(_SIBILANT_S):
                return (rest,)
        if low.endswith("as"):  # "bias" may be a singular: "biases" too (and "ideas" → "idea")
            return (low,)
        return ()
    if len(low) >= 4 and low.endswith("y") and low[-2] not in "aeiouy" and low.isalpha():
        return (low[:-1] + "i",)
    return ()


def _sentence_start(first: str, rest: Sequence[str]) -> bool:
    """Whether the query's first word is capitalised only as the start of a sentence: a word
    of lower case after the capital, and a word of the rest of the query in lower case that
    says something (not a stop word: "Williams et al" is a name)."""
    return first[:1].isupper() and first[1:].islower() and any(
        t.islower() and t not in _STOP and len(t) > 1 for t in rest)


def query_words(query: str) -> list[Word]:
    """The words of the query worth looking up: no stop words, no one-letter words (but
    digits: "3d", "gpt-4" stay whole), each once, at most `MAX_WORDS`. A first word
    capitalised as a sentence starts ("Transformers for tables", as a phone writes it) is
    taken as in lower case when another word of the query is: a plural then, not a name."""
    out: dict[str, Word] = {}
    tokens = _token(query).findall(query)
    for n, tok in enumerate(tokens):
        low = fold(tok)
        if low in _STOP or (len(low) < 2 and not low.isdigit()) or low in out \
                or len(low) > MAX_WORD_LENGTH:
            continue
        stem = low
        cased = tok.lower() if n == 0 and _sentence_start(tok, tokens[1:]) else tok
        acronyms = len(cased) > 2 and cased.endswith("s") and cased[:-1].isupper()  # "GPUs"
        plural = len(low) > 3 and low.endswith("s") and _plural(cased) \
            and (acronyms or not low.endswith(("ss", "us", "is", "os")))
        if plural:
            stem = low[:-1]  # "transformers" finds "transformer" too
        if _UNSPACED.search(low):
            found = re.compile(re.escape(stem))
            out[low] = Word(tok, stem, found, found, whole=False)
        else:
            also = _other_stems(low, plural) if cased.islower() or plural else ()
            # folded, not IGNORECASE: the texts are folded once. A hyphen of the query
            # matches a hyphen, a space or nothing: "self-attention" finds "self attention".
            literal = "|".join(re.escape(s).replace(r"\-", "[- ]?") for s in (stem, *also))
            edge = _word_edge(stem)
            tail = rf"(?:{literal})(?:s|es)?(?!{edge})"
            out[low] = Word(tok, stem, re.compile(rf"(?<!{edge}){tail}"), re.compile(tail),
                            also=also)
        if len(out) == MAX_WORDS:
            break
    return list(out.values())


@dataclass
class Lexical:
    """The lexical signal of every candidate row, and which words each matched row had."""

    score: np.ndarray  # (n,) in [0, 1]
    every: np.ndarray  # (n,) bool: the row has every word of the query, somewhere
    title: dict[int, list[str]] = field(default_factory=dict)  # row → words in its title
    author: dict[int, list[str]] = field(default_factory=dict)  # row → matching author names
    summary: dict[int, list[str]] = field(default_factory=dict)  # row → words in its summary
    shared: dict[int, list[str]] = field(default_factory=dict)  # row → words in a post sharing it


def lexical(store: Store, words: Sequence[Word], ids: Sequence[str], titles: Sequence[str],
            heads: Sequence[str], since: datetime | None) -> Lexical:
    """IDF-weighted share of the query's words found in each row's title or authors (1) or
    only in its summary (`SUMMARY_HIT`; see `_in_summaries`, `heads` are the summaries' first
    `SUMMARY_HEAD` characters).

    Titles are searched as one folded text (a match's offset tells its row): one regex
    scan per word, not one per row, which at 100,000 items is the difference between a tenth
    of a second and several. Summaries and authors are looked up in SQLite."""
    n = len(ids)
    out = Lexical(np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool))
    if not words or not n:
        return out
    row = {iid: i for i, iid in enumerate(ids)}
    in_title = _rows_matching(words, titles)
    in_head = _in_summaries(store, words, heads, row)
    by_author: list[dict[int, list[str]]] = [{} for _ in words]
    for iid, authors in store.author_matches([s for w in words for s in w.stems], since):
        i = row.get(iid)
        if i is None:  # outside the candidates: an unfollowed source's, another --source's
            continue
        for k, w in enumerate(words):
            names = [a for a in authors.split("\n") if a and w.pattern.search(fold(a))]
            if names:
                by_author[k][i] = names
    strong: list[np.ndarray] = []  # per word: rows with it in the title or an author
    weak: list[np.ndarray] = []  # per word: rows with it only at the start of the summary
    for k, w in enumerate(words):
        authors_k = np.fromiter(by_author[k], dtype=np.int64, count=len(by_author[k]))
        strong.append(np.union1d(in_title[k], authors_k))
        weak.append(np.setdiff1d(in_head[k], strong[k], assume_unique=True))
        for i in in_title[k].tolist():
            out.title.setdefault(i, []).append(w.text)
        for i, names in by_author[k].items():
            out.author.setdefault(i, []).extend(names)
        for i in weak[k].tolist():
            out.summary.setdefault(i, []).append(w.text)
    # How common a word is: its summary hits count as they score, half a title or author hit.
    # Whole summaries hold three times the words of their first 400 characters: counted whole,
    # a title word that many abstracts mention ("data", "model") weighed next to nothing
    # beside a surname (benchmarks/search.py, surname and title word: 0.829 against 0.834).
    df = np.array([len(strong[k]) + SUMMARY_HIT * len(weak[k]) for k in range(len(words))],
                  dtype=float)
    idf = np.log((n + 1) / (df + 1)) + 1e-3  # a word in every row still counts a little
    weights = idf / idf.sum()
    found = np.zeros(n, dtype=np.int64)
    for k in range(len(words)):
        out.score[strong[k]] += weights[k]
        out.score[weak[k]] += weights[k] * SUMMARY_HIT
        found[strong[k]] += 1
        found[weak[k]] += 1
    out.every = found == len(words)
    return out


def _in_summaries(store: Store, words: Sequence[Word], heads: Sequence[str],
                  row: dict[str, int]) -> list[np.ndarray]:
    """For each word, the rows (`row`: id → row) whose summary holds it: anywhere in it through
    the store's word index; else (no index, a word of a script without spaces) in its first
    `SUMMARY_HEAD` characters (`heads`)."""
    found: list[np.ndarray | None] = [None] * len(words)
    for k, w in enumerate(words):
        if not w.indexed:
            continue
        match, check = summary_query(w)
        hits = store.summary_matches(match, with_text=check)
        if hits is None:  # no word index in this database or this SQLite: heads for all
            found = [None] * len(words)
            break
        at = [row[i] for i, text in hits
              if i in row and (not check or w.pattern.search(fold(text)))]
        found[k] = np.unique(np.array(at, dtype=np.int64))
    rest = [k for k, f in enumerate(found) if f is None]
    texts = heads
    if any(not words[k].whole for k in rest):
        texts = _whole_unspaced(store, heads, row)
    for k, f in zip(rest, _rows_matching([words[k] for k in rest], texts) if rest else [],
                    strict=True):
        found[k] = f
    return [f if f is not None else np.zeros(0, dtype=np.int64) for f in found]


def _whole_unspaced(store: Store, heads: Sequence[str], row: dict[str, int]) -> list[str]:
    """`heads`, with the whole summary in place of each head that was cut and holds a character
    of a script written without spaces. The word index cannot answer for such words (see the
    module docstring), and a summary written in Chinese or Japanese shows it in its first
    characters: only those few summaries are read whole, not every one."""
    cut = [i for i, head in enumerate(heads) if len(head) >= SUMMARY_HEAD
           and not head.isascii() and _UNSPACED.search(head)]
    if not cut:
        return list(heads)
    ids = {i: iid for iid, i in row.items()}
    whole = store.summaries([ids[i] for i in cut])
    texts = list(heads)
    for i in cut:
        texts[i] = whole.get(ids[i], heads[i])
    return texts


MAX_JOINS = 3  # separators of a word whose joined spellings are all looked up ("self-attention")


def summary_query(w: Word) -> tuple[str, bool]:
    """The FTS5 query for the summaries that hold the word as `w.pattern` finds it (each of
    its stems, or it with "s" or "es"), and whether its hits must still be checked with `w.pattern`.

    The index's words are runs of letters, digits and "_", folded (`WORDS_TOKENIZER`): a
    word that is one such run is looked up as it is, exactly. A word of runs joined by hyphens
    ("self-attention", "gpt-4"), each of which `w.pattern` lets be a hyphen, a space or
    nothing, is looked up as every way of joining its runs ("self attention", a phrase, and
    "selfattention"); the phrase also takes other punctuation between its runs ("self/
    attention"), which is left so: checking each hit's text cost a second for a common
    phrase ("state-of-the-art": 18,000 of 100,000 summaries). A word with other separators
    ("node.js", "c++", "don't") is looked up as the phrase of its runs, a superset ("node js",
    "c"): the caller checks those hits."""
    ends = ("", "s", "es")
    spellings: list[str] = []
    check = False
    for stem in w.stems:
        pieces = _piece(stem).findall(stem)
        if stem.isalnum():
            spellings.append(stem)
        elif not re.fullmatch(r"\w+(?:-\w+)*", stem):
            spellings.append(" ".join(pieces))
            check = True
        elif 1 < len(pieces) - 1 <= MAX_JOINS:  # each hyphen a space or nothing: every join
            gaps = len(pieces) - 1
            spellings += ["".join(p + (" " if (mask >> g) & 1 else "")
                                  for g, p in enumerate(pieces)).strip()
                          for mask in range(2 ** gaps)]
        else:
            spellings += [" ".join(pieces), "".join(pieces)]
    terms = dict.fromkeys(f'"{s}{end}"' for s in spellings for end in ends)
    return " OR ".join(terms), check


SCAN_CHUNK = 4096  # texts joined and scanned at a time: bounded memory (a joined text with one
# emoji is stored 4 bytes a character), no slower than one joined text for them all


def _rows_matching(words: Sequence[Word], texts: Sequence[str]) -> list[np.ndarray]:
    """For each word, the (sorted, unique) indices of the texts that hold it."""
    found: list[list[np.ndarray]] = [[] for _ in words]
    for first in range(0, len(texts), SCAN_CHUNK):
        lowered = [fold(t) for t in texts[first:first + SCAN_CHUNK]]  # length may change
        starts = np.cumsum([0] + [len(t) + 1 for t in lowered[:-1]])
        blob = "\n".join(lowered)
        for k, w in enumerate(words):
            # A pattern that starts with its literal is searched for 15-25 times faster than
            # one that starts with a look-behind (4.4 MB of abstracts: 7 ms against 110 ms):
            # the start of a word is checked here instead.
            at = np.fromiter((m.start() for m in w.scan.finditer(blob)
                              if not w.whole or not m.start()
                              or not is_word_char(blob[m.start() - 1])),
                             dtype=np.int64)
            if len(at):
                found[k].append(np.unique(np.searchsorted(starts, at, side="right") - 1)
                                + first)
    return [np.concatenate(f) if f else np.zeros(0, dtype=np.int64) for f in found]




# --- the search -----------------------------------------------------------------------------

def search(cfg: Config, store: Store, embedder: Embedder, roadmap: Roadmap, query: str, *,
           now: datetime, since: timedelta | None = None, limit: int = DEFAULT_LIMIT,
           source: str | None = None, lexical_weight: float = LEXICAL_WEIGHT,
           further: str = "; a longer --since looks further back",
           echo: Callable[[str], None] | None = None,
           embeds: int = SEARCH_EMBEDS) -> SearchResult:
    """The stored items that best match `query`, best first (see the module docstring).

    further: what the note on an empty window says to look further back (the bot has no
    --since). embeds: how many of the window's items without a vector to embed when the
    search finds some (0: none, they are matched by words only). Raises SearchError for a
    query without words and for an unknown `source`.
    """
    query = " ".join(readable(query).split())
    if not query:
        raise SearchError(f"search for what? give some words, {_EXAMPLE}")
    follows = following(cfg, store)  # may record sources.yaml's edits: a write, so not below

    def run() -> SearchResult:
        # One state of the database for every read: an item pruned by another process
        # meanwhile is still there to show (it was when the search began), not a KeyError.
        with store.snapshot():
            return _search(cfg, store, embedder, roadmap, query, follows, now=now, since=since,
                           limit=limit, source=source, lexical_weight=lexical_weight,
                           further=further, embeds=embeds)

    result = run()
    if result.unembedded and embeds > 0 and _embedded(store, embedder, now, since, embeds, echo):
        result = run()  # those items are found by meaning too
    return result


def _embedded(store: Store, embedder: Embedder, now: datetime, since: timedelta | None,
              embeds: int, echo: Callable[[str], None] | None) -> bool:
    """Embed the window's items that have no vector, the newest `embeds` of them (collection
    embeds only the last `EMBED_WINDOW`: a new blog's older posts have none). Outside the
    search's read transaction, as a write. False when it could not: the search then goes on
    by words, and its note says how many it missed."""
    from .pipeline import embed_pending

    try:
        return embed_pending(store, embedder, now, echo, since=now - (since or DEFAULT_SINCE),
                             limit=embeds) > 0
    except Exception as e:  # noqa: BLE001 - the model, the disk: words still find them
        from .embed import EmbedSettingError

        if isinstance(e, EmbedSettingError):  # searching again cannot mend it: say why
            log.warning("searching by words only: %s", e)
        else:
            log.debug("could not embed the items without a vector: %s", e, exc_info=True)
        return False


def readable(query: str) -> str:
    """The query as text every part of the search takes: bytes a terminal sent that were not
    UTF-8 (Python keeps each as a lone surrogate, which the tokenizer and SQLite refuse) become
    U+FFFD; and letters pasted as a base and a combining accent (as text copied from a PDF often
    is: "o" and U+0308 for "ö") are composed (NFC), as the texts searched mostly are."""
    return unicodedata.normalize("NFC", mend_surrogates(query))


def _search(cfg: Config, store: Store, embedder: Embedder, roadmap: Roadmap, query: str,
            follows: Following, *, now: datetime, since: timedelta | None, limit: int,
            further: str, source: str | None, lexical_weight: float,
            embeds: int) -> SearchResult:
    since = since or DEFAULT_SINCE
    stage = roadmap.get(cfg.learner.stage)
    label = labeller(source_specs(cfg, follows))
    names = _source_names(cfg, follows, source) if source is not None else None
    result = SearchResult(stage, now, [], query=query, since=since, source=source,
                          timezone=cfg.learner.timezone)
    named = _named_item(store, query)
    if named is not None:
        return _direct(result, store, named, follows, label, names)
    tokens = _token(query).findall(query)
    if not tokens:
        raise SearchError(f"nothing to search for in “{_shown(query)}”: give some words, "
                          f"{_EXAMPLE}")
    if all(t.lower() in _STOP for t in tokens):
        # nothing to look up, and nothing to mean: MiniLM puts "the of and" or "what is
        # this" below MIN_SCORE to every dev paper (at most 0.25), so the answer would be
        # "nothing matches", as if the store lacked what was never asked for
        raise SearchError(f"“{_shown(query)}” has only common words: say what the item is "
                          f"about, {_EXAMPLE}")
    if store.item_count() == 0:  # before the model: a new home would measure backends first
        result.empty = ("nothing collected yet: run `feedbot collect` first, then search what "
                        "it brings")
        result.notes.append(result.empty)
        return result
    rows = store.candidates(embedder.model_id, now - since, head=SUMMARY_HEAD,
                            hidden=follows.hidden, rename=follows.renamed)
    keep = np.arange(len(rows))
    if names is not None:
        of_source = store.item_ids_of_sources(names)
        keep = np.array([i for i, iid in enumerate(rows.ids) if iid in of_source], dtype=int)
    result.searched = len(keep)
    result.candidates = len(keep)
    if not len(keep):
        result.empty = _nothing_here(store, now, since, source, follows, len(rows), further)
        result.notes.append(result.empty)
        return result
    every = len(keep) == len(rows)
    ids = rows.ids if every else [rows.ids[i] for i in keep]
    X = rows.X if every else rows.X[keep]
    missing = np.zeros(len(rows), dtype=bool)
    missing[rows.missing] = True
    missing = missing[keep]
    if X.size and (damaged := damaged_rows(X) & ~missing).any():
        # a damaged cached vector (NaN, all zeros) scored NaN: such an item is found by its
        # words only, as one not embedded yet; the next digest embeds it again
        X = X.copy()
        X[damaged] = 0.0
        missing |= damaged
    result.unembedded = int(missing.sum())
    cos = np.zeros(len(ids), dtype=np.float32)
    if result.unembedded < len(ids):
        q = embedder.embed([query])[0].astype(np.float32)
        q /= np.linalg.norm(q) or 1.0
        if X.shape[1] == q.shape[0]:
            cos = X @ q
            cos[missing] = 0.0

    def col(values: list[Any]) -> list[Any]:
        return values if every else [values[i] for i in keep]

    words = query_words(query)
    lex = lexical(store, words, ids, col(rows.titles), col(rows.heads), now - since)
    score = cos + lexical_weight * (lex.score + EVERY_WORD * lex.every)
    _fold_shares(store, ids, col(rows.kinds), score, lex)
    links = col(rows.links)
    sources = col(rows.sources)
    cands = Candidates(
        sources=sources, age_days=np.zeros(len(ids)), titles=col(rows.titles),
        shared_by=[()] * len(ids), summaries=col(rows.heads),
        groups=[_group(i, lk) if lk or i[:6] == "arxiv:" else ""
                for i, lk in zip(ids, links, strict=True)])
    picked = select(X, score, cands, limit, 1.0, len(ids) + 1, cfg.ranking.duplicate,
                    SELECT_POOL)
    # a result: close enough in meaning and words, or holding every word of the query (one
    # rare word in a summary scores under MIN_SCORE, and the model places it nowhere)
    picked = [(i, also) for i, also in picked if score[i] >= MIN_SCORE
              or (lexical_weight > 0 and lex.every[i])]
    if result.unembedded:
        n = result.unembedded
        result.notes.append(
            f"{n:,} item{'s' if n != 1 else ''} searched {'have' if n != 1 else 'has'} no vector "
            f"yet: matched by {'their' if n != 1 else 'its'} words only"
            + (f" (a search embeds up to {embeds:,} first, the newest: search again for more)"
               if embeds else " (`feedbot search` in a terminal embeds them)"))
    if not picked:
        result.empty = (f"nothing matches “{_shown(query)}” in the last {span_text(since)}"
                        + (f" from {source}" if source else "")
                        + f" ({len(ids):,} item{'s' if len(ids) != 1 else ''} searched)")
        result.notes.append(result.empty)
        return result
    pool = Pool(ids, cands, X, follows=follows, sharers=store.sharers(hidden=follows.hidden))
    for i, also in picked:
        why = _why(i, lex, float(cos[i]))
        sc = Scored(i, float(score[i]), {"meaning": float(cos[i]),
                                         "words": float(lex.score[i]),
                                         "every word": float(lex.every[i])}, why, also)
        main, *rest = pool.items(store, [i, *also])
        result.items.append(_entry(main, rest, sc, label, pool, sources[i]))
    result.weights = {"meaning": 1.0, "words": lexical_weight,
                      "every word": lexical_weight * EVERY_WORD}
    return result


def _fold_shares(store: Store, ids: Sequence[str], kinds: Sequence[str], score: np.ndarray,
                 lex: Lexical) -> None:
    """As the digest lists a post that shares a stored item as that item's "shared by", not
    beside it: a post whose item is among the candidates gives the item its score when it
    scores higher (the post's words found it), and is no result of its own. A vote on the
    post left the story in the next digest."""
    posts = [iid for iid, kind in zip(ids, kinds, strict=True) if kind == "social"]
    shared = store.shares(posts) if posts else {}
    if not shared:
        return
    at = {iid: k for k, iid in enumerate(ids)}
    for post, target in shared.items():
        if target in at and post in at:
            t, p = at[target], at[post]
            if score[p] > score[t]:
                score[t] = score[p]
                lex.every[t] |= lex.every[p]
                found = [*lex.title.get(p, []), *lex.summary.get(p, []), *lex.author.get(p, [])]
                if found:
                    lex.shared[t] = found
            score[p] = -np.inf
            lex.every[p] = False


def _why(i: int, lex: Lexical, cos: float) -> str:
    """What matched: the query's words in the title, an author, the summary; the meaning."""
    parts = []
    if i in lex.title:
        parts.append(_quoted(lex.title[i]) + " in the title")
    if i in lex.author:
        names = list(dict.fromkeys(lex.author[i]))
        parts.append("by " + ", ".join(names[:3]))
    if i in lex.summary and i not in lex.title:
        parts.append(_quoted(lex.summary[i]) + " in the summary")
    if i in lex.shared:
        parts.append(_quoted(lex.shared[i]) + " in a post sharing it")
    if cos >= CLOSE_IN_MEANING or not parts:
        parts.append(f"close in meaning ({cos:.2f})")
    return "; ".join(parts)


def _quoted(words: list[str]) -> str:
    return ", ".join(f"“{w}”" for w in dict.fromkeys(words))


# the items named (none: not stored; several: the entries of the page a link names), how they
# were named, the reference
Named = tuple[list[StoredItem], str, str]


def _named_item(store: Store, query: str) -> Named | None:
    """(the items, how they were named, the reference) when the whole query is an arXiv id,
    an item id or a URL; ([], how, reference) when it names an item that is not stored; None
    for words to search for. A reference pasted from the end of a sentence ("…/post.",
    "2106.09685,") is looked up without the punctuation where it is not found with it."""
    ref = unwrap_ref(query)
    if " " in ref:
        return None
    named = _named(store, ref)
    trimmed = unwrap_ref(ref.rstrip(_SENTENCE_END))
    if trimmed and trimmed != ref and (named is None or not named[0]):
        return _named(store, trimmed) or named
    return named


_SENTENCE_END = ".,;:!?"


def _named(store: Store, ref: str) -> Named | None:
    aid, _ = split_arxiv_id(ref)
    bare = not aid and "://" not in ref and bool(_BARE_LINK.fullmatch(ref))
    how = ("arXiv id" if aid else "link" if "://" in ref or ref.startswith("www.") or bare
           else "id" if ITEM_ID.fullmatch(ref) else "")
    if not how:
        return None
    try:
        found = store.get_item(ref)
    except AmbiguousRef as e:  # a page of several entries: the learner picks one
        return e.items, how, ref
    if found is None and (how == "id" or bare):
        return None  # twelve hex digits are a word too ("deadbeefcafe"), and "cs.CL/cs.LG"
    return [found] if found is not None else [], how, ref


def _direct(result: SearchResult, store: Store, named: Named,
            follows: Following, label: Callable[[str], str],
            names: set[str] | None = None) -> SearchResult:
    """The item the query named (or every entry of the page a link names), whatever its date
    and whether its source is still followed (the learner asked for it), but from `--source`
    when one is given (`names`); else one line saying why not."""
    items, how, ref = named
    result.direct = True
    what = (f"has the arXiv id {split_arxiv_id(ref)[0]}" if how == "arXiv id"
            else f"is at {_shown(ref)}" if how == "link" else f"has the id {ref.lower()}")
    chosen = [s for s in items if not s.item.withdrawn]
    why_not = _none_shown(store, items, what, ref) if not chosen else ""
    if chosen and names is not None:
        chosen = [s for s in chosen if names & set(s.sources)]
        if not chosen:
            came = ", ".join(dict.fromkeys(label(follows.name(n)) for s in items
                                           for n in s.sources))
            why_not = (f"the stored item that {what} is not from {result.source}: it came "
                       f"from {came}" if len(items) == 1 else f"none of the {len(items)} "
                       f"stored items at {_shown(ref)} is from {result.source}: they came "
                       f"from {came}")
    if why_not:
        result.empty = why_not
        result.notes.append(why_not)
        return result
    pool = Pool([s.id for s in chosen], Candidates.of([]),
                np.zeros((len(chosen), 0), np.float32), {s.id: s for s in chosen},
                follows, store.sharers(hidden=follows.hidden))
    why = (f"one of the {len(items)} items on this page" if len(items) > 1
           else "the item at this link" if how == "link" else f"the item with this {how}")
    for s in chosen:
        own = next((follows.name(n) for n in s.sources
                    if (n in names if names is not None else n not in follows.hidden)),
                   s.sources[0])
        result.items.append(_entry(s, [], Scored(0, 1.0, {}, why), label, pool, own))
    result.searched = result.candidates = len(chosen)
    return result


def _none_shown(store: Store, items: list[StoredItem], what: str, ref: str) -> str:
    """Why a direct search shows nothing: the named item is not stored, or was withdrawn."""
    if not items:
        return (f"the paper that {what} was withdrawn by its authors on arXiv, and feedbot "
                "removed it" if store.was_withdrawn(ref) else
                f"no stored item {what}: feedbot has not collected it (or it was pruned)")
    if len(items) > 1:
        return (f"the {len(items)} stored items at {_shown(ref)} were all withdrawn by their "
                "authors on arXiv: they are kept for the votes and read-later lists that have "
                "them, and searches and digests leave them out")
    return (f"the stored paper that {what} was withdrawn by its authors on arXiv: it is kept "
            "for the votes and read-later lists that have it, and searches and digests leave "
            "it out")


def _source_names(cfg: Config, follows: Following, source: str) -> set[str]:
    """The stored source names `--source` means: a configured source's name, label or person
    (case-insensitively), with the old names of a renamed one."""
    from .collect import select_sources

    if not source.strip():
        raise SearchError("--source needs the name of a source or person; see "
                          "`feedbot sources`")
    try:
        chosen = {s.name for s in select_sources(cfg, source)}
    except KeyError as e:
        raise SearchError(e.args[0]) from None
    chosen |= {old for old, new in follows.renamed.items() if new in chosen}
    return chosen


def _nothing_here(store: Store, now: datetime, since: timedelta, source: str | None,
                  follows: Following, in_window: int, further: str) -> str:
    """Why a search of a non-empty store found nothing in its window (`_search` says when the
    store is empty, before it needs the model)."""
    if source is not None and in_window:
        return f"nothing from {source} in the last {span_text(since)}"
    hidden = store.count_hidden(now - since, follows.hidden)
    if hidden:
        return unfollowed_note(hidden, since)
    # the window goes by the items' dates (an article collected today may be years old)
    return f"nothing published in the last {span_text(since)}{further}"
