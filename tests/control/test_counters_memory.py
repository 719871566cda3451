"""MemoryCounters: the reference semantics a shared (Redis) backend must reproduce."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccledger.control.counters import (
    AdmitMode,
    BucketCheck,
    BucketDebit,
    BucketSpec,
    CounterState,
    DuplicateRequestId,
    MemoryCounters,
    ReserveItem,
    SettleOutcome,
    SpendTarget,
    item_blocks,
    period_key_end,
)

T0 = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
DAY = "daily:2026-06-02"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- the pure admission rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spent", "reserved", "amount", "cap", "fit", "headroom"),
    [
        (0, 0, 10, None, False, False),  # uncapped never blocks
        (0, 0, 10, 10, False, False),  # exactly fits
        (0, 1, 10, 10, True, False),  # does not fit, but there is headroom
        (5, 5, 0, 10, True, True),  # cap reached blocks even a free request
        (0, 0, 0, 0, True, True),  # a zero cap blocks everything
        (12, 0, 1, 10, True, True),  # already over
    ],
)
def test_item_blocks(spent: int, reserved: int, amount: int, cap: int | None, fit: bool, headroom: bool) -> None:
    item = ReserveItem("user:a", DAY, amount, cap)
    state = CounterState(spent, reserved)
    assert item_blocks(item, state, AdmitMode.FIT) is fit
    assert item_blocks(item, state, AdmitMode.HEADROOM) is headroom


def test_period_key_end() -> None:
    assert period_key_end("daily:2026-06-02") == datetime(2026, 6, 3, tzinfo=UTC)
    assert period_key_end("weekly:2026-06-01") == datetime(2026, 6, 8, tzinfo=UTC)
    assert period_key_end("monthly:2026-12-01") == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_key_end("custom") is None
    assert period_key_end("daily:not-a-date") is None


# --- reservations ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_reserve_is_all_or_nothing() -> None:
    c = MemoryCounters()
    await c.seed("key:k", DAY, 95)
    items = [ReserveItem("user:a", DAY, 10, 100), ReserveItem("key:k", DAY, 10, 100)]
    result = await c.reserve("r1", items, 60, T0)
    assert not result.admitted
    assert result.blocked == (1,)
    assert result.states == (CounterState(0, 0), CounterState(95, 0))
    assert await c.read("user:a", DAY) == CounterState(0, 0)  # the fitting item was not reserved either
    assert await c.read("key:k", DAY) == CounterState(95, 0)


@pytest.mark.asyncio
async def test_states_exclude_own_hold_and_settle_moves_reserved_to_spent() -> None:
    c = MemoryCounters()
    items = [ReserveItem("user:a", DAY, 30, 100), ReserveItem("user:a", "monthly:2026-06-01", 30, None)]
    first = await c.reserve("r1", items, 60, T0)
    second = await c.reserve("r2", items, 60, T0)
    assert first.admitted and second.admitted
    assert second.states[0] == CounterState(0, 30)
    assert await c.settle("r1", 12, at(1)) is SettleOutcome.SETTLED
    assert await c.read("user:a", DAY) == CounterState(12, 30)
    assert await c.read("user:a", "monthly:2026-06-01") == CounterState(12, 30)


@pytest.mark.asyncio
async def test_fit_refuses_what_headroom_admits() -> None:
    c = MemoryCounters()
    await c.seed("user:a", DAY, 90)
    item = [ReserveItem("user:a", DAY, 20, 100)]
    assert not (await c.reserve("r1", item, 60, T0)).admitted
    result = await c.reserve("r2", item, 60, T0, mode=AdmitMode.HEADROOM)
    assert result.admitted
    # The crossing request filled the cap: nobody else gets in until it settles.
    assert not (await c.reserve("r3", item, 60, T0, mode=AdmitMode.HEADROOM)).admitted
    await c.settle("r2", 5, T0)
    assert (await c.reserve("r4", item, 60, T0, mode=AdmitMode.HEADROOM)).admitted


@pytest.mark.asyncio
async def test_settle_is_idempotent() -> None:
    c = MemoryCounters()
    await c.reserve("r1", [ReserveItem("user:a", DAY, 50, 100)], 60, T0)
    assert await c.settle("r1", 40, T0) is SettleOutcome.SETTLED
    assert await c.settle("r1", 40, T0) is SettleOutcome.DUPLICATE
    assert await c.settle("r1", 40, T0, targets=[SpendTarget("user:a", DAY)]) is SettleOutcome.DUPLICATE
    assert await c.read("user:a", DAY) == CounterState(40, 0)


@pytest.mark.asyncio
async def test_release_is_idempotent_and_a_later_settle_still_counts() -> None:
    c = MemoryCounters()
    await c.reserve("r1", [ReserveItem("user:a", DAY, 50, 100)], 60, T0)
    assert await c.release("r1", T0) is True
    assert await c.release("r1", T0) is False
    assert await c.read("user:a", DAY) == CounterState(0, 0)
    assert await c.settle("r1", 7, T0) is SettleOutcome.LATE
    assert await c.settle("r1", 7, T0) is SettleOutcome.DUPLICATE
    assert await c.release("r1") is False
    assert await c.read("user:a", DAY) == CounterState(7, 0)


@pytest.mark.asyncio
async def test_reservation_expires_lazily_and_late_settle_lands() -> None:
    c = MemoryCounters()
    await c.reserve("r1", [ReserveItem("user:a", DAY, 50, 100)], 30, T0)
    assert await c.read("user:a", DAY, at(29)) == CounterState(0, 50)
    assert await c.read("user:a", DAY, at(30)) == CounterState(0, 0)  # a dead worker's hold frees itself
    assert await c.extend("r1", 30, at(31)) is False
    assert await c.settle("r1", 20, at(40)) is SettleOutcome.LATE
    assert await c.read("user:a", DAY, at(40)) == CounterState(20, 0)


@pytest.mark.asyncio
async def test_extend_keeps_a_long_stream_alive() -> None:
    c = MemoryCounters()
    await c.reserve("r1", [ReserveItem("user:a", DAY, 50, 100)], 30, T0)
    assert await c.extend("r1", 30, at(20)) is True
    assert await c.read("user:a", DAY, at(45)) == CounterState(0, 50)
    assert await c.read("user:a", DAY, at(50)) == CounterState(0, 0)


@pytest.mark.asyncio
async def test_unknown_id_settles_to_targets_once() -> None:
    c = MemoryCounters()
    assert await c.settle("ghost", 5, T0) is SettleOutcome.DROPPED
    targets = [SpendTarget("user:a", DAY), SpendTarget("key:k", DAY), SpendTarget("user:a", DAY)]
    assert await c.settle("ghost", 5, T0, targets=targets) is SettleOutcome.UNKNOWN
    assert await c.settle("ghost", 5, T0, targets=targets) is SettleOutcome.DUPLICATE
    assert await c.read("user:a", DAY) == CounterState(5, 0)
    assert await c.read("key:k", DAY) == CounterState(5, 0)


@pytest.mark.asyncio
async def test_settled_ids_are_bounded_by_count_and_ttl() -> None:
    c = MemoryCounters(max_finished=2, finished_ttl_s=100)
    target = [SpendTarget("user:a", DAY)]
    for rid in ("a", "b", "c"):
        await c.settle(rid, 1, T0, targets=target)
    assert await c.settle("a", 1, T0, targets=target) is SettleOutcome.UNKNOWN  # "a" was evicted
    assert await c.settle("c", 1, at(99), targets=target) is SettleOutcome.DUPLICATE
    assert await c.settle("c", 1, at(101), targets=target) is SettleOutcome.UNKNOWN  # past its TTL


@pytest.mark.asyncio
async def test_reserve_replays_live_ids_and_refuses_finished_ones() -> None:
    c = MemoryCounters()
    item = [ReserveItem("user:a", DAY, 50, 100)]
    await c.reserve("r1", item, 60, T0)
    replay = await c.reserve("r1", item, 60, T0)
    assert replay.admitted and replay.replayed
    assert await c.read("user:a", DAY) == CounterState(0, 50)
    await c.settle("r1", 1, T0)
    with pytest.raises(DuplicateRequestId):
        await c.reserve("r1", item, 60, T0)


@pytest.mark.asyncio
async def test_bad_arguments_are_rejected() -> None:
    c = MemoryCounters()
    with pytest.raises(ValueError):
        await c.reserve("r", [ReserveItem("user:a", DAY, -1, None)], 60, T0)
    with pytest.raises(ValueError):
        await c.reserve("r", [ReserveItem("user:a", DAY, 1, None)] * 2, 60, T0)
    with pytest.raises(ValueError):
        await c.reserve("r", [ReserveItem("user:a", DAY, 1, None)], 0, T0)
    with pytest.raises(ValueError):
        await c.settle("r", -1, T0)


@pytest.mark.asyncio
async def test_seed_sets_and_add_spent_adds() -> None:
    c = MemoryCounters()
    await c.add_spent("user:a", [DAY, "monthly:2026-06-01"], 10)
    await c.seed("user:a", DAY, 3)
    await c.seed("user:a", DAY, 4)
    assert await c.read("user:a", DAY) == CounterState(4, 0)
    assert await c.read("user:a", "monthly:2026-06-01") == CounterState(10, 0)


@pytest.mark.asyncio
async def test_finished_periods_are_pruned() -> None:
    c = MemoryCounters(period_retention_s=3600)
    await c.add_spent("user:a", [DAY], 10)
    end = datetime(2026, 6, 3, tzinfo=UTC)
    assert await c.read("user:a", DAY, end + timedelta(minutes=59)) == CounterState(10, 0)
    assert await c.read("user:a", DAY, end + timedelta(minutes=60)) == CounterState(0, 0)
    assert DAY not in c._periods


# --- buckets -----------------------------------------------------------------------------------------

RPM = BucketSpec("u:rpm", capacity=6, refill_per_s=0.1)


@pytest.mark.asyncio
async def test_bucket_starts_full_refills_continuously_and_clips() -> None:
    c = MemoryCounters()
    take = ([[BucketCheck(RPM, 1)]], [BucketDebit(RPM, 1)])
    for _ in range(6):
        assert (await c.take_tokens(*take, T0)).admitted
    refused = await c.take_tokens(*take, T0)
    assert not refused.admitted
    assert refused.levels["u:rpm"].level == pytest.approx(0)
    assert refused.levels["u:rpm"].seconds_until(1) == pytest.approx(10)
    assert not (await c.take_tokens(*take, at(9.9))).admitted
    assert (await c.take_tokens(*take, at(10))).admitted
    (level,) = await c.peek_tokens([RPM], at(10_000))
    assert level.level == 6  # clipped at capacity
    assert c._buckets == {}  # a full bucket is not stored


@pytest.mark.asyncio
async def test_bucket_debt_and_alternatives() -> None:
    c = MemoryCounters()
    own = BucketSpec("u:tpm", 600, 10)
    pool = BucketSpec("org:tpm", 6000, 100)
    (lvl,) = await c.debit_tokens([BucketDebit(own, 1200)], T0)
    assert lvl.level == -600
    alternatives = [[BucketCheck(own, 0)], [BucketCheck(pool, 0)]]
    result = await c.take_tokens(alternatives, [BucketDebit(pool, 0)], T0)
    assert result.admitted and result.clauses == (False, True)
    assert (await c.take_tokens([[BucketCheck(own, 0)]], [], at(59))).admitted is False
    assert (await c.take_tokens([[BucketCheck(own, 0)]], [], at(60))).admitted is True


@pytest.mark.asyncio
async def test_bucket_clock_going_backwards_does_not_drain_or_refill() -> None:
    c = MemoryCounters()
    await c.debit_tokens([BucketDebit(RPM, 3)], at(100))
    (lvl,) = await c.peek_tokens([RPM], at(50))
    assert lvl.level == pytest.approx(3)


# --- model-based check of the invariants -------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 9), st.integers(0, 40), st.sampled_from(list(AdmitMode))),
        st.tuples(st.just("settle"), st.integers(0, 9), st.integers(0, 100)),
        st.tuples(st.just("release"), st.integers(0, 9)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_reserved_always_equals_live_holds_and_spend_counts_each_id_once(script: list[tuple]) -> None:
    async def run() -> None:
        c = MemoryCounters()
        cap, ttl = 100, 50.0
        now = T0
        live: dict[str, tuple[int, datetime]] = {}
        finished: set[str] = set()
        settled: set[str] = set()
        spent = 0
        for op in script:
            for rid, (_, exp) in list(live.items()):
                if exp <= now:
                    del live[rid]
                    finished.add(rid)
            if op[0] == "tick":
                now += timedelta(seconds=op[1])
                continue
            rid = f"r{op[1]}"
            if op[0] == "reserve":
                if rid in finished:
                    with pytest.raises(DuplicateRequestId):
                        await c.reserve(rid, [ReserveItem("u", DAY, op[2], cap)], ttl, now, mode=op[3])
                    continue
                result = await c.reserve(rid, [ReserveItem("u", DAY, op[2], cap)], ttl, now, mode=op[3])
                if result.admitted and not result.replayed:
                    live[rid] = (op[2], now + timedelta(seconds=ttl))
            elif op[0] == "settle":
                outcome = await c.settle(rid, op[2], now, targets=[SpendTarget("u", DAY)])
                if rid in settled:
                    assert outcome is SettleOutcome.DUPLICATE
                else:
                    spent += op[2]
                    settled.add(rid)
                    live.pop(rid, None)
                    finished.add(rid)
            else:
                assert await c.release(rid, now) is (rid in live)
                if live.pop(rid, None) is not None:
                    finished.add(rid)
            state = await c.read("u", DAY, now)
            assert state.reserved_nanos == sum(amount for amount, exp in live.values() if exp > now)
            assert state.spent_nanos == spent

    asyncio.run(run())


def test_memory_stays_bounded_under_many_settled_requests():
    """Each settled request is remembered (for duplicate detection) without its counters, and only up
    to max_finished ids: a long-running gateway must not grow without limit."""
    import tracemalloc

    c = MemoryCounters(max_finished=2_000)
    items = [ReserveItem(f"user:u{i % 5}", "daily:2026-06-02", 10, None) for i in range(3)]

    async def run(n: int, offset: int) -> None:
        for i in range(offset, offset + n):
            rid = f"req_{i:08d}"
            await c.reserve(rid, items, 900, at(i * 0.001))
            await c.settle(rid, 7, at(i * 0.001))

    asyncio.run(run(2_000, 0))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    asyncio.run(run(20_000, 2_000))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(c._finished) == 2_000
    assert all(f.targets == () for f in c._finished.values())
    assert grown < 20_000 * 100, f"grew {grown} bytes over 20,000 requests"


@pytest.mark.asyncio
async def test_bucket_expiry_queue_stays_bounded_with_slow_refill() -> None:
    """A bucket refilling over minutes gets a queue entry per debit; stale ones must not pile up."""
    c = MemoryCounters()
    spec = BucketSpec("rl::user:ann:rpm", capacity=5.0, refill_per_s=5 / 60)
    for i in range(20_000):
        await c.take_tokens((), [BucketDebit(spec, 0.001)], at(i * 0.0001))
    assert len(c._bucket_queue) <= 2 * len(c._buckets) + 1025
    assert len(c._bucket_queue) == 1  # a debit moves the bucket's full time later: nothing is queued
    (level,) = await c.peek_tokens([spec], at(2.0))
    assert level.level == pytest.approx(5.0 - 20.0 + 2.0 * 5 / 60, abs=1e-6)


@pytest.mark.asyncio
async def test_a_bucket_is_dropped_once_full_even_if_its_entry_fell_due_early() -> None:
    c = MemoryCounters()
    spec = BucketSpec("rl::user:ann:rpm", capacity=6.0, refill_per_s=1.0)
    await c.take_tokens((), [BucketDebit(spec, 1.0)], at(0))  # full again at 1 s
    await c.take_tokens((), [BucketDebit(spec, 2.0)], at(0.5))  # 3.5, full at 3 s
    await c.peek_tokens([spec], at(1.5))  # the 1 s entry falls due: re-queued for 3 s, bucket kept
    assert list(c._buckets) == [spec.key] and len(c._bucket_queue) == 1
    (level,) = await c.peek_tokens([spec], at(2.0))
    assert level.level == pytest.approx(5.0)
    await c.peek_tokens([spec], at(3.0))
    assert c._buckets == {} and c._bucket_queue == []
    # Dropped, then made again: the new bucket queues its own entry and the old one never resurfaces.
    await c.take_tokens((), [BucketDebit(spec, 6.0)], at(10))
    await c.take_tokens((), [BucketDebit(spec, 1.0)], at(20))
    assert len(c._bucket_queue) == 1
    (level,) = await c.peek_tokens([spec], at(20.5))
    assert level.level == pytest.approx(5.5)
