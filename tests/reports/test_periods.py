"""Daily/weekly/monthly reports over a real SQLite ledger: zones, date bounds, JSON/CSV, breakdown."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ccledger.cli.reports import ReportOptions, run_period_report
from tests.reports.support import (
    FALLBACK_NANOS,
    HAIKU,
    HAIKU_KEY,
    HAIKU_NANOS,
    SONNET,
    SONNET_KEY,
    SONNET_NANOS,
    UNKNOWN,
    console_text,
    expected_nanos,
    nine,
)


def report_json(app, capsys, period="daily", **opts) -> dict:
    run_period_report(app, period, ReportOptions(json=True, **opts), console=None)
    return json.loads(capsys.readouterr().out)


def local_day(ts: str, zone: str) -> str:
    """Independent expectation: the calendar date of ``ts`` in ``zone``, via zoneinfo directly."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(ZoneInfo(zone)).date().isoformat()


# -- zones ------------------------------------------------------------------------------------------


def test_late_utc_request_lands_on_next_day_in_berlin_and_same_day_in_utc(app, add, capsys):
    ts = "2026-11-23T23:30:00Z"
    add(ts, inp=1000, out=100)
    assert local_day(ts, "Europe/Berlin") == "2026-11-24"
    assert local_day(ts, "UTC") == "2026-11-23"

    berlin = report_json(app, capsys, tz="Europe/Berlin")
    utc = report_json(app, capsys, tz="UTC")
    assert [r["period"] for r in berlin["rows"]] == ["2026-11-24"]
    assert [r["period"] for r in utc["rows"]] == ["2026-11-23"]
    assert berlin["tz"] == "Europe/Berlin" and utc["tz"] == "UTC"


def test_early_utc_request_lands_on_previous_day_west_of_greenwich(app, add, capsys):
    ts = "2026-11-24T03:00:00Z"
    add(ts, inp=10)
    rows = report_json(app, capsys, tz="America/Los_Angeles")["rows"]
    assert [r["period"] for r in rows] == [local_day(ts, "America/Los_Angeles")] == ["2026-11-23"]


def test_daylight_saving_rules_are_applied_not_a_fixed_offset(app, add, capsys):
    # 22:30 UTC is 00:30 next day in Berlin summer time (UTC+2) but 23:30 same day in winter (UTC+1).
    summer, winter = "2026-07-10T22:30:00Z", "2026-12-10T22:30:00Z"
    add(summer, inp=1)
    add(winter, inp=2)
    rows = report_json(app, capsys, tz="Europe/Berlin")["rows"]
    assert [r["period"] for r in rows] == [
        local_day(summer, "Europe/Berlin"),
        local_day(winter, "Europe/Berlin"),
    ]
    assert [r["period"] for r in rows] == ["2026-07-11", "2026-12-10"]


def test_quarter_hour_offset_zone_splits_exactly_at_local_midnight(app, add, capsys):
    # Asia/Kathmandu is UTC+5:45: 18:14:59.999Z is 23:59:59.999 local, 18:15Z is midnight.
    before, after = "2026-11-23T18:14:59.999Z", "2026-11-23T18:15:00Z"
    add(before, inp=1)
    add(after, inp=2)
    rows = report_json(app, capsys, tz="Asia/Kathmandu")["rows"]
    assert [(r["period"], r["tokens"]["input"]) for r in rows] == [
        (local_day(before, "Asia/Kathmandu"), 1),
        (local_day(after, "Asia/Kathmandu"), 2),
    ]
    assert rows[0]["period"] == "2026-11-23" and rows[1]["period"] == "2026-11-24"


def test_default_zone_is_the_machine_zone(app, add, capsys, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    add("2026-11-23T16:00:00Z", inp=1)  # 01:00 next day in Tokyo
    doc = report_json(app, capsys)
    assert doc["tz"] == "Asia/Tokyo"
    assert [r["period"] for r in doc["rows"]] == ["2026-11-24"]


def test_unknown_zone_is_a_parameter_error(app, add):
    import typer

    add("2026-11-23T16:00:00Z", inp=1)
    with pytest.raises(typer.BadParameter):
        run_period_report(app, "daily", ReportOptions(tz="Mars/Olympus_Mons"), console=None)


# -- since / until ----------------------------------------------------------------------------------


def test_since_until_are_inclusive_local_dates(app, add, capsys):
    tz = ZoneInfo("Europe/Berlin")

    def at(d: date, hh=12, mm=0, ss=0, us=0) -> str:
        return datetime(d.year, d.month, d.day, hh, mm, ss, us, tzinfo=tz).astimezone(UTC).isoformat()

    d20, d21, d22, d23 = (date(2026, 11, 20) + timedelta(days=i) for i in range(4))
    add(at(d20, 23, 59, 59, 999000), inp=1)  # last ms before since: out
    add(at(d21, 0, 0), inp=10)  # first instant of since: in
    add(at(d22, 23, 59, 59, 999000), inp=100)  # last ms of until: in
    add(at(d23, 0, 0), inp=1000)  # first instant after until: out
    doc = report_json(app, capsys, tz="Europe/Berlin", since=d21, until=d22)
    assert [(r["period"], r["tokens"]["input"]) for r in doc["rows"]] == [
        ("2026-11-21", 10),
        ("2026-11-22", 100),
    ]
    assert doc["totals"]["tokens"]["input"] == 110
    assert (doc["since"], doc["until"]) == ("2026-11-21", "2026-11-22")

    only_since = report_json(app, capsys, tz="Europe/Berlin", since=d22)
    assert only_since["totals"]["tokens"]["input"] == 1100
    only_until = report_json(app, capsys, tz="Europe/Berlin", until=d20)
    assert only_until["totals"]["tokens"]["input"] == 1


# -- weekly / monthly -------------------------------------------------------------------------------


def test_weekly_starts_on_monday(app, add, capsys):
    assert date(2026, 11, 23).weekday() == 0  # a Monday
    add("2026-11-22T12:00:00Z", inp=1)  # Sunday: week of Mon 16th
    add("2026-11-23T12:00:00Z", inp=2)  # Monday: new week
    add("2026-11-29T12:00:00Z", inp=4)  # Sunday: same week as the Monday
    rows = report_json(app, capsys, "weekly", tz="UTC")["rows"]
    assert [(r["period"], r["tokens"]["input"]) for r in rows] == [("2026-11-16", 1), ("2026-11-23", 6)]


def test_week_start_option(app, add, capsys):
    add("2026-11-22T12:00:00Z", inp=1)  # Sunday
    rows = report_json(app, capsys, "weekly", tz="UTC", week_start=6)["rows"]
    assert [r["period"] for r in rows] == ["2026-11-22"]


def test_monthly_follows_the_zone(app, add, capsys):
    ts = "2026-10-31T23:30:00Z"  # 00:30 on 1 November in Berlin (UTC+1 after the DST change)
    add(ts, inp=5)
    add("2026-11-15T12:00:00Z", inp=7)
    berlin = report_json(app, capsys, "monthly", tz="Europe/Berlin")["rows"]
    utc = report_json(app, capsys, "monthly", tz="UTC")["rows"]
    assert [(r["period"], r["tokens"]["input"]) for r in berlin] == [("2026-11", 12)]
    assert [(r["period"], r["tokens"]["input"]) for r in utc] == [("2026-10", 5), ("2026-11", 7)]


# -- costs, breakdown, totals -----------------------------------------------------------------------


@pytest.fixture
def two_model_day(add):
    add("2026-11-23T09:00:00Z", model=SONNET, inp=1200, out=800, cw5=5000, cw1=2000, cr=90000, web=2)
    add("2026-11-23T10:00:00Z", model=SONNET, inp=300, out=50)
    add("2026-11-23T11:00:00Z", model=HAIKU, inp=4000, out=1000, cr=10000)
    add("2026-11-24T11:00:00Z", model=HAIKU, inp=1, out=1)
    sonnet = expected_nanos(SONNET_NANOS, 1200, 800, 5000, 2000, 90000) + 2 * 10_000_000  # $0.01 per search
    sonnet += expected_nanos(SONNET_NANOS, 300, 50)
    haiku23 = expected_nanos(HAIKU_NANOS, 4000, 1000, 0, 0, 10000)
    haiku24 = expected_nanos(HAIKU_NANOS, 1, 1)
    return sonnet, haiku23, haiku24


def test_json_costs_breakdown_and_totals(app, capsys, two_model_day):
    sonnet, haiku23, haiku24 = two_model_day
    doc = report_json(app, capsys, tz="UTC", breakdown=True)
    assert set(doc) >= {"period", "tz", "rows", "totals", "unknown_models"}
    day1, day2 = doc["rows"]
    assert day1["period"] == "2026-11-23"
    assert day1["models"] == sorted([SONNET_KEY, HAIKU_KEY])
    assert day1["cost"] == nine(sonnet + haiku23)
    assert day1["requests"] == 3 and day1["web_search_requests"] == 2
    assert day1["tokens"] == {
        "input": 5500, "output": 1850, "cache_write_5m": 5000, "cache_write_1h": 2000,
        "cache_read": 100000, "total": 5500 + 1850 + 5000 + 2000 + 100000,
    }  # fmt: skip
    by_model = {b["model"]: b for b in day1["breakdown"]}
    assert by_model[SONNET_KEY]["cost"] == nine(sonnet)
    assert by_model[HAIKU_KEY]["cost"] == nine(haiku23)
    assert by_model[SONNET_KEY]["tokens"]["cache_write_1h"] == 2000
    assert [b["model"] for b in day1["breakdown"]] == [SONNET_KEY, HAIKU_KEY]  # most expensive first
    assert day2["cost"] == nine(haiku24)

    # totals equal the sum of rows, exactly
    totals = doc["totals"]
    assert totals["cost"] == nine(sonnet + haiku23 + haiku24)
    for kind in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "total"):
        assert totals["tokens"][kind] == sum(r["tokens"][kind] for r in doc["rows"])
    assert totals["requests"] == sum(r["requests"] for r in doc["rows"]) == 4
    assert doc["unknown_models"] == []


def test_without_breakdown_rows_have_no_breakdown(app, capsys, two_model_day):
    doc = report_json(app, capsys, tz="UTC")
    assert all("breakdown" not in r for r in doc["rows"])


def test_csv_one_row_per_period_and_per_model_with_breakdown(app, capsys, two_model_day):
    sonnet, haiku23, haiku24 = two_model_day
    run_period_report(app, "daily", ReportOptions(tz="UTC", csv=True), console=None)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["period"], r["cost"]) for r in rows] == [
        ("2026-11-23", nine(sonnet + haiku23)),
        ("2026-11-24", nine(haiku24)),
    ]
    assert rows[0]["models"] == ";".join(sorted([SONNET_KEY, HAIKU_KEY]))
    assert rows[0]["cache_write_1h"] == "2000" and rows[0]["requests"] == "3"

    run_period_report(app, "daily", ReportOptions(tz="UTC", csv=True, breakdown=True), console=None)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["period"], r["models"], r["cost"]) for r in rows] == [
        ("2026-11-23", SONNET_KEY, nine(sonnet)),
        ("2026-11-23", HAIKU_KEY, nine(haiku23)),
        ("2026-11-24", HAIKU_KEY, nine(haiku24)),
    ]


def test_table_has_total_row_and_breakdown_rows(app, console, two_model_day):
    run_period_report(app, "daily", ReportOptions(tz="UTC", breakdown=True), console)
    text = console_text(console)
    assert "2026-11-23" in text and "Total" in text
    assert "└ sonnet-4-5" in text and "└ haiku-4-5" in text
    sonnet, haiku23, haiku24 = two_model_day
    total_cents = round((sonnet + haiku23 + haiku24) / 10**7) / 100
    assert f"${total_cents:,.2f}" in text


def test_unknown_model_is_flagged_with_marker_and_footnote(app, add, capsys, console):
    add("2026-11-23T09:00:00Z", model=UNKNOWN, inp=1000, out=100)
    add("2026-11-23T09:10:00Z", model=SONNET, inp=1000)
    doc = report_json(app, capsys, tz="UTC", breakdown=True)
    assert doc["unknown_models"] == [UNKNOWN]
    costs = {b["model"]: b["cost"] for b in doc["rows"][0]["breakdown"]}
    assert costs[UNKNOWN] == nine(expected_nanos(FALLBACK_NANOS, 1000, 100))  # never free

    run_period_report(app, "daily", ReportOptions(tz="UTC"), console)
    text = console_text(console)
    assert "nonexistent-9*" in text
    assert (
        f"* priced at the fallback rate ($5/$25 per MTok input/output), not in the price book: {UNKNOWN}"
        in text
    )


# -- project filter ---------------------------------------------------------------------------------


def test_project_filter_is_a_case_insensitive_substring(app, add, capsys):
    add("2026-11-23T09:00:00Z", inp=1, project="/home/alice/Web-App")
    add("2026-11-23T09:00:00Z", inp=10, project="/home/alice/api")
    add("2026-11-23T09:00:00Z", inp=100, project="/srv/web-app-2")
    doc = report_json(app, capsys, tz="UTC", project="web-app")
    assert doc["totals"]["tokens"]["input"] == 101
    assert doc["project"] == "web-app"


# -- empty ledger / empty filter --------------------------------------------------------------------


def test_empty_ledger_says_where_it_looked(app, console):
    run_period_report(app, "daily", ReportOptions(tz="UTC"), console)
    text = console_text(console)
    assert "No Claude Code usage found yet" in text
    for root in app.transcript_roots():
        assert str(root) in text


def test_empty_filter_json_is_still_a_document_and_message_goes_to_stderr(app, add, capsys):
    add("2026-11-23T09:00:00Z", inp=1)
    run_period_report(app, "daily", ReportOptions(tz="UTC", json=True, since=date(2027, 1, 1)), None)
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["rows"] == [] and doc["totals"]["cost"] == "0.000000000"
    assert "No usage from 2027-01-01 (the ledger holds" in err


def test_every_id_form_of_a_model_is_one_row_and_unknown_ids_stay_raw(app, add, capsys):
    add("2026-11-23T09:00:00Z", model="claude-sonnet-4-5", inp=1)
    add("2026-11-23T09:01:00Z", model=SONNET, inp=2)
    add("2026-11-23T09:02:00Z", model="global.anthropic.claude-sonnet-4-5-20250929-v1:0", inp=4)
    add("2026-11-23T09:03:00Z", model=UNKNOWN, inp=8)
    doc = report_json(app, capsys, tz="UTC", breakdown=True)
    row = doc["rows"][0]
    assert row["models"] == [UNKNOWN, SONNET_KEY]
    assert {b["model"]: b["tokens"]["input"] for b in row["breakdown"]} == {SONNET_KEY: 7, UNKNOWN: 8}
    assert {b["model"]: b["cost"] for b in row["breakdown"]} == {
        SONNET_KEY: nine(expected_nanos(SONNET_NANOS, 7)),
        UNKNOWN: nine(expected_nanos(FALLBACK_NANOS, 8)),
    }


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Los_Angeles", "Australia/Lord_Howe"])
def test_days_on_either_side_of_each_offset_change_are_exact(app, add, capsys, zone):
    """The store sums whole local days per span of constant offset; around every change of 2026 (found
    here by stepping zoneinfo hour by hour, independently of the code under test), requests one minute
    before and after local midnight, and either side of the change itself, land on their zoneinfo date."""
    tz = ZoneInfo(zone)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    changes = []
    while t.year == 2026:
        if (t + timedelta(hours=1)).astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset():
            changes.append(t + timedelta(hours=1))
        t += timedelta(hours=1)
    assert len(changes) == 2
    stamps = []
    for change in changes:
        local = change.astimezone(tz)
        for day in (local.date() - timedelta(days=1), local.date(), local.date() + timedelta(days=1)):
            midnight = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
            stamps += [midnight - timedelta(minutes=1), midnight + timedelta(minutes=1)]
        stamps += [change - timedelta(minutes=1), change + timedelta(minutes=1)]
    expected: dict[str, int] = {}
    for i, ts in enumerate(sorted(set(stamps))):
        add(ts.isoformat().replace("+00:00", "Z"), inp=1 + i)
        day = ts.astimezone(tz).date().isoformat()
        expected[day] = expected.get(day, 0) + 1 + i
    rows = report_json(app, capsys, tz=zone)["rows"]
    assert {r["period"]: r["tokens"]["input"] for r in rows} == expected


def test_offset_spans_cut_at_the_changes():
    from ccledger.reports.zones import offset_spans

    ms = lambda y, mo, d, h=0: int(datetime(y, mo, d, h, tzinfo=UTC).timestamp() * 1000)  # noqa: E731
    lo, hi = ms(2026, 1, 1), ms(2027, 1, 1)
    # EU rule: summer time from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of
    # October (2026-03-29, 2026-10-25).
    assert offset_spans(ZoneInfo("Europe/Berlin"), lo, hi) == [
        (lo, ms(2026, 3, 29, 1), 3_600_000),
        (ms(2026, 3, 29, 1), ms(2026, 10, 25, 1), 7_200_000),
        (ms(2026, 10, 25, 1), hi, 3_600_000),
    ]
    assert offset_spans(UTC, lo, hi) == [(lo, hi, 0)]
    assert offset_spans(ZoneInfo("Asia/Kolkata"), lo, hi) == [(lo, hi, 19_800_000)]
    assert offset_spans(UTC, hi, lo) == []
