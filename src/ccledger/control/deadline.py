"""Bound a counter call by a deadline, arming a timer only if the call actually waits.

Why: every counter call on the request path is bounded (spend-limits.md §A6: 2 s), but with the
in-process backend no call ever suspends, so a timer can never fire, and ``asyncio.timeout`` still costs
~12 µs a call on the bench VM (a running-loop lookup, which is a ``getpid`` syscall on 3.11, a timer
handle in the loop's heap, its cancellation). Three such timers per request were ~5 % of the gateway's
CPU per request.

``within`` runs the coroutine's first step directly. A timer can only interrupt a coroutine where it
suspends, so if it finishes in that step no deadline could have cut it and none is armed; if it suspends,
the rest runs under ``asyncio.timeout`` exactly as before (the deadline counted from that moment, a
difference of the first step's CPU time). Exceptions and cancellation reach the caller unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import Any, TypeVar

T = TypeVar("T")


async def within(call: Awaitable[T], timeout_s: float) -> T:
    """``await call`` with at most ``timeout_s`` of waiting (``TimeoutError`` past it)."""
    if type(call) is not CoroutineType:  # e.g. a Future from some backend: no first step to run
        async with asyncio.timeout(timeout_s):
            return await call
    # (An exact type test: ``isinstance`` against the ``Coroutine`` ABC costs more than the timer saves.)
    try:
        pending = call.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    async with asyncio.timeout(timeout_s):
        return await _Rest(call, pending)


class _Rest:
    """The remainder of a coroutine that has already yielded ``pending`` to the event loop: hands that
    object on to the task running us, then relays every resumption (value or exception) to the coroutine,
    as ``await`` itself would have."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation (the deadline) or a throw: the coroutine decides
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return done.value
