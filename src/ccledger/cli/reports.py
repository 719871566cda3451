"""Report commands as plain functions: ``cli.main`` parses options, refreshes the ledger, then calls these.

Keeping them free of Typer's decorators means tests (and other front ends) call them with an ``App`` and
a ``ReportOptions`` and read stdout. Machine output (``--json``/``--csv``) is written to ``sys.stdout``
directly, never through Rich, so no markup, colour or wrapping can corrupt it; human messages about an
empty result go to stderr in that case so the document on stdout stays parseable.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

import msgspec

from ccledger.reports import render, tables
from ccledger.reports.aggregate import (
    ALL_TIME_MS,
    DAY_MS,
    HOUR_MS,
    MODEL_BY,
    QUARTER_HOUR_MS,
    Report,
    filter_project,
    period_report,
    session_report,
)
from ccledger.reports.blocks import blocks_report
from ccledger.reports.cost_block import SessionLookupError, format_cost_block, load_session
from ccledger.reports.zones import date_bounds, offset_spans, resolve_zone

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from ccledger.bootstrap import App
    from ccledger.store.ledger import RollupRow


class ReportOptions(msgspec.Struct):
    since: date | None = None  # inclusive local dates
    until: date | None = None
    tz: str | None = None  # IANA name; None = local zone
    project: str | None = None  # case-insensitive substring of the project path (cwd)
    breakdown: bool = False  # per-model rows
    json: bool = False
    csv: bool = False
    week_start: int = 0  # Monday


def _zone(opts: ReportOptions) -> tzinfo:
    try:
        return resolve_zone(opts.tz)
    except ValueError as exc:
        import typer

        raise typer.BadParameter(str(exc), param_hint="--tz") from None


def _fallback(app: App) -> tuple[Decimal, Decimal]:
    return app.book.fallback.input, app.book.fallback.output


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _describe_filter(opts: ReportOptions) -> str:
    parts = []
    if opts.since:
        parts.append(f"from {opts.since.isoformat()}")
    if opts.until:
        parts.append(f"through {opts.until.isoformat()}")
    if opts.project:
        parts.append(f"in projects matching {opts.project!r}")
    return " ".join(parts)


def empty_message(app: App, opts: ReportOptions | None) -> str:
    """Why there is nothing to show: no history at all (and where we looked), or nothing in the filter."""
    stored = app.ledger.count()
    if stored == 0:
        lines = ["No Claude Code usage found yet. Looked for transcripts under:"]
        for root in app.transcript_roots():
            lines.append(f"  {root}" + ("" if root.exists() else "  (not found)"))
        lines.append("Use Claude Code once, or point --path at a folder of transcripts.")
        return "\n".join(lines)
    what = _describe_filter(opts) if opts else ""
    return f"No usage {what or 'to show'} (the ledger holds {stored:,} requests)."


def _say_empty(app: App, opts: ReportOptions, console: Console, machine: str | None) -> None:
    msg = empty_message(app, opts)
    if machine is not None:
        _write(machine)
        print(msg, file=sys.stderr)
    else:
        console.print(msg, markup=False, highlight=False)


def _show(
    app: App,
    opts: ReportOptions,
    console: Console,
    report: Report,
    as_json: Callable[..., str],
    as_csv: Callable[..., str],
    as_table: Callable[..., None],
) -> None:
    """Print a report as JSON, CSV or a table; say where we looked when it is empty."""
    machine = None
    if opts.json:
        machine = as_json(report, breakdown=opts.breakdown, since=opts.since, until=opts.until,
                          project=opts.project)
    elif opts.csv:
        machine = as_csv(report, breakdown=opts.breakdown)
    if not report.groups:
        _say_empty(app, opts, console, machine)
    elif machine is not None:
        _write(machine)
    else:
        as_table(report, console, breakdown=opts.breakdown, fallback=_fallback(app))


# -- period reports -------------------------------------------------------------------------------------


def build_period_report(app: App, period: str, opts: ReportOptions, tz: tzinfo) -> Report:
    since_ms, until_ms = date_bounds(opts.since, opts.until, tz)
    by = [*MODEL_BY, "project"] if opts.project else [*MODEL_BY]
    rows = filter_project(_day_rows(app, tz, by, since_ms, until_ms), opts.project, 2)
    return period_report(rows, period, tz, week_start=opts.week_start, since=opts.since, until=opts.until)


def _day_rows(
    app: App, tz: tzinfo, by: list[str], since_ms: int | None, until_ms: int | None
) -> list[RollupRow]:
    """Rows summed per local day by the store, one query per span of constant UTC offset (usually one;
    a DST change adds one). Each row's ``bucket_ms`` is moved to local noon, whose date in ``tz`` is the
    row's day even on the day the offset changes."""
    lo, hi = since_ms, until_ms
    if lo is None or hi is None:
        span = app.ledger.time_span()
        if span is None:
            return []
        lo = span[0] if lo is None else lo
        hi = span[1] + QUARTER_HOUR_MS if hi is None else hi
    rows: list[RollupRow] = []
    for a, b, offset in offset_spans(tz, lo, hi):
        # An end the user left open stays open in the query: over the whole ledger a scan of the cells
        # costs ~40 % less than walking the time index and looking up each cell from it.
        a_ms = None if since_ms is None and a == lo else a
        b_ms = None if until_ms is None and b == hi else b
        part = app.ledger.rollup(
            bucket_ms=DAY_MS, by=by, since_ms=a_ms, until_ms=b_ms, offset_ms=offset, times=False
        )
        for r in part:
            r.bucket_ms += DAY_MS // 2
        rows += part
    return rows


def run_period_report(
    app: App, period: Literal["daily", "weekly", "monthly"], opts: ReportOptions, console: Console
) -> None:
    report = build_period_report(app, period, opts, _zone(opts))
    _show(app, opts, console, report, render.period_json, render.period_csv, tables.period_table)


# -- sessions -------------------------------------------------------------------------------------------


def build_session_report(app: App, opts: ReportOptions, tz: tzinfo) -> Report:
    since_ms, until_ms = date_bounds(opts.since, opts.until, tz)
    rows = app.ledger.rollup(
        bucket_ms=ALL_TIME_MS, by=["session_id", *MODEL_BY, "project"], since_ms=since_ms, until_ms=until_ms
    )
    return session_report(filter_project(rows, opts.project, 3), tz)


def run_session_report(app: App, opts: ReportOptions, console: Console) -> None:
    report = build_session_report(app, opts, _zone(opts))
    _show(app, opts, console, report, render.session_json, render.session_csv, tables.session_table)


# -- blocks ---------------------------------------------------------------------------------------------


def run_blocks_report(
    app: App,
    opts: ReportOptions,
    console: Console,
    *,
    active: bool = False,
    token_limit: int | None = None,
    now: datetime | None = None,
) -> None:
    """All 5-hour blocks with gaps, or with ``active`` only the current one (with burn rate)."""
    tz = _zone(opts)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    since_ms, until_ms = date_bounds(opts.since, opts.until, tz)
    by = [*MODEL_BY, "project"] if opts.project else [*MODEL_BY]
    rows = app.ledger.rollup(bucket_ms=HOUR_MS, by=by, since_ms=since_ms, until_ms=until_ms)
    report = blocks_report(filter_project(rows, opts.project, 2), now, token_limit=token_limit)
    shown = [b for b in report.rows if b.active] if active else report.rows

    machine = None
    if opts.json:
        machine = render.blocks_json(report, tz, breakdown=opts.breakdown, rows=shown)
    elif opts.csv:
        machine = render.blocks_csv(shown, tz, breakdown=opts.breakdown)
    if not shown:
        if active and report.rows:
            msg = "No active block: nothing was used in the last 5 hours."
            last = report.totals.last_ms
            if last is not None:
                when = datetime.fromtimestamp(last / 1000, tz).strftime("%Y-%m-%d %H:%M")
                msg = f"No active block (last activity {when})."
            if machine is not None:
                _write(machine)
                print(msg, file=sys.stderr)
            else:
                console.print(msg, markup=False, highlight=False)
            return
        _say_empty(app, opts, console, machine)
    elif machine is not None:
        _write(machine)
    else:
        tables.blocks_table(report, shown, tz, console, breakdown=opts.breakdown, fallback=_fallback(app))


# -- /cost ----------------------------------------------------------------------------------------------


def run_cost(app: App, session: str | None, console: Console, now: datetime | None = None) -> None:
    """Print the ``/cost`` block for ``session`` (an id or a unique prefix; default: latest activity).

    ``now`` is accepted for symmetry with the other commands; the block has no clock-dependent line.
    """
    del now
    if app.ledger.count() == 0:
        console.print(empty_message(app, None), markup=False, highlight=False)
        return
    try:
        info = load_session(app.ledger, session)
    except SessionLookupError as exc:
        import typer

        console.print(f"ccledger cost: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(f"Session {info.session_id}", style="dim", markup=False, highlight=False)
    for line in format_cost_block(info):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


__all__ = [
    "ReportOptions",
    "empty_message",
    "run_blocks_report",
    "run_cost",
    "run_period_report",
    "run_session_report",
]
