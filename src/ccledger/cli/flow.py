"""The refresh-then-report steps every report command runs, free of Typer so that the fast entry point
(``cli.fast``) and the Typer commands (``cli.main``) share them. Rich is imported only when something is
actually printed to the terminal: a warm ``ccledger daily --json`` prints nothing on stderr, and notes
on a stderr that is a file or pipe are plain lines (importing Rich to print one line cost ~50 ms)."""

from __future__ import annotations

import re
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from ccledger.bootstrap import App
    from ccledger.sources.transcript_files import RefreshStats

PROGRESS_MIN_BYTES = 32 * 1024 * 1024
MAX_LISTED = 1000  # skipped lines listed by --verbose, at most


class LazyConsole:
    """Stands in for a Rich console and creates one on first use."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def print(self, *args: Any, **kwargs: Any) -> None:
        simple = set(kwargs) <= {"markup", "highlight", "soft_wrap"} and all(isinstance(a, str) for a in args)
        if self._stderr and self._console is None and simple and not self.is_terminal:
            text = " ".join(args)
            sys.stderr.write((plain(text) if kwargs.get("markup", True) else text) + "\n")
            return
        self.real.print(*args, **kwargs)

    @property
    def is_terminal(self) -> bool:
        stream = sys.stderr if self._stderr else sys.stdout
        return stream.isatty()

    def __getattr__(self, name: str) -> Any:  # everything else a table renderer may ask for
        return getattr(self.real, name)


# Rich's markup tag: ``[`` then a lower-case letter, ``#``, ``/`` or ``@``; backslashes before it escape.
_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")


def plain(text: str) -> str:
    """``text`` with Rich's markup applied as Rich applies it (tags dropped, escaped tags and brackets
    kept as text; ``[1m]`` in a model id is not a tag). Unlike Rich's output to a file, it is not wrapped
    at 80 columns and emoji codes (``:100:``) and control characters stay as they are: a note is one line
    a script can grep."""
    out: list[str] = []
    pos = 0
    for m in _TAG.finditer(text):
        out.append(text[pos : m.start()].replace("\\[", "["))
        pairs, escaped = divmod(len(m.group(1)), 2)
        out.append("\\" * pairs)
        if escaped:
            out.append(f"[{m.group(2)}]")
        pos = m.end()
    out.append(text[pos:].replace("\\[", "["))
    return "".join(out)


def refresh_ledger(app: App, err: Console | LazyConsole, *, verbose: bool) -> RefreshStats:
    """Read new transcript lines into the ledger, with a progress bar when there is much to read and
    stderr is a terminal."""
    from ccledger.services.history import refresh

    bar: dict[str, Any] = {}

    def progress(total: int):  # type: ignore[no-untyped-def]
        if total < PROGRESS_MIN_BYTES or not err.is_terminal:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        real = err.real if isinstance(err, LazyConsole) else err
        prog = Progress("Reading transcripts", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                        console=real, transient=True)  # fmt: skip
        prog.start()
        task = prog.add_task("read", total=total)
        bar["p"] = prog

        def hook(done: int, _total: int) -> None:
            prog.update(task, completed=done)

        return hook

    try:
        stats = refresh(app.ledger_for_refresh(), app.book, app.config_dirs(),
                        extra_paths=app.settings.extra_paths, progress=progress)  # fmt: skip
    finally:
        if "p" in bar:
            bar["p"].stop()
    report_refresh(app, stats, err, verbose=verbose)
    return stats


def report_refresh(app: App, stats: RefreshStats, err: Console | LazyConsole, *, verbose: bool) -> None:
    if stats.bad_lines:
        hint = "" if verbose else " (--verbose lists them)"
        err.print(f"[yellow]note:[/yellow] skipped {stats.bad_lines} malformed transcript line(s){hint}")
    if verbose:
        list_skipped_lines(app, stats, err)
    for path, error in stats.errors:
        err.print(f"[yellow]warning:[/yellow] could not read {path}: {error}", highlight=False)
    if stats.records:  # nothing read, nothing new to warn about: a warm run skips two queries
        warn_unknown_models(app, err)


def list_skipped_lines(app: App, stats: RefreshStats | None, err: Console | LazyConsole) -> None:
    """``--verbose``: where every skipped line is (``file:line: reason``), those of earlier runs too
    (``stats`` None: this run read nothing, as with ``--no-refresh``)."""
    from ccledger.services.history import skipped_lines

    found = skipped_lines(app.ledger, MAX_LISTED)
    if found.counted > (stats.bad_lines if stats else 0):
        err.print(f"[yellow]note:[/yellow] {found.counted} malformed transcript line(s) skipped so far:")
    plain = {"markup": False, "highlight": False, "soft_wrap": True}  # one line each, whatever the width
    for bad in found.lines:
        err.print(f"  {bad.path}:{bad.line_no}: {bad.reason}", **plain)
    unlisted = found.counted - len(found.lines) - sum(n for _, n, _ in found.gone)
    if len(found.lines) >= MAX_LISTED and unlisted > 0:
        err.print(f"  ... and {unlisted} more", **plain)
    for path, n, why in found.gone:
        err.print(f"  {path}: {n} line(s) counted; the file cannot be read again ({why})", **plain)


def warn_unknown_models(app: App, err: Console | LazyConsole) -> None:
    """Say once (ever, per model) that a model was priced at the fallback rate; reports keep flagging it."""
    unknown = app.ledger.unknown_models()
    if not unknown:
        return
    warned = set(app.ledger.get_setting("warned_unknown_models") or [])
    new = sorted(set(unknown) - warned)
    if not new:
        return
    fb = app.book.fallback
    for model in new:
        err.print(
            f"[yellow]warning:[/yellow] model {model!r} is not in the price book; priced at the fallback "
            f"${fb.input}/${fb.output} per MTok (add it to a price file: see `ccledger prices --help`)",
            highlight=False,
        )
    app.ledger.set_setting("warned_unknown_models", sorted(warned | set(new)))


def parse_day(value: str) -> date:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` (ccusage's form); ValueError otherwise."""
    v = value.strip()
    if len(v) == 8 and v.isdigit():
        return date(int(v[:4]), int(v[4:6]), int(v[6:]))
    return date.fromisoformat(v)
