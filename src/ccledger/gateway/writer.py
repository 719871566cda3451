"""Ledger writes off the request path: a batching writer with a durable local spool.

Why: a request must never wait for the database, and a database outage must never lose a billed
request (spend-limits.md §C9). Records go into an asyncio queue; one task batches them into
``Ledger.write`` on a worker thread. A failed batch is appended to a JSON-lines spool file (fsync'd) and
replayed on a timer and at start-up. Replaying is safe to repeat because ``Ledger.write`` is an idempotent
upsert keyed by ``dedupe_key``: a record is never counted twice, even if a replay is cut half-way.
The spool is shared by every worker process; appends and replays take an exclusive ``flock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from ccledger.core.records import TokenCounts, UsageRecord
from ccledger.store.ledger import Ledger, PricedRow

log = logging.getLogger("ccledger.gateway.writer")

_RECORD_FIELDS = set(UsageRecord.__struct_fields__)
# Rows per slice of a batch write: the writer thread yields the CPU between slices, so a request that
# arrives mid-batch waits for one slice, not the whole batch (``Ledger.write_yielding``).
WRITE_SLICE = 16


def row_to_json(row: PricedRow) -> str:
    rec = msgspec.to_builtins(row.record)  # nested: tokens become an object
    rec["ts"] = row.record.ts.isoformat()
    return json.dumps(
        {"record": rec, "model_key": row.model_key, "long_context": row.long_context}, separators=(",", ":")
    )


def row_from_json(line: str) -> PricedRow:
    data = json.loads(line)
    rec: dict[str, Any] = {k: v for k, v in data["record"].items() if k in _RECORD_FIELDS}
    rec["ts"] = datetime.fromisoformat(rec["ts"])
    rec["tokens"] = TokenCounts(**rec["tokens"])
    return PricedRow(UsageRecord(**rec), data.get("model_key"), bool(data.get("long_context")))


class Spool:
    """Append-only JSON lines; each append is flushed and fsync'd before the writer moves on."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, rows: list[PricedRow]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(row_to_json(r) + "\n" for r in rows).encode()
        with open(self.path, "ab") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def pending(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def replay(self, write: Callable[[list[PricedRow]], None], batch: int = 1000) -> int:
        """Write every spooled record, then truncate. Raises (leaving the spool intact) if the store is
        still down. Lines that cannot be parsed (a torn last line after a crash) are skipped and logged."""
        if not self.pending():
            return 0
        with open(self.path, "r+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                rows: list[PricedRow] = []
                for raw in fh.read().splitlines():
                    if not raw.strip():
                        continue
                    try:
                        rows.append(row_from_json(raw.decode()))
                    except (ValueError, KeyError, TypeError):
                        log.warning("spool: skipping an unreadable line (%d bytes)", len(raw))
                for i in range(0, len(rows), batch):
                    write(rows[i : i + batch])
                fh.seek(0)
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
                return len(rows)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


class BatchWriter:
    """One consumer task; ``submit`` is synchronous and never blocks the request path (after ``close``,
    at shutdown, it appends the row to the spool itself).

    ``submit`` appends to a list and at most sets an event: the consumer wakes once per batch (at the
    first row, then when ``batch`` rows are pending or ``flush_ms`` has passed), not once per row, so a
    request pays a list append for its ledger row.
    """

    def __init__(
        self,
        ledger: Ledger,
        spool: Spool,
        *,
        batch: int = 500,
        flush_ms: int = 200,
        replay_seconds: float = 15.0,
        on_spool: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.spool = spool
        self.batch = batch
        self.flush_s = flush_ms / 1000
        self.replay_s = replay_seconds
        self._on_spool = on_spool
        self._on_error = on_error
        self._pending: list[PricedRow] = []
        self._wake = asyncio.Event()  # set when the first row of a batch arrives
        self._full = asyncio.Event()  # set when ``batch`` rows are pending
        self._task: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._closed = False
        self.written = 0
        self.spooled = 0

    def submit(self, row: PricedRow) -> None:
        if self._closed:
            self._spool_late(row)
            return
        self._inflight += 1
        self._idle.clear()
        pending = self._pending
        pending.append(row)
        if len(pending) == 1:
            self._wake.set()
        if len(pending) >= self.batch:
            self._full.set()

    async def start(self) -> None:
        await self.replay()
        self._task = asyncio.create_task(self._run(), name="ccledger-writer")
        self._replayer = asyncio.create_task(self._replay_loop(), name="ccledger-spool-replay")

    async def flush(self) -> None:
        """Wait until everything submitted so far is in the ledger or the spool (tests, shutdown)."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # From here on no consumer is left: a row submitted while the last rows are written (or later)
        # goes to the spool by itself. What slipped in after the last batch goes straight to the store.
        self._closed = True
        rest, self._pending = self._pending, []
        if rest:
            await self._write(rest)

    def _spool_late(self, row: PricedRow) -> None:
        """A row submitted after ``close`` (a response that ended while the gateway shut down): no consumer
        is left, so it goes to the spool at once, which the next start replays into the store."""
        try:
            self.spool.append([row])
        except Exception:
            log.exception("spool append failed after shutdown; the record is only in the log")
            log.error("unsaved record %s", row_to_json(row))
            return
        self.spooled += 1
        if self._on_spool:
            self._on_spool(1)

    async def replay(self) -> int:
        try:
            n = await asyncio.to_thread(self.spool.replay, self._store)
        except Exception as exc:  # the store is still down; try again on the next tick
            log.warning("spool replay failed: %s", type(exc).__name__)
            return 0
        if n:
            log.info("spool replayed %d records", n)
        return n

    def _store(self, rows: list[PricedRow]) -> None:
        """One batch into the ledger (worker thread): in slices on SQLite, in rollup-cell order on
        PostgreSQL (``Ledger.write_yielding``)."""
        self.ledger.write_yielding(rows, WRITE_SLICE, os.sched_yield)

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_s)
            if self.spool.pending():
                await self.replay()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if len(self._pending) < self.batch:
                # Give the batch ``flush_ms`` from its first row to fill, or less if it fills sooner.
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_s):
                        await self._full.wait()
            rows = self._pending[: self.batch]
            del self._pending[: self.batch]
            await self._write(rows)

    async def _write(self, rows: list[PricedRow]) -> None:
        try:
            await asyncio.to_thread(self._store, rows)
            self.written += len(rows)
        except Exception as exc:
            log.warning("ledger write failed (%s); spooling %d records", type(exc).__name__, len(rows))
            if self._on_error:
                self._on_error()
            try:
                await asyncio.to_thread(self.spool.append, rows)
                self.spooled += len(rows)
                if self._on_spool:
                    self._on_spool(len(rows))
            except Exception:
                log.exception("spool append failed; %d records only in the log", len(rows))
                for r in rows:
                    log.error("unsaved record %s", row_to_json(r))
        finally:
            self._inflight -= len(rows)
            if self._inflight <= 0:
                self._inflight = 0
                self._idle.set()
