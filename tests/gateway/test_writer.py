"""The batching writer and its spool: a store outage loses nothing and double-counts nothing."""

from __future__ import annotations

import json

from ccledger.store.ledger import Ledger
from tests.gateway.conftest import DEFAULT_COST, body

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


def test_store_outage_spools_then_replays_once(gw):
    key = gw.user("alice")
    real = gw.state.writer.ledger
    with gw.client(key) as c:
        c.post("/v1/messages", content=body())
        gw.flush()
        gw.state.writer.ledger = Ledger(UNREACHABLE)  # not opened: every write fails to connect
        for _ in range(3):
            assert c.post("/v1/messages", content=body(stream=True)).status_code == 200
        gw.flush()
    spool = gw.state.writer.spool
    lines = spool.path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["record"]["user_id"] == "alice" for x in lines)
    assert real.count() == 1
    # Store back: replay writes them; a second replay (or a crash mid-replay) cannot double count.
    gw.state.writer.ledger = real
    assert gw.run(gw.state.writer.replay()) == 3
    assert not spool.pending()
    spool.append([_row_from(line) for line in lines])  # the same records spooled again
    assert gw.run(gw.state.writer.replay()) == 3
    assert real.count() == 4
    assert sum(r["cost_nanos"] for r in gw.rows()) == 4 * DEFAULT_COST
    assert "ccledger_gateway_spooled_records_total 3.0" in __import__("httpx").get(f"{gw.url}/metrics").text


def _row_from(line: str):
    from ccledger.gateway.writer import row_from_json

    return row_from_json(line)


def test_spool_replayed_at_start(gateway_factory, tmp_path):
    gw1 = gateway_factory()
    key = gw1.user("alice")
    with gw1.client(key) as c:
        c.post("/v1/messages", content=body())
    (row,) = gw1.rows()
    from ccledger.gateway.writer import Spool, row_from_json, row_to_json  # noqa: F401

    # Simulate records a previous process spooled but never replayed.
    spool = gw1.state.writer.spool
    gw1.stop()
    from ccledger.core.records import TokenCounts, UsageRecord
    from ccledger.store.ledger import PricedRow

    rec = UsageRecord(
        ts=gw1.clock(), source="gateway", dedupe_key="msg_spooled_1", model="claude-test-1",
        tokens=TokenCounts(input=1000), user_id="alice", cost_nanos=3_000_000,
    )  # fmt: skip
    spool.append([PricedRow(rec, "claude-test-1", False)])
    gw2 = gateway_factory()
    assert {r["dedupe_key"] for r in gw2.rows()} == {row["dedupe_key"], "msg_spooled_1"}
    assert not spool.pending()


def test_gateway_memory_stays_bounded_by_request_count(gw):
    """The two things that grew with every request served: SQLite's page cache (sized for bulk
    refreshes) and the counters' finished-id memory. Both are capped in the gateway."""
    from ccledger.gateway.app import FINISHED_IDS, PAGE_CACHE_KIB

    ledger = gw.state.ledger
    if ledger.dialect == "sqlite":  # (PostgreSQL's cache is the server's)
        with ledger._lock:
            assert ledger._sqlite_conn().execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
    counters = gw.state.counters
    key = gw.user("alice")
    with gw.client(key) as c:
        for _ in range(3):
            assert c.post("/v1/messages", content=body()).status_code == 200
    gw.flush()
    assert counters._max_finished == FINISHED_IDS
    assert len(counters._finished) == 3 and not counters._leases


def _rows(n: int, tag: str):
    from datetime import UTC, datetime

    from ccledger.core.records import SOURCE_GATEWAY, TokenCounts, UsageRecord
    from ccledger.store.ledger import PricedRow

    return [
        PricedRow(UsageRecord(ts=datetime.now(UTC), source=SOURCE_GATEWAY, dedupe_key=f"req:{tag}{i}",
                              model="claude-sonnet-4-5", tokens=TokenCounts(10, 20, 0, 0, 0), cost_nanos=7),
                  "claude-sonnet-4-5", False)
        for i in range(n)
    ]  # fmt: skip


def test_sliced_write_yields_between_slices_and_is_one_transaction(tmp_path):
    """The writer's batches go in slices with a pause between them (the event loop's turn), but still
    all or nothing: a failure in a later slice leaves none of the batch, so the spooled copy is the only
    one and nothing is counted twice."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    pauses: list[int] = []
    ledger.write_yielding(_rows(40, "a"), 16, lambda: pauses.append(1))
    assert ledger.count() == 40
    assert len(pauses) == 2  # 16 + 16 + 8

    def fail() -> None:
        raise OSError("disk gone")

    try:
        ledger.write_yielding(_rows(40, "b"), 16, fail)
    except OSError:
        pass
    else:
        raise AssertionError("the failure must propagate, so the writer spools the batch")
    assert ledger.count() == 40
    ledger.write_yielding(_rows(40, "a"), 16, lambda: None)  # a replay of written rows: no new records
    assert ledger.count() == 40
    assert sum(r["cost_nanos"] for r in ledger.iter_records()) == 40 * 7


def test_workers_writing_the_same_cells_at_once_do_not_deadlock(store_url):
    """Gateway workers each write their own requests, but the rollup cells they update are shared (same
    users, model, quarter hour). Two writers taking the cells in opposite orders deadlocked on
    PostgreSQL (the batch then went to the spool); every batch must now go straight in, counted once."""
    import threading

    users = [f"u{i}" for i in range(30)]
    errors: list[BaseException] = []

    def worker(tag: str, order: list[str]) -> None:
        ledger = Ledger(store_url)  # its own connection, as each worker process has
        try:
            for b in range(15):
                rows = _rows(len(order), f"{tag}{b}-")
                for row, user in zip(rows, order, strict=True):
                    row.record.user_id = user
                ledger.write_yielding(rows, 16, lambda: None)
        except BaseException as exc:
            errors.append(exc)
        finally:
            ledger.close()

    threads = [threading.Thread(target=worker, args=("a", users)),
               threading.Thread(target=worker, args=("b", users[::-1]))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ledger = Ledger(store_url)
    assert ledger.count() == 2 * 15 * 30
    assert sum(r.requests for r in ledger.rollup(bucket_ms=10**13, by=("user_id",))) == 2 * 15 * 30


def test_a_row_submitted_after_close_is_spooled_and_replayed_by_the_next_start(tmp_path):
    """A response that ends while the gateway shuts down submits its row after the writer closed: no
    consumer is left, so the row goes to the spool at once, and the next writer's start stores it (once)."""
    import asyncio

    from ccledger.gateway.writer import BatchWriter, Spool

    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    spool = Spool(tmp_path / "spool.jsonl")
    early, late = _rows(3, "early"), _rows(2, "late")

    async def first_life() -> None:
        writer = BatchWriter(ledger, spool, flush_ms=10)
        await writer.start()
        for row in early:
            writer.submit(row)
        await writer.close()
        for row in late:
            writer.submit(row)  # after close
        assert writer.spooled == 2

    asyncio.run(first_life())
    assert ledger.count() == 3 and spool.pending()
    assert len(spool.path.read_text().splitlines()) == 2

    async def second_life() -> None:
        writer = BatchWriter(ledger, spool)
        await writer.start()  # replays the spool
        await writer.close()

    asyncio.run(second_life())
    assert ledger.count() == 5 and not spool.pending()
    assert sorted(r["dedupe_key"] for r in ledger.iter_records()) == sorted(
        [f"req:early{i}" for i in range(3)] + [f"req:late{i}" for i in range(2)]
    )


def test_a_row_submitted_while_close_writes_the_last_rows_is_spooled(tmp_path):
    """``close`` writes what was still pending after the consumer stopped; a row submitted during that
    write (the store is slow here) must not land in a list nobody drains any more."""
    import asyncio
    import time

    from ccledger.gateway.writer import BatchWriter, Spool

    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    spool = Spool(tmp_path / "spool.jsonl")
    pending, (late,) = _rows(2, "pending"), _rows(1, "late")
    writer = BatchWriter(ledger, spool)
    real_store = writer._store

    def slow_store(rows):
        time.sleep(0.3)  # in the writer's thread, while the event loop goes on
        real_store(rows)

    writer._store = slow_store  # type: ignore[method-assign]
    writer._pending.extend(pending)  # left over when the consumer stopped (no consumer was started)

    async def submit_meanwhile() -> None:
        await asyncio.sleep(0.1)
        writer.submit(late)

    async def main() -> None:
        await asyncio.gather(writer.close(), submit_meanwhile())

    asyncio.run(main())
    assert ledger.count() == 2 and writer.spooled == 1
    assert [json.loads(x)["record"]["dedupe_key"] for x in spool.path.read_text().splitlines()] == ["req:late0"]
