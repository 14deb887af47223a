"""The `feedbot` command line. Commands stay thin: they load settings and call the pipeline.

Exit codes: 0 when the command ran (even if some sources failed), 2 for a configuration or
usage error (with file, line and key), 1 for anything else that stopped the command. A
`feedbot collect` that could not record some sources in the database (busy past the timeout, a
damaged row) still ran: every source is reported, the others are recorded, one line on stderr
names the ones to collect again, and the exit status is 0 (design.md: "even if some sources
failed"). A full disk stops the sources not yet recorded: exit 1.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from . import __version__
from .config import (
    Config,
    ConfigError,
    feedbot_home,
    line_of,
    load_config,
    parse_duration,
    sources_path,
    x_token,
)
from .redact import install_env_redaction

if TYPE_CHECKING:
    from .digest import Digest
    from .embed import Embedder
    from .roadmap import Roadmap
    from .store import AmbiguousRef, Store


class SettingError(Exception):
    """A bad setting outside sources.yaml (an environment variable, the data directory)."""


class StoreProblem(SettingError):
    """The database cannot be used (damaged, newer, a full disk): no setting, so exit 1."""


class App:
    """What commands share; everything is loaded on first use."""

    def __init__(self, sources: str | None = None) -> None:
        # expanded here: click reads FEEDBOT_SOURCES itself, and systemd's Environment= or an
        # .env file leave `~/feeds.yaml` as it is
        self.sources_file = Path(sources).expanduser() if sources else sources_path()

    @cached_property
    def unchecked_config(self) -> Config:
        """sources.yaml as read, its stage not checked against the roadmap: `stage list` and
        `stage set` must work on a stage the roadmap lacks (a typo, a roadmap file changed),
        to mend it."""
        return load_config(self.sources_file)

    @cached_property
    def config(self) -> Config:
        cfg = self.unchecked_config
        check_stage(cfg, self.roadmap)
        return cfg

    def roadmap_for(self, cfg: Config) -> Roadmap:
        from .roadmap import load_roadmap

        path = cfg.learner.roadmap
        if path:
            path = str(Path(path).expanduser())  # `roadmap: ~/my-roadmap.yaml`
        if path and not Path(path).is_absolute() and cfg.path is not None:
            path = str(cfg.path.parent / path)
        return load_roadmap(path)

    @cached_property
    def roadmap(self) -> Roadmap:
        return self.roadmap_for(self.unchecked_config)

    @cached_property
    def home(self) -> Path:
        home = feedbot_home()
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SettingError(home_problem(home, e)) from None
        return home

    @cached_property
    def store(self) -> Store:
        from .store import Store, StoreError, is_disk_trouble

        try:
            return Store.open(self.home)
        except StoreError as e:
            if e.__cause__ is not None and is_disk_trouble(e.__cause__):  # not a damaged file
                raise StoreProblem(disk_full_problem(self.home, e.__cause__)) from None
            raise StoreProblem(str(e)) from None
        except (OSError, sqlite3.OperationalError) as e:
            raise SettingError(home_problem(self.home, e)) from None

    @cached_property
    def embedder(self) -> Embedder:
        from .embed import Embedder, EmbedSettingError

        try:
            return Embedder()
        except EmbedSettingError as e:  # FEEDBOT_DEVICE or FEEDBOT_EMBED_BACKEND
            raise SettingError(str(e)) from None

    def now(self) -> datetime:
        return datetime.now(UTC)


def home_problem(home: Path, e: Exception) -> str:
    """Why the data directory cannot be used, naming FEEDBOT_HOME."""
    if home.exists() and not home.is_dir():
        why = "it is a file, not a directory"
    else:
        why = getattr(e, "strerror", None) or str(e)
    if os.environ.get("FEEDBOT_HOME"):
        return f"FEEDBOT_HOME={home} cannot be used as the data directory: {why}"
    return (f"the data directory {home} cannot be used: {why}; set FEEDBOT_HOME to another "
            "directory")


def check_stage(cfg: Config, roadmap: Roadmap) -> None:
    """`learner.stage` names a stage of the roadmap, in any case (as `stage set` and the bot's
    /stage take it): `stage: CNN` is `cnn`, and is used as the roadmap spells it."""
    cfg.learner.stage = roadmap.find(cfg.learner.stage) or cfg.learner.stage
    if cfg.learner.stage not in roadmap.ids:
        close = roadmap.closest(cfg.learner.stage)  # in any case, as `stage set` suggests
        line = line_of(cfg.path, ["learner", "stage"])
        raise ConfigError(cfg.path, f"unknown stage {cfg.learner.stage!r}", line=line,
                          key="learner.stage",
                          hint=(f"did you mean '{close}'? " if close else "") +
                          "`feedbot stage set ID` sets it; `feedbot stage list` lists them")


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"feedbot: {message}", err=True)
    sys.exit(code)


# options of `feedbot` itself, which go before the command
GROUP_OPTIONS = ("--sources", "-v", "--verbose", "-vv")


class FeedbotGroup(click.Group):
    """Turns configuration errors into one clear line and exit status 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # before click parses: `feedbot --help` (eager, printed while parsing, before main()
        # runs) holds 👍 👎 too, and must not die on a cp1252 or latin-1 stdout
        tolerate_unencodable_output()
        text_params_as_utf8(self)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as e:
            # `feedbot digest --sources f.yaml`: click would suggest --since
            if e.option_name in GROUP_OPTIONS and ctx.invoked_subcommand:
                where = (f"it goes before the command: feedbot {e.option_name} … "
                         f"{ctx.invoked_subcommand} …")
                typo = [p for p in e.possibilities or () if _one_edit(p, e.option_name)]
                message = (f"No such option: {e.option_name}. Did you mean {typo[0]}? If you "
                           f"meant feedbot's own {e.option_name}, {where}" if typo else
                           f"No such option: {e.option_name} here; {where}")
                raise click.NoSuchOption(e.option_name, ctx=e.ctx, message=message) from None
            raise
        except StoreProblem as e:
            fail(str(e), 1)
        except (ConfigError, SettingError) as e:
            fail(str(e), 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except sqlite3.OperationalError as e:  # a full disk, mid-command: one line, no traceback
            from .store import is_busy, is_disk_trouble, is_read_only, read_only_problem

            if is_read_only(e):
                fail(read_only_problem(feedbot_home(), e), 1)
            if is_disk_trouble(e):
                fail(disk_full_problem(feedbot_home(), e), 1)
            if is_busy(e):  # held past the busy timeout
                fail(f"the database in {feedbot_home()} is busy ({e}): another feedbot process "
                     "has held it for 30 s; nothing of this command was half-written; try "
                     "again when it is done", 1)
            raise
        except OSError as e:  # `feedbot digest > out.md` on a full disk: one line, no traceback
            if e.errno not in _WRITE_ERRORS:
                raise
            what = e.filename or "the output"
            fail(f"cannot write {what}: {e.strerror or e}", 1)


class Utf8Text(click.types.StringParamType):
    """A text argument or option (a name, a query, an id; not a file's path) as the UTF-8 text
    the terminal or the script typed, whatever the locale.

    Python decodes the command line with the locale's encoding and keeps each byte it cannot
    decode as a lone surrogate: under the C or POSIX locale (cron, a minimal Docker image)
    every non-ASCII letter. `feedbot follow "José Pérez"` then failed as invalid text and
    `unfollow "Łukasz Kaiser"` found no one. The bytes, as typed, are read as UTF-8 (what
    terminals and shells send almost everywhere); bytes that are not UTF-8 are refused, naming
    the argument, instead of being searched or stored as garbage. A path keeps its bytes
    (click.Path): a file name need not be UTF-8 to open."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        try:
            text.encode("utf-8")
            return text  # no lone surrogate: decoded as it was sent
        except UnicodeEncodeError:
            pass
        try:
            return os.fsencode(text).decode("utf-8")  # the bytes of the command line
        except UnicodeError:
            from .text import mend_surrogates

            self.fail(f"{mend_surrogates(text)!r} is not UTF-8 text (\ufffd marks the bytes "
                      "that are not); give it in UTF-8, as a terminal or a script set to UTF-8 "
                      "sends it", param, ctx)


UTF8_TEXT = Utf8Text()


def text_params_as_utf8(command: click.Command) -> None:
    """Every plain text parameter of `command` and its subcommands reads the command line as
    UTF-8 (`Utf8Text`). Done as feedbot's group parses, not when a command is declared: new
    commands and options get it without a word, and cli_follow's and cli_run's commands
    register when imported, whichever module is imported first."""
    for param in command.params:
        if type(param.type) is click.types.StringParamType:
            param.type = UTF8_TEXT
    for sub in getattr(command, "commands", {}).values():
        text_params_as_utf8(sub)


def _one_edit(a: str, b: str) -> bool:
    """Whether a and b differ by one letter added, dropped or changed (--source, --sources)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def disk_full_problem(home: Path, e: BaseException) -> str:
    return (f"cannot write to the database in {home}: {e}. What was stored before is kept; "
            "free some space there (or set FEEDBOT_HOME to another directory) and run the "
            "command again")


_WRITE_ERRORS = {errno.ENOSPC, errno.EIO, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


@click.group(cls=FeedbotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="feedbot %(version)s")
@click.option("--sources", "sources", envvar="FEEDBOT_SOURCES", metavar="FILE",
              type=click.Path(readable=False),  # a path: its bytes kept, as Utf8Text does not
              help="sources.yaml to use (default: $FEEDBOT_SOURCES, ./sources.yaml, "
                   "$FEEDBOT_HOME/sources.yaml).")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, sources: str | None, verbose: int) -> None:
    """feedbot: follow researchers, blogs and arXiv; rank what they publish for your
    deep-learning roadmap stage."""
    # First of all: no secret from the environment may reach a log line, whatever logs it
    # (-vv shows the request headers requests/tweepy log), in every command.
    ctx.call_on_close(install_env_redaction())
    tolerate_unencodable_output()
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = App(sources)


pass_app = click.make_pass_decorator(App)


def utf8_stdout() -> bool:
    """Whether standard output takes any text (else e.g. cp1252 in a Windows pipe, latin-1)."""
    import codecs

    try:
        return codecs.lookup(getattr(sys.stdout, "encoding", None) or "ascii").name == "utf-8"
    except LookupError:
        return False


def tolerate_unencodable_output() -> None:
    """A character that stdout's encoding lacks (a feed's emoji under cp1252, a lone
    surrogate) becomes `?` instead of a UnicodeEncodeError traceback half-way through the
    output; stderr already does that (backslashreplace) by Python's default.

    Under the C or POSIX locale (cron, a minimal Docker image, `LANG=C`) Python's streams are
    ASCII, and the text digest died at its first `—` (rich writes to stdout itself). There
    stdout and stderr write UTF-8, as click's `echo` already does for every other line
    there: that locale is the system's default, seldom what the screen or the log shows."""
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:  # None (started with >&-), or not a text file
            continue
        with contextlib.suppress(ValueError, OSError):  # closed or detached: leave it be
            if _is_ascii(getattr(stream, "encoding", None) or ""):
                reconfigure(encoding="utf-8", errors=errors)
            elif getattr(stream, "errors", None) == "strict":
                reconfigure(errors=errors)


def _is_ascii(encoding: str) -> bool:
    import codecs

    try:
        return codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return False


# --- collect ----------------------------------------------------------------------------------

def check_server_urls() -> None:
    """A server URL variable (FEEDBOT_ARXIV_API_URL, …) that is not an http(s) URL is a setting
    error naming the variable (exit 2), as FEEDBOT_DEVICE's is, not a fetch error that marks
    every source using it failing or broken, with a back-off that outlives the fix."""
    from urllib.parse import urlsplit

    from .redact import URL_ENV, mask_userinfo

    for name in URL_ENV:
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        try:
            parts = urlsplit(value.replace("{instance}", "instance"))
            parts.port  # noqa: B018 - a port that is no number raises
            ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            raise SettingError(f"{name}={mask_userinfo(value)} is not an http(s) URL with a "
                               "host, e.g. http://127.0.0.1:8080; unset it to use the real "
                               "service")


def run_collect(app: App, *, only: str | Sequence[str] | None = None, due_only: bool = False,
                echo: bool = True) -> list[Any]:
    from .collect import collect, report_lines, select_sources, summarize
    from .pipeline import embed_pending

    check_server_urls()

    try:  # the bar counts the sources collected: with --source, not all of them
        total = len(select_sources(app.config, only))
    except KeyError as e:
        fail(str(e.args[0]), 2)
    stream = sys.stderr if due_only else sys.stdout
    bar = _progress(stream, total) if echo else None

    def show(report: Any) -> None:
        if bar is not None:
            bar.advance(bar.task_ids[0])
        # a source skipped for a reason (collected by another process) is said; one not due is
        # not. `feedbot collect` gives every source its line, switched off ones too; a digest's
        # collection gathers those into one line for each reason, after the others
        if echo and (report.status != "disabled" or not due_only) and (
                report.status != "skipped" or report.error):
            if bar is not None:
                bar.console.print(report.line(), markup=False, highlight=False)
            else:
                click.echo(report.line(), err=due_only)

    try:
        if bar is not None:
            bar.start()
        reports = collect(app.config, app.store, now=app.now(), only=only, due_only=due_only,
                          on_done=show)
    finally:
        if bar is not None:
            bar.stop()
    if echo and due_only:
        for line in report_lines([r for r in reports if r.status == "disabled"]):
            click.echo(line, err=True)
    elif echo:
        click.echo(summarize(reports))
    trouble = unrecorded_problem(reports)
    if trouble is not None and due_only:  # the digest goes on with what is stored
        click.echo(f"feedbot: {trouble[0]}", err=True)
    if trouble is not None and trouble[1]:  # a full disk: embedding could not be stored either
        return reports
    try:
        embed_pending(app.store, app.embedder, app.now(), echo=lambda m: click.echo(m, err=True))
    except Exception as e:  # items are stored; the next collect or digest embeds them
        from .embed import EmbedSettingError

        logging.getLogger(__name__).debug("embedding failed", exc_info=True)
        new = sum(r.new + r.updated for r in reports)  # "new items" only when there are
        what = ("stored items cannot be embedded" if not new else
                f"{new} new item{'s are' if new != 1 else ' is'} stored but could not be "
                "embedded yet")
        why = str(e) if isinstance(e, SettingError | EmbedSettingError) else \
            f"{type(e).__name__}: {e}"  # a setting's message names the variable already
        click.echo(f"feedbot: {what}: {why}", err=True)
    return reports


def unrecorded_problem(reports: list[Any]) -> tuple[str, bool] | None:
    """One line for the sources whose outcome could not be recorded (a database held past the
    busy timeout, a full disk, a damaged row), and whether the disk is full; None when every
    source was recorded."""
    from .store import is_busy, is_disk_trouble

    failed = [r for r in reports if r.store_error is not None]
    if not failed:
        return None
    errors = [r.store_error for r in failed]
    full = next((e for e in errors if is_disk_trouble(e)), None)
    if full is not None:
        return disk_full_problem(feedbot_home(), full), True
    from .store import is_read_only, read_only_problem

    ro = next((e for e in errors if is_read_only(e)), None)
    if ro is not None:  # nothing can be stored: embedding neither
        return read_only_problem(feedbot_home(), ro), True
    names = ", ".join(r.name for r in failed[:4]) + (
        f" and {len(failed) - 4} more" if len(failed) > 4 else "")
    some = f"{len(failed)} source{'s' if len(failed) > 1 else ''} ({names})"
    them = "them" if len(failed) > 1 else "it"
    if all(is_busy(e) for e in errors):
        return (f"{some} could not be recorded: the database in {feedbot_home()} was busy "
                f"(another feedbot process held it past the busy timeout); nothing of {them} was "
                "lost: run `feedbot collect` again"), False
    kinds = ", ".join(sorted({type(e).__name__ for e in errors}))
    return (f"{some} could not be recorded ({kinds}); nothing of {them} was kept, and the "
            f"next `feedbot collect` fetches {them} again"), False


PROGRESS_MIN_SOURCES = 10


def _progress(stream: Any, total: int) -> Any:
    """A progress bar for long runs, on a terminal only (never in pipes, logs or tests)."""
    if total < PROGRESS_MIN_SOURCES or not stream.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("collecting"), BarColumn(), MofNCompleteColumn(),
                   console=Console(file=stream), transient=True)
    bar.add_task("collect", total=total)
    return bar


@main.command()
@click.option("--source", "only", metavar="NAME", multiple=True,
              help="Collect only this source (or person); give it again for more.")
@pass_app
def collect(app: App, only: tuple[str, ...]) -> None:
    """Fetch all sources now (or those named), one line per source."""
    if any(not name.strip() for name in only):
        fail("--source needs the name of a source or person; see `feedbot sources`", 2)
    trouble = unrecorded_problem(run_collect(app, only=only or None))
    if trouble is not None and trouble[1]:  # a full disk: the rest was not even fetched
        fail(trouble[0], 1)
    if trouble is not None:  # the run happened, but not all of it is stored: say which
        click.echo(f"feedbot: {trouble[0]}", err=True)


# --- digest -----------------------------------------------------------------------------------

@main.command()
@click.option("--stage", "stage_id", metavar="ID", help="Rank for this stage instead of yours.")
@click.option("--limit", type=click.IntRange(1, 100), help="How many items (default: "
              "learner.digest_size).")
@click.option("--since", metavar="AGE", help="Look back this far, e.g. 24h, 7d (default: "
              "learner.since).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "html", "json"]),
              default="text", show_default=True)
@click.option("--no-collect", is_flag=True, help="Do not collect stale sources first.")
@click.option("--explain", is_flag=True, help="Show the parts of each score.")
@pass_app
def digest(app: App, stage_id: str | None, limit: int | None, since: str | None, fmt: str,
           no_collect: bool, explain: bool) -> None:
    """Print the ranked digest for your current roadmap stage."""
    from .digest import voted_on
    from .pipeline import make_digest

    cfg = app.config
    if stage_id is not None:
        stage_id = stage_or_fail(stage_id, app.roadmap)
    window = None
    if since is not None:
        window = look_back(app, since, zero_hint="24h or 7d", far_hint="7d or 365d")
    if not no_collect and cfg.sources():
        run_collect(app, due_only=True)
    # what you voted on is read: it leaves the digest (a 👍 item led every digest after it,
    # "; you liked it", its vote making it the best fit)
    now = app.now()
    voted, read = voted_on(app.store, cfg, now, window)
    d = make_digest(app.config, app.store, app.embedder, app.roadmap, now=now,
                    stage_id=stage_id, limit=limit, since=window, exclude=voted, read=read)
    print_digest(d, fmt, explain)


def look_back(app: App, since: str, *, zero_hint: str, far_hint: str) -> timedelta:
    """`--since AGE` as a look-back from now; exit 2 with one line when it is not a duration,
    is no time at all, or reaches back before year 1."""
    try:
        window = timedelta(seconds=parse_duration(since))
        app.now() - window  # noqa: B018 - a look-back before year 1 overflows
    except ValueError as e:
        fail(f"--since: {e}", 2)
    except OverflowError:
        fail(f"--since: {since!r} looks back too far; use e.g. {far_hint}", 2)
    if window <= timedelta(0):
        fail(f"--since: {since!r} is no time at all; use e.g. {zero_hint}", 2)
    return window


def print_digest(d: Digest, fmt: str, explain: bool = False) -> None:
    """A digest (or search results, which render as one) on stdout in `fmt`."""
    from . import render

    if fmt == "json":  # escaped to ASCII where stdout is not UTF-8: still the same JSON
        click.echo(render.render_json(d, explain, ascii_only=not utf8_stdout()), nl=False)
    elif fmt == "markdown":
        click.echo(render.render_markdown(d, explain), nl=False)
    elif fmt == "html":
        page = render.render_html(d, explain)
        if not utf8_stdout():  # the page says charset=utf-8: keep it ASCII, with references
            page = page.encode("ascii", "xmlcharrefreplace").decode("ascii")
        click.echo(page, nl=False)
    else:
        from rich.console import Console

        # On a terminal rich wraps to its width; in a pipe or a file, lines stay whole.
        tty = sys.stdout is not None and sys.stdout.isatty()  # None: started with >&-
        console = Console(soft_wrap=not tty, highlight=False)
        if console.width < 1:  # COLUMNS=0 made rich print nothing at all
            console.width = 80
        render.print_text(d, console, explain)


# --- search -----------------------------------------------------------------------------------

@main.command()
@click.argument("query", nargs=-1)
@click.option("--since", default="365d", show_default=True, metavar="AGE",
              help="Look back this far, e.g. 30d.")
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True,
              help="How many results at most.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "html", "json"]),
              default="text", show_default=True)
@click.option("--source", "sources", metavar="NAME", multiple=True,
              help="Only items from this source (or person); one.")
@pass_app
def search(app: App, query: tuple[str, ...], since: str, limit: int, fmt: str,
           sources: tuple[str, ...]) -> None:
    """Find what feedbot collected, by meaning and by words: QUERY may be a few words
    ("sparse attention", an author's name, "LoRA"), an arXiv id, an item id or a link.
    Results carry ids for `feedbot feedback ID up|down|later`. Collects nothing."""
    from .search import SearchError
    from .search import search as run_search

    if len(sources) > 1:  # click kept the last one, silently: "nothing matches … from B"
        fail(f"--source given {len(sources)} times; search one source at a time, or none "
             "for all", 2)
    source = sources[0] if sources else None
    window = look_back(app, since, zero_hint="30d or 365d", far_hint="30d or 365d")
    try:
        found = run_search(app.config, app.store, app.embedder, app.roadmap, " ".join(query),
                           now=app.now(), since=window, limit=limit, source=source,
                           echo=lambda m: click.echo(m, err=True))
    except SearchError as e:
        fail(str(e), 2)
    if fmt == "text" and not found.items:  # why nothing was found, and what else to know
        click.echo(found.empty)
        for note in found.notes:
            if note != found.empty:
                click.echo(note)
    else:
        print_digest(found, fmt)


# --- stage ------------------------------------------------------------------------------------

def stage_or_fail(stage_id: str, roadmap: Roadmap) -> str:
    """The roadmap's id for `stage_id`, in any case (`CNN` is `cnn`, as the bot's /stage
    takes it); otherwise exit 2 naming the ids."""
    found = roadmap.find(stage_id)
    if found is None:
        fail(unknown_stage(stage_id, roadmap), 2)
    return found


def unknown_stage(stage_id: str, roadmap: Roadmap) -> str:
    """`unknown stage 'CNNs' (did you mean 'cnn'?); stages: …`"""
    close = roadmap.closest(stage_id)
    hint = f" (did you mean '{close}'?)" if close else ""
    return f"unknown stage {stage_id!r}{hint}; stages: {', '.join(roadmap.ids)}"


class StageGroup(click.Group):
    """`feedbot stage nlp`, a stage where a subcommand goes, says `feedbot stage set nlp`
    instead of only "No such command 'nlp'"."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            stage_id = self._stage_meant(ctx, args[0]) if args else None
            if stage_id is None:
                raise
            raise click.UsageError(f"No such command {args[0]!r}; did you mean: feedbot stage "
                                   f"set {stage_id}", ctx) from None

    def _stage_meant(self, ctx: click.Context, word: str) -> str | None:
        """The stage `word` names (in any case) or is close to, unless it is close to a
        subcommand (`lsit`: click suggests `list`); None as well when the roadmap cannot be
        read (the command fails with its own words then)."""
        import difflib

        app = ctx.find_object(App)
        if app is None or word.startswith("-"):
            return None
        try:
            roadmap = app.roadmap
        except (ConfigError, SettingError):
            return None
        found = roadmap.find(word)
        if found is not None or difflib.get_close_matches(word, list(self.commands)):
            return found
        return roadmap.closest(word)


@main.group(cls=StageGroup, invoke_without_command=True)
@pass_app
@click.pass_context
def stage(ctx: click.Context, app: App) -> None:
    """Show your current roadmap stage (subcommands: list, set, next)."""
    if ctx.invoked_subcommand is None:
        st = app.roadmap.get(app.config.learner.stage)
        click.echo(f"stage {st.index + 1}/{len(app.roadmap.stages)}: {st.id} — {st.title}")
        click.echo(st.summary)
        if st.topics:
            click.echo("topics (what the ranking looks for):")
            for t in st.topics:
                click.echo(f"  - {t}")
        if st.resources:
            click.echo("resources:")
            for r in st.resources:
                click.echo(f"  - {r.title}: {r.url}")


@stage.command("list")
@pass_app
def stage_list(app: App) -> None:
    """List the roadmap's stages; yours is marked."""
    stage = app.unchecked_config.learner.stage
    current = app.roadmap.find(stage)
    for st in app.roadmap.stages:
        mark = "*" if st.id == current else " "
        click.echo(f"{mark} {st.index + 1:>2}. {st.id:<24} {st.title}")
    if current is None:
        click.echo(f"your stage {stage!r} (learner.stage) is not on this roadmap: "
                   "`feedbot stage set ID` sets one that is")


@stage.command("set")
@click.argument("stage_id", metavar="ID")
@pass_app
def stage_set(app: App, stage_id: str) -> None:
    """Move to stage ID (edits sources.yaml, comments kept)."""
    from .sources_edit import set_stage

    stage_id = stage_or_fail(stage_id, app.roadmap)
    set_stage(app.sources_file, stage_id)
    st = app.roadmap.get(stage_id)
    click.echo(f"stage set to {st.id} — {st.title}")


@stage.command("next")
@pass_app
def stage_next(app: App) -> None:
    """Move on to the next stage of the roadmap."""
    from .sources_edit import set_stage

    nxt = app.roadmap.next_after(app.config.learner.stage)
    if nxt is None:
        click.echo("you are at the last stage of the roadmap; nothing to move on to")
        return
    set_stage(app.sources_file, nxt.id)
    click.echo(f"stage set to {nxt.id} — {nxt.title}")


# --- sources, feedback, doctor, init -------------------------------------------------------------

@main.command()
@pass_app
def sources(app: App) -> None:
    """List sources with their health: last success, last error, item count."""
    from .pipeline import source_health

    rows = source_health(app.config, app.store, app.now())
    if not rows:
        click.echo("no sources configured; add blogs, arxiv queries or people to "
                   f"{app.sources_file}")
        return
    for line in format_sources(rows, app.now()):
        click.echo(line)


def format_sources(rows: list[dict[str, Any]], now: datetime) -> list[str]:
    """Blogs, arXiv queries, then people with their places; one health line each."""
    def status(r: dict[str, Any]) -> str:
        items = "item " if r["items"] == 1 else "items"  # in line with the others
        text = f"{r['health']:<7} {r['items']:>5} {items}  last ok {r['last_success']}"
        if r["weight"] != 1.0:
            text += f"  weight {r['weight']:g}"
        if r["waiting_until"] is not None:
            text += f"  waiting until {r['waiting_until']:%Y-%m-%d %H:%M} UTC"
        if r["error"]:
            text += f"  — {r['error']}"
        if r.get("notice"):
            text += f"  — note: {r['notice']}"
        return text

    from .render import shown

    # names from sources.yaml as the digest shows them: a bidi override (U+202E) reversed the
    # rest of the line on screen, the health and count included
    rows = [{**r, "name": shown(r["name"]), "place": shown(r["place"]),
             "person": shown(r["person"]) if r["person"] else r["person"]} for r in rows]
    out: list[str] = []
    # One column for every section's status, as wide as the longest name (up to a limit past
    # which a name is cut with "…"), so that a long name does not push its row out of line.
    people = [r for r in rows if r["person"]]
    labels = [2 + len(r["name"]) for r in rows if not r["person"]]
    labels += [4 + len(r["place"]) for r in people]
    width = min(max(labels, default=0), _SOURCES_NAME_MAX)

    def cell(indent: int, text: str) -> str:
        room = width - indent
        if len(text) > room:
            text = text[:room - 1] + "…"
        return " " * indent + f"{text:<{room}}"

    sections = (("Blogs", lambda r: not r["person"] and r["kind"] == "feed"),
                ("arXiv queries", lambda r: not r["person"] and r["kind"] == "arxiv"))
    for title, keep in sections:
        chosen = [r for r in rows if keep(r)]
        if chosen:
            out.append(f"{title}:")
            out += [f"{cell(2, r['name'])} {status(r)}" for r in chosen]
    if people:
        out.append("People:")
    person = None
    for r in people:
        if r["person"] != person:
            person = r["person"]
            out.append(f"  {person}")
        out.append(f"{cell(4, r['place'])} {status(r)}")
    return out


def ambiguous_text(e: AmbiguousRef) -> str:
    """Why a page's URL names no one item, with the first few of its items to choose from."""
    from .items import clean_url
    from .render import shown

    lines = [f"ambiguous: {len(e.items)} stored items are on this page; give the id or the "
             "exact URL (with its #fragment) of one:"]
    lines += [f"  [{s.id}] {shown(s.item.title) or '(untitled)'} — {clean_url(s.item.url)}"
              for s in e.items[:_AMBIGUOUS_SHOWN]]
    if len(e.items) > _AMBIGUOUS_SHOWN:
        lines.append(f"  … and {len(e.items) - _AMBIGUOUS_SHOWN} more: `feedbot search "
                     f"{clean_url(e.ref)}` lists them all")
    return "\n".join(lines)


_AMBIGUOUS_SHOWN = 5  # items of an ambiguous page that `feedbot feedback` lists


_SOURCES_NAME_MAX = 60  # widest name column of `feedbot sources`, indent included


def _chat(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`--chat`: `cli` (the terminal's own votes and list) or a Telegram chat id, written as
    the bot records it. Anything else was taken: a vote under `--chat foo` trained the model
    and reached no chat, and `later --chat foo` said the list was empty."""
    chat = value.strip()
    if chat == "cli":
        return chat
    if _CHAT_ID.fullmatch(chat):
        return str(int(chat))  # "+42", "042": the bot records 42
    raise click.BadParameter(f"{value!r} is no chat: give cli (the default, the terminal's own) "
                             "or a Telegram chat id, a whole number (negative for a group)")


_CHAT_ID = re.compile(r"[+-]?[0-9]+")


@main.command()
@click.argument("item")
@click.argument("value", type=click.Choice(["up", "down", "later"]))
@click.option("--chat", default="cli", show_default=True, callback=_chat,
              help="Whose feedback this is: cli or a Telegram chat id.")
@pass_app
def feedback(app: App, item: str, value: str, chat: str) -> None:
    """Record 👍 (up), 👎 (down) or read-later for ITEM (an id from the digest, or its URL)."""
    from .store import AmbiguousRef

    try:
        found = app.store.get_item(item)
    except AmbiguousRef as e:
        fail(ambiguous_text(e), 2)
    if found is None:
        from .digest import demo_items
        from .items import canonical_url
        from .store import unwrap_ref

        ref = unwrap_ref(item)
        if any(ref.lower() == d.id or canonical_url(ref) == canonical_url(d.item.url)
               for d in demo_items(app.now())):
            fail(f"{item!r} is one of the bundled demo items, which take no feedback; run "
                 "`feedbot collect`, then rate what your sources bring", 2)
        if app.store.was_withdrawn(item):
            fail(f"{item!r} was withdrawn by its authors on arXiv, and feedbot removed it (no "
                 "chat had voted on it or saved it); a withdrawn paper takes no feedback", 2)
        fail(f"no stored item {item!r} (never collected, or removed since by a prune, which "
             "keeps only what was voted on or saved); use an id from a recent `feedbot "
             "digest` or the item's URL", 2)
    from .render import shown

    app.store.set_feedback(chat, found.id, value, app.now(), stage=app.config.learner.stage)
    click.echo(f"{value}: {shown(found.item.title) or '(untitled)'} [{found.id}]")


@main.command()
@click.option("--chat", default="cli", show_default=True, callback=_chat,
              help="Whose list: cli (feedbot feedback's default) or a Telegram chat id.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_app
def later(app: App, chat: str, fmt: str) -> None:
    """List what you saved for later (feedbot feedback ITEM later, or 🔖 in Telegram), the
    latest first. A 👍 or 👎 takes an item off the list."""
    import json

    from .digest import following, labeller, source_specs
    from .items import clean_url

    saved = app.store.bookmarked_items(chat)
    # sources named as the digest and search name them ("arXiv cs.CL", not "cs.CL"); the
    # stage plays no part, so a stage the roadmap lacks does not stop the list
    try:
        cfg = app.unchecked_config
        label = labeller(source_specs(cfg, following(cfg, app.store, record=False)))
    except (ConfigError, SettingError) as e:  # the list is the store's: shown all the same
        click.echo(f"feedbot: {e}\n(sources are shown by their stored names)", err=True)
        label = str
    if fmt == "json":
        click.echo(json.dumps({"chat": chat, "items": [
            {"id": s.id, "title": s.item.title, "url": s.item.url,
             "source": label(s.sources[0]), "kind": s.item.kind,
             "withdrawn": s.item.withdrawn} for s in saved]},
            ensure_ascii=not utf8_stdout(), indent=2))
        return
    if not saved:
        click.echo(f"nothing saved for later (chat {chat}); `feedbot feedback ITEM later` "
                   "saves an item")
        return
    from .render import shown

    for n, s in enumerate(saved, 1):  # feed text as the digest shows it: no bidi overrides
        gone = " (withdrawn)" if s.item.withdrawn else ""  # on arXiv, since it was saved
        click.echo(f"{n:>2}. {shown(s.item.title) or '(untitled)'}{gone}\n    "
                   f"{shown(label(s.sources[0]))} — "
                   f"{clean_url(s.item.url)}  [{s.id}]")


@main.command()
@click.option("--older-than", "older_than", metavar="AGE", help="Remove items older than "
              "this, e.g. 180d (default: retention.items in sources.yaml, 365d).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
@click.option("--other-models", is_flag=True, help="Also remove the cached vectors of models "
              "other than the current one (after FEEDBOT_MODEL changed).")
@click.option("--no-vacuum", is_flag=True, help="Do not compact the file afterwards (VACUUM "
              "makes other feedbot processes wait while it runs).")
@pass_app
def prune(app: App, older_than: str | None, dry_run: bool, other_models: bool,
          no_vacuum: bool) -> None:
    """Remove old items (but those voted on, saved for later, or shared lately) and
    the cached vectors no item uses, so that the database does not grow forever. `feedbot run`
    does this daily."""
    from .prune import current_model, protected_hashes
    from .prune import prune as run_prune

    cfg = app.config
    if older_than is None:
        seconds, label = cfg.retention.items_seconds, cfg.retention.items
    else:
        label = older_than.strip()
        try:
            seconds = parse_duration(label)
        except ValueError as e:
            fail(f"--older-than: {e}", 2)
        if seconds <= 0:
            fail(f"--older-than: {older_than!r} is no time at all; use e.g. 180d or 365d", 2)
        if seconds < parse_duration(cfg.learner.since):
            fail(f"--older-than: {label} is shorter than learner.since ({cfg.learner.since}), "
                 "the digest's look-back: items would be removed before they were shown", 2)
    keep_model, current = None, ""
    if other_models:
        try:
            keep_model, current = current_model(app.embedder)
        except RuntimeError as e:  # no model configured or installed
            fail(f"--other-models needs to know the current model: {e}", 2)
    now = app.now()
    try:
        report = run_prune(
            app.store, older_than=seconds, label=label, now=now,
            keep_hashes=protected_hashes(app.roadmap, now),
            keep_model=keep_model, dry_run=dry_run, vacuum=not no_vacuum)
    except sqlite3.OperationalError as e:  # held by another process for the busy timeout
        from .store import is_busy

        if not is_busy(e):  # a full disk, a read-only file (said by FeedbotGroup)
            raise
        fail(f"the database is busy ({e}); what was removed so far stays removed; try again "
             "when the other feedbot command is done", 1)
    click.echo(report.line() + ("; nothing was changed (--dry-run)" if dry_run else ""))
    if current:
        click.echo(f"current model: {current}")


@main.command()
@pass_app
def doctor(app: App) -> None:
    """Show where feedbot keeps its data, the model and the device it embeds on; exit 1 when
    something there is a problem (the configuration, the database, the model)."""
    problems = 0
    click.echo(f"feedbot {__version__}")
    click.echo(f"sources: {app.sources_file}")
    click.echo(f"home: {app.home}")
    try:  # a database that digest and collect refuse (newer, damaged) is said here too
        store = app.store
        click.echo(f"database: {store.path} (schema {store.schema_version}, "
                   f"{store.item_count()} items)")
        if (refused := store.write_refused()) is not None:  # collect would fail on every source
            click.echo(f"database problem: {store.path} is not writable: {refused}; collect, "
                       "votes and digests cannot be recorded. Run feedbot as the user that owns "
                       "it, or fix the permissions of the file and its folder (or mount it "
                       "read-write)")
            problems += 1
    except SettingError as e:
        click.echo(f"database problem: {e}")
        problems += 1
    cfg: Config | None = None
    try:  # before the model: on a new home, loading it measures the backends for a while
        cfg = app.config
        n = len(cfg.sources())
        click.echo(f"stage: {cfg.learner.stage}; {n} source{'s' if n != 1 else ''}")
        if xs := sum(s.kind == "x" for s in cfg.sources()):
            token = bool(x_token())
            click.echo(f"X: {xs} account{'s' if xs != 1 else ''} followed; X_BEARER_TOKEN "
                       + ("is set (`feedbot sources` shows whether X takes it)" if token else
                          "is not set: they are off"))
    except ConfigError as e:
        click.echo(f"configuration problem: {e}")
        problems += 1
    try:
        check_server_urls()
    except SettingError as e:  # collect, digest and run refuse to start with it
        click.echo(f"setting problem: {e}")
        problems += 1
    from .embed import EmbedSettingError, model_files, resolve_model

    model_ref = ""
    try:
        emb = app.embedder  # SettingError: FEEDBOT_DEVICE or FEEDBOT_EMBED_BACKEND is no value
        model_ref = emb.model_ref
        click.echo(f"model: {emb.model_name} ({emb.model_ref})")
        # The model's files, looked at before torch is imported to load it.
        where, files_problem = model_files(emb.model_ref)
        in_hub_cache = where is not None and str(where) != emb.model_ref
        if in_hub_cache:
            click.echo(f"model files: {where} (the Hugging Face cache)"
                       + (f"; incomplete ({files_problem}): the rest is downloaded when the "
                          "hub can be reached" if files_problem else ""))
        if files_problem and not in_hub_cache:
            click.echo(f"model problem: {files_problem}")
            problems += 1
        else:
            click.echo(f"device: {emb.device} (FEEDBOT_DEVICE={emb.device_pref})")
            click.echo(f"backend: {emb.backend_name}")
    except (SettingError, EmbedSettingError) as e:  # the variable is named in the message
        click.echo(f"embedding problem: {e}")
        problems += 1
    except Exception as e:  # a broken model install is exactly what doctor is for
        click.echo(f"model could not be loaded: {type(e).__name__}: {e}")
        problems += 1
    if cfg is not None:
        click.echo(retention_line(app, cfg))
    if not model_ref:  # the embedder was refused: the exports of the model it would load
        with contextlib.suppress(Exception):  # (the packaged model missing: said above)
            model_ref = resolve_model()[1]
    for line in disk_use(app.home, model_ref):
        click.echo(line)
    if problems:
        fail(f"{problems} problem{'s' if problems != 1 else ''} found (above)", 1)


def retention_line(app: App, cfg: Config) -> str:
    """What `feedbot prune` (daily in `feedbot run`) removes, and how much is due now."""
    seconds = cfg.retention.items_seconds
    if seconds is None:
        return "retention: never (items are kept for ever)"
    text = (f"retention: items older than {cfg.retention.items} go (`feedbot prune`, daily "
            "in `feedbot run`)")
    try:
        due = app.store.prune_candidates(app.now() - timedelta(seconds=seconds))
    except (SettingError, sqlite3.Error):
        return text
    return text + f"; {len(due.ids):,} due now" + (
        f", {due.voted:,} as old kept (voted on, saved, or shared since)"
        if due.voted else "")


def _megabytes(n: int) -> str:
    """Bytes in decimal units: 113.0 MB, 1.2 GB, 48.0 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def disk_use(home: Path, model_ref: str) -> list[str]:
    """What feedbot keeps on disk: the database (with its WAL files) and every ONNX export
    (the current one, older ones of the same model, which the next export removes, and those
    of other models)."""
    from .backends import STALE_AFTER_S, list_exports, models_dir
    from .store import DB_FILE

    db = 0
    for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):
        with contextlib.suppress(OSError):
            db += (home / name).stat().st_size
    exports = list_exports(model_ref)
    if not exports:
        return [f"disk: database {_megabytes(db)}; no ONNX exports"]
    lines = [f"disk: database {_megabytes(db)}; ONNX exports "
             f"{_megabytes(sum(e.size for e in exports))} in {models_dir()}"]
    for e in exports:
        if e.current:
            what = "current"
        elif not e.stale:
            what = "another model"
        elif e.idle_s >= STALE_AFTER_S:
            what = "stale (an older export of this model: the next export removes it)"
        else:
            what = (f"stale (an older export of this model, used {e.idle_s / 3600:.0f} h ago: "
                    "kept until unused for a day)")
        lines.append(f"  {e.path.name}  {_megabytes(e.size)}  {what}")
    return lines


@main.command()
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_app
def init(app: App, force: bool) -> None:
    """Write a starter sources.yaml (to --sources, $FEEDBOT_SOURCES, ./sources.yaml if it is
    there, else $FEEDBOT_HOME/sources.yaml)."""
    from .config import packaged_sources
    from .sources_edit import atomic_write

    target = app.sources_file
    if target.is_dir():  # said "exists; use --force", and --force "Is a directory"
        fail(f"cannot write {target}: it is a directory; name the file, as in "
             f"`feedbot --sources {target / 'sources.yaml'} init`", 2)
    if target.exists() and not force:
        fail(f"{target} exists; use --force to overwrite", 2)
    try:  # atomically: a full disk never leaves the file --force replaces half-written
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, packaged_sources().read_text(encoding="utf-8"))
    except OSError as e:
        fail(f"cannot write {target}: {not_a_directory(target) or e.strerror or e}", 2)
    click.echo(f"wrote {target}")


def not_a_directory(path: Path) -> str:
    """'… is a file, not a directory' when a folder above `path` is a file ('' otherwise)."""
    for parent in path.parents:
        if parent.exists():
            return "" if parent.is_dir() else f"{parent} is a file, not a directory"
    return ""


def _register_optional() -> None:
    """Commands that live in their own modules (follow, run, OPML) register themselves."""
    import importlib

    for name in ("feedbot.cli_follow", "feedbot.cli_run"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


_register_optional()
