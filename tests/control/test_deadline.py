"""``within``: a deadline that is armed only when the bounded call actually waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from ccledger.control.deadline import within


async def _instant() -> int:
    return 5


async def _fails_at_once() -> int:
    raise ValueError("bad argument")


async def _waits(seconds: float) -> str:
    await asyncio.sleep(seconds)
    await asyncio.sleep(0)
    return "done"


async def _fails_after_waiting() -> int:
    await asyncio.sleep(0)
    raise KeyError("gone")


@pytest.mark.asyncio
async def test_a_call_that_never_waits_arms_no_timer() -> None:
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    real_call_at = loop.call_at

    def spy(when: float, *args: object, **kw: object) -> asyncio.TimerHandle:
        armed.append(when)
        return real_call_at(when, *args, **kw)  # type: ignore[arg-type]

    loop.call_at = spy  # type: ignore[method-assign]
    try:
        assert await within(_instant(), 1.0) == 5
        assert armed == []
        assert await within(_waits(0.001), 1.0) == "done"
        assert armed  # it waited: the deadline was armed
    finally:
        loop.call_at = real_call_at  # type: ignore[method-assign]


@pytest.mark.asyncio
async def test_errors_surface_unchanged_before_and_after_waiting() -> None:
    with pytest.raises(ValueError, match="bad argument"):
        await within(_fails_at_once(), 1.0)
    with pytest.raises(KeyError):
        await within(_fails_after_waiting(), 1.0)


def _hang(cleaned: list[str]):  # type: ignore[no-untyped-def]
    """A call that never returns and notes in ``cleaned`` that it was cancelled."""

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("hang")

    return hang


@pytest.mark.asyncio
async def test_a_call_that_hangs_times_out_and_is_cancelled_cleanly() -> None:
    cleaned: list[str] = []
    hang = _hang(cleaned)

    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await within(hang(), 0.05)
    assert 0.04 < time.monotonic() - t0 < 1.0
    assert cleaned == ["hang"]


@pytest.mark.asyncio
async def test_cancelling_the_caller_reaches_the_call() -> None:
    cleaned: list[str] = []
    hang = _hang(cleaned)

    task = asyncio.create_task(within(hang(), 10.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["hang"]


@pytest.mark.asyncio
async def test_a_future_is_bounded_too() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.01, fut.set_result, 7)
    assert await within(fut, 1.0) == 7
    never: asyncio.Future[int] = loop.create_future()
    with pytest.raises(TimeoutError):
        await within(never, 0.02)
