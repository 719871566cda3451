"""The usage record: one API request made by Claude Code, whatever source reported it.

Every source (transcripts, gateway, telemetry, Admin API) turns what it sees into these, so reports and
limits never need to know where a number came from. Raw token counts are always kept, so a record can be
repriced when the price book changes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from ccledger.core.money import from_nanos

SOURCE_TRANSCRIPT = "transcript"
SOURCE_GATEWAY = "gateway"
SYNTHETIC_MODEL = "<synthetic>"
# Counts no request comes near (a context window holds ~10**6 tokens): beyond them a usage block is corrupt.
# Kept low enough that a row's cost, and the sum of many such rows in a report cell, fit 64-bit integers.
MAX_TOKENS = 10**9
MAX_WEB_SEARCHES = 10**6


class TokenCounts(msgspec.Struct, frozen=True):
    """The four billed token kinds, with cache writes split by TTL because 1h writes cost 2x input."""

    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def prompt(self) -> int:
        """Everything sent to the model: what selects the long-context tier."""
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read

    @property
    def total(self) -> int:
        return self.prompt + self.output

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input + other.input,
            self.output + other.output,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.cache_read + other.cache_read,
        )


def split_cache_writes(total: int | None, split_5m: int | None, split_1h: int | None) -> tuple[int, int]:
    """(5m, 1h) cache-write tokens from a usage block, the one rule every source uses.

    Without a split (old clients, OpenTelemetry) every write is 5m, the default TTL. With one, the 1h
    part is taken as given (it costs 2x input) and the 5m part is whatever the total has beyond it, so a
    split that does not add up is never priced below the reported total.
    """
    total = total or 0
    if split_5m is None and split_1h is None:
        return total, 0
    w1h = split_1h or 0
    return max(split_5m or 0, total - w1h), w1h


class UsageRecord(msgspec.Struct):
    """One priced request. ``dedupe_key`` is what makes every write idempotent across sources and retries."""

    ts: datetime  # tz-aware UTC
    source: str
    dedupe_key: str
    model: str
    tokens: TokenCounts
    web_search_requests: int = 0
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    session_id: str = ""
    project: str = ""
    git_branch: str = ""
    client_version: str = ""
    is_sidechain: bool = False
    agent_id: str = ""
    parent_agent_id: str = ""
    user_id: str = ""
    group_id: str = ""
    key_id: str = ""
    workspace: str = ""
    request_id: str = ""
    duration_ms: int | None = None
    lines_added: int = 0
    lines_removed: int = 0
    cost_nanos: int | None = None  # None until priced; see core.money for why integers
    unknown_model: bool = False
    extra: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def cost(self) -> Decimal | None:
        return None if self.cost_nanos is None else from_nanos(self.cost_nanos)

    def priced(self, cost_nanos: int, unknown_model: bool) -> UsageRecord:
        return msgspec.structs.replace(self, cost_nanos=cost_nanos, unknown_model=unknown_model)

    @property
    def completeness(self) -> int:
        """Larger means more of the request's usage was seen; the most complete duplicate wins."""
        return self.tokens.total + self.web_search_requests


class FileCursor(msgspec.Struct):
    """How far a source file has been read: its identity (device:inode), a hash of its first bytes (to
    notice a rewrite in place), its size and mtime when read, and the offset and line number just past
    the last complete line. Sources update it; the store keeps it between runs."""

    path: str
    identity: str
    head_hash: str
    size: int
    mtime_ns: int
    offset: int
    line_no: int
    bad_lines: int
