"""The gateway side of RPM/TPM limits: configuration, the 429, and the headers a developer sees.

The policy (token buckets, org pool with borrowing) is ``control.ratelimit``; this module maps the
gateway's settings onto it, turns a refusal into Anthropic's ``rate_limit_error`` with ``retry-after``
and the user's own ``anthropic-ratelimit-requests-*``/``-tokens-*`` headers, and debits the tokens a
response reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from ccledger.control.counters.base import BucketDebit, Counters
from ccledger.control.ratelimit import RateDecision, RateLimits, RatePolicy
from ccledger.control.ratelimit import RateLimiter as PolicyLimiter
from ccledger.core.records import TokenCounts

log = logging.getLogger("ccledger.gateway.ratelimits")


class RateTicket(msgspec.Struct):
    """An admitted request's rate-limit side: whose tokens to debit, and the decision its headers show
    (formatted only when the response needs them)."""

    user_id: str
    decision: RateDecision

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.decision.header_pairs()


class RateLimiter:
    """Disabled (a no-op costing one attribute read) until a limit is configured."""

    def __init__(self, counters: Counters, clock: Callable[[], datetime] | None = None) -> None:
        self.counters = counters
        self.clock = clock
        self.enabled = False
        self.queue_s = 0.0
        self.policy: PolicyLimiter | None = None
        self.config: dict[str, Any] = {}

    def configure(self, cfg: dict[str, Any], users: int = 0) -> None:
        """``{"rpm_per_user", "tpm_per_user", "org_rpm", "org_tpm", "queue_ms"}``; missing/null = none."""
        self.config = dict(cfg)

        def num(name: str) -> float | None:
            v = cfg.get(name)
            return None if v in (None, 0, "") else float(v)

        rpm, tpm, org_rpm, org_tpm = num("rpm_per_user"), num("tpm_per_user"), num("org_rpm"), num("org_tpm")
        self.queue_s = (cfg.get("queue_ms") or 0) / 1000
        if rpm is None and tpm is None and org_rpm is None and org_tpm is None:
            self.enabled, self.policy = False, None
            return
        org = None
        if org_rpm is not None or org_tpm is not None:
            org = RateLimits(org_rpm, None if org_tpm is None else int(org_tpm))
        policy = RatePolicy(per_user=RateLimits(rpm, None if tpm is None else int(tpm)), users=users, org=org)
        self.policy = PolicyLimiter(self.counters, policy)
        self.enabled = True

    async def admit(self, user_id: str, now: datetime) -> Any:
        assert self.policy is not None
        return await self.verdict(user_id, await self.policy.admit(user_id, now))

    async def verdict(self, user_id: str, decision: RateDecision) -> Any:
        """A ``RateTicket`` or the ``Rejection`` for a policy decision, queueing a refusal first if
        ``queue_ms`` allows (``Limits`` makes the decision together with the spend reservation)."""
        if not decision.ok and self.queue_s > 0 and self.clock is not None:
            decision = await self._queue(user_id, decision)
        if decision.degraded:
            log.warning("rate-limit counters unavailable (%s)", decision.error)
        if decision.ok:
            return RateTicket(user_id, decision)
        from ccledger.gateway.limits import Rejection  # (limits imports this module)

        headers = decision.header_pairs()
        # Which dimension refused: the request bucket if it is below one request, else tokens.
        req = decision.requests
        limit = "rpm" if req is not None and req.level < 1.0 else "tpm"
        if limit == "rpm":
            msg = f"rate limit exceeded: {decision.requests_limit:g} requests per minute for this user"
        else:
            msg = f"rate limit exceeded: {decision.tokens_limit} tokens per minute for this user"
        return Rejection(429, "rate_limit_error", msg, limit, headers)

    async def _queue(self, user_id: str, decision: Any) -> Any:
        """Short queueing instead of an immediate 429: wait for the predicted refill and try again, while
        that stays within ``queue_ms`` of real time. The budget is measured on the monotonic clock, not
        the (injectable) policy clock, so a frozen or skewed clock can never make a request wait forever.
        """
        assert self.policy is not None and self.clock is not None
        deadline = time.monotonic() + self.queue_s
        while not decision.ok:
            wait = decision.retry_after_s
            if wait is None or time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(max(wait, 0.005))
            decision = await self.policy.admit(user_id, self.clock())
        return decision

    def token_debits(self, ticket: RateTicket, tokens: TokenCounts) -> list[BucketDebit]:
        """The debits ``settle`` would apply (``Limits`` applies them with the spend settle, one call)."""
        if self.policy is None:
            return []
        return self.policy.token_debits(ticket.user_id, tokens)

    async def settle(
        self, ticket: RateTicket, tokens: TokenCounts, now: datetime, *, bounded: bool = True
    ) -> None:
        """Debit the reported tokens; never raises (logged). ``bounded=False``: the caller's timer bounds it
        (a cancellation by that timer propagates, so the caller can name what timed out)."""
        if self.policy is None:
            return
        try:
            await self.policy.record_tokens(ticket.user_id, tokens, now, bounded=bounded)
        except Exception as exc:
            log.warning("rate-limit token debit failed: %s", type(exc).__name__)
