"""The session report: one row per session, its project, first/last activity, models, tokens, cost."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

from ccledger.cli.reports import ReportOptions, run_session_report
from tests.reports.support import (
    HAIKU,
    HAIKU_KEY,
    HAIKU_NANOS,
    SONNET_KEY,
    SONNET_NANOS,
    console_text,
    expected_nanos,
    nine,
)


def _seed(add):
    add("2026-11-23T09:00:00Z", session="s-old", inp=100, out=10, project="/home/alice/api")
    add("2026-11-23T09:30:00Z", session="s-old", model=HAIKU, inp=50, project="/home/alice/api")
    add("2026-11-24T08:00:00Z", session="s-new", inp=1000, out=100, cr=5000, project="/home/alice/web")
    add("2026-11-24T08:05:00Z", session="s-new", inp=1, project="/tmp")  # a brief cd elsewhere
    add("2026-11-24T09:15:30.250Z", session="s-new", inp=2, project="/home/alice/web")


def test_session_rows(app, add, capsys):
    _seed(add)
    run_session_report(app, ReportOptions(tz="UTC", json=True, breakdown=True), None)
    doc = json.loads(capsys.readouterr().out)
    old, new = doc["rows"]  # oldest activity first
    assert old["session_id"] == "s-old" and new["session_id"] == "s-new"
    assert old["project"] == "/home/alice/api"
    assert new["project"] == "/home/alice/web"  # where most of its requests ran
    assert old["models"] == sorted([SONNET_KEY, HAIKU_KEY])
    assert new["first_activity"] == "2026-11-24T08:00:00.000+00:00"
    assert new["last_activity"] == "2026-11-24T09:15:30.250+00:00"
    assert new["requests"] == 3
    old_cost = expected_nanos(SONNET_NANOS, 100, 10) + expected_nanos(HAIKU_NANOS, 50)
    new_cost = expected_nanos(SONNET_NANOS, 1000 + 1 + 2, 100, 0, 0, 5000)
    assert old["cost"] == nine(old_cost)
    assert new["cost"] == nine(new_cost)
    assert {b["model"]: b["cost"] for b in old["breakdown"]} == {
        SONNET_KEY: nine(expected_nanos(SONNET_NANOS, 100, 10)),
        HAIKU_KEY: nine(expected_nanos(HAIKU_NANOS, 50)),
    }
    assert doc["totals"]["cost"] == nine(old_cost + new_cost)
    assert doc["totals"]["requests"] == 5


def test_session_times_in_the_report_zone(app, add, capsys):
    _seed(add)
    run_session_report(app, ReportOptions(tz="Europe/Berlin", json=True), None)
    new = json.loads(capsys.readouterr().out)["rows"][1]
    assert new["last_activity"] == "2026-11-24T10:15:30.250+01:00"


def test_session_filters(app, add, capsys):
    _seed(add)
    run_session_report(app, ReportOptions(tz="UTC", json=True, project="API"), None)
    doc = json.loads(capsys.readouterr().out)
    assert [r["session_id"] for r in doc["rows"]] == ["s-old"]

    run_session_report(app, ReportOptions(tz="UTC", json=True, since=date(2026, 11, 24)), None)
    doc = json.loads(capsys.readouterr().out)
    assert [r["session_id"] for r in doc["rows"]] == ["s-new"]


def test_session_csv_and_table(app, add, capsys, console):
    _seed(add)
    run_session_report(app, ReportOptions(tz="UTC", csv=True), None)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["session_id"] for r in rows] == ["s-old", "s-new"]
    assert rows[1]["project"] == "/home/alice/web" and rows[1]["requests"] == "3"

    run_session_report(app, ReportOptions(tz="UTC"), console)
    text = console_text(console)
    assert "s-old" in text and "/home/alice/web" in text and "Total" in text
