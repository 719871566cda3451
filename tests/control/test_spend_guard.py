"""SpendGuard: admission decisions, the 429 details, settlement paths, period rollover, fail modes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ccledger.control.counters import (
    AdmitMode,
    CounterState,
    DuplicateRequestId,
    MemoryCounters,
    ReserveItem,
    ReserveResult,
    SettleOutcome,
)
from ccledger.control.spend import Principal, SpendGuard, SpendLimit

T0 = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)  # a Tuesday
CENT = 10_000_000  # nanos
ANN = Principal("ann", ("eng",), "k1")


def limit(id_: str, scope: str, scope_id: str | None, period: str, cents: int | None) -> SpendLimit:
    return SpendLimit(id_, scope, scope_id, period, None if cents is None else Decimal(cents))


def guard(*limits: SpendLimit, counters: MemoryCounters | None = None, **kw: object) -> SpendGuard:
    return SpendGuard(counters or MemoryCounters(), list(limits), **kw)  # type: ignore[arg-type]


async def state(g: SpendGuard, counter: str, key: str, now: datetime = T0) -> CounterState:
    return await g.counters.read(counter, key, now)


@pytest.mark.asyncio
async def test_admit_reserves_on_user_and_key_for_every_period_and_settles() -> None:
    g = guard(limit("d", "user", "ann", "daily", 100))
    adm = await g.admit("r1", ANN, 30 * CENT, T0)
    assert adm.ok and not adm.degraded and adm.blocked == ()
    for counter in ("user:ann", "key:k1"):
        for key in ("daily:2026-06-02", "weekly:2026-06-01", "monthly:2026-06-01"):
            assert await state(g, counter, key) == CounterState(0, 30 * CENT)
    assert await g.settle("r1", ANN, 12 * CENT, T0) is SettleOutcome.SETTLED
    assert await state(g, "user:ann", "monthly:2026-06-01") == CounterState(12 * CENT, 0)
    assert await state(g, "key:k1", "daily:2026-06-02") == CounterState(12 * CENT, 0)


@pytest.mark.asyncio
async def test_utilisation_is_read_before_this_request() -> None:
    g = guard(limit("d", "user", "ann", "daily", 100), limit("m", "organization", None, "monthly", 1000))
    await g.record(ANN, 60 * CENT, T0)
    adm = await g.admit("r1", ANN, 10 * CENT, T0)
    assert adm.utilisation == {"daily": pytest.approx(0.6), "monthly": pytest.approx(0.06)}
    assert adm.fullest is not None and adm.fullest.period == "daily"


@pytest.mark.asyncio
async def test_blocked_names_the_cap_that_resets_last() -> None:
    g = guard(limit("d", "user", "ann", "daily", 100), limit("m", "user", "ann", "monthly", 150))
    await g.record(ANN, 150 * CENT, T0)
    adm = await g.admit("r1", ANN, 1, T0)
    assert not adm.ok
    assert {h.period for h in adm.blocked} == {"daily", "monthly"}
    assert adm.headline is not None and adm.headline.period == "monthly"
    assert adm.message == "spend limit reached (monthly; resets 2026-07-01 00:00 UTC)"
    assert adm.retry_after_s == int((datetime(2026, 7, 1, tzinfo=UTC) - T0).total_seconds())
    assert not adm.transient
    assert await state(g, "user:ann", "daily:2026-06-02") == CounterState(150 * CENT, 0)  # nothing held


@pytest.mark.asyncio
async def test_zero_cap_blocks_everything() -> None:
    g = guard(limit("z", "organization", None, "daily", 0))
    adm = await g.admit("r1", ANN, 0, T0)
    assert not adm.ok and adm.headline is not None and adm.headline.period == "daily"
    assert adm.retry_after_s == 12 * 3600


@pytest.mark.asyncio
async def test_key_cap_applies_to_the_keys_own_counter() -> None:
    g = guard(limit("kd", "api_key", "k1", "daily", 50))
    await g.record(Principal("bob", (), "k1"), 50 * CENT, T0)  # someone else spent on key k1
    blocked = await g.admit("r1", ANN, CENT, T0)
    assert not blocked.ok and blocked.headline is not None
    assert blocked.headline.scope == "api_key"
    assert blocked.message == "API key spend limit reached (daily; resets 2026-06-03 00:00 UTC)"
    assert (await g.admit("r2", Principal("ann", ("eng",), "k2"), CENT, T0)).ok


@pytest.mark.asyncio
async def test_group_cap_is_per_seat_not_pooled() -> None:
    g = guard(limit("g", "rbac_group", "eng", "daily", 100))
    await g.record(Principal("ann", ("eng",)), 100 * CENT, T0)
    assert not (await g.admit("r1", Principal("ann", ("eng",)), CENT, T0)).ok
    assert (await g.admit("r2", Principal("carl", ("eng",)), CENT, T0)).ok


@pytest.mark.asyncio
async def test_transient_block_from_in_flight_reservations() -> None:
    g = guard(limit("d", "user", "ann", "daily", 100))
    assert (await g.admit("r1", ANN, 80 * CENT, T0)).ok
    adm = await g.admit("r2", ANN, 30 * CENT, T0)
    assert not adm.ok and adm.transient
    await g.release("r1", T0)
    assert (await g.admit("r3", ANN, 30 * CENT, T0)).ok


@pytest.mark.asyncio
async def test_headroom_mode_admits_a_bigger_guess_near_the_cap() -> None:
    g = guard(limit("d", "user", "ann", "daily", 100))
    await g.record(ANN, 90 * CENT, T0)
    assert not (await g.admit("r1", ANN, 20 * CENT, T0)).ok
    assert (await g.admit("r2", ANN, 20 * CENT, T0, mode=AdmitMode.HEADROOM)).ok


@pytest.mark.asyncio
async def test_release_on_failure_paths_leaves_nothing_reserved() -> None:
    g = guard(limit("d", "user", "ann", "daily", 100))
    await g.admit("r1", ANN, 40 * CENT, T0)
    assert await g.release("r1", T0) is True
    assert await g.release("r1", T0) is False
    assert await state(g, "user:ann", "daily:2026-06-02") == CounterState(0, 0)
    assert await state(g, "key:k1", "weekly:2026-06-01") == CounterState(0, 0)


@pytest.mark.asyncio
async def test_settle_twice_counts_once() -> None:
    g = guard()
    await g.admit("r1", ANN, 40 * CENT, T0)
    assert await g.settle("r1", ANN, 10 * CENT, T0) is SettleOutcome.SETTLED
    assert await g.settle("r1", ANN, 10 * CENT, T0) is SettleOutcome.DUPLICATE
    assert await state(g, "user:ann", "daily:2026-06-02") == CounterState(10 * CENT, 0)


@pytest.mark.asyncio
async def test_expired_lease_frees_room_and_late_settle_still_counts() -> None:
    g = guard(limit("d", "user", "ann", "daily", 100), lease_ttl_s=60)
    assert (await g.admit("r1", ANN, 80 * CENT, T0)).ok
    assert not (await g.admit("r2", ANN, 80 * CENT, T0 + timedelta(seconds=59))).ok
    later = T0 + timedelta(seconds=60)
    assert (await g.admit("r3", ANN, 80 * CENT, later)).ok
    assert await g.settle("r1", ANN, 5 * CENT, later) is SettleOutcome.LATE
    assert await state(g, "user:ann", "daily:2026-06-02", later) == CounterState(5 * CENT, 80 * CENT)


@pytest.mark.asyncio
async def test_extend_renews_the_lease() -> None:
    g = guard(lease_ttl_s=60)
    await g.admit("r1", ANN, CENT, T0)
    assert await g.extend("r1", T0 + timedelta(seconds=50)) is True
    assert await state(g, "user:ann", "daily:2026-06-02", T0 + timedelta(seconds=100)) == CounterState(0, CENT)


@pytest.mark.asyncio
async def test_settle_of_an_unknown_request_bills_the_periods_it_started_in() -> None:
    g = guard()
    started = datetime(2026, 6, 2, 23, 59, tzinfo=UTC)
    done = datetime(2026, 6, 3, 0, 1, tzinfo=UTC)
    outcome = await g.settle("lost", ANN, 9 * CENT, done, started_at=started)
    assert outcome is SettleOutcome.UNKNOWN
    assert await state(g, "user:ann", "daily:2026-06-02", done) == CounterState(9 * CENT, 0)
    assert await state(g, "user:ann", "daily:2026-06-03", done) == CounterState(0, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("before", "after", "reset"),
    [
        # Tuesday 23:59 -> Wednesday: only the day changes.
        (datetime(2026, 6, 2, 23, 59, 59, tzinfo=UTC), datetime(2026, 6, 3, tzinfo=UTC), {"daily"}),
        # Sunday -> Monday: day and ISO week.
        (datetime(2026, 6, 7, 23, 59, 59, tzinfo=UTC), datetime(2026, 6, 8, tzinfo=UTC), {"daily", "weekly"}),
        # Tuesday 30 June -> Wednesday 1 July: day and month, same week.
        (datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC), {"daily", "monthly"}),
    ],
)
async def test_periods_roll_over_on_utc_boundaries(before: datetime, after: datetime, reset: set[str]) -> None:
    g = guard(*(limit(p, "user", "ann", p, 100) for p in ("daily", "weekly", "monthly")))
    await g.admit("spend", ANN, 100 * CENT, before)
    await g.settle("spend", ANN, 100 * CENT, before)
    blocked = await g.admit("r1", ANN, CENT, before)
    assert {h.period for h in blocked.blocked} == {"daily", "weekly", "monthly"}
    assert blocked.retry_after_s is not None and blocked.retry_after_s > 1
    after_adm = await g.admit("r2", ANN, CENT, after)
    still = {h.period for h in after_adm.blocked}
    assert still == {"daily", "weekly", "monthly"} - reset
    assert after_adm.ok is (not still)
    hit = after_adm.headline
    if hit is not None:
        assert after_adm.retry_after_s == int((hit.reset_at - after).total_seconds())


# --- fail modes --------------------------------------------------------------------------------------


class Broken(MemoryCounters):
    def __init__(self, hang: bool = False) -> None:
        super().__init__()
        self.hang = hang
        self.released: list[str] = []

    async def reserve(
        self,
        request_id: str,
        items: Sequence[ReserveItem],
        ttl_s: float,
        now: datetime,
        *,
        mode: AdmitMode = AdmitMode.FIT,
    ) -> ReserveResult:
        if self.hang:
            await asyncio.Event().wait()
        raise ConnectionError("redis down")

    async def release(self, request_id: str, now: datetime | None = None) -> bool:
        self.released.append(request_id)
        return False


CAPPED = limit("d", "organization", None, "daily", 100)


@pytest.mark.asyncio
async def test_fail_open_admits_with_the_degraded_flag() -> None:
    g = guard(CAPPED, counters=Broken())
    adm = await g.admit("r1", ANN, CENT, T0)
    assert adm.ok and adm.degraded
    assert adm.error == "ConnectionError: redis down"
    assert adm.utilisation == {} and adm.fullest is None  # no headers from a guess


@pytest.mark.asyncio
async def test_fail_closed_blocks_with_unavailable_message() -> None:
    g = guard(CAPPED, counters=Broken(), fail_open=False)
    adm = await g.admit("r1", ANN, CENT, T0)
    assert not adm.ok and adm.degraded
    assert adm.message == "spend limit unavailable"
    assert adm.retry_after_s is None and adm.headline is None


@pytest.mark.asyncio
async def test_timeout_is_bounded_and_fail_closed_releases_in_the_background() -> None:
    counters = Broken(hang=True)
    g = guard(CAPPED, counters=counters, fail_open=False, timeout_s=0.01)
    adm = await g.admit("r1", ANN, CENT, T0)
    assert not adm.ok and adm.degraded and adm.error == "TimeoutError"
    for _ in range(10):
        await asyncio.sleep(0)
    assert counters.released == ["r1"]


@pytest.mark.asyncio
async def test_timeout_fail_open() -> None:
    g = guard(CAPPED, counters=Broken(hang=True), timeout_s=0.01)
    adm = await g.admit("r1", ANN, CENT, T0)
    assert adm.ok and adm.degraded


@pytest.mark.asyncio
async def test_fail_closed_still_admits_an_uncapped_principal_flagged() -> None:
    g = guard(counters=Broken(), fail_open=False)
    adm = await g.admit("r1", ANN, CENT, T0)
    assert adm.ok and adm.degraded


@pytest.mark.asyncio
async def test_caller_bugs_raise_rather_than_admit() -> None:
    g = guard()
    await g.admit("r1", ANN, CENT, T0)
    await g.settle("r1", ANN, CENT, T0)
    with pytest.raises(DuplicateRequestId):
        await g.admit("r1", ANN, CENT, T0)
    with pytest.raises(ValueError):
        await g.admit("r2", ANN, CENT, datetime(2026, 6, 2, 12))
    with pytest.raises(ValueError):
        await g.admit("r3", ANN, -1, T0)


@pytest.mark.asyncio
async def test_usage_view_and_set_limits() -> None:
    g = guard()
    await g.record(ANN, 25 * CENT, T0)
    assert await g.usage(ANN, T0) == ()
    g.set_limits([limit("w", "user", "ann", "weekly", 100)])
    (usage,) = await g.usage(ANN, T0)
    assert usage.period == "weekly" and usage.fraction == pytest.approx(0.25)
    assert usage.reset_at == datetime(2026, 6, 8, tzinfo=UTC)


@pytest.mark.asyncio
async def test_cached_slots_follow_cap_changes_and_period_rollover():
    g = guard(limit("d", "user", "ann", "daily", 1))
    first = g.targets(ANN, T0)
    assert g.targets(ANN, T0) is first  # memoised per principal and UTC day
    adm = await g.admit("r1", ANN, CENT, T0)
    assert adm.ok and {u.cap_nanos for u in adm.usage} == {CENT}
    await g.settle("r1", ANN, CENT, T0)
    g.set_limits([limit("d", "user", "ann", "daily", 3)])  # a cap change drops the cache
    adm = await g.admit("r2", ANN, CENT, T0)
    assert adm.ok and {u.cap_nanos for u in adm.usage} == {3 * CENT}
    tomorrow = T0 + timedelta(days=1)
    assert {t.period_key for t in g.targets(ANN, tomorrow)} != {t.period_key for t in first}
    assert (await g.admit("r3", ANN, 3 * CENT, tomorrow)).ok  # new daily key: the period reset
