"""The ledger's reads and writes: idempotent record upserts, ingestion cursors, and report rollups.

Writes go through one bulk upsert keyed by ``dedupe_key``; when the same request arrives twice with
different usage, the more complete copy wins (``completeness``), so re-reading a file or retrying a
gateway write can never double-count and never keep a mid-stream snapshot over the final count.

The methods a report or a refresh needs speak plain SQL over a DB-API connection (``sqlite3`` for the
embedded default, psycopg from SQLAlchemy's pool for PostgreSQL): the same statements on both engines,
and a warm ``ccledger daily`` never has to import SQLAlchemy (a quarter of its run time). SQLAlchemy
owns the schema, the migrations and everything else (``Ledger.engine``, created on first use).
"""

from __future__ import annotations

import _thread
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ccledger.core.pricing import PriceBook, Quote
from ccledger.core.records import FileCursor, TokenCounts, UsageRecord
from ccledger.store.layout import ROLLUP_BUCKET_MS, ROLLUP_DIMS, SUM_COLS, USAGE_COLUMNS

if TYPE_CHECKING:
    from sqlalchemy import Engine

_ALL_TIME_MS = 10**13  # a bucket wider than any timestamp: one bucket for everything
_PG_ATTEMPTS = 8
_PG_RETRY_STATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
_COLUMNS = USAGE_COLUMNS
_USAGE_FILTERS = frozenset(_COLUMNS)
_KEEP_IF_EMPTY = frozenset({
    "session_id", "project", "git_branch", "client_version", "agent_id", "parent_agent_id", "user_id",
    "group_id", "key_id", "workspace",
})  # fmt: skip


# A request from local history has no user, group, key or workspace, no duration and no extras: a refresh
# writes such rows without those columns (``bare_row``), and the statement has them as literals. Each
# bound parameter costs sqlite3 ~0.15 us: 26 instead of 32 made a dense refresh's upserts ~12 % cheaper.
_BARE_FIXED: dict[str, object] = {
    "user_id": "", "group_id": "", "key_id": "", "workspace": "", "duration_ms": None, "extra": None,
}  # fmt: skip
_BARE_SLOTS = tuple((i, c) for i, c in enumerate(_COLUMNS) if c in _BARE_FIXED)  # ascending

_TS = _COLUMNS.index("ts_ms")
_CELL_DIMS = tuple(_COLUMNS.index(c) for c in ROLLUP_DIMS)


def _cell_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A ``row_of`` row's rollup cell (quarter hour, then the cell's columns), then its key."""
    return (row[_TS] // ROLLUP_BUCKET_MS, *("" if row[i] is None else row[i] for i in _CELL_DIMS), row[0])


def to_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class PricedRow(msgspec.Struct):
    """A record plus the price-book facts that are not part of the record itself."""

    record: UsageRecord
    model_key: str | None
    long_context: bool


def _cut(value: str | None, n: int) -> str | None:
    return value if value is None or len(value) <= n else value[:n]


def row_of(p: PricedRow) -> tuple[object, ...]:
    """The record as a bulk-upsert row (column order ``_COLUMNS``; the key first, completeness last).

    Strings are cut to their column widths: PostgreSQL refuses an over-long value, and one odd field in
    a transcript or a header must not fail a whole batch. (A slice that covers the whole string returns
    the string itself, so cutting costs nothing for the usual short values; this runs once per request.)
    """
    return _row(p.record, p.model_key, p.long_context)


def priced_row(book: PriceBook, record: UsageRecord) -> tuple[object, ...]:
    """``row_of(price_record(book, record))`` without the ``PricedRow`` between them: a refresh makes
    one per request read."""
    q = _quote(book, record)
    return _row(record, q.model_key, q.long_context)


def bare_row(book: PriceBook, record: UsageRecord) -> tuple[object, ...]:
    """``priced_row``, without the columns ``_BARE_FIXED`` holds when the record has nothing in them
    (a transcript's request always): ``Ledger.ingest`` takes rows of either shape."""
    r = record
    if r.user_id or r.group_id or r.key_id or r.workspace or r.duration_ms is not None or r.extra:
        return priced_row(book, record)
    q = _quote(book, record)
    return _bare(r, q.model_key, q.long_context)


def _bare(r: UsageRecord, model_key: str | None, long_context: bool) -> tuple[object, ...]:
    t = r.tokens
    tier, geo, speed = r.service_tier, r.inference_geo, r.speed
    return (
        r.dedupe_key[:300], int(r.ts.timestamp() * 1000), r.source[:32], r.model[:200], model_key,
        r.session_id[:200], r.project, r.git_branch, r.client_version[:64], r.is_sidechain,
        r.agent_id[:200], r.request_id[:200], t.input, t.output, t.cache_write_5m,
        t.cache_write_1h, t.cache_read, r.web_search_requests, tier if tier is None else tier[:32],
        geo if geo is None else geo[:32], speed if speed is None else speed[:32],
        r.cost_nanos or 0, r.unknown_model, long_context, _cut(r.parent_agent_id, 200), r.completeness,
    )  # fmt: skip


def _filled(row: tuple[object, ...], values: dict[str, object]) -> tuple[object, ...]:
    """A ``_bare`` row with the columns of ``_BARE_FIXED`` put in their places, from ``values``."""
    out = list(row)
    for i, column in _BARE_SLOTS:
        out.insert(i, values[column])
    return tuple(out)


def _full(row: tuple[object, ...]) -> tuple[object, ...]:
    """A ``bare_row`` row with its fixed columns put back (rows already full pass as they are)."""
    return row if len(row) == len(_COLUMNS) else _filled(row, _BARE_FIXED)


def _row(r: UsageRecord, model_key: str | None, long_context: bool) -> tuple[object, ...]:
    return _filled(_bare(r, model_key, long_context), {
        "user_id": r.user_id[:200], "group_id": r.group_id[:200], "key_id": r.key_id[:200],
        "workspace": r.workspace[:200], "duration_ms": r.duration_ms,
        "extra": _sorted_json(r.extra) if r.extra else None,
    })  # fmt: skip


def _sorted_json(value: object) -> str:
    import json  # here: transcript rows carry no extras, and a report need not import json

    return json.dumps(value, sort_keys=True)


class CodeChange(msgspec.Struct):
    line_key: str
    session_id: str
    ts_ms: int
    lines_added: int
    lines_removed: int


class RollupRow(msgspec.Struct):
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


def _register_sqlite_adapters(sqlite3: Any) -> None:
    """Map ``bool`` and ``None`` to themselves in sqlite3's adapter registry: the values stored do not
    change (a bool is bound as an integer, None as NULL, either way), but a type the registry lacks is
    looked up three ways before being bound as is. A transcript row holds three bools and a few Nones:
    registered, they bind ~1.5 µs a row sooner, about a tenth of the row's whole cost in the store. The
    adapter for None is ``{}.get``, a method in C that returns None for None (a lambda would cost a
    Python call per NULL bound, ~1 % of a refresh's store work)."""
    sqlite3.register_adapter(bool, int)
    sqlite3.register_adapter(type(None), {}.get)


@contextmanager
def _in_transaction(conn: Any, *, begin: bool) -> Iterator[Any]:
    cur = conn.cursor()
    if begin:  # sqlite3 in autocommit mode: open the transaction explicitly
        cur.execute("BEGIN")
    try:
        yield cur
    except BaseException:
        conn.rollback()
        raise
    else:
        try:
            conn.commit()
        except BaseException:
            # SQLite may leave the transaction open after a failed COMMIT (disk full, I/O error): on a
            # shared connection every later BEGIN would then fail and the write lock stay held.
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
    finally:
        cur.close()


class Ledger:
    """One ledger per store URL; share one per process (safe across threads)."""

    def __init__(self, url: str) -> None:
        from ccledger.store.url import normalise_url

        self.url = normalise_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self._engine: Engine | None = None
        self._sqlite: Any = None
        # _thread's RLock is the one threading.RLock returns; a warm report starts no thread, and importing
        # threading cost it ~3M instructions (1 %).
        self._lock = _thread.RLock()
        mark = "?" if self.dialect == "sqlite" else "%s"
        self._mark = mark
        cols = ", ".join(f'"{c}"' for c in _COLUMNS)
        # A more complete copy replaces the usage, but attribution one source knows and the other does
        # not (the transcript's project, the gateway's user and key) survives the replacement.
        sets = ", ".join(
            f'"{c}" = COALESCE(NULLIF(excluded."{c}", \'\'), usage."{c}")' if c in _KEEP_IF_EMPTY
            else f'"{c}" = excluded."{c}"'
            for c in _COLUMNS if c != "dedupe_key"
        )  # fmt: skip
        # Same text on both engines: SQLite and PostgreSQL share ON CONFLICT ... DO UPDATE ... WHERE.
        self._upsert_sql = (
            f"INSERT INTO usage ({cols}) VALUES ({', '.join([mark] * len(_COLUMNS))}) "
            f"ON CONFLICT (dedupe_key) DO UPDATE SET {sets} WHERE excluded.completeness > usage.completeness"
        )
        ccols = ("path", "identity", "head_hash", "size", "mtime_ns", "offset", "line_no", "bad_lines")
        csets = ", ".join(f'"{c}" = excluded."{c}"' for c in ccols[1:])
        bare_values = ", ".join(
            mark if c not in _BARE_FIXED else "NULL" if _BARE_FIXED[c] is None else f"'{_BARE_FIXED[c]}'"
            for c in _COLUMNS
        )
        self._bare_upsert_sql = self._upsert_sql.replace(
            f"VALUES ({', '.join([mark] * len(_COLUMNS))})", f"VALUES ({bare_values})", 1
        )
        self._cursor_sql = (
            f"INSERT INTO source_files ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in ccols)}) "
            f"VALUES ({', '.join([mark] * len(ccols))}) ON CONFLICT (path) DO UPDATE SET {csets}"
        )
        self._change_sql = (
            "INSERT INTO code_changes (line_key, session_id, ts_ms, lines_added, lines_removed) "
            f"VALUES ({', '.join([mark] * 5)}) ON CONFLICT (line_key) DO NOTHING"
        )

    @property
    def _sqlite_path(self) -> str:
        """The SQLite file this ledger's URL names (``:memory:`` when it names none)."""
        return self.url.split(":///", 1)[1] if ":///" in self.url else ":memory:"

    @classmethod
    def open(cls, url: str) -> Ledger:
        ledger = cls(url)
        ledger.migrate()
        return ledger

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for migrations and the less frequent queries of other modules."""
        if self._engine is None:
            from ccledger.store.engine import make_engine

            self._engine = make_engine(self.url)
        return self._engine

    def migrate(self) -> None:
        """Bring the schema to the newest revision; a look at ``alembic_version`` when already there.
        A new SQLite store is created from the schema snapshot (``store.snapshot``) in one transaction."""
        if self.dialect == "sqlite":
            if self.is_current():
                return
            from ccledger.store import snapshot

            with self._lock:
                conn = self._sqlite_conn()
                cur = conn.cursor()
                cur.execute("BEGIN IMMEDIATE")  # the write lock first: two first runs must not both create
                try:
                    snapshot.create(cur)
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
                cur.close()
            if self.is_current():
                return
        from ccledger.store.engine import migrate

        migrate(self.engine)

    def is_current(self) -> bool:
        """Whether the schema is at the newest revision (False for a store never used)."""
        from ccledger.store.migrations import HEAD

        try:
            with self._tx() as cur:
                cur.execute("SELECT version_num FROM alembic_version")
                row = cur.fetchone()
        except Exception:  # no table yet: a new ledger
            return False
        return row is not None and row[0] == HEAD

    def checkpoint(self) -> None:
        """Copy what the write-ahead log holds into the SQLite file now (PostgreSQL: nothing to do).

        Why: the last connection to close does it anyway, after the report is printed; a refresh's worker
        that finishes first does it while the other still reads, so the parent's close finds little left.
        PASSIVE: it neither waits for nor blocks the other writers and readers.
        """
        if self.dialect == "sqlite":
            with self._lock:
                self._sqlite_conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def settle(self, max_log_bytes: int = 1 << 20) -> None:
        """Make the store ready for this process to end without closing it (``cli.fast.console``).

        SQLite: committed transactions are in the write-ahead log, which a close would fold into the file
        (a checkpoint, with two fsyncs: ~25 ms on the bench VM, a quarter of a warm report that wrote
        something). Left unclosed, the log stays, and the next process to open the store replays it first
        (~1 ms per 400 kB there). So the log is checkpointed and emptied here only once it has grown past
        ``max_log_bytes``: the next open replays at most that, and a run that writes little costs a
        fraction of a checkpoint. On a power cut the newest transactions may roll back (as with
        ``synchronous=NORMAL`` anyway); the transcript positions roll back with their rows, so those
        bytes are read again. PostgreSQL: the connections are closed, so the server sees no broken ones.
        """
        if self.dialect != "sqlite":
            self.close()
            return
        import os

        path = self._sqlite_path
        try:
            size = os.stat(f"{path}-wal").st_size
        except OSError:
            return  # no log (or an in-memory store)
        if size > max_log_bytes:
            with self._lock:
                conn = self._sqlite_conn()
                # TRUNCATE waits for other processes' readers and writers: briefly. Should one be busy
                # (a gateway writing, another report reading), the log stays for whoever writes next.
                conn.execute("PRAGMA busy_timeout=200")
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                finally:
                    conn.execute("PRAGMA busy_timeout=60000")

    def close(self) -> None:
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
                self._sqlite = None
        if self._engine is not None:
            self._engine.dispose()

    @contextmanager
    def _tx(self, *, began: bool = False) -> Iterator[Any]:
        """A DB-API cursor inside a transaction: committed on success, rolled back on error.
        ``began``: ``_try_write_lock`` already opened it (and holds the lock)."""
        if self.dialect == "sqlite":
            if began:
                try:
                    with _in_transaction(self._sqlite_conn(), begin=False) as cur:
                        yield cur
                finally:
                    self._lock.release()
                return
            with self._lock, _in_transaction(self._sqlite_conn(), begin=True) as cur:
                yield cur
            return
        conn = self.engine.raw_connection()
        try:
            with _in_transaction(conn, begin=False) as cur:  # psycopg opens one implicitly
                yield cur
        finally:
            conn.close()  # back to the pool

    def _sqlite_conn(self) -> Any:
        if self._sqlite is None:
            import sqlite3
            from pathlib import Path

            path = self._sqlite_path
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            _register_sqlite_adapters(sqlite3)
            conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            # WAL lets a report read while another ccledger process writes; the busy timeout makes two
            # writers queue instead of failing.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            # Bulk upserts touch random pages of the dedupe-key and rollup indexes: a page cache of
            # 128 MB (the default is 2 MB) keeps them in memory instead of re-reading them per row.
            conn.execute("PRAGMA cache_size=-131072")
            conn.execute("PRAGMA temp_store=MEMORY")
            # Checkpoint the WAL every ~40 MB instead of every 4 MB: a first refresh writes hundreds of MB,
            # and each checkpoint (a copy into the main file plus an fsync) costs about as much as the
            # inserts since the last one.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            self._sqlite = conn
        return self._sqlite

    # -- writes ------------------------------------------------------------------------------------

    def limit_page_cache(self, kib: int) -> None:
        """Cap SQLite's page cache on this ledger's connection (PostgreSQL: nothing to do).

        Why: the 128 MB default suits a refresh that upserts millions of transcript rows, but a gateway
        writes a few hundred rows per batch into the newest pages, and a page cache that grows with the
        ledger would be the largest part of a long-running gateway's memory. Pages that fall out are
        read back from the OS's file cache.
        """
        if self.dialect == "sqlite":
            with self._lock:
                self._sqlite_conn().execute(f"PRAGMA cache_size=-{int(kib)}")

    def write(self, rows: Sequence[PricedRow]) -> None:
        """Idempotent bulk upsert of priced records."""
        self.write_rows([row_of(r) for r in rows])

    def write_yielding(self, rows: Sequence[PricedRow], slice_rows: int, pause: Callable[[], None]) -> None:
        """``write`` in one transaction, ``slice_rows`` rows at a time with ``pause()`` between slices.

        Why: on SQLite the upsert runs in this process, and a gateway's writer thread shares a core with
        the event loop; a 500-row batch is several ms of CPU that a request arriving meanwhile would wait
        behind. Pausing (e.g. ``os.sched_yield``) between slices lets it in after at most one slice. On
        PostgreSQL the work is the server's: one transaction, in rollup-cell order, retried on deadlock.
        """
        params = [row_of(r) for r in rows]
        if not params:
            return
        if self.dialect != "sqlite":
            self._write_concurrently(params)
            return
        if slice_rows <= 0 or len(params) <= slice_rows:
            self.write_rows(params)
            return
        with self._tx() as cur:
            for i in range(0, len(params), slice_rows):
                if i:
                    pause()
                cur.executemany(self._upsert_sql, params[i : i + slice_rows])

    def _write_concurrently(self, params: list[tuple[object, ...]]) -> None:
        """A PostgreSQL batch that other writers (the other gateway workers) may be writing beside.

        Their rows are other requests, but the rollup triggers update shared cells (same user, model,
        quarter hour), and two transactions taking two cells in opposite orders deadlock: two workers
        writing 30 users' rows in opposite orders failed 32 batches of 80. Rows go in cell order, so every
        writer takes the cells in one order; a deadlock or serialization failure left (e.g. a replaced
        record moving between cells) runs the batch again: it is all upserts.
        """
        params.sort(key=_cell_order)
        self._retrying(lambda: self.write_rows(params))

    @staticmethod
    def _retrying(write: Callable[[], None]) -> None:
        """Run a PostgreSQL write transaction again when the server aborts it as a deadlock or a
        serialization failure: every write here is upserts, so running it twice is safe."""
        for attempt in range(_PG_ATTEMPTS):
            try:
                write()
                return
            except Exception as exc:
                if attempt + 1 == _PG_ATTEMPTS or getattr(exc, "sqlstate", None) not in _PG_RETRY_STATES:
                    raise
                import random  # here: only PostgreSQL's retries need it

                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))  # the other one goes first

    def write_rows(self, params: Sequence[tuple[object, ...]]) -> None:
        """``write`` for rows already made by ``row_of`` (e.g. in a worker process)."""
        if params:
            with self._tx() as cur:
                cur.executemany(self._upsert_sql, params)

    def ingest(
        self,
        rows: Sequence[tuple[object, ...]],
        changes: Sequence[CodeChange],
        cursors: Sequence[FileCursor],
        *,
        wait: bool = True,
    ) -> bool:
        """Records, code changes and the file positions they came from, in one transaction: a crash
        leaves either all of it or none, so the next run re-reads exactly what was not stored. Rows are
        ``priced_row``'s or ``bare_row``'s, in any mix.

        With ``wait=False`` on SQLite, when another process holds the write lock nothing is written and
        False is returned at once, so a reader process can go on reading and try again later instead of
        sleeping in the busy handler (PostgreSQL writers do not block each other: it always writes).

        PostgreSQL writers can deadlock: two workers holding the same requests (a resumed session repeats
        earlier messages in another file) or rows of the same rollup cells take their row locks in
        different orders, and the server aborts one. Rows go in cell order, as the gateway's do, and what
        still collides (a request whose copies sit in different cells) is run again.
        """
        if self.dialect != "sqlite":
            ordered = sorted(map(_full, rows), key=_cell_order)  # type: ignore[arg-type]
            by_key = sorted(changes, key=lambda c: c.line_key)  # a resumed session repeats edits too
            self._retrying(lambda: self._ingest_tx(ordered, by_key, cursors, began=False))
            return True
        if wait:
            began = self._wait_write_lock()
        elif not self._try_write_lock():
            return False
        else:
            began = True
        self._ingest_tx(rows, changes, cursors, began=began)
        return True

    def _wait_write_lock(self, timeout_s: float = 60.0) -> bool:
        """Take SQLite's write lock (as ``_try_write_lock``), trying again every few milliseconds.

        Why not the busy timeout: SQLite's busy handler sleeps in steps that grow to 100 ms, so a refresh
        worker whose last batch waits for the other's commit slept on long after the lock was free, while
        nothing else was left to do (~0.1 s at the end of a dense first run). False when ``timeout_s``
        passes: the caller's transaction then waits in the busy handler as before, and reports the lock.
        """
        deadline = time.monotonic() + timeout_s
        pause = 0.0005
        while not self._try_write_lock():
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.004)
        return True

    def _ingest_tx(
        self,
        rows: Sequence[tuple[object, ...]],
        changes: Sequence[CodeChange],
        cursors: Sequence[FileCursor],
        *,
        began: bool,
    ) -> None:
        with self._tx(began=began) as cur:
            if rows:
                n = len(_COLUMNS)
                bare = [r for r in rows if len(r) != n]
                if bare:
                    cur.executemany(self._bare_upsert_sql, bare)
                full = [r for r in rows if len(r) == n] if bare else rows
                if full:
                    cur.executemany(self._upsert_sql, full)
            if changes:
                cur.executemany(
                    self._change_sql,
                    [(c.line_key, c.session_id, c.ts_ms, c.lines_added, c.lines_removed) for c in changes],
                )
            if cursors:
                cur.executemany(
                    self._cursor_sql,
                    [(c.path, c.identity, c.head_hash, c.size, c.mtime_ns, c.offset, c.line_no, c.bad_lines)
                     for c in cursors],
                )

    def _try_write_lock(self) -> bool:
        """Open a write transaction (``BEGIN IMMEDIATE``) without waiting; False if another holds it.
        On True the transaction is open and the next ``_tx(began=True)`` uses it."""
        import sqlite3

        self._lock.acquire()
        conn = self._sqlite_conn()
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                self._lock.release()
                raise
            self._lock.release()
            return False
        finally:
            conn.execute("PRAGMA busy_timeout=60000")
        return True

    # -- reads -------------------------------------------------------------------------------------

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._tx() as cur:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall())

    def cursors(self) -> dict[str, FileCursor]:
        rows = self._all(
            'SELECT path, identity, head_hash, size, mtime_ns, "offset", line_no, bad_lines FROM source_files'
        )
        return {r[0]: FileCursor(*r) for r in rows}

    def cursors_if_any(self) -> dict[str, FileCursor]:
        """``cursors()``, or none for a store whose schema does not exist yet (nothing was read into it)."""
        if self.dialect == "sqlite":
            from pathlib import Path

            path = self._sqlite_path
            if path != ":memory:" and not Path(path).exists():
                return {}  # do not create the file just to look: migrate() will
        try:
            return self.cursors()
        except Exception:  # no source_files table: an empty store
            return {}

    def count(self) -> int:
        return int(self._all("SELECT COUNT(*) FROM usage")[0][0])

    def rollup(
        self,
        *,
        bucket_ms: int,
        by: Sequence[str] = (),
        since_ms: int | None = None,
        until_ms: int | None = None,
        where: dict[str, str] | None = None,
        offset_ms: int = 0,
        times: bool = True,
    ) -> list[RollupRow]:
        """Sums grouped by time bucket (epoch ms floored to ``bucket_ms``) and the ``by`` columns.

        With ``offset_ms`` the buckets are those of a clock that far ahead of UTC (a zone's fixed
        offset): a row's ``bucket_ms`` is then the UTC instant its local bucket starts. With ``times``
        False the rows' ``first_ms`` and ``last_ms`` are 0: reports that show no activity times (days,
        weeks, months) skip two aggregates the store computes per cell, ~15 % of such a query.

        Reports ask for quarter-hour buckets and map them to days in the user's zone in Python, which
        keeps time-zone logic out of SQL (it differs between engines). Whenever the question can be
        answered from the quarter-hour ``usage_rollup`` cells exactly (whole quarter hours, grouped by
        columns the cells keep) it is, which is what keeps warm reports fast on millions of requests.
        """
        cols = set(by) | set(where or {})
        aligned = all(t is None or t % ROLLUP_BUCKET_MS == 0 for t in (since_ms, until_ms, offset_ms))
        fits = bucket_ms % ROLLUP_BUCKET_MS == 0 or bucket_ms >= _ALL_TIME_MS
        cells = aligned and fits and cols <= set(ROLLUP_DIMS)
        return self._rollup_from(cells, bucket_ms, by, since_ms, until_ms, where, int(offset_ms), times)

    def time_span(self) -> tuple[int, int] | None:
        """(first, last) quarter-hour cell start in epoch ms, None for an empty ledger: two index lookups
        (cells emptied by replaced records may widen it a little, which is harmless)."""
        rows = self._all(
            "SELECT (SELECT MIN(bucket_ms) FROM usage_rollup), (SELECT MAX(bucket_ms) FROM usage_rollup)"
        )
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), int(rows[0][1])

    def _rollup_from(
        self,
        from_cells: bool,
        bucket_ms: int,
        by: Sequence[str],
        since_ms: int | None,
        until_ms: int | None,
        where: dict[str, str] | None,
        offset_ms: int = 0,
        times: bool = True,
    ) -> list[RollupRow]:
        allowed = set(ROLLUP_DIMS) if from_cells else _USAGE_FILTERS
        for col in (*by, *(where or {})):
            if col not in allowed:
                raise ValueError(f"cannot group or filter by {col!r}")
        bucket_ms = int(bucket_ms)
        if from_cells:
            table, ts = "usage_rollup", "bucket_ms"
            n, unknown = "SUM(requests)", "SUM(unknown_requests)"
            first, last = "MIN(first_ms)", "MAX(last_ms)"
        else:
            table, ts = "usage", "ts_ms"
            n, first, last = "COUNT(*)", "MIN(ts_ms)", "MAX(ts_ms)"
            unknown = "SUM(CASE WHEN unknown_model THEN 1 ELSE 0 END)"
        if not times:
            first = last = "0"
        dims = "".join(f", {c}" for c in by)
        sums = ", ".join(f"SUM({c})" for c in SUM_COLS)
        conds, params = [], []
        if since_ms is not None:
            conds.append(f"{ts} >= {self._mark}")
            params.append(int(since_ms))
        if until_ms is not None:
            conds.append(f"{ts} < {self._mark}")
            params.append(int(until_ms))
        for col, value in (where or {}).items():
            conds.append(f"{col} = {self._mark}")
            params.append(value)
        where_sql = f" WHERE {' AND '.join(conds)}" if conds else ""
        # The bucket is an integer literal (ours, never user input), so both engines divide integers.
        bucket = f"({ts} + {offset_ms}) / {bucket_ms}" if offset_ms else f"{ts} / {bucket_ms}"
        group = ", ".join(str(i) for i in range(1, 2 + len(by)))
        sql = (f"SELECT {bucket}{dims}, {n}, {sums}, {unknown}, {first}, {last} FROM {table}"
               f"{where_sql} GROUP BY {group}")  # fmt: skip
        out = []
        n_by = len(by)
        for row in self._all(sql, params):
            s = row[1 + n_by :]
            if not s[0]:
                continue  # a cell emptied by a replaced record
            out.append(
                RollupRow(
                    bucket_ms=int(row[0]) * bucket_ms - offset_ms,
                    keys=tuple("" if v is None else str(v) for v in row[1 : 1 + n_by]),
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
        sql = "SELECT session_id, SUM(lines_added), SUM(lines_removed) FROM code_changes"
        params: list[object] = []
        if session_ids is not None:
            ids = list(session_ids)
            if not ids:
                return {}
            sql += f" WHERE session_id IN ({', '.join([self._mark] * len(ids))})"
            params = list(ids)
        return {r[0]: (int(r[1]), int(r[2])) for r in self._all(sql + " GROUP BY session_id", params)}

    def latest_session(self) -> str | None:
        """The session with the most recent request (from the cells)."""
        rows = self._all(
            "SELECT session_id FROM usage_rollup WHERE session_id <> '' AND requests > 0 "
            "ORDER BY last_ms DESC, session_id DESC LIMIT 1"
        )
        return rows[0][0] if rows else None

    def sessions_with_prefix(self, prefix: str, limit: int = 6) -> list[str]:
        """Session ids equal to or starting with ``prefix`` (LIKE wildcards in it are taken literally)."""
        esc = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._all(
            f"SELECT DISTINCT session_id FROM usage_rollup WHERE session_id LIKE {self._mark} ESCAPE '\\' "
            f"AND requests > 0 ORDER BY session_id LIMIT {int(limit)}",
            [esc + "%"],
        )
        return [r[0] for r in rows]

    def session_duration_ms(self, session_id: str) -> int | None:
        """Sum of request durations in a session, None when no source recorded any (transcripts do not)."""
        rows = self._all(
            f"SELECT SUM(duration_ms), COUNT(duration_ms) FROM usage WHERE session_id = {self._mark}",
            [session_id],
        )
        total, known = rows[0]
        return int(total) if known else None

    def unknown_models(self) -> list[str]:
        """Models priced at the fallback rate (from the cells: no scan of every request)."""
        return [r[0] for r in self._all("SELECT DISTINCT model FROM usage_rollup WHERE unknown_requests > 0")]

    def iter_records(self, **where: str) -> Iterator[dict[str, object]]:
        for col in where:
            if col not in _USAGE_FILTERS:
                raise ValueError(f"cannot filter by {col!r}")
        conds = " AND ".join(f"{c} = {self._mark}" for c in where)
        sql = "SELECT * FROM usage" + (f" WHERE {conds}" if conds else "") + " ORDER BY ts_ms, id"
        with self._tx() as cur:
            cur.execute(sql, tuple(where.values()))
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        for row in rows:
            yield dict(zip(names, row, strict=True))

    def spend_since(self, column: str, since_ms: int) -> dict[str, int]:
        """Cost in nano-dollars per value of ``column`` (user_id, key_id) since a moment: seeds counters."""
        if column not in ("user_id", "key_id", "group_id", "session_id"):
            raise ValueError(f"cannot total by {column!r}")
        sql = (f"SELECT {column}, SUM(cost_nanos) FROM usage WHERE ts_ms >= {self._mark} AND {column} <> '' "
               f"GROUP BY {column}")  # fmt: skip
        return {r[0]: int(r[1]) for r in self._all(sql, [int(since_ms)])}

    def get_setting(self, key: str) -> Any | None:
        rows = self._all(f"SELECT value FROM settings_kv WHERE key = {self._mark}", [key])
        return msgspec.json.decode(rows[0][0]) if rows else None

    def set_setting(self, key: str, value: Any) -> None:
        import time

        m = self._mark
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO settings_kv (key, value, updated_ms) VALUES ({m}, {m}, {m}) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                (key, _sorted_json(value), int(time.time() * 1000)),
            )

    # -- maintenance -------------------------------------------------------------------------------

    def reprice(self, book: PriceBook, batch: int = 5000) -> tuple[int, int]:
        """Recompute every stored cost from raw token counts. Returns (rows seen, rows changed)."""
        m = self._mark
        seen = changed = 0
        last_id = 0
        cols = ("id, ts_ms, model, input_tokens, output_tokens, cache_write_5m, cache_write_1h, cache_read, "
                "web_search_requests, service_tier, inference_geo, speed, cost_nanos, unknown_model, "
                "model_key, long_context")  # fmt: skip
        while True:
            with self._tx() as cur:
                cur.execute(
                    f"SELECT {cols} FROM usage WHERE id > {m} ORDER BY id LIMIT {int(batch)}", (last_id,)
                )
                rows = cur.fetchall()
                if not rows:
                    break
                updates = []
                for r in rows:
                    seen += 1
                    q = book.quote(
                        r[2], from_ms(r[1]), TokenCounts(r[3], r[4], r[5], r[6], r[7]),
                        web_search_requests=r[8], service_tier=r[9], inference_geo=r[10], speed=r[11],
                    )  # fmt: skip
                    new = (q.cost_nanos, q.unknown, q.model_key, q.long_context)
                    if new != (r[12], bool(r[13]), r[14], bool(r[15])):
                        updates.append((*new, r[0]))
                last_id = rows[-1][0]
                if updates:
                    cur.executemany(
                        f"UPDATE usage SET cost_nanos = {m}, unknown_model = {m}, model_key = {m}, "
                        f"long_context = {m} WHERE id = {m}",
                        updates,
                    )
                    changed += len(updates)
        return seen, changed


def price_record(book: PriceBook, record: UsageRecord) -> PricedRow:
    """Price a record with the book and keep the book's verdicts beside it for storage."""
    q = _quote(book, record)
    return PricedRow(record, q.model_key, q.long_context)


def _quote(book: PriceBook, record: UsageRecord) -> Quote:
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
    return q
