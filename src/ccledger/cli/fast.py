"""The ``ccledger`` console script: period and session reports go straight to the report code; every
other command line goes to the Typer app.

Why: ``daily`` (and ``daily --json``, what status lines, scripts and dashboards run over and over) needs
a few tens of milliseconds of work on a warm ledger, while importing Typer (which builds pydantic type
adapters for every option) costs over a hundred. Machine output (``--json``, ``--csv``) needs no Rich
either; a table imports Rich only. Only command lines this parser understands completely take the short
path; anything else (help, a bad date or zone, an unknown option, ``--json`` with ``--csv``) goes to
Typer, which prints the same errors and help as always. ``tests/cli/test_fast_entry.py`` checks that
both paths print the same documents and tables.
"""

from __future__ import annotations

import gc
import sys

REPORTS = ("daily", "weekly", "monthly", "session")
_GLOBAL_VALUES = {"--db", "--path"}
_GLOBAL_FLAGS = {"--no-refresh", "--verbose", "-v"}
_VALUES = {"--since", "--until", "--tz", "--project"}
_FLAGS = {"--breakdown", "-b", "--json", "--csv"}


class FastCall:
    """A report command line, parsed. A plain class: this module is imported before anything else the
    command needs (``_report`` first turns the cycle collector off for the imports)."""

    __slots__ = ("command", "db", "flags", "paths", "refresh", "values", "verbose")

    def __init__(self, command: str) -> None:
        self.command = command
        self.db: str | None = None
        self.paths: list[str] = []
        self.refresh = True
        self.verbose = False
        self.values: dict[str, str] = {}
        self.flags: set[str] = set()


def _split(args: list[str], values: set[str], flags: set[str]) -> list[tuple[str, str | None]] | None:
    """``--opt value``, ``--opt=value`` and flags; None on anything else."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, val = arg.partition("=")
        if name in values:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                val = args[i]
            out.append((name, val))
        elif arg in flags:
            out.append((arg, None))
        else:
            return None
        i += 1
    return out


def parse(argv: list[str]) -> FastCall | None:
    """The call, when ``argv`` is a report this parser fully understands."""
    cmd_at = next((i for i, a in enumerate(argv) if a in REPORTS), None)
    if cmd_at is None:
        return None
    head = _split(argv[:cmd_at], _GLOBAL_VALUES, _GLOBAL_FLAGS)
    tail = _split(argv[cmd_at + 1 :], _VALUES, _FLAGS)
    if head is None or tail is None:
        return None
    call = FastCall(argv[cmd_at])
    for name, val in head:
        if name == "--db":
            call.db = val
        elif name == "--path":
            call.paths.append(val or "")
        elif name == "--no-refresh":
            call.refresh = False
        else:
            call.verbose = True
    for name, val in tail:
        if val is None:
            call.flags.add("--breakdown" if name == "-b" else name)
        else:
            call.values[name] = val
    if "--json" in call.flags and "--csv" in call.flags:
        return None  # the "choose one" error: Typer's job
    return call


def run(call: FastCall) -> bool:
    """Run the report; False (having done nothing) when an option value needs Typer's error message."""
    from ccledger.cli.flow import parse_day

    try:
        since = parse_day(call.values["--since"]) if call.values.get("--since") else None
        until = parse_day(call.values["--until"]) if call.values.get("--until") else None
    except ValueError:
        return False
    if since and until and since > until:
        return False  # Typer's error message
    tz = call.values.get("--tz") or None
    if tz:
        from ccledger.core.periods import get_zone

        try:
            get_zone(tz)
        except Exception:
            return False

    from pathlib import Path

    from ccledger.bootstrap import bootstrap
    from ccledger.cli.flow import LazyConsole, refresh_ledger
    from ccledger.cli.reports import ReportOptions, run_period_report, run_session_report
    from ccledger.core.pricing import PriceBookError
    from ccledger.settings import Settings

    opts = ReportOptions(
        since=since, until=until, tz=tz, project=call.values.get("--project"),
        breakdown="--breakdown" in call.flags, json="--json" in call.flags, csv="--csv" in call.flags,
    )  # fmt: skip
    settings = Settings()
    if call.db:
        settings.db = call.db
    settings.extra_paths = [Path(p) for p in call.paths]
    try:
        app = bootstrap(settings)
    except PriceBookError:
        return False  # Typer's path reports it
    if call.refresh:
        refresh_ledger(app, LazyConsole(stderr=True), verbose=call.verbose)
    elif call.verbose:
        from ccledger.cli.flow import list_skipped_lines

        list_skipped_lines(app, None, LazyConsole(stderr=True))
    out = LazyConsole()
    if call.command == "session":
        run_session_report(app, opts, out)  # type: ignore[arg-type]
    else:
        run_period_report(app, call.command, opts, out)  # type: ignore[arg-type]
    app.ledger.settle()
    return True


def _report() -> bool:
    """Run the command line's report if it is one this module takes; False (nothing done) otherwise."""
    # A report runs for a fraction of a second and creates no garbage worth collecting, while its imports
    # (msgspec, sqlite3, the report code) would set off a dozen collections of everything loaded so far:
    # ~3 % of a warm run's instructions.
    gc.disable()
    try:
        call = parse(sys.argv[1:])
        return call is not None and run(call)
    finally:
        gc.enable()  # for what runs next: Typer's commands include the long-running gateway


def _typer() -> None:
    from ccledger.cli.main import run as run_typer

    run_typer()


def main() -> None:
    """The command line, for callers that go on afterwards (tests, ``python -c``)."""
    if not _report():
        _typer()


def console() -> None:
    """The ``ccledger`` script and ``python -m ccledger.cli``: ``main``, but a report ends the process as
    soon as its output is flushed (``os._exit``).

    Why: the interpreter's shutdown (tearing down every module, a last cycle collection) is ~7 ms of a
    warm report, and closing the SQLite store after a refresh that wrote checkpoints its write-ahead log
    with two fsyncs, ~25 ms more; ``Ledger.settle`` has already folded the log in if it had grown, and
    otherwise leaves it for a later run (see there). Nothing else is left to shut down: the refresh's
    worker processes have been joined, and nothing registers exit handlers on this path.
    """
    import os

    try:
        took = _report()
    except KeyboardInterrupt:
        # As the Typer commands end on Ctrl-C (exit status 130, nothing printed), not with a traceback:
        # the refresh commits files with their read positions, so the next run goes on where this stopped.
        os._exit(130)
    if not took:
        _typer()
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # e.g. the reader of a pipe went away
        os._exit(1)
    os._exit(0)
