"""Rate limits and spend caps admitted in one counters call (``Counters.admit``, ``admit_together``):
the same decisions as the two separate calls, in one atomic step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ccledger.control.admission import admit_together
from ccledger.control.counters import (
    AdmitMode,
    AdmitResult,
    BucketCheck,
    BucketDebit,
    BucketSpec,
    DuplicateRequestId,
    MemoryCounters,
    ReserveItem,
)
from ccledger.control.ratelimit import RateLimiter, RateLimits, RatePolicy
from ccledger.control.spend import Principal, SpendGuard, SpendLimit

T0 = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
DAY = "daily:2026-06-02"
CENT = 10_000_000
ANN = Principal("ann", (), "k1")
RPM = BucketSpec("rl::user:ann:rpm", capacity=2.0, refill_per_s=2 / 60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def one_request() -> tuple[tuple[tuple[BucketCheck, ...]], tuple[BucketDebit]]:
    return ((BucketCheck(RPM, 1.0),),), (BucketDebit(RPM, 1.0),)


async def admit(c: MemoryCounters, rid: str, amount: int, cap: int | None, now: datetime) -> AdmitResult:
    alternatives, debits = one_request()
    items = [ReserveItem("user:ann", DAY, amount, cap)]
    return await c.admit(rid, items, 60, now, mode=AdmitMode.FIT, alternatives=alternatives, debits=debits)


# --- the backend's combined step ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_buckets_refusing_reserve_nothing() -> None:
    c = MemoryCounters()
    assert (await admit(c, "r1", 10, 100, T0)).reserve is not None
    assert (await admit(c, "r2", 10, 100, T0)).reserve is not None
    third = await admit(c, "r3", 10, 100, T0)  # two requests a minute: the third is refused
    assert not third.take.admitted and third.reserve is None
    assert (await c.read("user:ann", DAY, T0)).reserved_nanos == 20
    assert await c.release("r3", T0) is False  # no lease was made


@pytest.mark.asyncio
async def test_caps_refusing_leave_the_request_token_taken() -> None:
    c = MemoryCounters()
    refused = await admit(c, "r1", 200, 100, T0)
    assert refused.take.admitted and refused.reserve is not None and not refused.reserve.admitted
    assert refused.reserve.blocked == (0,)
    (level,) = await c.peek_tokens([RPM], T0)
    assert level.level == pytest.approx(1.0)  # a refused request still counts as a request made
    assert (await c.read("user:ann", DAY, T0)).reserved_nanos == 0


@pytest.mark.asyncio
async def test_a_finished_id_raises_before_any_token_is_taken() -> None:
    c = MemoryCounters()
    await admit(c, "r1", 10, None, T0)
    await c.settle("r1", 7, T0)
    with pytest.raises(DuplicateRequestId):
        await admit(c, "r1", 10, None, T0)
    (level,) = await c.peek_tokens([RPM], T0)
    assert level.level == pytest.approx(1.0)  # only the first request's token


@pytest.mark.asyncio
async def test_a_replay_takes_and_reserves_nothing() -> None:
    c = MemoryCounters()
    await admit(c, "r1", 10, None, T0)
    again = await admit(c, "r1", 10, None, T0)
    assert again.reserve is not None and again.reserve.replayed
    assert (await c.read("user:ann", DAY, T0)).reserved_nanos == 10
    (level,) = await c.peek_tokens([RPM], T0)
    assert level.level == pytest.approx(1.0)


@pytest.mark.asyncio
async def test_same_states_and_levels_as_the_two_calls() -> None:
    together, apart = MemoryCounters(), MemoryCounters()
    alternatives, debits = one_request()
    items = [ReserveItem("user:ann", DAY, 30, 100), ReserveItem("key:k1", DAY, 30, None)]
    for i in range(4):
        now = at(i * 10)
        both = await together.admit(f"r{i}", items, 60, now, alternatives=alternatives, debits=debits)
        take = await apart.take_tokens(alternatives, debits, now)
        assert both.take == take
        if take.admitted:
            assert both.reserve == await apart.reserve(f"r{i}", items, 60, now)
        else:
            assert both.reserve is None
    for counter in ("user:ann", "key:k1"):
        assert await together.read(counter, DAY, at(40)) == await apart.read(counter, DAY, at(40))


# --- admit_together: the guard's and the limiter's answers from one call -------------------------------


def parts(cents: int, counters: MemoryCounters | None = None, *, fail_open: bool = True):  # type: ignore[no-untyped-def]
    counters = counters or MemoryCounters()
    cap = SpendLimit("spl_1", "user", "ann", "daily", Decimal(cents))
    guard = SpendGuard(counters, [cap], fail_open=fail_open)
    limiter = RateLimiter(counters, RatePolicy(RateLimits(rpm=2)), fail_open=fail_open)
    return guard, limiter


@pytest.mark.asyncio
async def test_admit_together_answers_as_the_separate_calls_would() -> None:
    guard, limiter = parts(1)
    decision, adm = await admit_together(guard, limiter, "r1", ANN, CENT // 2, T0, mode=AdmitMode.FIT)
    assert decision.ok and adm is not None and adm.ok
    assert adm.usage[0].reserved_nanos == 0 and decision.requests is not None
    assert decision.requests.level == pytest.approx(1.0)
    decision, adm = await admit_together(guard, limiter, "r2", ANN, CENT, T0, mode=AdmitMode.FIT)
    assert decision.ok and adm is not None and not adm.ok  # half the cent is held: a cent does not fit
    assert adm.blocked[0].transient and adm.message and "daily" in adm.message
    decision, adm = await admit_together(guard, limiter, "r3", ANN, 1, T0, mode=AdmitMode.FIT)
    assert not decision.ok and adm is None and decision.retry_after_s == pytest.approx(30.0)
    assert (await guard.counters.read("user:ann", DAY, T0)).reserved_nanos == CENT // 2


class Broken(MemoryCounters):
    async def admit(self, *a: object, **kw: object) -> AdmitResult:  # type: ignore[override]
        raise ConnectionError("redis down")


@pytest.mark.asyncio
@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_failed_call_follows_each_sides_fail_mode(fail_open: bool) -> None:
    guard, limiter = parts(100, Broken(), fail_open=fail_open)
    decision, adm = await admit_together(guard, limiter, "r1", ANN, 1, T0)
    assert decision.degraded and decision.ok is fail_open
    if fail_open:
        assert adm is not None and adm.ok and adm.degraded
    else:
        assert adm is None  # refused by the rate limiter first: nothing to reserve


@pytest.mark.asyncio
async def test_only_a_caller_bug_propagates() -> None:
    guard, limiter = parts(100)
    await admit_together(guard, limiter, "r1", ANN, 1, T0)
    await guard.settle("r1", ANN, 1, T0)
    with pytest.raises(DuplicateRequestId):
        await admit_together(guard, limiter, "r1", ANN, 1, T0)
    with pytest.raises(ValueError, match="share one Counters"):
        await admit_together(guard, RateLimiter(MemoryCounters(), limiter.policy), "r2", ANN, 1, T0)


# --- settle: spend and the reported tokens in one call --------------------------------------------------

TPM = BucketSpec("rl::user:ann:tpm", capacity=1000.0, refill_per_s=0.0)


@pytest.mark.asyncio
async def test_settle_debits_tokens_once_with_the_spend() -> None:
    c = MemoryCounters()
    await admit(c, "r1", 10, None, T0)
    out = await c.settle("r1", 7, T0, debits=[BucketDebit(TPM, 300.0)])
    assert out.value == "settled" and (await c.read("user:ann", DAY, T0)).spent_nanos == 7
    again = await c.settle("r1", 7, T0, debits=[BucketDebit(TPM, 300.0)])
    assert again.value == "duplicate"  # neither the spend nor the tokens count twice
    (level,) = await c.peek_tokens([TPM], T0)
    assert level.level == pytest.approx(700.0)
    # An unknown id still debits (the request ran); its spend lands on the fallback targets.
    await c.settle("r2", 5, T0, targets=[("user:ann", DAY)], debits=[BucketDebit(TPM, 100.0)])
    (level,) = await c.peek_tokens([TPM], T0)
    assert level.level == pytest.approx(600.0)


@pytest.mark.asyncio
async def test_a_bad_debit_fails_the_settle_before_anything_changes() -> None:
    c = MemoryCounters()
    await admit(c, "r1", 10, None, T0)
    other = BucketSpec(TPM.key, capacity=5.0, refill_per_s=0.0)
    with pytest.raises(ValueError, match="two different specs"):
        await c.settle("r1", 7, T0, debits=[BucketDebit(TPM, 1.0), BucketDebit(other, 1.0)])
    assert await c.read("user:ann", DAY, T0) == (0, 10)  # still reserved, nothing spent
    assert (await c.peek_tokens([TPM], T0))[0].level == pytest.approx(1000.0)
