"""The ledger on SQLite and PostgreSQL: idempotent writes, most-complete-wins, cursors, reprice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ccledger.core.pricing import PriceBook
from ccledger.core.records import TokenCounts, UsageRecord
from ccledger.store.engine import make_engine
from ccledger.store.ledger import CodeChange, FileCursor, Ledger, price_record
from ccledger.store.migrations import HEAD

BOOK = PriceBook.load()
TS = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def rec(key: str, output: int = 10, model: str = "claude-sonnet-4-5", **kw) -> UsageRecord:
    return UsageRecord(ts=kw.pop("ts", TS), source="test", dedupe_key=key, model=model,
                       tokens=TokenCounts(input=100, output=output), **kw)


def totals(ledger: Ledger) -> tuple[int, int, int]:
    rows = ledger.rollup(bucket_ms=86_400_000)
    return (sum(r.requests for r in rows), sum(r.tokens.output for r in rows), sum(r.cost_nanos for r in rows))


def test_writes_are_idempotent_and_most_complete_wins(ledger_url):
    ledger = Ledger.open(ledger_url)
    ledger.write([price_record(BOOK, rec("a", 10)), price_record(BOOK, rec("b", 5))])
    ledger.write([price_record(BOOK, rec("a", 10)), price_record(BOOK, rec("b", 5))])
    assert totals(ledger)[:2] == (2, 15)
    # a later, more complete copy of "a" replaces it; a less complete one does not
    ledger.write([price_record(BOOK, rec("a", 1000))])
    ledger.write([price_record(BOOK, rec("a", 3))])
    n, out, cost = totals(ledger)
    assert (n, out) == (2, 1005)
    expected = (Decimal(200) * 3 + Decimal(1005) * 15) / 1_000_000
    assert Decimal(cost) / 10**9 == expected


def test_ingest_is_one_transaction_with_cursors(ledger_url):
    ledger = Ledger.open(ledger_url)
    cur = FileCursor("/x/a.jsonl", "1:2", "5:abc", 500, 7, 480, 12, 1)
    ledger.ingest([price_record(BOOK, rec("k1"))], [CodeChange("uuid:1", "s", 0, 3, 1)], [cur])
    cur.offset = 500
    ledger.ingest([], [CodeChange("uuid:1", "s", 0, 3, 1)], [cur])  # same change again: not doubled
    got = ledger.cursors()["/x/a.jsonl"]
    assert got.offset == 500 and got.line_no == 12
    assert ledger.code_changes_by_session() == {"s": (3, 1)}


def test_reprice_after_book_change(ledger_url, tmp_path):
    ledger = Ledger.open(ledger_url)
    ledger.write([price_record(BOOK, rec("r1", 1_000_000)), price_record(BOOK, rec("r2", 0, model="acme"))])
    f = tmp_path / "p.toml"
    f.write_text('multiplier = "0.5"\n[[models]]\nkey = "acme"\nsource = "t"\n[[models.prices]]\n'
                 'input = "1"\noutput = "2"\n')
    seen, changed = ledger.reprice(PriceBook.load([f]))
    assert (seen, changed) == (2, 2)
    cost = Decimal(totals(ledger)[2]) / 10**9
    assert cost == (Decimal(100) * 3 / 10**6 + 15) / 2 + Decimal(100) * 1 / 10**6 / 2
    assert ledger.unknown_models() == []


def test_migration_head_matches_alembic(ledger_url):
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import ccledger.store.migrations as m

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(m.__file__).parent))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD
    Ledger.open(ledger_url)
    from ccledger.store.engine import current_revision

    assert current_revision(make_engine(ledger_url)) == HEAD


def test_rollup_groups_and_filters(ledger_url):
    ledger = Ledger.open(ledger_url)
    ledger.write([
        price_record(BOOK, rec("1", ts=datetime(2026, 11, 20, 1, tzinfo=UTC), session_id="s1")),
        price_record(BOOK, rec("2", ts=datetime(2026, 11, 20, 23, tzinfo=UTC), session_id="s1")),
        price_record(BOOK, rec("3", ts=datetime(2026, 11, 21, 5, tzinfo=UTC), session_id="s2",
                               model="claude-opus-4-8")),
    ])
    rows = ledger.rollup(bucket_ms=86_400_000, by=["model"])
    assert sorted((r.bucket_ms, r.keys, r.requests) for r in rows) == [
        (int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000), ("claude-sonnet-4-5",), 2),
        (int(datetime(2026, 11, 21, tzinfo=UTC).timestamp() * 1000), ("claude-opus-4-8",), 1),
    ]
    only = ledger.rollup(bucket_ms=60_000, where={"session_id": "s2"})
    assert [r.requests for r in only] == [1]
