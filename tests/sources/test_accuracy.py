"""Reports match totals the corpus generator computed on its own (tests/support/refprices.py), to the
nano-dollar: hand-checkable cases, then random corpora with every awkward feature switched on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ccledger.core.pricing import PriceBook
from ccledger.services.history import refresh
from ccledger.store.ledger import Ledger
from tests.sources.lookup import LOOKUPS, count_decoded_chunks, use_lookup
from tests.support.corpus import Expected, generate, handcheck_cases

TOL = Decimal("1e-8")


def ledger_totals(ledger: Ledger) -> tuple[int, Decimal, dict[str, int]]:
    rows = ledger.rollup(bucket_ms=86_400_000)
    tokens = {"input_tokens": 0, "output_tokens": 0, "cache_write_5m": 0, "cache_write_1h": 0, "cache_read": 0}
    for r in rows:
        t = r.tokens
        for k, v in zip(tokens, (t.input, t.output, t.cache_write_5m, t.cache_write_1h, t.cache_read), strict=True):
            tokens[k] += v
    return sum(r.requests for r in rows), Decimal(sum(r.cost_nanos for r in rows)) / 10**9, tokens


def check(expected: Expected, ledger: Ledger, stats) -> None:
    n, cost, tokens = ledger_totals(ledger)
    assert n == len(expected.requests)
    assert abs(cost - expected.total_cost()) <= TOL, (cost, expected.total_cost())
    exp_tokens = expected.totals()
    for k, v in tokens.items():
        assert v == exp_tokens[k], k
    assert stats.bad_lines == expected.bad_lines
    exp_changes = {s: (expected.lines_added.get(s, 0), expected.lines_removed.get(s, 0))
                   for s in set(expected.lines_added) | set(expected.lines_removed)}
    assert ledger.code_changes_by_session() == {s: v for s, v in exp_changes.items() if v != (0, 0)}


def test_hand_checked_cases(tmp_path):
    expected = handcheck_cases(tmp_path / "claude")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    stats = refresh(ledger, PriceBook.load(), [tmp_path / "claude"])
    check(expected, ledger, stats)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("lookup", LOOKUPS)
def test_random_corpora_match_expected_totals(tmp_path, monkeypatch, seed, lookup):
    """Every way of finding the usage and patch lines in a clean chunk (searching for the keys, decoding
    every line at once, or asking the parsed document) must give the generator's totals."""
    use_lookup(monkeypatch, lookup)
    decoded = count_decoded_chunks(monkeypatch)
    expected = generate(tmp_path / "claude", seed=seed, sessions=12, requests_per_session=25)
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    stats = refresh(ledger, PriceBook.load(), [tmp_path / "claude"])
    check(expected, ledger, stats)
    assert any(decoded) == (lookup == "decode")
    # reading everything again changes nothing
    again = refresh(ledger, PriceBook.load(), [tmp_path / "claude"])
    assert again.bytes_read == 0
    assert ledger_totals(ledger)[:2] == (len(expected.requests), ledger_totals(ledger)[1])


@pytest.mark.postgres
def test_corpus_on_postgres_matches(tmp_path):
    from tests.ledger.conftest import pg_schema_url

    expected = generate(tmp_path / "claude", seed=7, sessions=6, requests_per_session=20)
    gen = pg_schema_url()
    url = next(gen)
    try:
        ledger = Ledger.open(url)
        stats = refresh(ledger, PriceBook.load(), [tmp_path / "claude"])
        check(expected, ledger, stats)
        ledger.close()
    finally:
        gen.close()


def run_cli(args: list[str], tmp_path: Path, config_dir: Path) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "CLAUDE_CONFIG_DIR": str(config_dir),
           "CCLEDGER_DB": f"sqlite:///{tmp_path / 'cli.db'}", "COLUMNS": "200"}
    env.pop("CCLEDGER_PRICE_FILES", None)
    return subprocess.run([sys.executable, "-m", "ccledger.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("tz", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
def test_cli_daily_json_buckets_by_zone(tmp_path, tz):
    expected = generate(tmp_path / "claude", seed=11, sessions=8, requests_per_session=20)
    proc = run_cli(["daily", "--json", "--tz", tz], tmp_path, tmp_path / "claude")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    by_day: dict[str, Decimal] = defaultdict(Decimal)
    for r in expected.requests:
        by_day[r.timestamp.astimezone(ZoneInfo(tz)).date().isoformat()] += r.cost
    got = {row["period"]: Decimal(row["cost"]) for row in out["rows"]}
    assert got.keys() == by_day.keys()
    for day, cost in by_day.items():
        assert abs(got[day] - cost) <= TOL, day
    assert abs(Decimal(out["totals"]["cost"]) - expected.total_cost()) <= TOL
    assert out["totals"]["requests"] == len(expected.requests)
    assert f"skipped {expected.bad_lines} malformed" in proc.stderr


def test_cli_with_no_history_says_where_it_looked(tmp_path):
    empty = tmp_path / "nothing-here"
    proc = run_cli(["daily"], tmp_path, empty)
    assert proc.returncode == 0, proc.stderr
    assert str(empty) in (proc.stdout + proc.stderr).replace("\n", "")
