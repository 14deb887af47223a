"""OPML: parsing real subscription lists (NetNewsWire's), refusing DOCTYPEs, rendering the
config, and `import-opml` / `export-opml` round trips through sources.yaml."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from feedbot.cli import main
from feedbot.config import load_config
from feedbot.follow import add_blogs
from feedbot.items import canonical_url
from feedbot.opml import OpmlError, parse_opml, render_opml
from feedbot.sources_edit import atomic_write

NNW = "feeds/netnewswire"

SOURCES = """\
# my sources
learner:
  stage: nlp

blogs:
  - name: Jay Alammar   # transformers, illustrated
    url: https://jalammar.github.io/feed.xml

people:
  - name: Ada Example
    x: ada_ex
    bluesky: ada.bsky.social
    mastodon: "@ada@sigmoid.social"
    arxiv: Ada Example
    blog: https://ada.example.net/atom.xml
"""


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(SOURCES, encoding="utf-8")
    return p


def opml(body: str, head: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{head}<opml version="2.0"><head>'
            f"<title>t</title></head><body>{body}</body></opml>").encode()


# --- parsing ----------------------------------------------------------------------------------

def test_real_netnewswire_list_with_nested_folders(corpus: Path) -> None:
    feeds = parse_opml((corpus / NNW / "Subs.opml").read_bytes())
    assert len(feeds) == 207 and len({url for _, url, _ in feeds}) == 207
    by_url = {url: (title, page) for title, url, page in feeds}
    assert by_url["http://daringfireball.net/feeds/main"] == ("Daring Fireball",
                                                              "http://daringfireball.net/")
    assert by_url["http://corinnekrych.blogspot.com/feeds/posts/default"][0] == "chat & code"
    assert by_url["http://jvns.ca/atom.xml"] == ("Julia Evans", "")  # htmlUrl="" stays empty
    assert "Programming" not in {t for t, _, _ in feeds}  # folders are not feeds


def test_missing_title_attributes_fall_back_to_text(corpus: Path) -> None:
    with_titles = parse_opml((corpus / NNW / "Subs.opml").read_bytes())
    without = parse_opml((corpus / NNW / "SubsNoTitleAttributes.opml").read_bytes())
    assert [(t, u) for t, u, _ in without] == [(t, u) for t, u, _ in with_titles]


def test_no_title_or_text_uses_the_url_and_attributes_are_case_insensitive() -> None:
    feeds = parse_opml(opml('<outline text="Folder"><outline type="rss" xmlurl="https://a.example'
                            '/f"/><outline XMLURL="https://b.example/f" title="B"/></outline>'))
    assert feeds == [("https://a.example/f", "https://a.example/f", ""),
                     ("B", "https://b.example/f", "")]


@pytest.mark.parametrize("data", [
    opml('<outline xmlUrl="&lol;"/>',
         '<!DOCTYPE opml [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>\n'),
    opml('<outline xmlUrl="https://a.example/f"/>',
         '<!DOCTYPE opml SYSTEM "file:///etc/passwd">\n'),
])
def test_doctypes_and_entities_are_refused(data: bytes) -> None:
    with pytest.raises(OpmlError, match="DOCTYPE"):
        parse_opml(data)


@pytest.mark.parametrize(("data", "message"), [
    (b"<opml><body><outline", "not valid XML"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "root element is <rss>"),
    (b'<?xml version="1.0" encoding="bogus-enc"?><opml><body/></opml>',
     "not valid XML: unknown encoding: bogus-enc"),  # a LookupError out of expat, once
])
def test_not_opml_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(OpmlError, match=message):
        parse_opml(data)


# --- rendering --------------------------------------------------------------------------------

def test_render_lists_blogs_and_peoples_feeds_only(sources: Path) -> None:
    text = render_opml(load_config(sources))
    feeds = parse_opml(text.encode())
    assert feeds == [
        ("Jay Alammar", "https://jalammar.github.io/feed.xml", ""),
        ("Ada Example on Bluesky", "https://bsky.app/profile/ada.bsky.social/rss",
         "https://bsky.app/profile/ada.bsky.social"),
        ("Ada Example on Mastodon", "https://sigmoid.social/@ada.rss",
         "https://sigmoid.social/@ada"),
        ("Ada Example on their blog", "https://ada.example.net/atom.xml", ""),
    ]  # X and arXiv have no feed a reader could use
    assert '<outline text="Blogs"' in text and '<outline text="People"' in text


def test_render_escapes_names() -> None:
    cfg = load_config("s.yaml", text='blogs:\n  - name: "A & B <C> \\"D\\""\n'
                                     "    url: https://e.example/f?a=1&b=2\n")
    [(title, url, _)] = parse_opml(render_opml(cfg).encode())
    assert (title, url) == ('A & B <C> "D"', "https://e.example/f?a=1&b=2")


# --- import and export ------------------------------------------------------------------------

def test_import_real_list_then_export_round_trip(sources: Path, corpus: Path) -> None:
    feeds = parse_opml((corpus / NNW / "Subs.opml").read_bytes())
    report = add_blogs(sources, feeds)
    assert len(report.added) + len(report.skipped) == 207 and len(report.added) > 200
    # the list has two feeds twice (http and https): nothing here was followed before
    assert [why for _, why in report.skipped] == ["the same feed as 'Katie Floyd' just added",
                                                  "the same feed as 'Natasha the Robot' just "
                                                  "added"]
    text = sources.read_text()
    assert text.startswith("# my sources\n") and "# transformers, illustrated" in text
    cfg = load_config(sources)
    assert len({b.name.casefold() for b in cfg.blogs}) == len(cfg.blogs) == 1 + len(report.added)

    exported = {canonical_url(url) for _, url, _ in parse_opml(render_opml(cfg).encode())}
    assert {canonical_url(url) for _, url, _ in feeds} <= exported  # skipped = same feed twice

    before = sources.read_bytes()
    again = add_blogs(sources, feeds)
    assert again.added == [] and sources.read_bytes() == before


def test_cli_import_and_export(sources: Path, tmp_path: Path, corpus: Path) -> None:
    runner = CliRunner()
    src = corpus / NNW / "SubsNoTitleAttributes.opml"
    r = runner.invoke(main, ["--sources", str(sources), "import-opml", str(src)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("added Daring Fireball")
    assert "(207 feeds in SubsNoTitleAttributes.opml)" in r.output

    out = tmp_path / "export.opml"
    r = runner.invoke(main, ["--sources", str(sources), "export-opml", "-o", str(out)])
    assert r.exit_code == 0, r.output
    r2 = runner.invoke(main, ["--sources", str(sources), "export-opml"])
    assert r2.stdout == out.read_text()
    urls = {u for _, u, _ in parse_opml(out.read_bytes())}
    assert "http://daringfireball.net/feeds/main" in urls
    assert "https://sigmoid.social/@ada.rss" in urls


def test_cli_import_refuses_a_bad_file(sources: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.opml"
    atomic_write(bad, '<!DOCTYPE x [<!ENTITY a "b">]><opml/>')
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(bad)])
    assert r.exit_code == 2 and "DOCTYPE" in r.output
    assert sources.read_text() == SOURCES


def test_import_skips_malformed_feeds_and_imports_the_others(sources: Path,
                                                             tmp_path: Path) -> None:
    f = tmp_path / "mixed.opml"
    f.write_bytes(opml('<outline title="Good" xmlUrl="https://good.example/feed"/>'
                       '<outline title="V6" xmlUrl="http://[fe80::1/feed"/>'
                       '<outline title="Port" xmlUrl="http://127.0.0.1:99999/feed"/>'
                       '<outline title="CSI &#x9b;31m" xmlUrl="https://csi.example/feed"/>'
                       '<outline title="Also good" xmlUrl="https://also.example/feed"/>'))
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(f)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        "added Good", "added CSI 31m", "added Also good",
        "skipped V6: not a valid URL (Invalid IPv6 URL)",
        "skipped Port: not a valid URL (Port out of range 0-65535)",
        "3 added, 2 skipped (5 feeds in mixed.opml)"]
    # a title's control character (a terminal escape) is a space in the name: the feed was
    # skipped for it, though `follow` names a feed by such a title the same way
    assert [b.name for b in load_config(sources).blogs] == ["Jay Alammar", "Good", "CSI 31m",
                                                            "Also good"]


def test_bidi_controls_in_a_title_are_left_out_of_the_name(sources: Path, tmp_path: Path
                                                           ) -> None:
    """An outline titled "\u202eevil" was followed under that name: `feedbot sources` showed
    it as "evil" (the views drop bidi controls), and `feedbot unfollow evil` did not find it."""
    f = tmp_path / "bidi.opml"
    f.write_bytes(opml('<outline title="&#x202e;evil" xmlUrl="https://evil.example/feed"/>'
                       '<outline title="&#x2067;&#x2069;" text="Text" '
                       'xmlUrl="https://text.example/feed"/>'))
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(f)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[:2] == ["added evil", "added Text"]
    assert [b.name for b in load_config(sources).blogs][1:] == ["evil", "Text"]
    r = CliRunner().invoke(main, ["--sources", str(sources), "unfollow", "evil"])
    assert r.exit_code == 0, r.output
    assert [b.name for b in load_config(sources).blogs][1:] == ["Text"]


def test_feed_scheme_and_capital_scheme_urls_are_http_urls() -> None:
    """Older readers export `feed://host/rss` (http) and `feed:https://…`, and a scheme may be
    in capitals: all were skipped as 'not an http(s) URL'."""
    assert parse_opml(opml('<outline text="A" xmlUrl="feed://a.example/rss"/>'
                           '<outline text="B" xmlUrl="feed:https://b.example/rss"/>'
                           '<outline text="C" xmlUrl="HTTPS://c.example/Feed"/>'
                           '<outline text="D" xmlUrl="feed:rss"/>')) == [
        ("A", "http://a.example/rss", ""), ("B", "https://b.example/rss", ""),
        ("C", "https://c.example/Feed", ""), ("D", "feed:rss", "")]


def test_a_title_that_is_a_persons_source_name_does_not_stop_the_import(sources: Path,
                                                                        tmp_path: Path) -> None:
    """`Ada Example/x` names Ada's X source: a blog under that name made sources.yaml invalid,
    so the whole import was refused and nothing was added."""
    f = tmp_path / "clash.opml"
    f.write_bytes(opml('<outline title="Good" xmlUrl="https://good.example/feed"/>'
                       '<outline title="ada example/X" xmlUrl="https://adax.example/feed"/>'))
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(f)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == ["added Good", "added ada example/X (adax.example)",
                                     "2 added, 0 skipped (2 feeds in clash.opml)"]



def test_outlines_with_huge_titles_are_imported_under_short_names(sources: Path,
                                                                   tmp_path: Path) -> None:
    """Eleven 1 MB titles became eleven 1 MB names: the import wrote an 11 MB sources.yaml,
    printed every name, and every command after it refused the file (over 10 MB)."""
    f = tmp_path / "huge.opml"
    outlines = "".join(f'<outline title="{"Feed " * 200_000}{i}" '
                       f'xmlUrl="https://f{i}.example/feed"/>' for i in range(11))
    f.write_bytes(opml(outlines))
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(f)])
    assert r.exit_code == 0, r.output[:300]
    assert len(r.output) < 3000 and r.output.endswith("11 added, 0 skipped (11 feeds in "
                                                      "huge.opml)\n")
    names = [b.name for b in load_config(sources).blogs[-11:]]
    assert all(n.startswith("Feed Feed") and len(n) < 130 for n in names)  # 100 + a host
    assert len(set(names)) == 11  # told apart by their hosts
    assert sources.stat().st_size < 10_000


def test_export_to_a_missing_directory_is_a_clear_error(sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "x.opml"
    r = CliRunner().invoke(main, ["--sources", str(sources), "export-opml", "-o", str(out)])
    assert r.exit_code == 2
    assert f"cannot write {out}: No such file or directory" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_an_unreadable_opml_file_is_a_clear_error(sources: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """As root every file is readable, so the refusal is simulated where the file is read."""
    opml = tmp_path / "subs.opml"
    opml.write_text("<opml/>")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == opml:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(opml)])
    assert r.exit_code == 2
    assert f"cannot read {opml}: Permission denied" in r.output


# --- files as feed readers write them ---------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_doctype_in_a_utf16_file_is_refused_before_its_entities_expand() -> None:
    """The byte search for `<!DOCTYPE` cannot see one spelt in UTF-16: the parser must stop."""
    evil = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE opml [<!ENTITY a "AAAA">'
            '<!ENTITY b "&a;&a;&a;&a;">]><opml version="2.0"><body>'
            '<outline title="&b;" xmlUrl="https://e.example/f"/></body></opml>')
    for data in (evil.encode("utf-16"), evil.replace("UTF-16", "UTF-16LE").encode("utf-16-le")):
        with pytest.raises(OpmlError, match="DOCTYPE"):
            parse_opml(data)


@pytest.mark.parametrize(("fixture", "expected"), [
    ("opml_feedly.opml", [
        ("Lil'Log", "https://lilianweng.github.io/index.xml", "https://lilianweng.github.io/"),
        ("Distill", "https://distill.pub/rss.xml", "https://distill.pub"),
        ("Ada on Mastodon", "https://sigmoid.social/@ada.rss", "https://sigmoid.social/@ada"),
        ("Jay Alammar", "http://jalammar.github.io/feed.xml/", "https://jalammar.github.io/"),
        ("Café & Code", "https://cafe.example/feed/", "https://cafe.example/")]),
    ("opml_thunderbird.opml", [
        ("The Gradient", "https://thegradient.pub/rss/", "https://thegradient.pub/")]),
    ("opml_inoreader_utf16.opml", [
        ("Sebastian Ruder", "https://www.ruder.io/rss/", "https://www.ruder.io/"),
        ("Andrej Karpathy blog", "https://karpathy.github.io/feed.xml",
         "https://karpathy.github.io/")]),
])
def test_feed_reader_exports_parse(fixture: str, expected: list[tuple[str, str, str]]) -> None:
    assert parse_opml((FIXTURES / fixture).read_bytes()) == expected


def test_import_skips_feeds_already_followed_as_a_persons_place(sources: Path) -> None:
    """Ada's Mastodon feed is followed through `people:`; Jay's feed under another URL form."""
    report = add_blogs(sources, parse_opml((FIXTURES / "opml_feedly.opml").read_bytes()))
    assert report.added == ["Lil'Log", "Distill", "Café & Code"]
    assert report.skipped == [("Ada on Mastodon", "already followed"),
                              ("Jay Alammar", "already followed")]


def test_reimporting_an_export_doubles_nothing(sources: Path, tmp_path: Path) -> None:
    """export-opml lists people's Bluesky and Mastodon feeds: importing that file back (or into
    a second install with the same people) must not add them again as blogs."""
    runner = CliRunner()
    out = tmp_path / "export.opml"
    assert runner.invoke(main, ["--sources", str(sources), "export-opml", "-o",
                                str(out)]).exit_code == 0
    before = sources.read_bytes()
    r = runner.invoke(main, ["--sources", str(sources), "import-opml", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == "0 added, 4 skipped (4 feeds in export.opml)"
    assert sources.read_bytes() == before


@pytest.mark.parametrize("args", [[], ["-o", "-"]])
def test_export_to_a_stdout_that_is_not_utf8_is_still_the_utf8_it_declares(
        args: list[str], tmp_path: Path) -> None:
    """On a cp1252 pipe the document came out in cp1252 under `encoding="UTF-8"` (a reader
    refused it), and `-o -` wrote a file named "-"."""
    import os
    import subprocess
    import sys

    sources = tmp_path / "sources.yaml"
    sources.write_text('blogs:\n  - {name: "Café 🎉", url: "https://cafe.example.org/feed"}\n',
                       encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    r = subprocess.run([sys.executable, "-m", "feedbot", "--sources", str(sources),
                        "export-opml", *args], capture_output=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert [(t, u) for t, u, _ in parse_opml(r.stdout)] == \
        [("Café 🎉", "https://cafe.example.org/feed")]
    assert not (tmp_path / "-").exists()


def test_importing_five_thousand_feeds_is_one_edit(sources: Path, tmp_path: Path) -> None:
    """A feed reader's whole list: every feed lands in one edit, with the file's comments,
    and importing it again adds nothing."""
    n = 5000
    body = "".join(f'<outline type="rss" text="Feed {i} &amp; &lt;co&gt; &quot;q&quot;" '
                   f'xmlUrl="https://f{i}.example.org/rss?a=1&amp;b=2"/>' for i in range(n))
    big = tmp_path / "big.opml"
    big.write_bytes(opml(f'<outline text="Folder">{body}</outline>'))
    started = time.monotonic()
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(big)])
    assert r.exit_code == 0, r.output
    assert time.monotonic() - started < 120  # no quadratic edit: seconds, not minutes
    assert r.output.splitlines()[-1] == f"{n} added, 0 skipped ({n} feeds in big.opml)"
    cfg = load_config(sources)
    assert len(cfg.blogs) == n + 1
    assert cfg.blogs[-1].name == f'Feed {n - 1} & <co> "q"'
    assert cfg.blogs[-1].url == f"https://f{n - 1}.example.org/rss?a=1&b=2"
    assert "  - name: Jay Alammar   # transformers, illustrated" in sources.read_text()
    again = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(big)])
    assert again.output.splitlines()[-1] == f"0 added, {n} skipped ({n} feeds in big.opml)"


LAUGHS = ('<!DOCTYPE opml [<!ENTITY a "lollollollollollollollollollol">'
          + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'
                    for i in range(9)) + "]>\n")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_cli_refuses_a_billion_laughs_without_expanding_it(sources: Path, tmp_path: Path,
                                                           encoding: str) -> None:
    """Ten levels of entities, 10^10 'lol's if expanded: refused at once, file untouched."""
    bomb = tmp_path / "bomb.opml"
    text = opml('<outline text="&j;" xmlUrl="https://e.org/&j;"/>', LAUGHS).decode()
    bomb.write_bytes(text.replace('encoding="UTF-8"', f'encoding="{encoding.upper()}"')
                     .encode(encoding))
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(bomb)])
    assert r.exit_code == 2
    assert r.output == (f"feedbot: {bomb}: refusing an OPML file with a DOCTYPE or entity "
                        "declarations\n")
    assert sources.read_text() == SOURCES


def test_cli_export_of_names_with_markup_characters(tmp_path: Path) -> None:
    """Names with `&<>"'` come back from any reader exactly as written."""
    sources = tmp_path / "s.yaml"
    sources.write_text("learner: {stage: nlp}\nblogs:\n"
                       "  - name: 'Tom & Jerry <lab> \"notes\" ''n'' more'\n"
                       "    url: https://e.example/f?a=1&b=2\n"
                       "people:\n  - name: 'A <B> & \"C\"'\n    bluesky: ab.bsky.social\n")
    out = tmp_path / "out.opml"
    for args in (["-o", str(out)], []):
        r = CliRunner().invoke(main, ["--sources", str(sources), "export-opml", *args])
        assert r.exit_code == 0, r.output
        data = out.read_bytes() if args else r.stdout_bytes
        assert [(t, u) for t, u, _ in parse_opml(data)] == [
            ('Tom & Jerry <lab> "notes" \'n\' more', "https://e.example/f?a=1&b=2"),
            ('A <B> & "C" on Bluesky', "https://bsky.app/profile/ab.bsky.social/rss")]


def test_the_same_feed_twice_in_one_list_is_not_called_already_followed(sources: Path,
                                                                        tmp_path: Path) -> None:
    """A reader's export with one feed in two folders, once as http and once as https: the
    second was "skipped: already followed", though nothing had followed it before."""
    f = tmp_path / "twice.opml"
    f.write_bytes(opml('<outline text="Tech"><outline text="B" xmlUrl="https://b.example/feed'
                       '?a=1&amp;b=2"/></outline><outline text="News"><outline text="B again"'
                       ' xmlUrl="http://B.example/feed?a=1&amp;b=2"/><outline text="Jay"'
                       ' type="rss" xmlUrl="https://jalammar.github.io/feed.xml"/></outline>'))
    r = CliRunner().invoke(main, ["--sources", str(sources), "import-opml", str(f)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        "added B", "skipped B again: the same feed as 'B' just added",
        "skipped Jay: already followed", "1 added, 2 skipped (3 feeds in twice.opml)"]
    assert [b.url for b in load_config(sources).blogs][1:] == ["https://b.example/feed?a=1&b=2"]
