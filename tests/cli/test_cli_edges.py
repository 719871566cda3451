"""Command-line edges: tables into a pipe are printed whole, and option values no report can use are
refused with Typer's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.corpus import generate


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("edges")
    generate(tmp / "claude", seed=7, sessions=12, requests_per_session=25)
    env = {**os.environ, "HOME": str(tmp / "home"), "CLAUDE_CONFIG_DIR": str(tmp / "claude"),
           "CCLEDGER_DB": f"sqlite:///{tmp / 'l.db'}"}  # fmt: skip
    env.pop("COLUMNS", None)  # no terminal and no width given: what a pipe or a file gets
    env.pop("CCLEDGER_PRICE_FILES", None)
    return tmp, env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccledger.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.parametrize(("table", "machine", "key"), [
    (["daily", "--breakdown"], ["daily", "--json", "--breakdown"], "period"),
    (["session"], ["session", "--json"], "project"),
    (["blocks"], ["blocks", "--json"], "start"),
])  # fmt: skip
def test_a_table_into_a_pipe_is_not_cut_to_80_columns(history, table, machine, key) -> None:
    _, env = history
    doc = json.loads(_run(machine, env).stdout)
    out = _run(table, env)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout
    rows = [r for r in doc["rows"] if r.get(key)]
    assert rows
    for row in rows:  # every period, project or block start shows in full (blocks: date and hour)
        shown = row[key] if key != "start" else row[key][:16].replace("T", " ")
        assert shown in out.stdout, shown
    if "--breakdown" in table:
        for model in {b["model"] for r in doc["rows"] for b in r["breakdown"]}:
            assert model.removeprefix("claude-") in out.stdout


@pytest.mark.parametrize(("argv", "needle"), [
    (["blocks", "--token-limit", "-5"], "--token-limit"),
    (["blocks", "--token-limit", "0"], "--token-limit"),
    (["session", "--since", "2026-10-20", "--until", "2026-10-19"], "--since 2026-10-20 is after --until 2026-10-19"),
    (["daily", "--since", "2026-13-01"], "is not a date (YYYY-MM-DD or YYYYMMDD)"),
])  # fmt: skip
def test_values_no_report_can_use_are_refused(history, argv, needle) -> None:
    _, env = history
    out = _run(argv, env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert needle in " ".join(out.stderr.replace("│", " ").split())
    assert "Traceback" not in out.stderr
