"""``Ledger.ingest(wait=False)``: a reader process that finds SQLite's write lock taken keeps its rows and
goes on reading instead of sleeping; nothing is written twice or lost."""

from __future__ import annotations

import sqlite3

import pytest

from ccledger.core.records import FileCursor
from ccledger.store.ledger import Ledger
from tests.sources.test_transcripts import BOOK


def _rows(ledger: Ledger, n: int) -> list[tuple[object, ...]]:
    from datetime import UTC, datetime, timedelta

    from ccledger.core.records import TokenCounts, UsageRecord
    from ccledger.store.ledger import price_record, row_of

    out = []
    for i in range(n):
        rec = UsageRecord(ts=datetime(2026, 11, 20, 10, tzinfo=UTC) + timedelta(minutes=i), source="transcript",
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


def test_a_waiting_ingest_takes_the_lock_once_it_is_free_and_falls_back_after_the_timeout(tmp_path, monkeypatch):
    """``ingest`` (waiting) tries the write lock again every few milliseconds instead of sleeping in SQLite's
    busy handler, whose naps grow to 100 ms; past the timeout it leaves the wait to the busy handler."""
    import threading

    path = tmp_path / "w.db"
    ledger = Ledger.open(f"sqlite:///{path}")
    rows = _rows(ledger, 3)
    other = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    attempts: list[bool] = []
    real_try = ledger._try_write_lock

    def counted() -> bool:
        got = real_try()
        attempts.append(got)
        if len(attempts) == 5:
            threading.Thread(target=lambda: other.execute("COMMIT")).start()  # the other one commits
        return got

    monkeypatch.setattr(ledger, "_try_write_lock", counted)
    assert ledger.ingest(rows, [], []) is True
    assert ledger.count() == 3
    assert attempts[:5] == [False] * 5 and attempts[-1] is True  # it kept trying, and got the lock

    # Never free: after the timeout the write goes through the busy handler, which waits for the lock too.
    monkeypatch.setattr(ledger, "_try_write_lock", lambda: False)
    clock = iter(range(0, 10**6, 30))  # each look at the clock: 30 s later
    monkeypatch.setattr("ccledger.store.ledger.time.monotonic", lambda: next(clock))
    monkeypatch.setattr("ccledger.store.ledger.time.sleep", lambda s: None)
    assert ledger._wait_write_lock(timeout_s=60) is False
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.2, lambda: other.execute("COMMIT"))
    timer.start()
    assert ledger.ingest(_rows(ledger, 4), [], []) is True  # BEGIN, then the busy handler's wait
    timer.join()
    assert ledger.count() == 4
    other.close()
    ledger.close()


def test_concurrent_writers_with_the_same_requests_in_opposite_orders(ledger_url):
    """Two workers can hold the same requests (a resumed session repeats earlier messages in a new file)
    in any order. On PostgreSQL each upsert locks its row until commit, so two transactions taking the same
    keys in opposite orders deadlock and one fails; rows are written in key order to avoid that."""
    import threading

    Ledger.open(ledger_url).close()
    n = 3000
    rows = _rows(Ledger(ledger_url), n)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(batch: list[tuple[object, ...]]) -> None:
        ledger = Ledger(ledger_url)
        try:
            start.wait()
            ledger.ingest(batch, [], [])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            ledger.close()

    threads = [threading.Thread(target=write, args=(b,)) for b in (rows, rows[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert Ledger(ledger_url).count() == n


def test_a_deadlocked_postgres_transaction_is_run_again(monkeypatch):
    """What PostgreSQL aborts as a deadlock (SQLSTATE 40P01) is retried; any other error is not."""
    ledger = Ledger("postgresql+psycopg://unused/none")  # never connects: the transaction is replaced
    calls: list[int] = []

    class Deadlock(Exception):
        sqlstate = "40P01"

    def flaky(rows, changes, cursors, *, began):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        if len(calls) < 3:
            raise Deadlock("deadlock detected")

    monkeypatch.setattr(ledger, "_ingest_tx", flaky)
    monkeypatch.setattr("ccledger.store.ledger.time.sleep", lambda s: None)
    rows = _rows(ledger, 1)
    assert ledger.ingest(rows, [], []) is True
    assert calls == [1, 1, 1]

    def broken(rows, changes, cursors, *, began):  # type: ignore[no-untyped-def]
        calls.append(-1)
        raise ValueError("not a deadlock")

    monkeypatch.setattr(ledger, "_ingest_tx", broken)
    calls.clear()
    with pytest.raises(ValueError, match="not a deadlock"):
        ledger.ingest(rows, [], [])
    assert calls == [-1]
