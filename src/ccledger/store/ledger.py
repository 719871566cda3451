"""The ledger's reads and writes: idempotent record upserts, ingestion cursors, and report rollups.

Writes go through one bulk upsert keyed by ``dedupe_key``; when the same request arrives twice with
different usage, the more complete copy wins (``completeness``), so re-reading a file or retrying a
gateway write can never double-count and never keep a mid-stream snapshot over the final count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, case, func, select, update
from sqlalchemy.engine import Connection

from ccledger.core.pricing import PriceBook
from ccledger.core.records import TokenCounts, UsageRecord
from ccledger.store.engine import make_engine, migrate
from ccledger.store.schema import (
    ROLLUP_BUCKET_MS,
    ROLLUP_DIMS,
    code_changes,
    source_files,
    usage,
    usage_rollup,
)

_SUM_COLS = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read",
             "web_search_requests", "cost_nanos")  # fmt: skip
_ALL_TIME_MS = 10**13  # a bucket wider than any timestamp: one bucket for everything

# Column order of the bulk upsert; ``row_of`` produces tuples in exactly this order.
_COLUMNS = (
    "dedupe_key", "ts_ms", "source", "model", "model_key", "session_id", "project", "git_branch",
    "client_version", "is_sidechain", "agent_id", "user_id", "group_id", "key_id", "workspace",
    "request_id", "input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read",
    "web_search_requests", "service_tier", "inference_geo", "speed", "duration_ms", "cost_nanos",
    "unknown_model", "long_context", "parent_agent_id", "extra", "completeness",
)  # fmt: skip


def to_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(slots=True)
class PricedRow:
    """A record plus the price-book facts that are not part of the record itself."""

    record: UsageRecord
    model_key: str | None
    long_context: bool


def row_of(p: PricedRow) -> tuple[object, ...]:
    """The record as a bulk-upsert row (column order ``_COLUMNS``; the key first, completeness last)."""
    r = p.record
    t = r.tokens
    return (
        r.dedupe_key, to_ms(r.ts), r.source, r.model, p.model_key, r.session_id, r.project, r.git_branch,
        r.client_version, r.is_sidechain, r.agent_id, r.user_id, r.group_id, r.key_id, r.workspace,
        r.request_id, t.input, t.output, t.cache_write_5m, t.cache_write_1h, t.cache_read,
        r.web_search_requests, r.service_tier, r.inference_geo, r.speed, r.duration_ms, r.cost_nanos or 0,
        r.unknown_model, p.long_context, r.parent_agent_id,
        json.dumps(r.extra, sort_keys=True) if r.extra else None, r.completeness,
    )  # fmt: skip


@dataclass(slots=True)
class FileCursor:
    path: str
    identity: str
    head_hash: str
    size: int
    mtime_ns: int
    offset: int
    line_no: int
    bad_lines: int


@dataclass(slots=True)
class CodeChange:
    line_key: str
    session_id: str
    ts_ms: int
    lines_added: int
    lines_removed: int


@dataclass(slots=True)
class RollupRow:
    """Sums for one (bucket, group...) cell of a report query."""

    bucket_ms: int
    keys: tuple[str, ...]
    requests: int
    tokens: TokenCounts
    web_search_requests: int
    cost_nanos: int
    unknown_requests: int
    first_ms: int
    last_ms: int


class Ledger:
    """One ledger per store URL. Thread-safe as SQLAlchemy engines are; share one per process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        cols = ", ".join(f'"{c}"' for c in _COLUMNS)
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        marks = ", ".join([mark] * len(_COLUMNS))
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in _COLUMNS if c != "dedupe_key")
        # Same text on both engines: SQLite and PostgreSQL share ON CONFLICT ... DO UPDATE ... WHERE.
        self._upsert_sql = (
            f"INSERT INTO usage ({cols}) VALUES ({marks}) ON CONFLICT (dedupe_key) DO UPDATE SET {sets} "
            "WHERE excluded.completeness > usage.completeness"
        )

    @classmethod
    def open(cls, url: str) -> Ledger:
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ------------------------------------------------------------------------------------

    def write(self, rows: Sequence[PricedRow], conn: Connection | None = None) -> None:
        """Idempotent bulk upsert. Pass ``conn`` to make it part of a larger transaction."""
        self.write_rows([row_of(r) for r in rows], conn)

    def write_rows(self, params: Sequence[tuple[object, ...]], conn: Connection | None = None) -> None:
        """``write`` for rows already made by ``row_of`` (e.g. in a worker process)."""
        if not params:
            return
        if conn is not None:
            conn.exec_driver_sql(self._upsert_sql, params)
            return
        with self.engine.begin() as c:
            c.exec_driver_sql(self._upsert_sql, params)

    def ingest(
        self,
        rows: Sequence[tuple[object, ...]],
        changes: Sequence[CodeChange],
        cursors: Sequence[FileCursor],
    ) -> None:
        """Records, code changes and the file positions they came from, in one transaction: a crash
        leaves either all of it or none, so the next run re-reads exactly what was not stored."""
        with self.engine.begin() as conn:
            self.write_rows(rows, conn)
            if changes:
                self._upsert_changes(conn, changes)
            if cursors:
                self._save_cursors(conn, cursors)

    def _upsert_changes(self, conn: Connection, changes: Sequence[CodeChange]) -> None:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = (
            "INSERT INTO code_changes (line_key, session_id, ts_ms, lines_added, lines_removed) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) ON CONFLICT (line_key) DO NOTHING"
        )
        conn.exec_driver_sql(
            sql, [(c.line_key, c.session_id, c.ts_ms, c.lines_added, c.lines_removed) for c in changes]
        )

    def _save_cursors(self, conn: Connection, cursors: Sequence[FileCursor]) -> None:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        cols = ("path", "identity", "head_hash", "size", "mtime_ns", "offset", "line_no", "bad_lines")
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in cols[1:])
        sql = (
            f"INSERT INTO source_files ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)}) "
            f"VALUES ({', '.join([mark] * len(cols))}) ON CONFLICT (path) DO UPDATE SET {sets}"
        )
        conn.exec_driver_sql(
            sql,
            [(c.path, c.identity, c.head_hash, c.size, c.mtime_ns, c.offset, c.line_no, c.bad_lines)
             for c in cursors],
        )

    # -- reads -------------------------------------------------------------------------------------

    def cursors(self) -> dict[str, FileCursor]:
        with self.engine.connect() as conn:
            return {
                row.path: FileCursor(
                    row.path, row.identity, row.head_hash, row.size, row.mtime_ns, row.offset,
                    row.line_no, row.bad_lines,
                )
                for row in conn.execute(select(source_files))
            }

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(usage)).scalar() or 0)

    def rollup(
        self,
        *,
        bucket_ms: int,
        by: Sequence[str] = (),
        since_ms: int | None = None,
        until_ms: int | None = None,
        where: dict[str, str] | None = None,
    ) -> list[RollupRow]:
        """Sums grouped by time bucket (epoch ms floored to ``bucket_ms``) and the ``by`` columns.

        Reports ask for quarter-hour buckets and map them to days in the user's zone in Python, which
        keeps time-zone logic out of SQL (it differs between engines). Whenever the question can be
        answered from the quarter-hour ``usage_rollup`` cells exactly (whole quarter hours, grouped by
        columns the cells keep) it is, which is what keeps warm reports fast on millions of requests.
        """
        cols = set(by) | set(where or {})
        aligned = all(t is None or t % ROLLUP_BUCKET_MS == 0 for t in (since_ms, until_ms))
        fits = bucket_ms % ROLLUP_BUCKET_MS == 0 or bucket_ms >= _ALL_TIME_MS
        cells = aligned and fits and cols <= set(ROLLUP_DIMS)
        return self._rollup_from(cells, bucket_ms, by, since_ms, until_ms, where)

    def _rollup_from(
        self,
        from_cells: bool,
        bucket_ms: int,
        by: Sequence[str],
        since_ms: int | None,
        until_ms: int | None,
        where: dict[str, str] | None,
    ) -> list[RollupRow]:
        table = usage_rollup if from_cells else usage
        c = table.c
        ts_col = c.bucket_ms if from_cells else c.ts_ms
        bucket = ts_col // bucket_ms  # floor division on both engines (``/`` is true division)
        group_cols = [c[name] for name in by]
        if from_cells:
            sums = [func.sum(c.requests)] + [func.sum(c[k]) for k in _SUM_COLS] + [
                func.sum(c.unknown_requests), func.min(c.first_ms), func.max(c.last_ms)]
        else:
            sums = [func.count()] + [func.sum(c[k]) for k in _SUM_COLS] + [
                func.sum(case((c.unknown_model, 1), else_=0)), func.min(c.ts_ms), func.max(c.ts_ms)]
        stmt = select(bucket.label("bucket"), *group_cols, *sums)
        conds = []
        if since_ms is not None:
            conds.append(ts_col >= since_ms)
        if until_ms is not None:
            conds.append(ts_col < until_ms)
        for col, value in (where or {}).items():
            conds.append(c[col] == value)
        if conds:
            stmt = stmt.where(and_(*conds))
        stmt = stmt.group_by(bucket, *group_cols)
        out = []
        n_by = len(by)
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                s = row[1 + n_by :]
                if not s[0]:
                    continue  # a cell emptied by a replaced record
                keys = tuple("" if v is None else str(v) for v in row[1 : 1 + n_by])
                out.append(
                    RollupRow(
                        bucket_ms=int(row[0]) * bucket_ms,
                        keys=keys,
                        requests=int(s[0]),
                        tokens=TokenCounts(int(s[1]), int(s[2]), int(s[3]), int(s[4]), int(s[5])),
                        web_search_requests=int(s[6]),
                        cost_nanos=int(s[7]),
                        unknown_requests=int(s[8]),
                        first_ms=int(s[9]),
                        last_ms=int(s[10]),
                    )
                )
        return out

    def code_changes_by_session(self, session_ids: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
        stmt = select(
            code_changes.c.session_id,
            func.sum(code_changes.c.lines_added),
            func.sum(code_changes.c.lines_removed),
        ).group_by(code_changes.c.session_id)
        if session_ids is not None:
            stmt = stmt.where(code_changes.c.session_id.in_(list(session_ids)))
        with self.engine.connect() as conn:
            return {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(stmt)}

    def unknown_models(self) -> list[str]:
        stmt = select(usage.c.model).where(usage.c.unknown_model).distinct()
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]

    def iter_records(self, **where: str) -> Iterator[dict[str, object]]:
        stmt = select(usage)
        for col, value in where.items():
            stmt = stmt.where(usage.c[col] == value)
        with self.engine.connect() as conn:
            for row in conn.execute(stmt.order_by(usage.c.ts_ms)):
                yield dict(row._mapping)

    def spend_since(self, column: str, since_ms: int) -> dict[str, int]:
        """Cost in nano-dollars per value of ``column`` (user_id, key_id) since a moment: seeds counters."""
        col = usage.c[column]
        stmt = (
            select(col, func.sum(usage.c.cost_nanos))
            .where(usage.c.ts_ms >= since_ms, col != "")
            .group_by(col)
        )
        with self.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(stmt)}

    # -- maintenance -------------------------------------------------------------------------------

    def reprice(self, book: PriceBook, batch: int = 5000) -> tuple[int, int]:
        """Recompute every stored cost from raw token counts. Returns (rows seen, rows changed)."""
        seen = changed = 0
        cols = [
            usage.c.id, usage.c.ts_ms, usage.c.model, usage.c.input_tokens, usage.c.output_tokens,
            usage.c.cache_write_5m, usage.c.cache_write_1h, usage.c.cache_read,
            usage.c.web_search_requests, usage.c.service_tier, usage.c.inference_geo, usage.c.speed,
            usage.c.cost_nanos, usage.c.unknown_model, usage.c.model_key, usage.c.long_context,
        ]  # fmt: skip
        last_id = 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(*cols).where(usage.c.id > last_id).order_by(usage.c.id).limit(batch)
                ).all()
                if not rows:
                    break
                updates = []
                for r in rows:
                    seen += 1
                    q = book.quote(
                        r.model, from_ms(r.ts_ms),
                        TokenCounts(r.input_tokens, r.output_tokens, r.cache_write_5m, r.cache_write_1h,
                                    r.cache_read),
                        web_search_requests=r.web_search_requests, service_tier=r.service_tier,
                        inference_geo=r.inference_geo, speed=r.speed,
                    )  # fmt: skip
                    new = (q.cost_nanos, q.unknown, q.model_key, q.long_context)
                    if new != (r.cost_nanos, bool(r.unknown_model), r.model_key, bool(r.long_context)):
                        updates.append({"_id": r.id, "c": new[0], "u": new[1], "k": new[2], "l": new[3]})
                last_id = rows[-1].id
                if updates:
                    from sqlalchemy import bindparam

                    conn.execute(
                        update(usage)
                        .where(usage.c.id == bindparam("_id"))
                        .values(
                            cost_nanos=bindparam("c"), unknown_model=bindparam("u"),
                            model_key=bindparam("k"), long_context=bindparam("l"),
                        ),
                        updates,
                    )
                    changed += len(updates)
        return seen, changed


def price_record(book: PriceBook, record: UsageRecord) -> PricedRow:
    """Price a record with the book and keep the book's verdicts beside it for storage."""
    q = book.quote(
        record.model,
        record.ts,
        record.tokens,
        web_search_requests=record.web_search_requests,
        service_tier=record.service_tier,
        inference_geo=record.inference_geo,
        speed=record.speed,
    )
    record.cost_nanos = q.cost_nanos
    record.unknown_model = q.unknown
    return PricedRow(record, q.model_key, q.long_context)


