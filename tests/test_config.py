import unicodedata
from pathlib import Path

import pytest

from feedbot.config import (
    ConfigError,
    Ranking,
    bluesky_feed_url,
    load_config,
    mastodon_feed_url,
    parse_duration,
    parse_yaml,
)

GOOD = """\
# my sources
learner:
  stage: cnn   # where I am
  timezone: Europe/Berlin
defaults:
  interval: 2h
blogs:
  - name: A blog
    url: https://a.example.org/feed.xml
    weight: 2
arxiv:
  - name: vision
    category: cs.CV
    max_results: 20
  - name: tutorials
    query: 'cat:cs.LG AND ti:tutorial'
people:
  - name: Ada Lovelace
    x: ada
    mastodon: "@ada@example.social"
    bluesky: ada.bsky.social
    arxiv: Ada Lovelace
    blog: https://ada.example.org/rss
    weight: 1.5
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_valid_file_expands_into_sources(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.learner.stage == "cnn"
    specs = {s.name: s for s in cfg.sources()}
    assert specs["A blog"].kind == "feed"
    assert specs["A blog"].weight == 2
    assert specs["A blog"].interval == 7200
    assert specs["vision"].target == "cat:cs.CV"
    assert specs["vision"].max_items == 20
    assert specs["tutorials"].target == "cat:cs.LG AND ti:tutorial"
    assert specs["Ada Lovelace/x"].kind == "x"
    assert specs["Ada Lovelace/x"].label == "Ada Lovelace on X"
    assert specs["Ada Lovelace/arxiv"].target == 'au:"Ada Lovelace"'
    assert specs["Ada Lovelace/arxiv"].label == "Ada Lovelace on arXiv"
    assert specs["Ada Lovelace/blog"].label == "Ada Lovelace on their blog"
    assert specs["Ada Lovelace/mastodon"].target == "https://example.social/@ada.rss"
    assert specs["Ada Lovelace/bluesky"].target == "https://bsky.app/profile/ada.bsky.social/rss"
    assert {s.weight for s in specs.values() if s.person} == {1.5}


def test_feed_urls_from_handles() -> None:
    assert mastodon_feed_url("@karpathy@sigmoid.social") == "https://sigmoid.social/@karpathy.rss"
    assert bluesky_feed_url("@someone.bsky.social") == "https://bsky.app/profile/someone.bsky.social/rss"


def test_feed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBOT_BLUESKY_URL", "http://127.0.0.1:8080/bsky/")
    monkeypatch.setenv("FEEDBOT_MASTODON_URL", "http://127.0.0.1:8080")
    assert bluesky_feed_url("ada.bsky.social") == \
        "http://127.0.0.1:8080/bsky/profile/ada.bsky.social/rss"
    assert mastodon_feed_url("@ada@sigmoid.social") == "http://127.0.0.1:8080/@ada.rss"
    monkeypatch.setenv("FEEDBOT_MASTODON_URL", "http://127.0.0.1:8080/m/{instance}/")
    assert mastodon_feed_url("@ada@sigmoid.social") == \
        "http://127.0.0.1:8080/m/sigmoid.social/@ada.rss"
    monkeypatch.setenv("FEEDBOT_BLUESKY_URL", " ")  # blank: the real hosts
    monkeypatch.setenv("FEEDBOT_MASTODON_URL", "")
    assert bluesky_feed_url("ada.bsky.social") == "https://bsky.app/profile/ada.bsky.social/rss"
    assert mastodon_feed_url("@ada@sigmoid.social") == "https://sigmoid.social/@ada.rss"
    monkeypatch.setenv("FEEDBOT_MASTODON_URL", "http://127.0.0.1:9")
    assert load_config("s.yaml", text='people:\n  - name: A\n    mastodon: "@a@b.social"\n'
                       ).sources()[0].target == "http://127.0.0.1:9/@a.rss"


def test_unknown_key_names_file_line_key_and_hint(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    url: https://a.example.org/feed.xml",
                                     "    urll: https://a.example.org/feed.xml"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg
    assert ":9:" in msg  # the line of 'urll'
    assert "blogs[0].urll" in msg
    assert "did you mean 'url'" in msg


def test_unknown_top_level_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD + "bloggs: []\n"))
    assert e.value.key == "bloggs"
    assert "did you mean 'blogs'" in str(e.value)
    assert e.value.line == GOOD.count("\n") + 1


def test_wrong_type_is_located(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    weight: 2", "    weight: lots"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == "blogs[0].weight"
    assert e.value.line == 10
    assert "number" in e.value.message


@pytest.mark.parametrize(
    ("bad", "key", "words"),
    [
        ("    url: https://a.example.org/feed.xml", "blogs[0].url", "http(s) URL"),
        ("    category: cs.CV", "arxiv[0]", "exactly one of"),
        ("    x: ada", "people[0].x", "X handle"),
        ('    mastodon: "@ada@example.social"', "people[0].mastodon", "@user@instance"),
        ("  timezone: Europe/Berlin", "learner.timezone", "time zone"),
        # au:"Ada "Lady" Lovelace" asked arXiv for something else
        ("    arxiv: Ada Lovelace", "people[0].arxiv", "without quotes"),
    ],
)
def test_value_errors(tmp_path: Path, bad: str, key: str, words: str) -> None:
    replacement = {
        "blogs[0].url": "    url: ftp://nope",
        "arxiv[0]": "    category: cs.CV\n    query: cat:cs.CV",
        "people[0].x": "    x: not a handle!",
        "people[0].mastodon": "    mastodon: ada",
        "learner.timezone": "  timezone: Mars/Olympus",
        "people[0].arxiv": """    arxiv: 'Ada "Lady" Lovelace'""",
    }[key]
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD.replace(bad, replacement)))
    assert e.value.key.startswith(key)
    assert words in e.value.message
    assert e.value.line is not None


def test_person_needs_a_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one of"):
        load_config(write(tmp_path, "people:\n  - name: Nobody\n    weight: 1\n"))


def test_duplicate_names_refused(tmp_path: Path) -> None:
    text = "blogs:\n  - {name: Same, url: 'https://a.org/f'}\n  - {name: same, url: 'https://b.org/f'}\n"
    with pytest.raises(ConfigError, match="duplicate name"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_yaml_nested_thousands_deep_is_a_clean_error(tmp_path: Path, opening: str) -> None:
    """A RecursionError traceback out of the YAML parser before."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "learner: " + opening * 10_000 + "\n"))
    assert e.value.message == "not valid YAML: nested too deeply"


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "learner:\n  stage: cnn\nblogs: [\n  - oops: {\n"))
    assert "not valid YAML" in e.value.message
    assert e.value.line is not None


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    cfg = load_config(write(tmp_path, "# nothing yet\n"))
    assert cfg.sources() == []


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600),
                                              ("7d", 604800), ("1.5h", 5400), (45, 45)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_text_without_a_unit_is_refused() -> None:
    """`--since 7` or `since: "7"` could mean seconds or days: ask instead of guessing."""
    with pytest.raises(ValueError, match="7 needs a unit: 7d, 7h, 7m or 7s"):
        parse_duration("7")


def test_a_negative_duration_without_a_unit_is_told_of_the_unit_too() -> None:
    """`-7` was told "write 7", which is refused next for want of a unit."""
    with pytest.raises(ValueError) as e:
        parse_duration("-7")
    assert str(e.value) == ("not a duration: '-7' (durations are never negative, and need a "
                            "unit: 7d, 7h, 7m or 7s)")
    with pytest.raises(ValueError, match=r"never negative; write 3d\)"):
        parse_duration("-3d")


def test_parse_duration_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_repo_sources_yaml_is_valid() -> None:
    repo = Path(__file__).resolve().parents[1] / "sources.yaml"
    cfg = load_config(repo)
    kinds = {s.kind for s in cfg.sources()}
    assert {"feed", "arxiv", "x"} <= kinds


def test_duplicate_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "learner:\n  stage: cnn\nlearner:\n  stage: nlp\n"))
    assert e.value.line == 3 and "duplicate key" in e.value.message


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("'http://[::1/feed'", "Invalid IPv6 URL"),
        ("'http://example.org:99999/feed'", "Port out of range"),
        ("'http://example.org:8x/feed'", "Port could not be cast"),
        ("'http://:80/feed'", "no host name"),
        ('"http://example.org/feed\\x7f"', "non-printable"),
    ],
)
def test_malformed_urls_are_refused_with_their_line(tmp_path: Path, url: str, words: str) -> None:
    blog = f"learner: {{stage: cnn}}\nblogs:\n  - name: bad\n    url: {url}\n"
    person = f"people:\n  - name: P\n    x: p\n    blog: {url}\n"
    for text, key, line in ((blog, "blogs[0].url", 4), (person, "people[0].blog", 4)):
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text))
        assert (e.value.key, e.value.line) == (key, line)
        assert e.value.message.startswith("not a valid URL (") and words in e.value.message


@pytest.mark.parametrize("char", ["\x07", "\x00"])
def test_control_character_in_the_file_is_a_yaml_error_with_its_line(
        tmp_path: Path, char: str) -> None:
    text = f"learner:\n  stage: cnn\nblogs:\n  - name: a{char}b\n    url: https://a.org/f\n"
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.line == 4
    assert e.value.message == f"not valid YAML: control character U+{ord(char):04X} is not allowed"
    assert str(e.value).startswith(f"{p}:4: not valid YAML")


def test_parse_duration_has_a_maximum() -> None:
    assert parse_duration("36500d") == 36500 * 86400
    with pytest.raises(ValueError, match=r"too long; the maximum is 36500d \(100 years\)"):
        parse_duration("99999999999d")
    with pytest.raises(ValueError, match="too long"):
        parse_duration(1e300)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(-5)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("learner: {since: 99999999999d}\n", "learner.since"),
        ("defaults: {interval: 5000000w}\n", "defaults.interval"),
        ("ranking: {recency_half_life: 99999999999999h}\n", "ranking.recency_half_life"),
        ("blogs:\n  - {name: a, url: 'https://a.org/f', interval: 99999999999s}\n",
         "blogs[0].interval"),
    ],
)
def test_too_long_durations_are_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert e.value.key == key
    assert "too long; the maximum is 36500d (100 years)" in e.value.message
    assert e.value.line is not None


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("learner: {since: 7}\n", "learner.since", "7 needs a unit: 7d, 7h, 7m or 7s"),
        ("defaults: {interval: 90}\n", "defaults.interval", "90 needs a unit"),
        ("ranking: {recency_half_life: 1.5}\n", "ranking.recency_half_life", "1.5d"),
    ],
)
def test_bare_numbers_ask_for_a_unit(tmp_path: Path, text: str, key: str, words: str) -> None:
    """`since: 7` means 7 days to most people and 7 seconds to parse_duration: ask."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert (e.value.key, e.value.line) == (key, 1) and words in str(e.value)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("defaults: {interval: 0s}\n", "defaults.interval", "must be longer than zero"),
        ("defaults: {interval: 0h}\n", "defaults.interval", "must be longer than zero"),
        ("learner: {since: 0d}\n", "learner.since", "must be longer than zero"),
        ("ranking: {recency_half_life: 0m}\n", "ranking.recency_half_life", "longer than zero"),
        ("defaults: {interval: -5h}\n", "defaults.interval", "not a duration: '-5h'"),
    ],
)
def test_zero_or_negative_durations_are_refused(tmp_path: Path, text: str, key: str,
                                                words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert (e.value.key, e.value.line) == (key, 1)
    assert words in e.value.message


@pytest.mark.parametrize(
    ("text", "key", "line", "who"),
    [
        ("defaults: {interval: 1s}\n", "defaults.interval", 1,
         "every source without an interval of its own would be collected every 1s"),
        ("blogs:\n  - name: Fast blog\n    url: https://a.example.org/f\n    interval: 30s\n",
         "blogs[0].interval", 4, "'Fast blog' would be collected every 30s"),
        ("arxiv:\n  - {name: vision, category: cs.CV, interval: 0.5m}\n", "arxiv[0].interval", 2,
         "'vision' would be collected every 0.5m"),
        ("people:\n  - name: Ada\n    x: ada\n    interval: 59s\n", "people[0].interval", 4,
         "'Ada' would be collected every 59s"),
    ],
    ids=["defaults", "blog", "arxiv", "person"],
)
def test_an_interval_under_a_minute_is_refused_naming_the_source(
        tmp_path: Path, text: str, key: str, line: int, who: str) -> None:
    """`interval: 1s` was taken, and `feedbot run` asked the site (or X) every second."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert (e.value.key, e.value.line) == (key, line)
    assert e.value.message.startswith(who) and "the shortest interval is 1m" in e.value.message


def test_the_interval_floor_is_no_floor_of_the_look_back_windows(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "learner: {since: 30s}\ndefaults: {interval: 1m}\n"
                            "ranking: {recency_half_life: 10s}\nblogs:\n"
                            "  - {name: a, url: 'https://a.example.org/f', interval: 60s}\n"))
    assert cfg.sources()[0].interval == 60
    assert (cfg.learner.since, cfg.ranking.recency_half_life) == ("30s", "10s")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("key", ["similarity", "recency", "mmr", "feedback_other_stages"])
def test_ranking_weights_must_be_finite(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"learner: {{stage: cnn}}\nranking:\n  {key}: {value}\n"))
    assert (e.value.key, e.value.line) == (f"ranking.{key}", 3)
    assert e.value.message == "must be a finite number, not .nan or .inf"


def test_a_person_place_may_not_take_a_blog_name(tmp_path: Path) -> None:
    text = ("blogs:\n  - name: Bob/blog\n    url: https://a.org/f\n"
            "people:\n  - name: Bob\n    x: bob\n    blog: https://b.org/f\n")
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == (f"{p}:7: people[0].blog: duplicate name 'Bob/blog' (the source of "
                            "this person's blog), already used by blogs[0]")


def test_a_duplicate_name_is_reported_at_its_own_line(tmp_path: Path) -> None:
    text = ("blogs:\n  - name: A\n    url: https://a.org/f\n  - name: B\n    url: https://b.org/f\n"
            "  - name: A\n    url: https://c.org/f\n")
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}:6: blogs[2].name: duplicate name 'A', already used by blogs[0]"
    text = ("arxiv:\n  - {name: a, category: cs.CV}\n"
            "people:\n  - {name: b, x: b}\n  - name: A\n    x: a\n")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert (e.value.line, e.value.key) == (5, "people[1].name")
    assert e.value.message == "duplicate name 'A', already used by arxiv[0]"


@pytest.mark.parametrize("name", ['"Multi\\nline"', '"tab\\there"', '"bell\\a"', '"sep\\Lx"'])
@pytest.mark.parametrize(
    ("section", "entry"),
    [("blogs", "url: https://a.org/f"), ("arxiv", "category: cs.CV"), ("people", "x: someone")],
)
def test_control_characters_in_names_are_refused(tmp_path: Path, name: str, section: str,
                                                 entry: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"{section}:\n  - {entry}\n    name: {name}\n"))
    assert (e.value.key, e.value.line) == (f"{section}[0].name", 3)
    assert "a name cannot contain newlines, tabs or other control characters" in e.value.message



def test_a_tab_used_for_indentation_gets_a_hint_to_use_spaces(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    p.write_text("blogs:\n\t- name: A\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.line == 2
    assert "replace the tab on that line with spaces" in str(info.value)


BLOG = "  - name: a\n    url: https://example.org/a.xml\n"


@pytest.mark.parametrize(("text", "line", "shown", "hint"), [
    # a list item indented wrong
    ("blogs:\n" + BLOG + "   - name: b\n    url: https://example.org/b.xml\n", 4,
     "expected <block end>, but found '<block sequence start>' at column 4 of '   - name: b'",
     "check the indentation of line 4: the items of a list (`- …`) line up under each other"),
    # `- name: x` then ` url: y`: the item's second key not under its first
    ("blogs:\n- name: x\n url: https://example.org/x.xml\n", 3,
     "expected <block end>, but found '<block mapping start>' at column 2 of "
     "' url: https://example.org/x.xml'",
     "check the indentation of line 3: the keys of a mapping line up under each other, and so "
     "do the keys of a list's item: under `- name: …`, `url:` goes right under `name`"),
    ("learner:\n  stage: cnn\n   digest_time: '08:00'\n", 3,
     "mapping values are not allowed here at column 15 of \"   digest_time: '08:00'\"",
     "check the indentation of line 3: the keys of a mapping line up under each other; one "
     "indented further than the key above it is read as part of that key's value"),
    # a key's value on a line of its own, less indented than the key
    ("learner:\n  stage:\n cnn\n", 3,
     "expected <block end>, but found '<scalar>' at column 2 of ' cnn'",
     "check the indentation of line 3: a value on a line of its own goes further right than "
     "its key"),
    ("learner:\n\tstage: cnn\n", 2,
     "found character '\\t' that cannot start any token at column 1 of '\\tstage: cnn'",
     "YAML does not allow tabs for indentation: replace the tab on that line with spaces"),
    ("blogs:\n  - name: Part 1: Basics\n    url: https://example.org/x.xml\n", 2,
     "mapping values are not allowed here at column 17 of '  - name: Part 1: Basics'",
     'a value holding ": " goes in quotes, e.g. name: "Part 1: Basics"'),
    # the key without its colon, not the line after it (nor a line past the end)
    ("learner:\n  stage: cnn\n  digest_time '08:00'\n", 3,
     "could not find expected ':' at column 3 of \"  digest_time '08:00'\"",
     "line 3 needs ': ' after its key (`key: value`)"),
    ("blogs:\n  - name: x\n    url: \"https://example.org/x.xml\n", 3,
     "found unexpected end of stream at column 10 of '    url: \"https://example.org/x.xml'",
     "the quote that opens there is never closed"),
])
def test_a_yaml_syntax_error_shows_the_line_and_says_what_to_do(
        tmp_path: Path, text: str, line: int, shown: str, hint: str) -> None:
    """ruamel's words came alone ("expected <block end>, but found '<block mapping start>'"),
    with no column, no line to look at and nothing about indentation."""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.line == line
    assert str(e.value).startswith(f"{p}:{line}: not valid YAML: {shown} (")
    assert hint in e.value.hint
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("text", "hint"), [
    # the key without its colon in the middle of a mapping: the line after it was blamed
    ("learner:\n  stage cnn\n  timezone: UTC\n", "line 2 needs ': ' after its key"),
    ("learner\n  stage: cnn\n", "line 1 needs ': ' after its key"),
    # a value quoted in part: "check the indentation", of a line indented right
    ("blogs:\n  - name: 'Lil'Log (Lilian Weng)'\n    url: https://example.org/x.xml\n",
     "a value in quotes ends at its closing quote"),
    ('blogs:\n  - name: "Lil\'Log" (Lilian Weng)\n    url: https://example.org/x.xml\n',
     "a value in quotes ends at its closing quote"),
])
def test_a_yaml_hint_names_the_slip_not_the_indentation(tmp_path: Path, text: str,
                                                        hint: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert hint in e.value.hint and "indentation" not in e.value.hint, e.value.hint


def test_a_yaml_syntax_error_masks_a_password_in_the_line_it_shows(tmp_path: Path) -> None:
    """The message goes to the log and, from `feedbot run`, to every allowed chat."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "blogs:\n  - name: Bob\n"
                                    "     url: https://bob:hunter2@example.org/feed.xml\n"))
    assert "hunter2" not in str(e.value) and "bob:***@example.org" in str(e.value)


def test_a_long_line_is_shown_cut_around_the_column(tmp_path: Path) -> None:
    long = "https://example.org/" + "a" * 300
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"blogs:\n  - url: {long}\n    name: x\n"
                          f"  - url: {long}: z\n"))
    assert e.value.line == 4
    shown = e.value.message.split(" of ", 1)[1]
    assert shown.startswith("'…") and shown.endswith(": z'") and len(shown) < 90


def test_tabs_before_comments_and_at_line_ends_parse_for_edits_too() -> None:
    """The fast loader accepts them, so the round-trip parser behind every edit must as well,
    without touching a tab inside a value."""
    text = ('learner:\n  stage: cnn\t# where I am\nblogs:\n  - name: "A\tB"\t\n'
            "    url: https://a.example/feed \t \n")
    doc = parse_yaml(text, "s.yaml")
    assert doc["learner"]["stage"] == "cnn" and doc["blogs"][0]["name"] == "A\tB"
    assert load_config("s.yaml", text=text.replace('"A\tB"', "A")).learner.stage == "cnn"


def test_retention_defaults_to_a_year_and_can_be_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "learner: {stage: cnn}\n")).retention.items_seconds \
        == 365 * 86400
    cfg = load_config(write(tmp_path, "retention:\n  items: 26w\n"))
    assert cfg.retention.items_seconds == 26 * 7 * 86400
    assert load_config(write(tmp_path, "retention: {items: Never}\n")).retention.items_seconds \
        is None
    # a look-back longer than the default retention (written before there was one) is valid
    assert load_config(write(tmp_path, "learner: {since: 400d}\n")).retention.items == "400d"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("retention:\n  items: 1 year\n", "not a duration: '1 year' (use e.g. 365d or 52w, or "
                                          "never to keep every item)"),
        ("retention:\n  items: 0\n", "0 would keep nothing"),
        ("retention:\n  items: 0d\n", "must be longer than zero"),
        ("retention:\n  items: 90\n", "90 needs a unit: 90d"),
        ("retention:\n  items: off\n", "not a duration: 'off'"),
        ("retention:\n  items:\n", "not a duration: None"),
        ("retention:\n  items: 99999999d\n", "too long"),
        ("learner: {since: 30d}\nretention:\n  items: 2w\n",
         "2w is shorter than learner.since (30d), the digest's look-back"),
    ],
)
def test_a_bad_retention_is_a_located_error(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert e.value.key == "retention.items"
    assert e.value.line == text.count("\n")
    assert words in e.value.message


def test_a_misspelt_retention_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "retention:\n  item: 30d\n"))
    assert (e.value.key, e.value.line, e.value.hint) == ("retention.item", 2,
                                                          "did you mean 'items'?")


def test_a_feed_url_with_a_capital_scheme_is_an_http_url(tmp_path: Path) -> None:
    """`HTTPS://…` (as some sites print it) was refused as "must be an http(s) URL"."""
    p = tmp_path / "sources.yaml"
    p.write_text("blogs:\n  - {name: Loud, url: 'HTTPS://Example.org/Feed.xml'}\n")
    assert load_config(p).blogs[0].url == "https://Example.org/Feed.xml"


@pytest.mark.parametrize("key", ["similarity", "contrast", "recency", "source", "feedback",
                                 "level"])
def test_ranking_weights_cannot_be_negative(tmp_path: Path, key: str) -> None:
    """`similarity: -1` was taken: the digest then put what fits the stage worst first
    (`recency: -1` the oldest, `feedback: -1` what the learner disliked)."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"learner: {{stage: cnn}}\nranking:\n  {key}: -0.5\n"))
    assert (e.value.key, e.value.line) == (f"ranking.{key}", 3)
    assert e.value.message == "must be 0 or more (0 turns this part off)"
    assert getattr(load_config(write(tmp_path, f"ranking: {{{key}: 0}}\n")).ranking, key) == 0


@pytest.mark.parametrize(("value", "message"), [
    (".nan", "must be a finite number"), (".inf", "must be a finite number"),
    ("1e39", "must be at most 1000: every part"), ("1000.5", "must be at most 1000: every part")])
def test_ranking_weights_are_finite_and_at_most_a_thousand(
        tmp_path: Path, value: str, message: str) -> None:
    """`contrast: 1e39` (float32's infinity) made every score inf or NaN: the digest was then
    in no order at all."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"ranking:\n  contrast: {value}\n"))
    assert (e.value.key, e.value.line) == ("ranking.contrast", 2)
    assert e.value.message.startswith(message)
    assert load_config(write(tmp_path, "ranking: {contrast: 1000}\n")).ranking.contrast == 1000


@pytest.mark.parametrize("key", ["similarity", "level", "mmr", "per_source_cap", "duplicate",
                                 "feedback_other_stages"])
@pytest.mark.parametrize("value", ["true", "false"])
def test_ranking_numbers_are_not_true_or_false(tmp_path: Path, key: str, value: str) -> None:
    """`mmr: true` was read as λ = 1 and `per_source_cap: true` as a cap of 1."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"ranking:\n  {key}: {value}\n"))
    assert (e.value.key, e.value.line) == (f"ranking.{key}", 2)
    assert e.value.message == f"must be a number, not {value}"


def test_a_section_left_empty_is_an_empty_section(tmp_path: Path) -> None:
    """Commenting out every blog (or every ranking override) left `blogs:` (`ranking:`) with
    nothing under it, and feedbot refused the file: "blogs: Input should be a valid list"."""
    cfg = load_config(write(tmp_path, "learner:\n  stage: cnn\nblogs:\n  # - {name: A, url: "
                            "'https://a.example.org/feed.xml'}\narxiv:\npeople:\nranking:\n"
                            "  # level: 0\ntelegram:\ndefaults:\nretention:\n"))
    assert (cfg.blogs, cfg.arxiv, cfg.people, cfg.sources()) == ([], [], [], [])
    assert cfg.ranking == Ranking() and cfg.learner.stage == "cnn"
    with pytest.raises(ConfigError) as e:  # a key that is no section is still refused
        load_config(write(tmp_path, "rankings:\n"))
    assert e.value.key == "rankings" and "did you mean 'ranking'" in str(e.value)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_file_without_end_is_refused_not_read_for_ever(tmp_path: Path) -> None:
    """A device or a pipe has no size: `FEEDBOT_SOURCES=/dev/zero`, or a roadmap path naming
    one, was read for ever."""
    from feedbot.roadmap import load_roadmap

    with pytest.raises(ConfigError) as e:
        load_config(Path("/dev/zero"))
    assert "over 10 MB; a sources file is at most 10 MB" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_roadmap("/dev/zero")
    assert "over 10 MB; a roadmap file is at most that" in str(e.value)


def test_a_huge_sources_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """A 50 MB sources.yaml took 89 s and 2 GB to parse (a log file given by mistake, minutes
    before its error line); past 10 MB it is refused at once, by `load_config` and by every
    command that edits the file."""
    import time

    from feedbot.sources_edit import edit_sources

    p = tmp_path / "sources.yaml"
    p.write_text(GOOD + "#" + "x" * 11_000_000 + "\n", encoding="utf-8")
    started = time.monotonic()
    for attempt in (lambda: load_config(p), lambda: edit_sources(p, lambda doc: None)):
        with pytest.raises(ConfigError) as e:
            attempt()
        assert "11 MB; a sources file is at most 10 MB" in str(e.value)
        assert str(p) in str(e.value)
    assert time.monotonic() - started < 30  # generous: parsing it took far longer
    p.write_text(GOOD, encoding="utf-8")
    assert load_config(p).learner.stage == "cnn"  # a normal file is read as before


def _alias_bomb(levels: int, top: str = "a") -> str:
    text = f'{top}0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, levels):
        text += f"{top}{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


def test_aliases_that_expand_to_billions_of_values_are_refused_before_expanding(
        tmp_path: Path) -> None:
    """A 400-byte file of aliases of aliases took 32 s and 1.2 GB to be told its first key
    was unknown (its error path copied every alias); ten levels would need 100 GB."""
    p = tmp_path / "sources.yaml"
    p.write_text(_alias_bomb(10))
    with pytest.raises(ConfigError, match=r"aliases \(\*name\) expand to more than 200,000"):
        load_config(p)
    from feedbot.config import expanded_size

    assert expanded_size({"a": [1, 2], "b": "x"}) == (7, False)  # map, 2 keys, [1, 2], "x"
    shared = [1] * 10
    assert expanded_size([shared, shared, shared]) == (1 + 3 * 11, True)  # each alias whole
    selfish: list = []
    selfish.append(selfish)
    assert expanded_size(selfish) == (1, True)  # `&a [*a]`: counted once, no endless count
    assert expanded_size(list(range(300_000)))[1] is False  # long, but no alias: not refused
    fine = "x: &x [1, 2]\nlearner: {stage: cnn}\nblogs: []\n"  # a few aliases: a usual error
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(p, text=fine)


def test_a_roadmap_of_aliases_that_expand_to_billions_is_refused(tmp_path: Path) -> None:
    from feedbot.roadmap import load_roadmap

    p = tmp_path / "roadmap.yaml"
    p.write_text(_alias_bomb(9, top="x") + "stages: [{id: a, title: A, topics: [*a8]}]\n")
    with pytest.raises(ConfigError, match="expand to more than"):
        load_roadmap(p)


@pytest.mark.parametrize("text", [
    "retention:\n  items: " + "[" * 1000 + "]" * 1000 + "\n",
    "retention:\n  items: [" + ", ".join(["7"] * 200_000) + "]\n",
])
def test_a_huge_or_deep_value_is_shown_cut_short_in_the_error(tmp_path: Path, text: str
                                                              ) -> None:
    """The message held the value's repr whole: a RecursionError traceback for a list nested
    1,000 deep (the C parser reads it), a 600 KB line for a long one."""
    p = tmp_path / "sources.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="not a duration|nested too deeply") as e:
        load_config(p)
    assert len(str(e.value)) < 300


def test_a_roadmap_value_is_shown_cut_short_in_the_error(tmp_path: Path) -> None:
    from feedbot.roadmap import load_roadmap

    p = tmp_path / "roadmap.yaml"
    p.write_text("stages:\n  - id: a\n    title: A\n    topics: " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(ConfigError, match="must be text|nested too deeply") as e:
        load_roadmap(p)
    assert len(str(e.value)) < 300
    p.write_text("stages:\n  - id: a\n    title: A\n    topics: [[" +
                 ", ".join(["7"] * 100_000) + "]]\n")
    with pytest.raises(ConfigError, match=r"must be text, not \[7, 7, 7, 7, \.\.\.\]") as e:
        load_roadmap(p)
    assert len(str(e.value)) < 300


@pytest.mark.parametrize("text", [
    "learner: {digest_size: true}", "defaults: {weight: true}", "defaults: {max_items: true}",
    "telegram: {allowed_chats: [true]}",
    "blogs: [{name: A, url: 'https://a.example/feed', weight: true}]",
    "arxiv: [{name: A, category: cs.LG, max_results: true}]",
])
def test_true_or_false_is_no_number_anywhere(text: str) -> None:
    """`digest_size: true` gave a digest of 1, `allowed_chats: [true]` allowed chat 1."""
    with pytest.raises(ConfigError, match="must be a number, not true"):
        load_config("/x/sources.yaml", text=text + "\n")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_an_infinite_duration_is_not_told_to_take_a_unit(value: str) -> None:
    """`.inf` was told "inf needs a unit: infd, infh, infm or infs"."""
    with pytest.raises(ConfigError, match="not a duration; use e.g. 30m") as e:
        load_config("/x/sources.yaml", text=f"defaults:\n  interval: {value}\n")
    assert "needs a unit" not in str(e.value) and e.value.line == 2


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    p.write_bytes(b"learner:\n  stage: cnn\nblogs:\n  - name: Caf\xe9\n    url: https://c.example/\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 on this line\)") as e:
        load_config(p)
    assert e.value.line == 4 and "save the file as UTF-8" in str(e.value)


def test_a_key_that_yaml_reads_as_a_number_is_found_on_its_line() -> None:
    with pytest.raises(ConfigError) as e:
        load_config("/x/sources.yaml", text="learner:\n  stage: cnn\n  1: x\n")
    assert e.value.line == 3 and "learner.1" in str(e.value)


def test_a_chat_allowed_twice_is_one_chat() -> None:
    """`allowed_chats: [4242, 4242]` (the line from /start pasted again) sent every notice,
    a broken sources.yaml's for one, twice to that chat."""
    cfg = load_config("/x/sources.yaml", text="telegram: {allowed_chats: [4242, -100, 4242]}\n")
    assert cfg.telegram.allowed_chats == [4242, -100]


@pytest.mark.parametrize("category", ['"cs.LG, cs.CV"', "cs.LG cs.CV", "cat:cs.LG", "cs/LG"])
def test_an_arxiv_category_is_one_category(category: str, tmp_path: Path) -> None:
    """`category: "cs.LG, cs.CV"` became the query `cat:cs.LG, cs.CV`, which arXiv answers
    with nothing: "ok, 0 items" for ever."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"arxiv:\n  - name: a\n    category: {category}\n"))
    assert e.value.key == "arxiv[0].category" and "'cat:cs.LG OR cat:cs.CV'" in e.value.message


@pytest.mark.parametrize(("written", "query"), [("stat.ml", "cat:stat.ML"), ("CS.lg", "cat:cs.LG"),
                                                ("cond-mat.Mes-Hall", "cat:cond-mat.mes-hall"),
                                                ("hep-th", "cat:hep-th")])
def test_an_arxiv_category_is_written_as_arxiv_writes_it(written: str, query: str) -> None:
    """`category: stat.ml` asked arXiv for `cat:stat.ml`, which finds nothing."""
    cfg = load_config("sources.yaml", text=f"arxiv:\n  - {{name: a, category: {written}}}\n")
    assert cfg.sources()[0].target == query


# --- what a wrong shape, a second key and an odd space say ------------------------------------

REPO_SOURCES = Path(__file__).resolve().parents[1] / "sources.yaml"


@pytest.mark.parametrize(("text", "key", "message", "hint"), [
    # a list of bare feed URLs: "Input should be a valid dictionary or instance of Blog"
    ("blogs:\n  - https://example.org/qemu.atom\n", "blogs[0]",
     "an entry is a mapping of keys, not the text 'https://example.org/qemu.atom'",
     "`- {name: My blog, url: https://blog.example.org/feed.xml}`, or add one with "
     "`feedbot follow URL`"),
    ("people:\n  - Ada Lovelace\n", "people[0]",
     "an entry is a mapping of keys, not the text 'Ada Lovelace'", "`- {name: Ada Lovelace"),
    ("arxiv:\n  - [cs.CV]\n", "arxiv[0]", "an entry is a mapping of keys, not a list",
     "feedbot follow --category cs.CV"),
    # "Input should be a valid list"
    ("blogs: {}\n", "blogs",
     "must be a list of entries, each starting with `- `, not an empty mapping ({})",
     "an entry looks like `- {name: My blog, url: https://blog.example.org/feed.xml}`"),
    ("arxiv: cs.CV\n", "arxiv",
     "must be a list of entries, each starting with `- `, not the text 'cs.CV'",
     "`- {name: Vision, category: cs.CV}`"),
    ("learner:\n  - stage: cnn\n", "learner", "must be a mapping of `key: value` lines, not a list",
     "its keys: stage, roadmap, digest_time"),
    ("telegram: {allowed_chats: 12345}\n", "telegram.allowed_chats",
     "must be a list (`[a, b]`, or one `- item` a line), not the value 12345", ""),
])
def test_a_section_or_entry_of_the_wrong_shape_says_what_it_looks_like(
        tmp_path: Path, text: str, key: str, message: str, hint: str) -> None:
    """pydantic's words named our classes ("a valid dictionary or instance of Blog") and
    gave no hint of what an entry looks like."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert (e.value.key, e.value.message) == (key, message)
    assert hint in e.value.hint
    assert "instance of" not in str(e.value) and "Input should" not in str(e.value)


def test_a_wrong_entry_does_not_repeat_a_password_of_its_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "blogs:\n  - https://bob:hunter2@example.org/feed\n"))
    assert "hunter2" not in str(e.value) and "bob:***@example.org" in str(e.value)


def test_a_second_section_of_one_name_is_named_with_both_lines_in_short(tmp_path: Path
                                                                        ) -> None:
    """A second `blogs:` at the end of the repository's file: ruamel's message repeated the
    whole first section, a kilobyte on one line."""
    text = REPO_SOURCES.read_text(encoding="utf-8")
    first = text.splitlines().index("blogs:") + 1
    again = text + "blogs:\n  - name: Another\n    url: https://example.org/feed.xml\n"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, again))
    second = text.count("\n") + 1
    assert e.value.line == second
    assert e.value.message == f"duplicate key 'blogs', on lines {first} and {second}"
    assert e.value.hint == "move what is under the second into the first"
    assert len(str(e.value)) < 200
    with pytest.raises(ConfigError) as e:  # a plain value, twice on one line
        load_config(write(tmp_path, "blogs:\n  - {name: a, name: b, url: https://e.org/x}\n"))
    assert (e.value.message, e.value.hint) == ("duplicate key 'name', twice on line 2",
                                               "delete one of them")


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u200b"])
def test_an_indentation_of_odd_spaces_is_named_on_its_own_line(tmp_path: Path,
                                                               space: str) -> None:
    """Line 13 of the repository's file indented with no-break spaces (pasted from a web
    page): the error pointed at line 14 ("check the indentation of line 14") and never named
    them."""
    lines = REPO_SOURCES.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[12].startswith("  # roadmap:")
    lines[12] = space * 2 + lines[12][2:]
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "".join(lines)))
    name = f"U+{ord(space):04X} {unicodedata.name(space)}"
    assert e.value.line == 13
    assert e.value.message == f"line 13 is indented with {name}, which YAML does not take " \
        "for a space"
    assert e.value.hint == "retype the indentation of that line with plain spaces"


def test_a_key_indented_with_no_break_spaces_is_not_called_unknown(tmp_path: Path) -> None:
    """`\\xa0\\xa0\\xa0\\xa0url:` is valid YAML, a top-level key of its own: "unknown key",
    with spaces that look like the url key's."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "blogs:\n  - name: A\n\u00a0\u00a0\u00a0\u00a0url: "
                                    "https://example.org/a.xml\n"))
    assert e.value.line == 3 and "unknown key" not in str(e.value)
    assert e.value.message.startswith("line 3 is indented with U+00A0 NO-BREAK SPACE")


# A blog's name over two lines, its second starting with no-break spaces after the plain ones
# (text YAML keeps, not a slip), then a key indented one space too far: on the next line, or
# on the next blog's.
NAME = {"folded": "  - name: >\n      A blog\n      \u00a0\u00a0of notes\n",
        "plain": "  - name: A blog\n      \u00a0\u00a0of notes\n"}
BAD_URL = {"next line": "     url: https://example.org/a.xml\n",
           "next blog": "    url: https://example.org/a.xml\n  - name: B\n"
                        "     url: https://example.org/b.xml\n"}


@pytest.mark.parametrize("name", NAME)
@pytest.mark.parametrize("bad_url", BAD_URL)
def test_a_no_break_space_in_a_value_is_not_blamed_for_an_error_below(tmp_path: Path,
                                                                     name: str,
                                                                     bad_url: str) -> None:
    """The error was "line 4 is indented with U+00A0" (or line 3), a line YAML had read
    well, instead of the key indented wrong."""
    text = f"blogs:\n{NAME[name]}{BAD_URL[bad_url]}"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert e.value.line == text.count("\n")  # the last line, `     url:`
    assert e.value.message.startswith("not valid YAML: ")
    assert "U+00A0" not in str(e.value)


def test_a_key_indented_with_no_break_spaces_is_named_past_a_comment(tmp_path: Path) -> None:
    """YAML marks the key two lines below, past a comment: the key is still what to retype."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "learner:\n  stage: cnn\n\u00a0\u00a0timezone: UTC\n"
                                    "  # a comment\n  since: 7d\n"))
    assert e.value.line == 3
    assert e.value.message.startswith("line 3 is indented with U+00A0 NO-BREAK SPACE")
