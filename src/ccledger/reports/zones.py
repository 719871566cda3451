"""The report time zone, and local calendar dates turned into exact UTC millisecond bounds.

Why not ``core.periods.get_zone(None)`` for the local zone: it returns the *current* UTC offset as a fixed
zone, so a report spanning a DST change would put an hour of requests on the wrong day for half the year.
Here the local zone is the real tz database entry (``TZ``, then ``/etc/localtime``), falling back to the
fixed offset only when neither can be read.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from pathlib import Path

from ccledger.core.periods import get_zone


def resolve_zone(name: str | None) -> tzinfo:
    """The IANA zone ``name``; without one, the machine's zone with its DST rules."""
    if name:
        try:
            return get_zone(name)
        # ZoneInfoNotFoundError is a KeyError (not imported for UTC); a folder of the tz database (``Europe``)
        # is an OSError
        except (KeyError, ValueError, OSError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin") from None
    return _local_zone()


def _local_zone() -> tzinfo:
    env = os.environ.get("TZ", "").lstrip(":").strip()
    if env:
        try:
            return get_zone(env)
        except (KeyError, ValueError, OSError):
            pass
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    localtime = Path("/etc/localtime")
    try:
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            key = target.split("zoneinfo/", 1)[1]
            return UTC if key in ("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu") else ZoneInfo(key)
        with localtime.open("rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return get_zone(None)


def zone_name(tz: tzinfo) -> str:
    """A name for JSON output: the IANA key when there is one."""
    if tz is UTC:
        return "UTC"
    key = getattr(tz, "key", None)
    return str(key) if key else (tz.tzname(datetime.now(UTC)) or str(tz))


def local_midnight_ms(day: date, tz: tzinfo) -> int:
    """Epoch ms of 00:00 local time on ``day`` (the earlier instant if DST makes it ambiguous)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def date_bounds(since: date | None, until: date | None, tz: tzinfo) -> tuple[int | None, int | None]:
    """Inclusive local dates → half-open UTC ms range ``[since 00:00, until+1 00:00)`` in ``tz``.

    These are exact instants, so filtering ``ts_ms`` with them in SQL is already exact; reports still
    check the local date of each bucket (cheap) so a zone with a non-quarter-hour offset cannot leak.
    """
    lo = local_midnight_ms(since, tz) if since else None
    hi = local_midnight_ms(until + timedelta(days=1), tz) if until else None
    return lo, hi


_PROBE_MS = 12 * 3600 * 1000  # UTC offsets change months apart: probing twice a day cannot miss one


def _offset_ms(tz: tzinfo, ms: int) -> int:
    off = datetime.fromtimestamp(ms / 1000, tz).utcoffset()
    return 0 if off is None else int(off.total_seconds() * 1000)


def offset_spans(tz: tzinfo, lo_ms: int, hi_ms: int) -> list[tuple[int, int, int]]:
    """``[lo_ms, hi_ms)`` cut where ``tz``'s UTC offset changes: ``(start, end, offset_ms)`` spans.

    Within a span local days are fixed-length windows of UTC, so the store can sum whole local days
    itself instead of handing back every quarter hour; a DST change only splits the range in two.
    """
    if hi_ms <= lo_ms:
        return []
    if isinstance(tz, timezone):  # UTC and fixed offsets
        return [(lo_ms, hi_ms, _offset_ms(tz, lo_ms))]
    spans: list[tuple[int, int, int]] = []
    start, cur = lo_ms, _offset_ms(tz, lo_ms)
    t = lo_ms
    while t < hi_ms:
        nxt = min(t + _PROBE_MS, hi_ms)
        if _offset_ms(tz, nxt - 1) != cur:
            a, b = t, nxt - 1  # offset at a is cur, at b it is not: find the first instant that differs
            while b - a > 1000:
                mid = (a + b) // 2
                if _offset_ms(tz, mid) == cur:
                    a = mid
                else:
                    b = mid
            change = b - b % 1000  # changes happen on whole seconds
            spans.append((start, change, cur))
            start, cur = change, _offset_ms(tz, change)
            t = change
            continue
        t = nxt
    spans.append((start, hi_ms, cur))
    return spans
