"""Refresh the ledger from local Claude Code history: the step every report runs first.

Files are committed in batches together with their read positions, so an interrupted run loses nothing
and a second process running at the same time only re-does idempotent upserts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ccledger.core.pricing import PriceBook
from ccledger.core.records import FileCursor
from ccledger.sources.transcripts import (
    FileScan,
    RefreshStats,
    discover_paths,
    pending,
    scan_file,
    scan_many,
    transcript_dirs,
)
from ccledger.store.ledger import CodeChange, Ledger, price_record, row_of, to_ms

# Rows per transaction: small enough that the last one, written after the workers finish, is short.
BATCH_RECORDS = 10_000
PARALLEL_MIN_BYTES = 64 * 1024 * 1024

ProgressHook = Callable[[int, int], None]  # (bytes done, bytes total)
Row = tuple[object, ...]

# The price book used by worker processes: set before they fork, so it is not pickled per file.
_book: PriceBook | None = None


def _scan_and_price(path: Path, prev: FileCursor | None) -> tuple[FileScan, list[Row]] | None:
    """Scan one file and turn its records into priced store rows, in the worker, so the parent only
    merges rows and writes them. Duplicates within the file are settled here already."""
    scan = scan_file(path, prev)
    if scan is None:
        return None
    assert _book is not None
    best: dict[str, Row] = {}
    for rec in scan.records:
        row = row_of(price_record(_book, rec))
        prev_row = best.get(rec.dedupe_key)
        if prev_row is None or row[-1] > prev_row[-1]:  # type: ignore[operator]
            best[rec.dedupe_key] = row
    scan.records = []
    return scan, list(best.values())


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

    global _book
    _book = book
    done = 0
    batch_rows: dict[str, Row] = {}
    batch_changes: list[CodeChange] = []
    batch_cursors: list[FileCursor] = []

    def flush() -> None:
        ledger.ingest(list(batch_rows.values()), batch_changes, batch_cursors)
        batch_rows.clear()
        batch_changes.clear()
        batch_cursors.clear()

    def on_file(_result: object, nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if hook:
            hook(done, total)

    def started() -> None:
        if not current:
            ledger.migrate()

    for result in scan_many(work, _scan_and_price, workers=workers, on_file=on_file, started=started):
        if result is None:
            continue
        scan, rows = result
        if scan.error:
            stats.errors.append((scan.state.path, scan.error))
            continue
        stats.files_read += 1
        stats.bytes_read += scan.bytes_read
        stats.bad_lines += scan.bad_count
        stats.bad.extend(scan.bad[: max(0, 1000 - len(stats.bad))])
        stats.records += len(rows)
        for row in rows:
            key = row[0]
            prev = batch_rows.get(key)  # type: ignore[arg-type]
            # Within a batch keep the most complete copy; across batches the store's upsert does the same.
            if prev is None or row[-1] > prev[-1]:  # type: ignore[operator]
                batch_rows[key] = row  # type: ignore[index]
        for p in scan.patches:
            batch_changes.append(CodeChange(p.line_key, p.session_id, to_ms(p.ts), p.added, p.removed))
        batch_cursors.append(scan.state)
        if len(batch_rows) >= BATCH_RECORDS:
            flush()
    if not work:
        started()
    if batch_rows or batch_changes or batch_cursors:
        flush()
    return stats
