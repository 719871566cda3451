"""5-hour usage blocks (the windows Claude subscriptions are limited by), gaps, burn rate and projection.

Why hour buckets are exact here: a block opens at the whole hour of its first request, and a request opens
a new block when it is at or past the current block's end, which is a whole hour too. Every comparison is
against a whole hour, so a request and the start of its hour bucket always give the same answer; with
each bucket's first/last request time from the rollup, nothing is lost — and an hour of rows is all SQL
has to return per model, not a row per minute.

Burn rate is measured over the *elapsed part* of the active block: from its first request to ``now``
(at least one minute, so a block one second old does not project absurd numbers). The projection assumes
the same rate for the rest of the block: ``projected = used + rate × (block end − now)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from ccledger.core.periods import BLOCK_HOURS, Block, assign_blocks
from ccledger.reports.aggregate import Group, Totals, grand_total, model_name, unknown_models
from ccledger.store.ledger import RollupRow

BLOCK_MS = BLOCK_HOURS * 3_600_000
MIN_ELAPSED_MS = 60_000


class BurnRate(msgspec.Struct):
    """The active block's pace and where it ends up if the pace holds."""

    elapsed_ms: int  # first request → now
    remaining_ms: int  # now → block end
    tokens_per_minute: float
    cost_per_hour_nanos: int
    projected_tokens: int
    projected_cost_nanos: int
    token_limit: int | None = None

    @property
    def projected_percent(self) -> float | None:
        return None if not self.token_limit else 100.0 * self.projected_tokens / self.token_limit


class BlockRow(msgspec.Struct):
    """A block (``gap=False``) or the idle stretch between two blocks (``gap=True``, no usage)."""

    start_ms: int
    end_ms: int
    group: Group
    gap: bool = False
    active: bool = False
    burn: BurnRate | None = None

    @property
    def totals(self) -> Totals:
        return self.group.totals


class BlocksReport(msgspec.Struct):
    rows: list[BlockRow]
    totals: Totals
    unknown_models: list[str]
    token_limit: int | None
    now_ms: int

    @property
    def active(self) -> BlockRow | None:
        return next((b for b in self.rows if b.active), None)


def _div_round(n: int, d: int) -> int:
    """Integer n/d rounded half-even (exact; money and token projections never go through floats)."""
    q, r = divmod(n, d)
    if 2 * r > d or (2 * r == d and q % 2):
        q += 1
    return q


def burn_rate(totals: Totals, block_end_ms: int, now_ms: int, token_limit: int | None = None) -> BurnRate:
    first = totals.first_ms if totals.first_ms is not None else now_ms
    elapsed = max(now_ms - first, MIN_ELAPSED_MS)
    remaining = max(block_end_ms - now_ms, 0)
    tokens = totals.total_tokens
    cost = totals.cost_nanos
    return BurnRate(
        elapsed_ms=elapsed,
        remaining_ms=remaining,
        tokens_per_minute=tokens * MIN_ELAPSED_MS / elapsed,
        cost_per_hour_nanos=_div_round(cost * 3_600_000, elapsed),
        projected_tokens=tokens + _div_round(tokens * remaining, elapsed),
        projected_cost_nanos=cost + _div_round(cost * remaining, elapsed),
        token_limit=token_limit,
    )


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def blocks_report(
    rows: Sequence[RollupRow],
    now: datetime,
    *,
    token_limit: int | None = None,
    model_at: int = 0,
) -> BlocksReport:
    """Blocks from hour rows keyed ``(model_key, model, ...)``, with gaps and the active block's burn rate."""
    ordered = sorted(rows, key=lambda r: r.bucket_ms)
    starts: dict[int, int] = {}  # bucket_ms -> block start ms
    distinct = sorted({r.bucket_ms for r in ordered})
    stamps = (datetime.fromtimestamp(b / 1000, UTC) for b in distinct)
    for b, (_, start) in zip(distinct, assign_blocks(stamps), strict=True):
        starts[b] = _ms(start)
    groups: dict[int, Group] = {}
    for r in ordered:
        s = starts[r.bucket_ms]
        g = groups.get(s)
        if g is None:
            g = groups[s] = Group(str(s))
        g.add(model_name(r.keys, model_at), r)

    now_ms = _ms(now)
    out: list[BlockRow] = []
    prev_end: int | None = None
    for s in sorted(groups):
        g = groups[s]
        end = s + BLOCK_MS
        if prev_end is not None and s > prev_end:
            out.append(BlockRow(prev_end, s, Group("gap"), gap=True))
        block = Block(
            start=datetime.fromtimestamp(s / 1000, UTC),
            end=datetime.fromtimestamp(end / 1000, UTC),
            first=datetime.fromtimestamp((g.totals.first_ms or s) / 1000, UTC),
            last=datetime.fromtimestamp((g.totals.last_ms or s) / 1000, UTC),
        )
        active = block.is_active(now.astimezone(UTC))
        row = BlockRow(s, end, g, active=active)
        if active:
            row.burn = burn_rate(g.totals, end, now_ms, token_limit)
        out.append(row)
        prev_end = end
    real = [b.group for b in out if not b.gap]
    return BlocksReport(out, grand_total(real), unknown_models(rows, model_at), token_limit, now_ms)


def percent_of(tokens: int, limit: int | None) -> float | None:
    return None if not limit else 100.0 * tokens / limit


def elapsed_text(ms: int) -> str:
    """``2h 05m`` style durations for the blocks panel."""
    minutes = int(timedelta(milliseconds=ms).total_seconds() // 60)
    return f"{minutes // 60}h {minutes % 60:02d}m"
