"""Refresh the ledger from local Claude Code history: the step every report runs first.

Files are committed in batches together with their read positions, so an interrupted run loses nothing
and a second process running at the same time only re-does idempotent upserts.

With much to read, worker processes each read, price *and store* their share of the files: the store's
upsert keeps the most complete copy of a request whichever process writes it, so nothing has to pass
through the parent, which on a first run would otherwise spend as long unpickling and inserting rows as
both workers spend reading (SQLite queues the writers; PostgreSQL takes them side by side).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ccledger.core.pricing import PriceBook
from ccledger.core.records import FileCursor
from ccledger.sources.transcript_files import BadLine, RefreshStats, discover_paths, pending, transcript_dirs
from ccledger.store.ledger import CodeChange, Ledger, bare_row, to_ms

if TYPE_CHECKING:
    from ccledger.services.forked import Shared

# Rows per transaction. Each commit writes every page it dirtied to SQLite's log, and requests' keys are
# random, so most leaf pages of the key index are dirtied by every batch: 20,000 rows instead of 10,000
# cut a dense 1 GB first run's CPU by ~8 % (2x2 alternating runs; 40,000 and 80,000 did no better). The
# last groups are written group by group (``TAIL_SHARE``), so the batch left when reading ends is short.
BATCH_RECORDS = 20_000
MAX_PENDING_RECORDS = 4 * BATCH_RECORDS
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
# Files are handed to workers in groups of about total / (workers * this) bytes, largest first: the last
# groups are small, so both workers finish at about the same time (transactions span groups).
GROUPS_PER_WORKER = 64
TAIL_SHARE = 8  # the last 1/TAIL_SHARE of the groups are written group by group
MAX_GROUPS = 16_384  # services.forked.MAX_TASKS (not imported: a warm run does not load that module)
MAX_BAD_KEPT = 1000

ProgressHook = Callable[[int, int], None]  # (bytes done, bytes total)
Row = tuple[object, ...]
Work = tuple[Path, FileCursor | None, int]


def _merge(into: RefreshStats, part: RefreshStats) -> None:
    """Add what one batch of files did (in a worker) to the run's figures."""
    into.files_read += part.files_read
    into.bytes_read += part.bytes_read
    into.records += part.records
    into.bad_lines += part.bad_lines
    into.bad.extend(part.bad[: max(0, MAX_BAD_KEPT - len(into.bad))])
    into.errors.extend(part.errors)


class _Batch:
    """Rows, code changes and read positions waiting for one transaction."""

    def __init__(self, ledger: Ledger, before_write: Callable[[], None] | None = None) -> None:
        self.ledger = ledger
        self.before_write = before_write
        self.rows: dict[str, Row] = {}
        self.changes: list[CodeChange] = []
        self.cursors: list[FileCursor] = []

    def add(self, path: Path, prev: FileCursor | None, book: PriceBook, out: RefreshStats) -> None:
        from ccledger.sources.transcripts import scan_file  # only when there is something to read

        scan = scan_file(path, prev)
        if scan is None:
            return
        if scan.error:
            out.errors.append((scan.state.path, scan.error))
            return
        out.files_read += 1
        out.bytes_read += scan.bytes_read
        out.bad_lines += scan.bad_count
        out.bad.extend(scan.bad[: max(0, MAX_BAD_KEPT - len(out.bad))])
        rows = self.rows
        out.records += len(scan.records)  # one per request in this file
        for rec in scan.records:
            row = bare_row(book, rec)
            prev_row = rows.get(rec.dedupe_key)
            # Within a batch keep the most complete copy; across batches the store's upsert does the same.
            if prev_row is None or row[-1] > prev_row[-1]:  # type: ignore[operator]
                rows[rec.dedupe_key] = row
        for p in scan.patches:
            self.changes.append(CodeChange(p.line_key, p.session_id, to_ms(p.ts), p.added, p.removed))
        self.cursors.append(scan.state)
        if len(rows) >= BATCH_RECORDS:
            # While another process writes, keep reading and try again after the next file; past a few
            # batches' worth, wait for the lock (bounded memory).
            self.flush(wait=len(rows) >= MAX_PENDING_RECORDS)

    def flush(self, *, wait: bool = True) -> None:
        if not (self.rows or self.changes or self.cursors):
            return
        if self.before_write:
            self.before_write()
        if not self.ledger.ingest(list(self.rows.values()), self.changes, self.cursors, wait=wait):
            return
        self.rows = {}
        self.changes = []
        self.cursors = []


def refresh(
    ledger: Ledger,
    book: PriceBook,
    roots: Iterable[Path],
    *,
    extra_paths: Iterable[Path] = (),
    workers: int | None = None,
    progress: Callable[[int], ProgressHook | None] | None = None,
) -> RefreshStats:
    """Read every new transcript byte under ``roots`` (Claude config dirs: their ``projects`` folder)
    and ``extra_paths`` (folders of transcripts given with ``--path``) into ``ledger``.

    ``progress`` is called with the number of bytes to read and may return a hook that is told how
    far the run has got; the CLI uses it to show a progress bar only when there is much to read.
    """
    # Reading allocates millions of short-lived, acyclic objects (decoded lines, records, rows): the
    # cycle collector would walk them again and again and find nothing (1-2 % of the CPU).
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _refresh(ledger, book, roots, extra_paths, workers, progress)
    finally:
        if gc_was_on:
            gc.enable()


def _refresh(
    ledger: Ledger,
    book: PriceBook,
    roots: Iterable[Path],
    extra_paths: Iterable[Path],
    workers: int | None,
    progress: Callable[[int], ProgressHook | None] | None,
) -> RefreshStats:
    stats = RefreshStats()
    stats.dirs = transcript_dirs(roots, extra_paths)
    files = discover_paths(stats.dirs)
    stats.files_seen = len(files)
    # A new store gets its schema while the worker processes read (creating it takes ~1 s of imports
    # and DDL); nothing is written before it exists. An existing one is checked here, cheaply.
    current = ledger.is_current()
    known = ledger.cursors() if current else ledger.cursors_if_any()
    work = list(pending(files, known))
    total = sum(n for _, _, n in work)
    hook = progress(total) if progress else None
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if total >= PARALLEL_MIN_BYTES else 1
    if workers > 1 and len(work) > 1 and hasattr(os, "fork"):
        _refresh_parallel(ledger, book, work, workers, current, stats, hook, total)
        return stats
    if not current:
        ledger.migrate()
    batch = _Batch(ledger)
    done = 0
    for path, prev, nbytes in work:
        batch.add(path, prev, book, stats)
        done += nbytes
        if hook:
            hook(done, total)
    batch.flush()
    return stats


class SkippedLines(msgspec.Struct):
    """Every transcript line the ledger has skipped so far (``skipped_lines``)."""

    counted: int  # what the store's read positions count, this run's included
    lines: list[BadLine]  # where they are, as far as the files still show them (at most ``limit``)
    gone: list[tuple[str, int, str]]  # (path, lines counted, why) for files that cannot be read again


def skipped_lines(ledger: Ledger, limit: int = MAX_BAD_KEPT) -> SkippedLines:
    """Every line skipped by this and earlier refreshes, found by reading again (storing nothing) the
    files whose read positions count any.

    Why read again: reads are incremental, so only the run that first read a bad line sees it; without
    this, ``--verbose`` on any later run had nothing to list for the lines the first one counted. Only the
    files with such lines are read, each as far as the store has read it, and none once ``limit`` lines
    are found (the rest are only counted).
    """
    from ccledger.sources.transcripts import scan_file

    out = SkippedLines(0, [], [])
    for path, cursor in sorted(ledger.cursors_if_any().items()):
        if not cursor.bad_lines:
            continue
        out.counted += cursor.bad_lines
        if len(out.lines) >= limit:
            if not os.path.exists(path):
                out.gone.append((path, cursor.bad_lines, "no such file"))
            continue
        scan = scan_file(Path(path), None, upto=cursor.offset)
        if scan is None or scan.error:  # None only for a known file: not the case here
            out.gone.append((path, cursor.bad_lines, "nothing to read" if scan is None else scan.error or ""))
            continue
        out.lines.extend(scan.bad[: max(0, limit - len(out.lines))])
    return out


# -- worker processes (services.forked) -------------------------------------------------------------------


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a worker frees instead of giving it back to the system at once;
    False where there is no ``mallopt`` to ask (not Linux, or no C library ctypes can load).

    Why: each chunk of short lines a worker reads makes a few buffers of 0.25-0.5 MB (the chunk, its
    text decoded to check it is UTF-8). By default malloc serves blocks that size with ``mmap`` or trims
    them off the heap when they are freed, so the next chunk's buffers fault every page in afresh. With
    blocks under 8 MB taken from the heap and up to 256 MB of free heap kept, they are reused. When long
    lines were read a chunk at a time too, this cut minor faults on a third of the 1 GB sparse corpus from
    ~34,700 to ~15,100 and CPU time ~8 %; now that they are read in place (``transcripts._long_lines``),
    dense first runs still take ~2 % less time with it (4 alternating runs each). A worker lives for one
    run, so what it keeps is released when it exits.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok = mallopt(m_mmap_threshold, 8 << 20) == 1
    return mallopt(m_trim_threshold, 256 << 20) == 1 and ok


def _ingest_groups(shared: Shared, slot: int, url: str, book: PriceBook, groups: list[list[Work]]) -> bytes:
    """Read, price and store groups of files until none is left (runs in a worker process); its
    figures, encoded for the parent.

    Groups are taken one at a time from the shared queue, so both workers stay busy to the end; rows are
    written in transactions of ``BATCH_RECORDS`` across groups rather than one per group, which on SQLite
    cost ~5 µs more per row (each transaction starts by re-reading what the other process changed).
    """
    gc.disable()  # as in refresh(): a worker only reads and writes, and lives for one run

    def wait_for_schema() -> None:
        if not shared.wait_ready(600):
            raise RuntimeError("the ledger's schema was not created in time")

    keep_freed_memory()
    batch = _Batch(Ledger(url), before_write=wait_for_schema)
    out = RefreshStats()
    while (i := shared.claim()) is not None:
        for path, prev, _nbytes in groups[i]:
            batch.add(path, prev, book, out)
        if i >= len(groups) - len(groups) // TAIL_SHARE:
            # The last groups (the smallest): write as they are read, when the lock is free, so that the
            # workers do not end with thousands of rows each to write one after the other.
            batch.flush(wait=False)
        shared.add_progress(slot, sum(n for _, _, n in groups[i]))
    batch.flush()
    # The write-ahead log into the store file now, while the other worker may still be reading: otherwise
    # the parent's close does it all after the report (~35 ms of a 1 GB first run's ~1.1 s).
    batch.ledger.checkpoint()
    return msgspec.msgpack.encode(out)


def _groups(work: list[Work], workers: int) -> list[list[Work]]:
    """Files in groups of similar size, largest first, so the last group to finish is a small one; never
    more groups than the workers' queue holds (``forked.MAX_TASKS``: each closed group has ``target``
    bytes or more, and one is left open)."""
    total = sum(max(n, 1) for _, _, n in work)
    target = max(1, total // (workers * GROUPS_PER_WORKER), -(-total // (MAX_GROUPS - 1)))
    groups: list[list[Work]] = []
    current: list[Work] = []
    size = 0
    for w in sorted(work, key=lambda w: -w[2]):
        current.append(w)
        size += max(w[2], 1)
        if size >= target:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


def _refresh_parallel(
    ledger: Ledger,
    book: PriceBook,
    work: list[Work],
    workers: int,
    current: bool,
    stats: RefreshStats,
    hook: ProgressHook | None,
    total: int,
) -> None:
    from ccledger.services import forked  # only a first run (or a large read) needs it

    groups = _groups(work, workers)
    shared = forked.Shared(len(groups), workers)
    if current:
        shared.set_ready()

    def create_schema() -> None:
        if not current:
            try:
                ledger.migrate()  # while the workers read their first files
            finally:
                shared.set_ready()  # on failure too, so workers fail on the missing schema instead of waiting

    def tick() -> None:
        if hook:
            hook(shared.progress(), total)

    try:
        results = forked.run(
            shared, workers, lambda slot: _ingest_groups(shared, slot, ledger.url, book, groups),
            started=create_schema, tick=tick,
        )  # fmt: skip
    finally:
        shared.close()
    decode = msgspec.msgpack.Decoder(RefreshStats).decode
    for payload in results:
        _merge(stats, decode(payload))
    # Workers finish in any order: list bad lines by file and line.
    stats.bad.sort(key=lambda b: (b.path, b.line_no))
