"""Per-user RPM/TPM buckets with an org pool: refill, debt, borrowing, the share guarantee, headers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from ccledger.control.counters import BucketCheck, BucketDebit, MemoryCounters, TakeResult
from ccledger.control.plan import recommend
from ccledger.control.ratelimit import PoolMode, RateLimiter, RateLimits, RatePolicy, tpm_tokens
from ccledger.core.records import TokenCounts

T0 = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
SHARE = RateLimits(rpm=6, tpm=6000)  # refill 0.1 request/s and 100 tokens/s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def limiter(pool_mode: PoolMode | None = PoolMode.BORROW, users: int = 3, **kw: object) -> RateLimiter:
    policy = RatePolicy(SHARE, users=users, pool_mode=pool_mode, **kw)  # type: ignore[arg-type]
    return RateLimiter(MemoryCounters(), policy)


async def burst(rl: RateLimiter, user: str, n: int, now: datetime = T0) -> int:
    return sum([(await rl.admit(user, now)).ok for _ in range(n)])


def test_tpm_counts_input_cache_writes_and_output_not_cache_reads() -> None:
    tokens = TokenCounts(input=10, output=20, cache_write_5m=30, cache_write_1h=40, cache_read=10_000)
    assert tpm_tokens(tokens) == 100


@pytest.mark.asyncio
async def test_rpm_bucket_refills_continuously_and_reports_headers() -> None:
    rl = limiter(pool_mode=None)
    assert await burst(rl, "ann", 6) == 6
    refused = await rl.admit("ann", T0)
    assert not refused.ok
    assert refused.retry_after_s == pytest.approx(10)
    assert refused.headers() == {
        "anthropic-ratelimit-requests-limit": "6",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-06-02T12:01:00Z",
        "anthropic-ratelimit-tokens-limit": "6000",
        "anthropic-ratelimit-tokens-remaining": "6000",
        "anthropic-ratelimit-tokens-reset": "2026-06-02T12:00:00Z",
        "retry-after": "10",
    }
    assert not (await rl.admit("ann", at(9.9))).ok
    ok = await rl.admit("ann", at(10))
    assert ok.ok and "retry-after" not in ok.headers()


@pytest.mark.asyncio
async def test_tokens_are_debited_after_the_response_and_debt_blocks() -> None:
    rl = limiter(pool_mode=None)
    assert (await rl.admit("ann", T0)).ok
    (own,) = await rl.record_tokens("ann", TokenCounts(input=8000, output=1000, cache_read=500_000), T0)
    assert own.level == pytest.approx(-3000)
    refused = await rl.admit("ann", at(1))
    assert not refused.ok
    assert refused.retry_after_s == pytest.approx(29)  # (3000 - 100) tokens at 100/s
    assert refused.headers()["anthropic-ratelimit-tokens-remaining"] == "0"
    assert (await rl.admit("ann", at(30))).ok


@pytest.mark.asyncio
async def test_a_user_may_borrow_from_the_pool_while_others_are_idle() -> None:
    rl = limiter()
    decisions = [await rl.admit("ann", T0) for _ in range(20)]
    assert sum(d.ok for d in decisions) == 18  # own 6 + the pool's remaining 12
    assert [d.borrowed for d in decisions[:7]] == [False] * 6 + [True]
    assert decisions[-1].retry_after_s == pytest.approx(1 / 0.3)  # the pool refills 18/60 per second


@pytest.mark.asyncio
async def test_each_user_keeps_their_share_under_contention() -> None:
    rl = limiter()
    assert await burst(rl, "ann", 100) == 18  # ann drained the pool completely
    assert await burst(rl, "bob", 6) == 6  # bob's own share is untouched by ann's borrowing
    assert not (await rl.admit("bob", T0)).ok  # but he cannot borrow from an empty pool
    assert await burst(rl, "carl", 10) == 6
    # Borrowing was charged to ann's own bucket too (12 requests of debt), and the pool is in debt from
    # in-share traffic: ann waits. Bob's own bucket refilled one request in 10 s: he is in again.
    assert await burst(rl, "ann", 5, at(10)) == 0
    assert await burst(rl, "bob", 5, at(10)) == 1


@pytest.mark.asyncio
async def test_hard_pool_is_an_absolute_org_cap() -> None:
    rl = limiter(pool_mode=PoolMode.HARD, org=RateLimits(rpm=8, tpm=60_000))
    assert await burst(rl, "ann", 10) == 6  # no borrowing beyond the own share
    assert await burst(rl, "bob", 10) == 2  # the org cap binds before bob's share


@pytest.mark.asyncio
async def test_explicit_org_limit_and_overrides() -> None:
    rl = limiter(org=RateLimits(rpm=7), overrides={"vip": RateLimits(rpm=60)})
    assert await burst(rl, "vip", 100) == 60
    assert await burst(rl, "ann", 100) == 6  # the pool was used up by the vip's in-share traffic


@pytest.mark.asyncio
async def test_token_pool_borrowing() -> None:
    rl = limiter()
    assert (await rl.admit("ann", T0)).ok
    await rl.record_tokens("ann", 10_000, T0)  # own bucket -4000, pool 8000
    ok = await rl.admit("ann", at(1))
    assert ok.ok and ok.borrowed


@pytest.mark.asyncio
async def test_fractional_rpm_still_admits_one_request_per_interval() -> None:
    rl = RateLimiter(MemoryCounters(), RatePolicy(RateLimits(rpm=0.5), pool_mode=None))
    assert await burst(rl, "ann", 3) == 1
    refused = await rl.admit("ann", at(60))
    assert not refused.ok and refused.retry_after_s == pytest.approx(60)
    assert refused.headers()["anthropic-ratelimit-requests-limit"] == "0.5"
    assert (await rl.admit("ann", at(120))).ok


@pytest.mark.asyncio
async def test_user_without_own_limits_is_limited_only_as_the_pool_says() -> None:
    policy = RatePolicy(RateLimits(), org=RateLimits(rpm=2), pool_mode=PoolMode.HARD)
    rl = RateLimiter(MemoryCounters(), policy)
    assert await burst(rl, "ann", 5) == 2
    refused = await rl.admit("ann", T0)
    assert refused.headers()["anthropic-ratelimit-requests-limit"] == "2"  # the pool is what binds


@pytest.mark.asyncio
async def test_scopes_are_independent_bucket_sets() -> None:
    rl = limiter(pool_mode=None)
    assert await burst(rl, "ann", 10) == 6
    assert (await rl.admit("ann", T0, scope="haiku")).ok


@pytest.mark.asyncio
async def test_wait_admit_sleeps_until_refill_or_gives_up() -> None:
    rl = limiter(pool_mode=None)
    await burst(rl, "ann", 6)
    clock = [T0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    gave_up = await rl.wait_admit("ann", clock=lambda: clock[0], max_wait_s=5, sleep=sleep)
    assert not gave_up.ok and slept == []  # the next token is 10 s away: refuse at once
    waited = await rl.wait_admit("ann", clock=lambda: clock[0], max_wait_s=15, sleep=sleep)
    assert waited.ok and slept == [pytest.approx(10)]


class Broken(MemoryCounters):
    async def take_tokens(
        self,
        alternatives: Sequence[Sequence[BucketCheck]],
        debits: Sequence[BucketDebit],
        now: datetime,
    ) -> TakeResult:
        raise ConnectionError("redis down")


@pytest.mark.asyncio
@pytest.mark.parametrize("fail_open", [True, False])
async def test_counter_failure_follows_the_fail_mode(fail_open: bool) -> None:
    rl = RateLimiter(Broken(), RatePolicy(SHARE), fail_open=fail_open)
    decision = await rl.admit("ann", T0)
    assert decision.ok is fail_open and decision.degraded
    assert decision.headers() == {} and decision.error == "ConnectionError: redis down"


def test_policy_from_plan_uses_the_worked_example() -> None:
    policy = RatePolicy.from_plan(recommend(200))
    assert policy.per_user.tpm == 20_000
    org = policy.org_limits()
    assert org is not None and org.tpm == 200 * 20_000
    assert org.rpm == pytest.approx(200 * 0.47)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimits(rpm=0)
    with pytest.raises(ValueError):
        RateLimits(tpm=-1)


def test_wait_admit_gives_up_even_when_the_clock_stands_still():
    """A frozen (injected) clock must not turn a short queue into an endless loop."""
    import asyncio as _asyncio
    from datetime import UTC as _UTC
    from datetime import datetime as _dt

    from ccledger.control.counters.memory import MemoryCounters
    from ccledger.control.ratelimit import RateLimiter, RateLimits, RatePolicy

    frozen = _dt(2026, 11, 25, tzinfo=_UTC)
    limiter = RateLimiter(MemoryCounters(), RatePolicy(per_user=RateLimits(rpm=1, tpm=None)))
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def go():
        first = await limiter.admit("u", frozen)
        assert first.ok
        return await limiter.wait_admit("u", clock=lambda: frozen, max_wait_s=120, sleep=fake_sleep)

    decision = _asyncio.run(go())
    assert not decision.ok
    assert sum(slept) <= 120


@pytest.mark.asyncio
async def test_header_pairs_match_headers_and_round_reset_to_the_second():
    rl = RateLimiter(MemoryCounters(), RatePolicy(per_user=RateLimits(rpm=60, tpm=1000)))
    t = datetime(2026, 6, 2, 12, 0, 0, 700_000, tzinfo=UTC)
    for i in range(3):
        d = await rl.admit("ann", t + timedelta(milliseconds=10 * i))
        pairs = d.header_pairs()
        assert pairs == [(k.encode(), v.encode()) for k, v in d.headers().items()]
        reset = dict(d.headers())["anthropic-ratelimit-requests-reset"]
        assert reset.endswith("Z") and len(reset) == 20


@pytest.mark.asyncio
async def test_a_new_policy_applies_to_the_next_request() -> None:
    """Per-user plans are derived once; replacing the policy must not leave the old limits in force."""
    rl = RateLimiter(MemoryCounters(), RatePolicy(RateLimits(rpm=2)))
    assert [(await rl.admit("ann", T0)).ok for _ in range(3)] == [True, True, False]
    rl.policy = RatePolicy(RateLimits(rpm=100))
    # The drained bucket keeps its level but now refills at 100/min: one token in 0.6 s, not 30 s.
    decision = await rl.admit("ann", T0)
    assert decision.requests_limit == 100 and decision.retry_after_s == pytest.approx(0.6)
    assert decision.headers()["anthropic-ratelimit-requests-limit"] == "100"
    assert (await rl.admit("ann", at(0.61))).ok
