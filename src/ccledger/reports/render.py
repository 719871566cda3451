"""Report output: Rich tables for people, JSON and CSV for machines.

Machine output is built from exact integers: costs are decimal strings with nine places (whole
nano-dollars, the ledger's unit), never floats, so totals in JSON add up to the cent and beyond.
Tables for people are in ``reports.tables``; this module never imports Rich, so ``--json``/``--csv``
never pay for it.

JSON shapes (every report has ``rows`` and a ``totals`` object; tokens are always this object)::

    tokens = {"input": 1200, "output": 800, "cache_write_5m": 5000, "cache_write_1h": 0,
              "cache_read": 90000, "total": 97000}

Models are named by the price book's key (``claude-sonnet-4-5`` for its dated, Bedrock and Vertex ids
alike); a model the book does not know keeps its raw id and is listed in ``unknown_models`` (priced at
the fallback rate, never free).

``ccledger daily|weekly|monthly --json`` (``period`` is the local start date of the day/week, or
``YYYY-MM`` for months; ``breakdown`` only with ``--breakdown``, most expensive model first)::

    {
      "report": "daily", "period": "daily", "tz": "Europe/Berlin",
      "since": "2026-11-01", "until": null, "project": null,
      "rows": [
        {"period": "2026-11-23", "models": ["claude-sonnet-4-5"],
         "tokens": {...}, "requests": 42, "web_search_requests": 1, "cost": "12.345678900",
         "breakdown": [{"model": "claude-sonnet-4-5", "tokens": {...}, "requests": 42,
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
     "cost": "1.250000000", "token_limit_percent": 8.4,
     "burn_rate": {"elapsed_minutes": 70.0, "remaining_minutes": 200.0, "tokens_per_minute": 1200.0,
                   "cost_per_hour": "1.071428571"},
     "projection": {"tokens": 324000, "cost": "4.821428571", "token_limit_percent": 32.4}}
    {"kind": "gap", "start": "...", "end": "..."}

(That block used 84,000 tokens and $1.25 in the 70 minutes since its first request, with
``--token-limit 1000000``.) ``burn_rate``/``projection`` are non-null only on the active block: the rate
over the elapsed part (first request → now, at least a minute), projected over the rest of the block.
``token_limit_percent`` appears only with ``--token-limit``. ``totals`` sums the blocks shown; ``--active``
shows only the active block. Gaps are idle stretches between blocks.

CSV (``--csv``): a header row, then one row per period/session/block — per (row, model) with
``--breakdown`` — with the same token columns, ``requests``, ``web_search_requests`` and ``cost`` as a
9-decimal string; ``models`` is ``;``-separated.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from typing import Any

import msgspec

from ccledger.reports.aggregate import Group, Report, Totals
from ccledger.reports.blocks import BlockRow, BlocksReport, percent_of
from ccledger.reports.zones import zone_name

# -- values -------------------------------------------------------------------------------------------


def nanos_str(nanos: int) -> str:
    """Exact dollars with nine decimals: ``1234567`` → ``"0.001234567"``."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}"


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


def iso(ms: int | None, tz: tzinfo) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")


def _breakdown(g: Group) -> list[dict[str, Any]]:
    return [{"model": m, **_sums(t)} for m, t in g.breakdown()]


def _dump(doc: dict[str, Any]) -> str:
    """The text ``json.dumps(doc, indent=2, ensure_ascii=False)`` gives, from msgspec's encoder: with an
    indent the json module encodes in Python (a few ms for a month of rows with a breakdown), and a
    report would import it only for this."""
    return msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"


def _day(d: date | None) -> str | None:
    return d.isoformat() if d else None


# -- JSON ---------------------------------------------------------------------------------------------


def _envelope(
    report: Report,
    rows: list[dict[str, Any]],
    since: date | None,
    until: date | None,
    project: str | None,
    *,
    kind: str | None = None,
    period: str | None = None,
) -> str:
    """The object every period and session report prints: what was asked, the rows, the totals."""
    doc: dict[str, Any] = {"report": kind or period}
    if period is not None:
        doc["period"] = period
    doc.update(
        tz=zone_name(report.tz),
        since=_day(since),
        until=_day(until),
        project=project,
        rows=rows,
        totals=_sums(report.totals),
        unknown_models=report.unknown_models,
    )
    return _dump(doc)


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
    return _envelope(report, rows, since, until, project, period=report.kind)


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
            "first_activity": iso(g.totals.first_ms, report.tz),
            "last_activity": iso(g.totals.last_ms, report.tz),
            "models": g.model_names,
            **_sums(g.totals),
        }
        if breakdown:
            row["breakdown"] = _breakdown(g)
        rows.append(row)
    return _envelope(report, rows, since, until, project, kind="session")


def _block_obj(b: BlockRow, tz: tzinfo, limit: int | None, breakdown: bool) -> dict[str, Any]:
    if b.gap:
        return {"kind": "gap", "start": iso(b.start_ms, tz), "end": iso(b.end_ms, tz)}
    t = b.totals
    obj: dict[str, Any] = {
        "kind": "block",
        "start": iso(b.start_ms, tz),
        "end": iso(b.end_ms, tz),
        "active": b.active,
        "first_activity": iso(t.first_ms, tz),
        "last_activity": iso(t.last_ms, tz),
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
            "now": iso(report.now_ms, tz),
            "token_limit": report.token_limit,
            "rows": [_block_obj(b, tz, report.token_limit, breakdown) for b in rows],
            "totals": _sums(sum_blocks(rows)),
            "unknown_models": report.unknown_models,
        }
    )


def sum_blocks(rows: Sequence[BlockRow]) -> Totals:
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
    import csv  # here: only --csv needs it

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
        head = [g.key, g.project, iso(g.totals.first_ms, report.tz), iso(g.totals.last_ms, report.tz)]
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
        head = [iso(b.start_ms, tz), iso(b.end_ms, tz), "true" if b.active else "false"]
        if breakdown:
            out.extend([*head, m, *_sum_cells(t), "", ""] for m, t in b.group.breakdown())
        else:
            out.append([*head, ";".join(b.group.model_names), *_sum_cells(b.totals), *proj])
    header = ["start", "end", "active", "models", *_SUM_HEADER, "projected_tokens", "projected_cost"]
    return _csv(header, out)
