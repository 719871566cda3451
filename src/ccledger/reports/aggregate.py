"""Rollup rows → report rows (periods in the user's zone, sessions). Pure: no I/O, no clock.

Why quarter-hour buckets: every UTC offset in use today is a multiple of 15 minutes, so a quarter hour
never straddles a local midnight in any zone. SQL sums per quarter hour once (engine-neutral, no time-zone
functions), and this module only re-labels a few thousand buckets — each distinct bucket is converted to a
local date once and cached, so the per-row loop is dict lookups and integer additions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta, tzinfo

import msgspec

from ccledger.core.records import TokenCounts
from ccledger.store.ledger import RollupRow

QUARTER_HOUR_MS = 900_000
DAY_MS = 86_400_000
HOUR_MS = 3_600_000  # blocks: see reports.blocks for why hours are exact
# One bucket for everything: ts_ms / 10**13 is 0 for any timestamp before the year 2286.
ALL_TIME_MS = 10**13
# How reports group by model: the price book's key (so `claude-sonnet-4-5`, its dated id and its Bedrock
# id are one model, as the book prices them), and the raw id for models the book does not know (key "").
MODEL_BY = ("model_key", "model")


def model_name(keys: tuple[str, ...], at: int = 0) -> str:
    """The model of a row grouped by ``MODEL_BY`` starting at ``keys[at]``."""
    return keys[at] or keys[at + 1]


class Totals(msgspec.Struct):
    """Running sums for one report cell. Mutable ints: summing is the hot loop of every report."""

    requests: int = 0
    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    web_search_requests: int = 0
    cost_nanos: int = 0
    unknown_requests: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, r: RollupRow) -> None:
        t = r.tokens
        self.requests += r.requests
        self.input += t.input
        self.output += t.output
        self.cache_write_5m += t.cache_write_5m
        self.cache_write_1h += t.cache_write_1h
        self.cache_read += t.cache_read
        self.web_search_requests += r.web_search_requests
        self.cost_nanos += r.cost_nanos
        self.unknown_requests += r.unknown_requests
        if self.first_ms is None or r.first_ms < self.first_ms:
            self.first_ms = r.first_ms
        if self.last_ms is None or r.last_ms > self.last_ms:
            self.last_ms = r.last_ms

    def merge(self, o: Totals) -> None:
        self.requests += o.requests
        self.input += o.input
        self.output += o.output
        self.cache_write_5m += o.cache_write_5m
        self.cache_write_1h += o.cache_write_1h
        self.cache_read += o.cache_read
        self.web_search_requests += o.web_search_requests
        self.cost_nanos += o.cost_nanos
        self.unknown_requests += o.unknown_requests
        if o.first_ms is not None and (self.first_ms is None or o.first_ms < self.first_ms):
            self.first_ms = o.first_ms
        if o.last_ms is not None and (self.last_ms is None or o.last_ms > self.last_ms):
            self.last_ms = o.last_ms

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total_tokens(self) -> int:
        return self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read

    @property
    def tokens(self) -> TokenCounts:
        return TokenCounts(self.input, self.output, self.cache_write_5m, self.cache_write_1h, self.cache_read)


class Group(msgspec.Struct):
    """One report row (a period, a session, a block) with its per-model sums for ``--breakdown``."""

    key: str
    totals: Totals = msgspec.field(default_factory=Totals)
    models: dict[str, Totals] = msgspec.field(default_factory=dict)
    project: str = ""  # sessions only

    def add(self, model: str, r: RollupRow) -> None:
        self.totals.add(r)
        m = self.models.get(model)
        if m is None:
            m = self.models[model] = Totals()
        m.add(r)

    @property
    def model_names(self) -> list[str]:
        return sorted(self.models)

    def breakdown(self) -> list[tuple[str, Totals]]:
        """Models by cost, most expensive first (then by name, so output is stable)."""
        return sorted(self.models.items(), key=lambda kv: (-kv[1].cost_nanos, kv[0]))


def groups_from_cells(cells: dict[tuple[str, str], Totals]) -> dict[str, Group]:
    """(group key, model) sums → groups. Summing each row once into its cell, then cells into groups,
    halves the per-row work compared with adding every row to both."""
    groups: dict[str, Group] = {}
    for (key, model), t in cells.items():
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(key)
        g.models[model] = t
        g.totals.merge(t)
    return groups


class Report(msgspec.Struct):
    """What every renderer takes: rows, the grand total and the models priced at the fallback rate."""

    kind: str  # daily | weekly | monthly | session | blocks
    tz: tzinfo
    groups: list[Group]
    totals: Totals
    unknown_models: list[str]


# -- helpers over rollup rows -----------------------------------------------------------------------


def filter_project(rows: Iterable[RollupRow], needle: str | None, index: int) -> list[RollupRow]:
    """Rows whose project key (``keys[index]``) contains ``needle``, case-insensitively.

    Case-insensitive because people type a fragment of a path they remember, not its exact spelling.
    """
    if not needle:
        return list(rows)
    n = needle.lower()
    return [r for r in rows if n in r.keys[index].lower()]


def unknown_models(rows: Iterable[RollupRow], model_at: int = 0) -> list[str]:
    """Models in *these* rows that were priced at the fallback rate (so the footnote matches the filter)."""
    return sorted({model_name(r.keys, model_at) for r in rows if r.unknown_requests})


def grand_total(groups: Iterable[Group]) -> Totals:
    total = Totals()
    for g in groups:
        total.merge(g.totals)
    return total


# -- periods ----------------------------------------------------------------------------------------


def _labeler(period: str, week_start: int) -> Callable[[date], str]:
    if period == "daily":
        return date.isoformat
    if period == "weekly":
        return lambda d: (d - timedelta(days=(d.weekday() - week_start) % 7)).isoformat()
    if period == "monthly":
        return lambda d: f"{d.year:04d}-{d.month:02d}"
    raise ValueError(f"unknown period {period!r}; expected daily, weekly or monthly")


def period_groups(
    rows: Sequence[RollupRow],
    period: str,
    tz: tzinfo,
    *,
    week_start: int = 0,
    since: date | None = None,
    until: date | None = None,
    model_at: int = 0,
) -> list[Group]:
    """Sum quarter-hour rows (keyed by ``MODEL_BY`` at ``model_at``) into local calendar periods in ``tz``.

    Rows whose bucket falls outside the inclusive local dates ``since``..``until`` are dropped (the SQL
    prefilter is usually exact already; this keeps the report right even when it is not).
    """
    label_of = _labeler(period, week_start)
    labels: dict[int, str | None] = {}
    cells: dict[tuple[str, str], Totals] = {}
    for r in rows:
        b = r.bucket_ms
        try:
            label = labels[b]
        except KeyError:
            d = datetime.fromtimestamp(b / 1000, tz).date()
            label = None if (since and d < since) or (until and d > until) else label_of(d)
            labels[b] = label
        if label is None:
            continue
        k = r.keys
        key = (label, k[model_at] or k[model_at + 1])
        t = cells.get(key)
        if t is None:
            t = cells[key] = Totals()
        t.add(r)
    groups = groups_from_cells(cells)
    return [groups[k] for k in sorted(groups)]


def period_report(
    rows: Sequence[RollupRow],
    period: str,
    tz: tzinfo,
    *,
    week_start: int = 0,
    since: date | None = None,
    until: date | None = None,
) -> Report:
    """A daily/weekly/monthly report from rows keyed ``(model_key, model, ...)``."""
    groups = period_groups(rows, period, tz, week_start=week_start, since=since, until=until)
    kept = _kept_models(groups)
    return Report(period, tz, groups, grand_total(groups), [m for m in unknown_models(rows) if m in kept])


def _kept_models(groups: Iterable[Group]) -> set[str]:
    return {m for g in groups for m in g.models}


# -- sessions ---------------------------------------------------------------------------------------


def session_groups(rows: Iterable[RollupRow]) -> list[Group]:
    """One group per session from rows keyed ``(session_id, model_key, model, project)``, oldest first.

    A session's project is the one most of its requests ran in: a session that ``cd``-ed elsewhere for a
    moment still belongs where it mostly worked.
    """
    cells: dict[tuple[str, str], Totals] = {}
    project_requests: dict[str, dict[str, int]] = {}
    for r in rows:
        sid, model, project = r.keys[0], r.keys[1] or r.keys[2], r.keys[3]
        key = (sid, model)
        t = cells.get(key)
        if t is None:
            t = cells[key] = Totals()
        t.add(r)
        counts = project_requests.get(sid)
        if counts is None:
            counts = project_requests[sid] = {}
        counts[project] = counts.get(project, 0) + r.requests
    groups = groups_from_cells(cells)
    for sid, g in groups.items():
        counts = project_requests[sid]
        g.project = max(sorted(counts), key=lambda p: counts[p])
    return sorted(groups.values(), key=lambda g: (g.totals.last_ms or 0, g.key))


def session_report(rows: Sequence[RollupRow], tz: tzinfo) -> Report:
    groups = session_groups(rows)
    return Report("session", tz, groups, grand_total(groups), unknown_models(rows, model_at=1))
