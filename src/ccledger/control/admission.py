"""A request's rate-limit and spend-cap admission in one counters call.

Why: the gateway admits every request against both, and each counter call has a fixed cost (a round
trip to a shared store; in process, the call, the purge of due entries and the deadline), which is
added latency on every request. ``Counters.admit`` does both steps atomically; this module feeds it what
``RateLimiter.admit`` and ``SpendGuard.admit`` would have sent separately and turns the one result into
their two answers, so the rules (which buckets, which caps, fail modes) stay exactly theirs.
"""

from __future__ import annotations

from datetime import datetime

from ccledger.control.counters.base import AdmitMode, DuplicateRequestId
from ccledger.control.deadline import within
from ccledger.control.ratelimit import RateDecision, RateLimiter
from ccledger.control.spend import Admission, Principal, SpendGuard


async def admit_together(
    guard: SpendGuard,
    limiter: RateLimiter,
    request_id: str,
    principal: Principal,
    estimate_nanos: int,
    now: datetime,
    *,
    mode: AdmitMode = AdmitMode.FIT,
    scope: str = "",
) -> tuple[RateDecision, Admission | None]:
    """``limiter.admit(principal.user_id, now)`` then, if that admits, ``guard.admit(...)``, as one
    counters call. The spend admission is None when the rate limits refused (nothing was reserved).

    Both must use the same counters. If the call fails or times out (``guard.timeout_s``), each side
    decides by its own fail mode, as if both of its calls had failed: a fail-closed rate limiter
    refuses first, else the guard admits or refuses as ``SpendGuard.admit`` would.
    """
    counters = guard.counters
    if limiter.counters is not counters:
        raise ValueError("the rate limiter and the spend guard must share one Counters")
    plan = limiter.plan(principal.user_id, scope)
    shell, items = guard.prepare(principal, estimate_nanos, now)
    try:
        result = await within(
            counters.admit(
                request_id, items, guard.lease_ttl_s, now, mode=mode, alternatives=plan.alternatives,
                debits=plan.request_debits,
            ),
            guard.timeout_s,
        )  # fmt: skip
    except DuplicateRequestId:
        raise
    except Exception as exc:
        decision = limiter.failed(exc, now)
        if not decision.ok:
            return decision, None
        return decision, guard.unavailable(request_id, shell, now, exc)
    decision = limiter.decide(plan, result.take, now)
    if result.reserve is None:
        return decision, None
    return decision, guard.conclude(shell, items, result.reserve, now, mode)
