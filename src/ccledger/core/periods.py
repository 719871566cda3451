"""Calendar arithmetic for reports (in the user's zone) and for limits (UTC calendar boundaries).

Limits derive their period from the timestamp itself, so a period "resets" by its key changing; there is
no reset job that could be missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo

import msgspec

PERIODS = ("daily", "weekly", "monthly")
BLOCK_HOURS = 5


def get_zone(name: str | None) -> tzinfo:
    """The named IANA zone, or the machine's local zone when none is given."""
    if not name:
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    if name.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo  # not for UTC: the import (it reads sysconfig) is ~3 ms of a report

    return ZoneInfo(name)


def period_start(period: str, ts: datetime, tz: tzinfo = UTC, week_start: int = 0) -> datetime:
    """Start of the daily/weekly/monthly period holding ``ts`` in zone ``tz`` (weeks start Monday=0)."""
    local = ts.astimezone(tz)
    day = local.date()
    if period == "daily":
        start = day
    elif period == "weekly":
        start = day - timedelta(days=(day.weekday() - week_start) % 7)
    elif period == "monthly":
        start = day.replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}; expected one of {PERIODS}")
    return datetime(start.year, start.month, start.day, tzinfo=tz)


def period_end(period: str, start: datetime) -> datetime:
    """The exclusive end of a period that begins at ``start`` (a wall-clock boundary in its zone)."""
    tz = start.tzinfo or UTC
    d = start.date()
    if period == "daily":
        e = d + timedelta(days=1)
    elif period == "weekly":
        e = d + timedelta(days=7)
    elif period == "monthly":
        e = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return datetime(e.year, e.month, e.day, tzinfo=tz)


def utc_period(period: str, ts: datetime) -> tuple[datetime, datetime]:
    """UTC calendar bounds used by spend limits: day 00:00, ISO week from Monday, the 1st of the month."""
    start = period_start(period, ts, UTC)
    return start, period_end(period, start)


def utc_period_key(period: str, ts: datetime) -> str:
    """A stable counter key for the period holding ``ts``, e.g. ``daily:2026-11-25``."""
    return f"{period}:{utc_period(period, ts)[0].date().isoformat()}"


def bucket_label(period: str, ts: datetime, tz: tzinfo, week_start: int = 0) -> str:
    start = period_start(period, ts, tz, week_start)
    return start.strftime("%Y-%m") if period == "monthly" else start.date().isoformat()


class Block(msgspec.Struct, frozen=True):
    """A 5-hour usage window as Claude subscribers are limited by: it opens at the hour of its first
    request and lasts five hours; a request after it closes opens the next one."""

    start: datetime
    end: datetime
    first: datetime
    last: datetime

    def is_active(self, now: datetime) -> bool:
        return self.start <= now < self.end and now - self.last < timedelta(hours=BLOCK_HOURS)


def assign_blocks(timestamps: Iterable[datetime]) -> Iterator[tuple[int, datetime]]:
    """Yield (block index, block start) for each timestamp, which must come sorted ascending."""
    index = -1
    start = end = None
    for ts in timestamps:
        if end is None or ts >= end:
            index += 1
            start = ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
            end = start + timedelta(hours=BLOCK_HOURS)
        assert start is not None
        yield index, start
