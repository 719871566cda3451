"""Forked worker processes that take numbered tasks from a shared queue: what a first refresh needs of
``concurrent.futures`` and ``multiprocessing``, built on ``os.fork`` and pipes.

Why by hand: importing those two packages, with the shared counter and event a refresh used, took ~28 ms
before the first worker started (2 % of a 1 GB first run, all of it before any reading). What is used
here costs nothing to import: a pipe holding the task numbers (a read of 4 bytes from a pipe is atomic,
so each number goes to one worker), a pipe the parent closes to say "the store is ready", a page of
shared memory where each worker counts its bytes for the progress bar, and a pipe per worker for its
result. POSIX only: where ``os.fork`` is missing, a refresh reads in one process.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import signal
from collections.abc import Callable
from typing import NoReturn

_OK, _FAILED = b"\x00", b"\x01"
# A pipe holds 64 KiB on Linux, and the task numbers (4 bytes each) are written before any worker reads.
MAX_TASKS = 16_384


class WorkerFailed(RuntimeError):
    """A worker process raised (its exception's type and message are in the text) or died."""


class Shared:
    """What the parent and its workers share; created by the parent before it forks."""

    def __init__(self, tasks: int, workers: int) -> None:
        if tasks > MAX_TASKS:
            raise ValueError(f"too many tasks for one queue: {tasks} (at most {MAX_TASKS})")
        self._claims, w = os.pipe()
        numbers = b"".join(i.to_bytes(4, "little") for i in range(tasks))
        os.set_blocking(w, False)  # a pipe the system made smaller must fail here, not hang
        try:
            written = os.write(w, numbers) if numbers else 0
        except BlockingIOError:
            written = 0
        finally:
            os.close(w)  # once the numbers are taken, a read finds the end of the pipe: no task left
        if written != len(numbers):
            os.close(self._claims)
            raise ValueError(f"the queue's pipe holds fewer than {tasks} task numbers")
        self._ready_r, self._ready_w = os.pipe()
        self._progress = mmap.mmap(-1, 8 * max(workers, 1))

    def claim(self) -> int | None:
        """The next task's number; None when none is left (or the run was cancelled)."""
        b = os.read(self._claims, 4)
        return int.from_bytes(b, "little") if len(b) == 4 else None

    def cancel(self) -> None:
        """Take every task left, so that the workers stop after the one they are doing."""
        while len(os.read(self._claims, 4096)) == 4096:
            pass

    def in_child(self) -> None:
        """Drop the parent's end of the ready signal: the signal is the pipe's end, which comes only when
        every copy of its writing end is closed."""
        self.set_ready()

    def set_ready(self) -> None:
        """Close this process's writing end of the ready pipe (the parent's close is the signal)."""
        if self._ready_w >= 0:
            os.close(self._ready_w)
            self._ready_w = -1

    def wait_ready(self, timeout_s: float) -> bool:
        return bool(select.select([self._ready_r], [], [], timeout_s)[0])

    def add_progress(self, slot: int, n: int) -> None:
        at = 8 * slot
        self._progress[at : at + 8] = (int.from_bytes(self._progress[at : at + 8], "little") + n).to_bytes(
            8, "little"
        )

    def progress(self) -> int:
        p = self._progress
        return sum(int.from_bytes(p[i : i + 8], "little") for i in range(0, len(p), 8))

    def close(self) -> None:
        self.set_ready()
        for fd in (self._claims, self._ready_r):
            os.close(fd)
        self._progress.close()


def run(
    shared: Shared,
    workers: int,
    work: Callable[[int], bytes],
    *,
    started: Callable[[], None] = lambda: None,
    tick: Callable[[], None] = lambda: None,
) -> list[bytes]:
    """Fork ``workers`` processes, each returning ``work(slot)``; then call ``started`` (the parent's own
    part of the job, e.g. creating the schema the workers wait for) and ``tick`` every 0.2 s until all
    have finished. The results come back in slot order. A worker that raises cancels the others' queue,
    and ``WorkerFailed`` is raised once all have ended; so is an interrupt, after the workers are stopped.
    """
    children: list[tuple[int, int]] = []
    try:
        for slot in range(workers):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                shared.in_child()
                _child(w, slot, work)
            os.close(w)
            children.append((pid, r))
        started()
        return _collect(shared, children, tick)
    finally:
        for pid, fd in children:
            _reap(pid, fd)


def _child(fd: int, slot: int, work: Callable[[int], bytes]) -> NoReturn:
    """A worker's whole life: it never returns into the caller's code, and ends without the interpreter's
    exit (no atexit handler, no flush of buffers the parent also holds, no closing of its connections)."""
    code = 1
    try:
        try:
            payload = _OK + work(slot)
            code = 0
        except BaseException as exc:  # reported to the parent, which raises it
            payload = _FAILED + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os._exit(code)


def _collect(shared: Shared, children: list[tuple[int, int]], tick: Callable[[], None]) -> list[bytes]:
    received: dict[int, list[bytes]] = {fd: [] for _, fd in children}
    open_fds = set(received)
    failures: list[str] = []
    while open_fds:
        readable, _, _ = select.select(list(open_fds), [], [], 0.2)
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                received[fd].append(chunk)
                continue
            open_fds.discard(fd)
            payload = b"".join(received[fd])
            if not payload.startswith(_OK):
                failures.append(payload[1:].decode("utf-8", "replace") or "it died without a word")
                shared.cancel()
        tick()
    if failures:
        raise WorkerFailed("a refresh worker failed: " + "; ".join(failures))
    return [b"".join(received[fd])[1:] for _, fd in children]


def _reap(pid: int, fd: int) -> None:
    with contextlib.suppress(OSError):  # already closed
        os.close(fd)
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # still running: the parent is leaving on an error or an interrupt
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass
