"""Rich tables for people: one row per period/session/block, a Total row, ``--breakdown`` sub-rows, and a
marker plus footnote for models priced at the fallback rate (unknown models are never free, and never
silently priced). Rich is imported inside the functions, so machine output never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING

from ccledger.core.pricing import normalise_model_id
from ccledger.reports.aggregate import Group, Report, Totals
from ccledger.reports.blocks import BlockRow, BlocksReport, elapsed_text, percent_of
from ccledger.reports.render import sum_blocks
from ccledger.reports.zones import zone_name

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

UNKNOWN_MARK = "*"
_PERIOD_TITLES = {"daily": "Date", "weekly": "Week of", "monthly": "Month"}


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` whole. On a terminal Rich fits it to the window; into a pipe or file (no terminal,
    no ``COLUMNS``) Rich would assume 80 columns and cut dates and model names to ``…``, so the table gets
    the width it needs instead."""
    import os

    if console.is_terminal or os.environ.get("COLUMNS"):
        console.print(table)
        return
    from rich.measure import Measurement

    real = getattr(console, "real", console)  # the Rich console behind cli.flow's LazyConsole
    needed = Measurement.get(real, real.options.update_width(100_000), table).maximum
    real.width = max(real.width, needed)  # ``print(width=)`` would be capped at the console's width
    real.print(table)


def usd(nanos: int, places: int = 2) -> str:
    """Dollars for tables; rounding only here, at display (half-even, like ``core.money``)."""
    q = Decimal(1).scaleb(-places)
    return f"${(Decimal(nanos) / 1_000_000_000).quantize(q):,}"


def display_model(model: str) -> str:
    """Short table label: ``claude-sonnet-4-5-20250929`` → ``sonnet-4-5`` (ids stay full in JSON/CSV)."""
    mid = normalise_model_id(model)
    parts = mid.split("-")
    if len(parts) > 1 and len(parts[-1]) == 8 and parts[-1].isdigit():
        parts = parts[:-1]
    if parts and parts[0] == "claude" and len(parts) > 1:
        parts = parts[1:]
    return "-".join(parts) or model


def _n(v: int) -> str:
    return f"{v:,}"


def _models_cell(models: Sequence[str], unknown: set[str]) -> str:
    return "\n".join(display_model(m) + (UNKNOWN_MARK if m in unknown else "") for m in models)


def _token_cells(t: Totals) -> list[str]:
    return [_n(t.input), _n(t.output), _n(t.cache_write), _n(t.cache_read), _n(t.total_tokens)]


def _new_table(title: str, first: list[str]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAVY, show_footer=False, title_justify="left")
    for name in first:
        table.add_column(name, no_wrap=True)
    return table


def _add_number_columns(table: Table, names: Sequence[str]) -> None:
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)


_TOKEN_HEADERS = ["Input", "Output", "Cache Write", "Cache Read", "Total Tokens", "Cost (USD)"]


def footnote(unknown: Sequence[str], fallback: tuple[Decimal, Decimal] | None) -> str | None:
    """The line explaining the marker: unknown models are never free, and never silently priced."""
    if not unknown:
        return None
    rate = f" (${fallback[0]}/${fallback[1]} per MTok input/output)" if fallback else ""
    return (
        f"{UNKNOWN_MARK} priced at the fallback rate{rate}, not in the price book: {', '.join(unknown)}. "
        "Add them to a price file to price them exactly."
    )


def _print_footnote(
    console: Console, unknown: Sequence[str], fallback: tuple[Decimal, Decimal] | None
) -> None:
    note = footnote(unknown, fallback)
    if note:
        console.print(note, style="yellow", markup=False, highlight=False)


def _add_breakdown_rows(table: Table, g: Group, lead_cells: int, unknown: set[str]) -> None:
    for m, t in g.breakdown():
        mark = UNKNOWN_MARK if m in unknown else ""
        table.add_row(
            *([""] * lead_cells),
            f"  └ {display_model(m)}{mark}",
            *_token_cells(t),
            usd(t.cost_nanos),
            style="dim",
        )


def period_table(
    report: Report, console: Console, *, breakdown: bool, fallback: tuple[Decimal, Decimal] | None = None
) -> None:
    unknown = set(report.unknown_models)
    title = f"Claude Code usage, {report.kind} ({zone_name(report.tz)})"
    table = _new_table(title, [_PERIOD_TITLES.get(report.kind, "Period"), "Models"])
    _add_number_columns(table, _TOKEN_HEADERS)
    for g in report.groups:
        models = "" if breakdown else _models_cell(g.model_names, unknown)
        table.add_row(g.key, models, *_token_cells(g.totals), usd(g.totals.cost_nanos))
        if breakdown:
            _add_breakdown_rows(table, g, 1, unknown)
    table.add_section()
    table.add_row("Total", "", *_token_cells(report.totals), usd(report.totals.cost_nanos), style="bold")
    print_table(console, table)
    _print_footnote(console, report.unknown_models, fallback)


def _short_time(ms: int | None, tz: tzinfo) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")


def session_table(
    report: Report, console: Console, *, breakdown: bool, fallback: tuple[Decimal, Decimal] | None = None
) -> None:
    unknown = set(report.unknown_models)
    table = _new_table(f"Claude Code usage by session ({zone_name(report.tz)})", ["Session", "Project"])
    table.columns[1].no_wrap = False
    table.columns[1].overflow = "fold"
    table.add_column("Last activity", no_wrap=True)
    table.add_column("Models", no_wrap=True)
    _add_number_columns(table, _TOKEN_HEADERS)
    for g in report.groups:
        table.add_row(
            g.key[:8], g.project, _short_time(g.totals.last_ms, report.tz),
            "" if breakdown else _models_cell(g.model_names, unknown), *_token_cells(g.totals),
            usd(g.totals.cost_nanos),
        )  # fmt: skip
        if breakdown:
            _add_breakdown_rows(table, g, 3, unknown)
    table.add_section()
    table.add_row(
        "Total", "", "", "", *_token_cells(report.totals), usd(report.totals.cost_nanos), style="bold"
    )
    print_table(console, table)
    _print_footnote(console, report.unknown_models, fallback)


def blocks_table(
    report: BlocksReport,
    rows: Sequence[BlockRow],
    tz: tzinfo,
    console: Console,
    *,
    breakdown: bool,
    fallback: tuple[Decimal, Decimal] | None = None,
) -> None:
    unknown = set(report.unknown_models)
    limit = report.token_limit
    table = _new_table(f"5-hour blocks ({zone_name(tz)})", ["Block start", "Status", "Models"])
    _add_number_columns(table, ["Requests", "Tokens", *(["% of limit"] if limit else []), "Cost (USD)"])
    for b in rows:
        if b.gap:
            cells = ["", "", ""] if limit else ["", ""]
            table.add_row(
                _short_time(b.start_ms, tz),
                f"gap {elapsed_text(b.end_ms - b.start_ms)}",
                "",
                "",
                *cells,
                style="dim",
            )
            continue
        t = b.totals
        status = "ACTIVE" if b.active else f"until {_short_time(b.end_ms, tz)[11:]}"
        pct = [f"{percent_of(t.total_tokens, limit):.1f}%"] if limit else []
        table.add_row(
            _short_time(b.start_ms, tz), status,
            "" if breakdown else _models_cell(b.group.model_names, unknown),
            _n(t.requests), _n(t.total_tokens), *pct, usd(t.cost_nanos),
            style="bold green" if b.active else None,
        )  # fmt: skip
        if breakdown:
            for m, mt in b.group.breakdown():
                mark = UNKNOWN_MARK if m in unknown else ""
                mpct = [f"{percent_of(mt.total_tokens, limit):.1f}%"] if limit else []
                table.add_row(
                    "", "", f"  └ {display_model(m)}{mark}", _n(mt.requests), _n(mt.total_tokens), *mpct,
                    usd(mt.cost_nanos), style="dim",
                )  # fmt: skip
    total = sum_blocks(rows)
    table.add_section()
    total_pct = [""] if limit else []
    totals = [_n(total.requests), _n(total.total_tokens), *total_pct, usd(total.cost_nanos)]
    table.add_row("Total", "", "", *totals, style="bold")
    print_table(console, table)
    active = next((b for b in rows if b.active), None)
    if active is not None:
        for line in active_block_lines(active, tz, limit):
            console.print(line, markup=False, highlight=False)
    _print_footnote(console, report.unknown_models, fallback)


def active_block_lines(b: BlockRow, tz: tzinfo, limit: int | None) -> list[str]:
    """The active block's pace and projection as plain lines (also used by tests)."""
    burn = b.burn
    if burn is None:
        return []
    t = b.totals
    start = datetime.fromtimestamp(b.start_ms / 1000, tz).strftime("%H:%M")
    end = datetime.fromtimestamp(b.end_ms / 1000, tz).strftime("%H:%M")
    lines = [
        f"Active block {start}–{end}: {elapsed_text(burn.remaining_ms)} left",
        f"  Burn rate:  {burn.tokens_per_minute:,.1f} tokens/min, {usd(burn.cost_per_hour_nanos)}/hour",
        f"  Projected:  {_n(burn.projected_tokens)} tokens, {usd(burn.projected_cost_nanos)} by {end}",
    ]
    if limit:
        used = percent_of(t.total_tokens, limit) or 0.0
        proj = percent_of(burn.projected_tokens, limit) or 0.0
        warn = "  (over the limit)" if proj > 100 else ""
        lines.append(f"  Token limit: {used:.1f}% used, {proj:.1f}% projected of {_n(limit)}{warn}")
    return lines
