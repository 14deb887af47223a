"""Reading a feed whose HTML is hostile: openings HTMLParser cannot finish, repeated.

    python benchmarks/hostile_markup.py [--sizes 10000,20000,40000] [--skip-old-over 60]

Each row is a feed of one item whose HTML is `<p>Visible words.</p>` followed by one opening
repeated to the given number of characters: an RSS item's (escaped) description, or a JSON
Feed item's `content_html`. Two ways of reading it, in the same run:

- **old** — feedbot before this change: for RSS, `feedparser.parse` with its HTML sanitizer
  on, then `HTMLParser` on the raw markup of the description (`html_to_text` without
  `defang`); for JSON Feed, `HTMLParser` on the raw `content_html`;
- **new** — `feedbot.collectors.feeds.parse_feed`: feedparser without its sanitizer, then
  `html_to_text`, which `defang`s the markup first (in one linear pass).

Prints seconds for each and the ratio old / new. An old reading that took longer than
`--skip-old-over` seconds at a size is not run at the larger sizes (its time grows with the
square of the length: it is shown as "—").
"""

from __future__ import annotations

import argparse
import html
import json
import time
from html.parser import HTMLParser

import feedparser

from feedbot.collectors.feeds import parse_feed
from feedbot.text import _TextExtractor

OPENINGS = {
    "<!-- (unclosed comment)": "<!--",
    "<a  (unfinished start tag)": "<a ",
    "</a  (unfinished end tag)": "</a ",
    "<![if >  (marked section)": "<![if >",
    "<a '>  (quote left open)": "<a '>",
    "<p>x</p>  (ordinary markup)": "<p>x</p>",
}


def markup(opening: str, size: int) -> str:
    return "<p>Visible words.</p>" + opening * (size // len(opening))


def rss(opening: str, size: int) -> bytes:
    return ("<?xml version='1.0'?><rss version='2.0'><channel><title>t</title><item>"
            "<title>Hostile post</title><link>https://e.org/1</link>"
            f"<description>{html.escape(markup(opening, size))}</description></item>"
            "</channel></rss>").encode()


def json_feed(opening: str, size: int) -> bytes:
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "t",
                       "items": [{"id": "1", "url": "https://e.org/1", "title": "Hostile post",
                                  "content_html": markup(opening, size)}]}).encode()


def old_text(markup: str) -> str:
    parser = _TextExtractor()
    try:
        HTMLParser.feed(parser, markup)  # the raw markup, as before `defang`
        parser.close()
    except (AssertionError, ValueError):
        pass
    return " ".join(html.unescape("".join(parser.parts)).split())


def read_old(data: bytes) -> str:
    if data.startswith(b"{"):
        return old_text(json.loads(data)["items"][0]["content_html"])
    return old_text(feedparser.parse(data).entries[0].get("summary", ""))


def read_new(data: bytes) -> str:
    return parse_feed(data, "s").items[0].summary


def timed(fn: object, data: bytes) -> tuple[float, str]:
    t = time.perf_counter()
    out = fn(data)  # type: ignore[operator]
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,20000,40000",
                    help="characters of repeated markup, comma-separated")
    ap.add_argument("--skip-old-over", type=float, default=60.0,
                    help="seconds after which the old reading is not run at larger sizes")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| feed | markup repeated | characters | old (s) | new (s) | old / new |")
    print("|---|---|---:|---:|---:|---:|")
    for fmt, make in (("RSS", rss), ("JSON Feed", json_feed)):
        for label, opening in OPENINGS.items():
            skip = False
            for size in sizes:
                data = make(opening, size)
                new_s, new_out = timed(read_new, data)
                assert new_out.startswith("Visible words."), new_out[:80]
                if skip:
                    print(f"| {fmt} | `{label}` | {size:,} | — | {new_s:.3f} | — |")
                    continue
                old_s, _ = timed(read_old, data)
                skip = old_s > args.skip_old_over
                print(f"| {fmt} | `{label}` | {size:,} | {old_s:.3f} | {new_s:.3f} | "
                      f"{old_s / max(new_s, 1e-6):,.0f}× |", flush=True)


if __name__ == "__main__":
    main()
