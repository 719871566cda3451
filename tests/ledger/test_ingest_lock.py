"""``Ledger.ingest(wait=False)``: a reader process that finds SQLite's write lock taken keeps its rows and
goes on reading instead of sleeping; nothing is written twice or lost."""

from __future__ import annotations

import sqlite3

from ccledger.core.records import FileCursor
from ccledger.store.ledger import Ledger
from tests.sources.test_transcripts import BOOK


def _rows(ledger: Ledger, n: int) -> list[tuple[object, ...]]:
    from datetime import UTC, datetime

    from ccledger.core.records import TokenCounts, UsageRecord
    from ccledger.store.ledger import price_record, row_of

    out = []
    for i in range(n):
        rec = UsageRecord(ts=datetime(2026, 11, 20, 10, i, tzinfo=UTC), source="transcript",
                          dedupe_key=f"msg:k{i}", model="claude-sonnet-4-5", tokens=TokenCounts(1000, 10 * i))
        out.append(row_of(price_record(BOOK, rec)))
    return out


def test_ingest_without_waiting_gives_way_to_another_writer(tmp_path):
    path = tmp_path / "l.db"
    ledger = Ledger.open(f"sqlite:///{path}")
    rows = _rows(ledger, 5)
    cursor = FileCursor("/x.jsonl", "1:2", "0:", 10, 1, 10, 1, 0)
    other = sqlite3.connect(path, isolation_level=None, timeout=60)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    assert ledger.ingest(rows, [], [cursor], wait=False) is False
    assert ledger.count() == 0  # reads still work (WAL) and nothing was written
    other.execute("COMMIT")
    assert ledger.ingest(rows, [], [cursor], wait=False) is True
    assert ledger.count() == 5 and list(ledger.cursors()) == ["/x.jsonl"]
    # the lock is free again for ordinary writes, from this connection and others
    ledger.ingest(rows, [], [cursor])
    other.execute("BEGIN IMMEDIATE")
    other.execute("COMMIT")
    assert ledger.count() == 5
    other.close()
    ledger.close()
