"""`feedbot follow`, `unfollow`, `import-opml` and `export-opml`: thin commands over `follow.py`
and `opml.py`, registered on `feedbot.cli.main` when cli.py imports this module.

Nothing here edits YAML, fetches or parses anything itself. Exit status 2 for a refused or
invalid request (the file is then untouched), 1 when a blog URL could not be checked.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from .cli import App, fail, main, pass_app
from .redact import mask_userinfo

# feedbot.follow (httpx, feedparser) is imported inside the commands: every other command
# starts faster without it.


def _argv(words: tuple[str, ...], options: dict[str, str | float | None],
          flags: dict[str, bool]) -> list[str]:
    """The command line as the one shared parser (also used by the bot) reads it."""
    argv = list(words)
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name}", str(value)]
    argv += [f"--{name}" for name, on in flags.items() if on]
    return argv


@contextmanager
def _refusals() -> Iterator[None]:
    """A refused request exits 2 with its reason; a blog that could not be reached exits 1;
    a request sources.yaml already answers says so and exits 0."""
    from .follow import CheckFailed, FollowError, NothingToChange

    try:  # the answers may name a blog's URL, and its password with it: masked
        yield
    except NothingToChange as e:
        click.echo(mask_userinfo(str(e)))
    except CheckFailed as e:
        fail(mask_userinfo(str(e)), 1)
    except FollowError as e:
        fail(mask_userinfo(str(e)), 2)


@main.command()
@click.argument("words", nargs=-1, metavar="[NAME | @user@instance | handle.bsky.social | "
                "x:handle | URL]...")
@click.option("--x", "x", metavar="HANDLE", help="X handle (collected when X_BEARER_TOKEN is set).")
@click.option("--bluesky", metavar="HANDLE", help="Bluesky handle, e.g. someone.bsky.social.")
@click.option("--mastodon", metavar="@USER@INSTANCE", help="Mastodon account.")
@click.option("--arxiv", metavar="AUTHOR",
              help='Author name as arXiv lists it, e.g. "Andrew Y. Ng".')
@click.option("--blog", metavar="URL",
              help="The blog's feed URL, or its page when the page advertises a feed.")
@click.option("--category", metavar="CAT",
              help="An arXiv category to follow as a query, e.g. cs.LG (not with a person).")
@click.option("--weight", type=click.FloatRange(min=0), help="Favour this source: 2 = twice as "
              "much, 0.5 = half.")
@click.option("--replies", is_flag=True, help="X: include their replies.")
@click.option("--retweets", is_flag=True, help="X: include their retweets.")
@click.option("--no-check", is_flag=True,
              help="Do not fetch a blog URL to check it is a feed: it is followed exactly as "
              "given (a warning says when it looks like a web page), so give the feed's own "
              "URL, not the blog's page.")
@pass_app
def follow(app: App, words: tuple[str, ...], x: str | None, bluesky: str | None,
           mastodon: str | None, arxiv: str | None, blog: str | None, category: str | None,
           weight: float | None, replies: bool, retweets: bool, no_check: bool) -> None:
    """Follow a person (on X, Bluesky, Mastodon, arXiv, their blog), a blog or an arXiv category.

    Edits sources.yaml with its comments and order kept. A name that is already followed gets
    the new places added; anything already followed is refused. A blog URL is fetched once to
    check it is a feed, or that the page advertises one. Profile URLs (x.com/NAME,
    bsky.app/profile/HANDLE, a Mastodon server's /@NAME) follow that account, and
    arxiv.org/list/CAT/... follows the category. A URL may be typed without https://
    (x.com/karpathy, karpathy.github.io/feed.xml), and a local server's without http://
    (localhost:8080/feed.xml, 192.168.1.5:8080/feed.xml).

    \b
    Examples:
      feedbot follow "Andrej Karpathy" --x karpathy --arxiv "Andrej Karpathy"
      feedbot follow "Andrej Karpathy" --bluesky karpathy.bsky.social
      feedbot follow --blog https://lilianweng.github.io/
      feedbot follow @someone@mastodon.social
      feedbot follow https://arxiv.org/list/cs.LG/recent
      feedbot follow x.com/karpathy
    """
    argv = _argv(words, {"x": x, "bluesky": bluesky, "mastodon": mastodon, "arxiv": arxiv,
                         "blog": blog, "category": category, "weight": weight},
                 {"replies": replies, "retweets": retweets, "no-check": no_check})
    with _refusals():
        from .follow import follow as follow_request
        from .follow import parse_follow_args

        click.echo(mask_userinfo(follow_request(app.sources_file, parse_follow_args(argv))))


@main.command()
@click.argument("name", nargs=-1, required=True)
@pass_app
def unfollow(app: App, name: tuple[str, ...]) -> None:
    """Stop following NAME: a person, a blog or an arXiv query (as `feedbot sources` lists).

    NAME/PLACE (`"Andrej Karpathy/x"`, also /bluesky, /mastodon, /arxiv, /blog) stops following
    one place of a person and keeps the others.
    """
    with _refusals():
        from .follow import unfollow as unfollow_name

        click.echo(mask_userinfo(unfollow_name(app.sources_file, " ".join(name))))


@main.command("import-opml")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def import_opml(app: App, file: Path) -> None:
    """Follow the feeds in an OPML FILE (exported by any feed reader) as blogs.

    Feeds already followed are skipped; everything new is added in one edit of sources.yaml.
    """
    from .opml import OpmlError, parse_opml

    try:
        feeds = parse_opml(file.read_bytes())
    except OpmlError as e:
        fail(f"{file}: {e}", 2)
    except OSError as e:  # unreadable (permissions), or gone since click checked it
        fail(f"cannot read {file}: {e.strerror or e}", 2)
    with _refusals():
        from .follow import add_blogs

        report = add_blogs(app.sources_file, feeds)
    for name in report.added:
        click.echo(f"added {name}")
    for title, why in report.skipped:
        click.echo(f"skipped {title}: {why}")
    click.echo(f"{len(report.added)} added, {len(report.skipped)} skipped "
               f"({len(feeds)} feed{'s' if len(feeds) != 1 else ''} in {file.name})")


@main.command("export-opml")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to this file instead of standard output (- for standard output).")
@pass_app
def export_opml(app: App, output: Path | None) -> None:
    """Print your blogs and people's feeds as OPML, for any feed reader to import."""
    from .opml import render_opml

    text = render_opml(app.config)
    if output is None or str(output) == "-":
        # UTF-8 bytes, as the document declares, whatever stdout's own encoding (cp1252...)
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
    else:
        from .sources_edit import atomic_write

        try:
            if output.exists() and not output.is_file():  # /dev/stdout, a named pipe
                output.write_text(text, encoding="utf-8")
            else:  # a full disk leaves the previous export whole, not cut short
                atomic_write(output, text)
        except OSError as e:  # no such directory, no permission, a full disk, ...
            fail(f"cannot write {output}: {e.strerror or e}", 2)
        click.echo(f"wrote {output}", err=True)
