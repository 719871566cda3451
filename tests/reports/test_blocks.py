"""5-hour blocks: assignment, gaps, the active block, burn rate and projection (numbers done by hand)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from ccledger.cli.reports import ReportOptions, run_blocks_report
from tests.reports.support import HAIKU, HAIKU_NANOS, SONNET_NANOS, console_text, expected_nanos, nine


def blocks_json(app, capsys, now, **kw) -> dict:
    run_blocks_report(app, ReportOptions(tz="UTC", json=True), None, now=now, **kw)
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def day(add):
    """Block A 10:00–15:00 (requests 10:20, 11:00, 14:59:59), block B from 15:00 (a request at exactly
    15:00 opens it), a gap 20:00–21:00, block C from 21:00 (requests 21:10 and 21:40)."""
    add("2026-11-23T10:20:00Z", inp=100, out=10)
    add("2026-11-23T11:00:00Z", inp=200)
    add("2026-11-23T14:59:59.999Z", inp=300)
    add("2026-11-23T15:00:00Z", inp=400)
    # block C: 6,000 tokens and 78,000,000 nano-dollars in total, by hand:
    # 1000 input x $3/MTok = 3,000,000; 5000 output x $15/MTok = 75,000,000.
    add("2026-11-23T21:10:00Z", inp=1000)
    add("2026-11-23T21:40:00Z", out=5000)


def test_blocks_and_gaps(app, capsys, day):
    doc = blocks_json(app, capsys, now=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    rows = doc["rows"]
    assert [(r["kind"], r["start"][11:16], r["end"][11:16]) for r in rows] == [
        ("block", "10:00", "15:00"),
        ("block", "15:00", "20:00"),
        ("gap", "20:00", "21:00"),
        ("block", "21:00", "02:00"),
    ]
    a, b, _, c = rows
    assert a["requests"] == 3 and a["tokens"]["input"] == 600
    assert a["first_activity"] == "2026-11-23T10:20:00.000+00:00"
    assert a["last_activity"] == "2026-11-23T14:59:59.999+00:00"
    assert b["requests"] == 1
    assert c["cost"] == nine(78_000_000)
    assert not any(r.get("active") for r in rows)  # now is the next day
    assert doc["totals"]["requests"] == 6
    assert doc["totals"]["cost"] == nine(
        expected_nanos(SONNET_NANOS, 100 + 200 + 300 + 400 + 1000, 10 + 5000)
    )


def test_active_block_burn_rate_and_projection(app, capsys, day):
    # now 22:10: block C (21:00–02:00) is active. Elapsed since its first request (21:10): 60 min.
    # Remaining to 02:00: 230 min. Tokens 6,000 -> 100 tokens/min; projected 6,000 + 100 x 230 = 29,000.
    # Cost 78,000,000 nanos in 60 min -> $0.078/hour; projected 78,000,000 x (1 + 230/60) = 377,000,000.
    now = datetime(2026, 11, 23, 22, 10, tzinfo=UTC)
    doc = blocks_json(app, capsys, now=now, token_limit=10_000)
    active = [r for r in doc["rows"] if r.get("active")]
    assert len(active) == 1
    c = active[0]
    assert c["start"] == "2026-11-23T21:00:00.000+00:00"
    assert c["burn_rate"] == {
        "elapsed_minutes": 60.0,
        "remaining_minutes": 230.0,
        "tokens_per_minute": 100.0,
        "cost_per_hour": "0.078000000",
    }
    assert c["projection"] == {"tokens": 29_000, "cost": "0.377000000", "token_limit_percent": 290.0}
    assert c["token_limit_percent"] == 60.0
    inactive = [r for r in doc["rows"] if r["kind"] == "block" and not r["active"]]
    assert all(r["burn_rate"] is None for r in inactive)


def test_active_only(app, capsys, console, day):
    now = datetime(2026, 11, 23, 22, 10, tzinfo=UTC)
    doc = blocks_json(app, capsys, now=now, active=True)
    assert [r["start"][11:16] for r in doc["rows"]] == ["21:00"]
    assert doc["totals"]["cost"] == nine(78_000_000)

    run_blocks_report(app, ReportOptions(tz="UTC"), console, active=True, token_limit=10_000, now=now)
    text = console_text(console)
    assert "ACTIVE" in text
    assert "Active block 21:00–02:00: 3h 50m left" in text
    assert "Burn rate:  100.0 tokens/min, $0.08/hour" in text
    assert "Projected:  29,000 tokens, $0.38 by 02:00" in text
    assert "Token limit: 60.0% used, 290.0% projected of 10,000  (over the limit)" in text


def test_no_active_block(app, capsys, console, day):
    later = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # block C ended at 02:00
    run_blocks_report(app, ReportOptions(tz="UTC"), console, active=True, now=later)
    assert "No active block (last activity 2026-11-23 21:40)" in console_text(console)
    run_blocks_report(app, ReportOptions(tz="UTC", json=True), None, active=True, now=later)
    out = capsys.readouterr()
    assert json.loads(out.out)["rows"] == []


def test_burn_rate_uses_at_least_one_minute(app, capsys, add):
    add("2026-11-23T10:00:00Z", model=HAIKU, inp=600)  # 600,000 nanos
    now = datetime(2026, 11, 23, 10, 0, 10, tzinfo=UTC)  # ten seconds later
    doc = blocks_json(app, capsys, now=now)
    burn = doc["rows"][0]["burn_rate"]
    assert burn["elapsed_minutes"] == 1.0 and burn["tokens_per_minute"] == 600.0
    assert burn["cost_per_hour"] == nine(expected_nanos(HAIKU_NANOS, 600) * 60)
    # remaining: 10:00:10 -> 15:00 = 299 min 50 s = 299.8333 min; 600 tokens/min over it, rounded half-even
    proj = doc["rows"][0]["projection"]
    assert proj["tokens"] == 600 + round(600 * (4 * 3600 + 59 * 60 + 50) / 60)


def test_blocks_csv(app, capsys, day):
    run_blocks_report(
        app, ReportOptions(tz="UTC", csv=True), None, now=datetime(2026, 11, 23, 22, 10, tzinfo=UTC)
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["start"][11:16], r["active"]) for r in rows] == [
        ("10:00", "false"),
        ("15:00", "false"),
        ("21:00", "true"),
    ]
    assert rows[2]["projected_tokens"] == "29000" and rows[2]["projected_cost"] == "0.377000000"


def test_blocks_table_lists_gap(app, console, day):
    run_blocks_report(app, ReportOptions(tz="UTC"), console, now=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    text = console_text(console)
    assert "gap 1h 00m" in text and "Total" in text
