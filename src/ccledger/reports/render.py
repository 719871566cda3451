"""Report output: Rich tables for people, JSON and CSV for machines.

Machine output is built from exact integers: costs are decimal strings with nine places (whole
nano-dollars, the ledger's unit), never floats, so totals in JSON add up to the cent and beyond.
Rich is imported only inside the table functions, so ``--json``/``--csv`` never pay for it.

JSON shapes (every report has ``rows`` and a ``totals`` object; tokens are always this object)::

    tokens = {"input": 1200, "output": 800, "cache_write_5m": 5000, "cache_write_1h": 0,
              "cache_read": 90000, "total": 97000}

``ccledger daily|weekly|monthly --json`` (``period`` is the local start date of the day/week, or
``YYYY-MM`` for months; ``breakdown`` only with ``--breakdown``)::

    {
      "report": "daily", "period": "daily", "tz": "Europe/Berlin",
      "since": "2026-11-01", "until": null, "project": null,
      "rows": [
        {"period": "2026-11-23", "models": ["claude-sonnet-4-5-20250929"],
         "tokens": {...}, "requests": 42, "web_search_requests": 1, "cost": "12.345678900",
         "breakdown": [{"model": "claude-sonnet-4-5-20250929", "tokens": {...}, "requests": 42,
                        "web_search_requests": 1, "cost": "12.345678900"}]}
      ],
      "totals": {"tokens": {...}, "requests": 42, "web_search_requests": 1, "cost": "12.345678900"},
      "unknown_models": []
    }

``ccledger session --json``: the same envelope (``"report": "session"``), rows are sessions, oldest
activity first; times are ISO 8601 in the report zone::

    {"session_id": "6f0c...", "project": "/home/alice/web", "first_activity": "2026-11-23T09:12:03.120+01:00",
     "last_activity": "...", "models": [...], "tokens": {...}, "requests": 17, "web_search_requests": 0,
     "cost": "0.553000000", "breakdown": [...]}

``ccledger blocks --json``: ``"report": "blocks"``, ``"token_limit"``, ``"now"``, and rows of two kinds::

    {"kind": "block", "start": "...", "end": "...", "active": true, "first_activity": "...",
     "last_activity": "...", "models": [...], "tokens": {...}, "requests": 9, "web_search_requests": 0,
     "cost": "1.250000000", "token_limit_percent": 12.5,
     "burn_rate": {"elapsed_minutes": 70.0, "remaining_minutes": 200.0, "tokens_per_minute": 1234.5,
                   "cost_per_hour": "1.071428571"},
     "projection": {"tokens": 345000, "cost": "4.821428571", "token_limit_percent": 43.1}}
    {"kind": "gap", "start": "...", "end": "..."}

``burn_rate``/``projection`` are present (non-null) only on the active block; ``token_limit_percent`` only
with ``--token-limit``. ``totals`` sums the blocks shown.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ccledger.core.pricing import normalise_model_id
from ccledger.reports.aggregate import Group, Report, Totals
from ccledger.reports.blocks import BlockRow, BlocksReport, elapsed_text, percent_of
from ccledger.reports.zones import zone_name

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

UNKNOWN_MARK = "*"
_PERIOD_TITLES = {"daily": "Date", "weekly": "Week of", "monthly": "Month"}


# -- values -------------------------------------------------------------------------------------------


def nanos_str(nanos: int) -> str:
    """Exact dollars with nine decimals: ``1234567`` → ``"0.001234567"``."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}"


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


def tokens_obj(t: Totals) -> dict[str, int]:
    return {
        "input": t.input,
        "output": t.output,
        "cache_write_5m": t.cache_write_5m,
        "cache_write_1h": t.cache_write_1h,
        "cache_read": t.cache_read,
        "total": t.total_tokens,
    }


def _sums(t: Totals) -> dict[str, Any]:
    return {
        "tokens": tokens_obj(t),
        "requests": t.requests,
        "web_search_requests": t.web_search_requests,
        "cost": nanos_str(t.cost_nanos),
    }


def _iso(ms: int | None, tz: tzinfo) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")


def _breakdown(g: Group) -> list[dict[str, Any]]:
    return [{"model": m, **_sums(t)} for m, t in g.breakdown()]


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _day(d: date | None) -> str | None:
    return d.isoformat() if d else None


# -- JSON ---------------------------------------------------------------------------------------------


def period_json(
    report: Report,
    *,
    breakdown: bool,
    since: date | None = None,
    until: date | None = None,
    project: str | None = None,
) -> str:
    rows = []
    for g in report.groups:
        row: dict[str, Any] = {"period": g.key, "models": g.model_names, **_sums(g.totals)}
        if breakdown:
            row["breakdown"] = _breakdown(g)
        rows.append(row)
    return _dump(
        {
            "report": report.kind,
            "period": report.kind,
            "tz": zone_name(report.tz),
            "since": _day(since),
            "until": _day(until),
            "project": project,
            "rows": rows,
            "totals": _sums(report.totals),
            "unknown_models": report.unknown_models,
        }
    )


def session_json(
    report: Report,
    *,
    breakdown: bool,
    since: date | None = None,
    until: date | None = None,
    project: str | None = None,
) -> str:
    rows = []
    for g in report.groups:
        row: dict[str, Any] = {
            "session_id": g.key,
            "project": g.project,
            "first_activity": _iso(g.totals.first_ms, report.tz),
            "last_activity": _iso(g.totals.last_ms, report.tz),
            "models": g.model_names,
            **_sums(g.totals),
        }
        if breakdown:
            row["breakdown"] = _breakdown(g)
        rows.append(row)
    return _dump(
        {
            "report": "session",
            "tz": zone_name(report.tz),
            "since": _day(since),
            "until": _day(until),
            "project": project,
            "rows": rows,
            "totals": _sums(report.totals),
            "unknown_models": report.unknown_models,
        }
    )


def _block_obj(b: BlockRow, tz: tzinfo, limit: int | None, breakdown: bool) -> dict[str, Any]:
    if b.gap:
        return {"kind": "gap", "start": _iso(b.start_ms, tz), "end": _iso(b.end_ms, tz)}
    t = b.totals
    obj: dict[str, Any] = {
        "kind": "block",
        "start": _iso(b.start_ms, tz),
        "end": _iso(b.end_ms, tz),
        "active": b.active,
        "first_activity": _iso(t.first_ms, tz),
        "last_activity": _iso(t.last_ms, tz),
        "models": b.group.model_names,
        **_sums(t),
    }
    if limit:
        obj["token_limit_percent"] = round(percent_of(t.total_tokens, limit) or 0.0, 2)
    if breakdown:
        obj["breakdown"] = _breakdown(b.group)
    burn = b.burn
    obj["burn_rate"] = None
    obj["projection"] = None
    if burn is not None:
        obj["burn_rate"] = {
            "elapsed_minutes": round(burn.elapsed_ms / 60_000, 3),
            "remaining_minutes": round(burn.remaining_ms / 60_000, 3),
            "tokens_per_minute": round(burn.tokens_per_minute, 3),
            "cost_per_hour": nanos_str(burn.cost_per_hour_nanos),
        }
        proj: dict[str, Any] = {"tokens": burn.projected_tokens, "cost": nanos_str(burn.projected_cost_nanos)}
        if limit:
            proj["token_limit_percent"] = round(percent_of(burn.projected_tokens, limit) or 0.0, 2)
        obj["projection"] = proj
    return obj


def blocks_json(report: BlocksReport, tz: tzinfo, *, breakdown: bool, rows: Sequence[BlockRow]) -> str:
    return _dump(
        {
            "report": "blocks",
            "tz": zone_name(tz),
            "now": _iso(report.now_ms, tz),
            "token_limit": report.token_limit,
            "rows": [_block_obj(b, tz, report.token_limit, breakdown) for b in rows],
            "totals": _sums(_sum_blocks(rows)),
            "unknown_models": report.unknown_models,
        }
    )


def _sum_blocks(rows: Sequence[BlockRow]) -> Totals:
    total = Totals()
    for b in rows:
        if not b.gap:
            total.merge(b.totals)
    return total


# -- CSV ----------------------------------------------------------------------------------------------

_SUM_HEADER = [
    "requests", "input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "total_tokens",
    "web_search_requests", "cost",
]  # fmt: skip


def _sum_cells(t: Totals) -> list[object]:
    return [
        t.requests, t.input, t.output, t.cache_write_5m, t.cache_write_1h, t.cache_read, t.total_tokens,
        t.web_search_requests, nanos_str(t.cost_nanos),
    ]  # fmt: skip


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def period_csv(report: Report, *, breakdown: bool) -> str:
    """One row per period; with ``breakdown``, one row per (period, model) instead. ``models`` is
    ``;``-separated."""
    out: list[list[object]] = []
    for g in report.groups:
        if breakdown:
            out.extend([g.key, m, *_sum_cells(t)] for m, t in g.breakdown())
        else:
            out.append([g.key, ";".join(g.model_names), *_sum_cells(g.totals)])
    return _csv(["period", "models", *_SUM_HEADER], out)


def session_csv(report: Report, *, breakdown: bool) -> str:
    out: list[list[object]] = []
    for g in report.groups:
        head = [g.key, g.project, _iso(g.totals.first_ms, report.tz), _iso(g.totals.last_ms, report.tz)]
        if breakdown:
            out.extend([*head, m, *_sum_cells(t)] for m, t in g.breakdown())
        else:
            out.append([*head, ";".join(g.model_names), *_sum_cells(g.totals)])
    return _csv(["session_id", "project", "first_activity", "last_activity", "models", *_SUM_HEADER], out)


def blocks_csv(rows: Sequence[BlockRow], tz: tzinfo, *, breakdown: bool) -> str:
    """One row per block (gaps are left out: they have no usage); per model with ``breakdown``."""
    out: list[list[object]] = []
    for b in rows:
        if b.gap:
            continue
        burn = b.burn
        proj = [burn.projected_tokens, nanos_str(burn.projected_cost_nanos)] if burn else ["", ""]
        head = [_iso(b.start_ms, tz), _iso(b.end_ms, tz), "true" if b.active else "false"]
        if breakdown:
            out.extend([*head, m, *_sum_cells(t), "", ""] for m, t in b.group.breakdown())
        else:
            out.append([*head, ";".join(b.group.model_names), *_sum_cells(b.totals), *proj])
    header = ["start", "end", "active", "models", *_SUM_HEADER, "projected_tokens", "projected_cost"]
    return _csv(header, out)


# -- tables -------------------------------------------------------------------------------------------


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
    console.print(table)
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
    console.print(table)
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
    total = _sum_blocks(rows)
    table.add_section()
    total_pct = [""] if limit else []
    totals = [_n(total.requests), _n(total.total_tokens), *total_pct, usd(total.cost_nanos)]
    table.add_row("Total", "", "", *totals, style="bold")
    console.print(table)
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
