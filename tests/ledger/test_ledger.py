"""The ledger on SQLite and PostgreSQL: idempotent writes, most-complete-wins, cursors, reprice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ccledger.core.pricing import PriceBook
from ccledger.core.records import FileCursor, TokenCounts, UsageRecord
from ccledger.store.engine import make_engine
from ccledger.store.ledger import CodeChange, Ledger, bare_row, price_record, priced_row, row_of
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
    ledger.ingest([row_of(price_record(BOOK, rec("k1")))], [CodeChange("uuid:1", "s", 0, 3, 1)], [cur])
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


def test_rollup_without_times_has_the_same_sums_and_no_activity_times(ledger_url):
    """``times=False`` (day, week and month reports) drops only the first/last activity times, from the
    cells and from the raw records alike (a bucket that is not whole quarter hours reads the records)."""
    ledger = Ledger.open(ledger_url)
    stamps = [datetime(2026, 11, 20, 1, 7, tzinfo=UTC), datetime(2026, 11, 20, 23, 59, tzinfo=UTC),
              datetime(2026, 11, 21, 5, 30, tzinfo=UTC)]
    ledger.write([price_record(BOOK, rec(str(i), output=10 + i, ts=t)) for i, t in enumerate(stamps)])
    for bucket in (86_400_000, 86_400_000 + 60_000):
        with_times = sorted(ledger.rollup(bucket_ms=bucket, by=["model"]), key=lambda r: r.bucket_ms)
        without = sorted(ledger.rollup(bucket_ms=bucket, by=["model"], times=False), key=lambda r: r.bucket_ms)
        assert [(r.first_ms, r.last_ms) for r in without] == [(0, 0)] * len(with_times)
        def sums(r):  # type: ignore[no-untyped-def]
            return (r.bucket_ms, r.keys, r.requests, r.tokens, r.cost_nanos, r.unknown_requests)
        assert [sums(r) for r in without] == [sums(r) for r in with_times]
    day = sorted(ledger.rollup(bucket_ms=86_400_000), key=lambda r: r.bucket_ms)
    ms = [int(t.timestamp() * 1000) for t in stamps]
    assert [(r.first_ms, r.last_ms) for r in day] == [(ms[0], ms[1]), (ms[2], ms[2])]


def test_rollup_cells_agree_with_raw_records_after_replacements_and_reprice(ledger_url, tmp_path):
    """The trigger-maintained quarter-hour cells must give exactly what a scan of the records gives."""
    import random

    rnd = random.Random(5)
    ledger = Ledger.open(ledger_url)
    base = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
    recs = []
    for i in range(400):
        ts = datetime.fromtimestamp(base + rnd.randrange(0, 3 * 86400), tz=UTC)
        recs.append(rec(f"k{i % 300}", rnd.randrange(0, 5000), model=rnd.choice(["claude-sonnet-4-5", "x-unknown"]),
                        ts=ts, session_id=f"s{i % 7}", project=f"/p{i % 3}"))
    for chunk in (recs[:150], recs[150:]):  # later copies of k0..k99 replace or lose to the first ones
        ledger.write([price_record(BOOK, r) for r in chunk])

    def both(**kw):
        def norm(rows):
            return sorted((r.bucket_ms, r.keys, r.requests, r.tokens, r.cost_nanos, r.unknown_requests) for r in rows)
        return norm(ledger._rollup_from(True, **kw)), norm(ledger._rollup_from(False, **kw))

    for kw in ({"bucket_ms": 900_000, "by": ["model_key", "model"]},
               {"bucket_ms": 3_600_000, "by": ["project"]},
               {"bucket_ms": 10**13, "by": ["session_id", "model"]},
               {"bucket_ms": 86_400_000, "by": [], "where": {"session_id": "s3"}}):
        cells, raw = both(since_ms=None, until_ms=None, where=kw.pop("where", None), **kw)
        assert cells == raw and raw
    assert sum(r[2] for r in both(bucket_ms=10**13, by=[], since_ms=None, until_ms=None, where=None)[0]) == 300
    f = tmp_path / "p.toml"
    f.write_text('multiplier = "0.5"\n')
    ledger.reprice(PriceBook.load([f]))
    cells, raw = both(bucket_ms=900_000, by=["model"], since_ms=None, until_ms=None, where=None)
    assert cells == raw


def test_replacement_keeps_attribution_the_other_source_knew_and_long_values_fit(ledger_url):
    """The gateway knows the user, the transcript the project: whichever copy wins, neither is lost.
    An over-long field (e.g. a version from a header) is cut, not a failed batch (PostgreSQL)."""
    ledger = Ledger.open(ledger_url)
    ledger.write([price_record(BOOK, rec("same", 10, project="/repo", git_branch="main",
                                         client_version="2." + "9" * 200))])
    ledger.write([price_record(BOOK, rec("same", 20, user_id="alice", key_id="key_1"))])
    (row,) = list(ledger.iter_records())
    assert (row["output_tokens"], row["project"], row["git_branch"], row["user_id"], row["key_id"]) == (
        20, "/repo", "main", "alice", "key_1")
    assert len(row["client_version"]) == 64


def test_bare_rows_store_what_full_rows_store(ledger_url):
    """A refresh writes a request without the columns local history never fills (``bare_row``): stored,
    it is the same record as the full row of the same request; a record with any of them filled gets the
    full row, and one call may mix both."""
    variants = [
        {},
        {"speed": "fast", "inference_geo": "us", "service_tier": "batch", "is_sidechain": True,
         "agent_id": "a" * 250, "parent_agent_id": "p1", "project": "/repo", "git_branch": "main",
         "client_version": "2." + "1" * 80, "session_id": "s1", "request_id": "req_1"},
        {"model": "claude-future-9", "web_search_requests": 3},
        {"user_id": "alice", "key_id": "key_1", "workspace": "w", "group_id": "g"},
        {"duration_ms": 1234},
        {"extra": {"via": "x"}},
    ]
    records = []
    for n, kw in enumerate(variants):
        for prefix in ("bare", "full"):
            model = kw.get("model", "claude-sonnet-4-5")
            fields = {k: v for k, v in kw.items() if k != "model"}
            records.append(rec(f"{prefix}{n}", 100 + n, model=model, **fields))
    rows = [(bare_row if r.dedupe_key.startswith("bare") else priced_row)(BOOK, r) for r in records]
    shapes = [len(row) for row in rows]
    assert shapes[0] < shapes[1] and shapes[2] == shapes[0] and shapes[6] == shapes[7] == shapes[8]
    ledger = Ledger.open(ledger_url)
    ledger.ingest(rows, [], [])
    ledger.ingest(rows, [], [])  # idempotent in either shape
    stored = {r["dedupe_key"]: r for r in ledger.iter_records()}
    assert len(stored) == len(records)
    for n in range(len(variants)):
        bare, full = dict(stored[f"bare{n}"]), dict(stored[f"full{n}"])
        for row in (bare, full):
            row.pop("dedupe_key")
            row.pop("id", None)
        assert bare == full, variants[n]
    assert stored["bare3"]["user_id"] == "alice" and stored["bare4"]["duration_ms"] == 1234
    assert totals(ledger)[0] == len(records)


def test_a_failed_commit_is_rolled_back_so_the_connection_stays_usable(tmp_path):
    """SQLite may leave a transaction open after a failed COMMIT (disk full, I/O error); on the shared
    connection every later write would then fail with "cannot start a transaction within a transaction"."""
    import sqlite3

    from ccledger.store.ledger import _in_transaction

    real = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    real.execute("CREATE TABLE t (x INTEGER)")

    class FailingCommit:
        """A connection whose first COMMIT fails, as a full disk makes it."""

        failed = False

        def cursor(self):  # type: ignore[no-untyped-def]
            return real.cursor()

        def rollback(self) -> None:
            real.execute("ROLLBACK")

        def commit(self) -> None:
            if not FailingCommit.failed:
                FailingCommit.failed = True
                raise sqlite3.OperationalError("database or disk is full")
            real.execute("COMMIT")

    conn = FailingCommit()
    try:
        with _in_transaction(conn, begin=True) as cur:
            cur.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError:
        pass
    assert not real.in_transaction
    with _in_transaction(conn, begin=True) as cur:  # the next transaction starts and commits
        cur.execute("INSERT INTO t VALUES (2)")
    assert real.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_sqlite_stores_none_as_null_and_bools_as_integers(tmp_path):
    """The adapters registered for speed must not change what is stored (``_register_sqlite_adapters``)."""
    import sqlite3

    db = tmp_path / "types.db"
    ledger = Ledger.open(f"sqlite:///{db}")
    ledger.write([price_record(BOOK, rec("n", is_sidechain=True)), price_record(BOOK, rec("f", model="x-unknown"))])
    with sqlite3.connect(db) as conn:
        got = dict(conn.execute(
            "SELECT dedupe_key, typeof(service_tier) || typeof(duration_ms) || typeof(extra) || ':' "
            "|| typeof(is_sidechain) || is_sidechain || unknown_model || typeof(model_key) FROM usage"
        ).fetchall())  # fmt: skip
    assert got == {"n": "nullnullnull:integer10text", "f": "nullnullnull:integer01null"}


def test_checkpoint_moves_the_write_ahead_log_into_the_store_file(ledger_url, tmp_path):
    """What a refresh's worker calls when it is done: afterwards the SQLite file alone (without its -wal)
    holds the rows, while before it only the log did. On PostgreSQL it is a no-op."""
    import shutil
    import sqlite3

    ledger = Ledger.open(ledger_url)
    ledger.write([price_record(BOOK, rec(f"k{i}")) for i in range(50)])

    def rows_in_file_alone() -> int:
        path = ledger_url.split(":///", 1)[1]
        copy = tmp_path / "alone.db"
        shutil.copyfile(path, copy)  # the file only: no -wal, no -shm beside the copy
        conn = sqlite3.connect(copy)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
        except sqlite3.OperationalError:  # no such table: even the schema is still in the log
            return 0
        finally:
            conn.close()

    if ledger.dialect == "sqlite":
        assert rows_in_file_alone() == 0
    ledger.checkpoint()
    if ledger.dialect == "sqlite":
        assert rows_in_file_alone() == 50
    assert ledger.count() == 50


def test_settle_folds_the_log_in_only_once_it_has_grown(ledger_url, tmp_path):
    """Before the console script ends without closing the store: a small write-ahead log is left for a
    later run (the next open replays it), one past the limit is checkpointed and emptied. PostgreSQL:
    the connections are closed, and the ledger still works afterwards."""
    import os
    import sqlite3

    ledger = Ledger.open(ledger_url)
    ledger.write([price_record(BOOK, rec(f"k{i}")) for i in range(200)])
    if ledger.dialect != "sqlite":
        ledger.settle()
        assert ledger.count() == 200  # reconnects
        return
    path = ledger_url.split(":///", 1)[1]
    size = os.path.getsize(f"{path}-wal")
    assert size > 0
    ledger.settle(max_log_bytes=size)  # not past the limit: left as it is
    assert os.path.getsize(f"{path}-wal") == size
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM usage").fetchone()  # another process mid-read on this snapshot
    ledger.write([price_record(BOOK, rec("later"))])
    grown = os.path.getsize(f"{path}-wal")
    ledger.settle(max_log_bytes=size - 1)  # cannot empty the log under that reader: leaves it, no error
    assert os.path.getsize(f"{path}-wal") == grown
    reader.execute("COMMIT")
    reader.close()
    ledger.settle(max_log_bytes=size - 1)
    assert os.path.getsize(f"{path}-wal") == 0
    alone = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert alone.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == 201
    finally:
        alone.close()
    ledger.close()
