"""Admission for one request: the spend guard (caps) and the rate limiter (RPM/TPM), wired together.

``Limits.admit`` returns either a ``Rejection`` (the 429 to send) or a ``Ticket`` that the proxy must
finish on every exit path: ``settle`` once the response reported usage, or ``release`` (a no-op after
``settle``) from a ``finally``. That pairing is what keeps reservations from leaking (spend-limits.md
§C3); the counters' leases are the backstop if a worker dies mid-request.

Caps and rate limits live in memory and are reloaded from the store only when ``limits_version`` moves,
so the request path never queries the database.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from ccledger.control.admission import admit_together
from ccledger.control.counters.base import Counters
from ccledger.control.estimate import RequestShape, UnboundedRequest, make_estimator
from ccledger.control.spend import Principal as CapPrincipal
from ccledger.control.spend import SpendGuard
from ccledger.core.periods import PERIODS, utc_period, utc_period_key
from ccledger.core.pricing import PriceBook
from ccledger.core.records import TokenCounts
from ccledger.gateway.body import BodyHead
from ccledger.gateway.headers import retry_after_seconds
from ccledger.gateway.ratelimits import RateLimiter, RateTicket
from ccledger.store.identity import Principal
from ccledger.store.ledger import Ledger, to_ms

log = logging.getLogger("ccledger.gateway.limits")


class Rejection(msgspec.Struct):
    status: int
    err_type: str
    message: str
    limit: str  # metrics label: spend | spend_unavailable | unbounded | rpm | tpm
    headers: list[tuple[bytes, bytes]] = msgspec.field(default_factory=list)


class Ticket:
    """An admitted request's holds: a spend reservation and a rate-limit admission."""

    __slots__ = (
        "_admission", "_done", "_headers", "_limits", "cap_principal", "rate", "request_id",
        "session_id", "started_at", "user_id",
    )  # fmt: skip

    def __init__(
        self,
        limits: Limits,
        request_id: str,
        cap_principal: CapPrincipal,
        started_at: datetime,
        session_id: str,
        admission: Any,
        rate: RateTicket | None,
    ) -> None:
        self._limits = limits
        self._admission = admission
        self._headers: list[tuple[bytes, bytes]] | None = None
        self.request_id = request_id
        self.cap_principal = cap_principal
        self.user_id = cap_principal.user_id
        self.started_at = started_at
        self.session_id = session_id
        self.rate = rate
        self._done = False

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """The developer's cap utilisation and rate-limit headers for a successful response. Formatted on
        the first call (the proxy makes it while the upstream works on the request), then reused."""
        headers = self._headers
        if headers is None:
            headers = self._headers = _unified_headers(self._admission)
            if self.rate is not None:
                headers += self.rate.headers
        return headers

    async def settle(self, cost_nanos: int, tokens: TokenCounts, *, completed: bool) -> None:
        """Settle the reservation to the actual cost and debit the rate-limit tokens.

        ``completed`` is False for a request that did not finish normally (a client abort billed from
        the usage so far or the relayed-output floor): its cost still counts against the caps, but it is
        not fed to the estimator, whose next guess it would make low (``ExpectedEstimator``).
        """
        if self._done:
            return
        self._done = True
        lim = self._limits
        if completed:
            lim.estimator.observe(self.user_id, self.session_id, cost_nanos)
        # Spend and rate-limit tokens settle in one counters call, bounded by the guard's deadline (a
        # timer armed only if the call actually waits: the in-process counters never do).
        try:
            debits = lim.rate.token_debits(self.rate, tokens) if self.rate is not None else ()
            await lim.guard.settle(
                self.request_id, self.cap_principal, cost_nanos, lim.clock(), started_at=self.started_at,
                debits=debits,
            )  # fmt: skip
        except Exception as exc:  # the ledger row is the durable record; counters catch up at restart
            log.warning("spend and token settle failed: %s", type(exc).__name__)

    async def extend(self) -> None:
        try:
            await self._limits.guard.extend(self.request_id, self._limits.clock())
        except Exception as exc:
            log.warning("spend lease extend failed: %s", type(exc).__name__)

    async def release(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._limits.guard.release(self.request_id, self._limits.clock())
        except Exception as exc:
            log.warning("spend release failed: %s", type(exc).__name__)


def _unified_headers(adm: Any) -> list[tuple[bytes, bytes]]:
    """The developer's own cap utilisation (spend-limits.md §A4), so Claude Code can warn at 75%/95%.

    Per capped period ``anthropic-ratelimit-unified-<period>-utilization`` (fraction 0-1) and ``-reset``
    (epoch seconds), plus the fullest cap as ``-utilization``/``-reset``/``-status``. Exact names used by
    Anthropic's gateway are unconfirmed; these follow the subscription headers' pattern.
    """
    usage = adm.usage
    if adm.degraded or not usage:
        return []
    # One pass: the fullest cap per period, and overall (as ``Admission.fullest``: highest fraction, then
    # latest reset, the first of equals).
    per_period: dict[str, Any] = {}
    fullest = usage[0]
    best = (fullest.fraction, fullest.reset_at)
    for u in usage:
        frac = u.fraction
        prev = per_period.get(u.period)
        if prev is None or frac > prev.fraction:
            per_period[u.period] = u
        if (frac, u.reset_at) > best:
            best, fullest = (frac, u.reset_at), u
    out: list[tuple[bytes, bytes]] = []
    for period, u in per_period.items():
        util_name, reset_name = _period_names(period)
        out.append((util_name, _fraction(u.fraction)))
        out.append((reset_name, _epoch(u.reset_at)))
    frac = best[0]
    status = b"allowed" if frac < 0.75 else (b"allowed_warning" if frac < 1 else b"rejected")
    out.append((b"anthropic-ratelimit-unified-status", status))
    out.append((b"anthropic-ratelimit-unified-utilization", _fraction(frac)))
    out.append((b"anthropic-ratelimit-unified-reset", _epoch(fullest.reset_at)))
    out.append((b"anthropic-ratelimit-unified-representative-claim", fullest.period.encode()))
    return out


@functools.lru_cache(maxsize=16)
def _period_names(period: str) -> tuple[bytes, bytes]:
    name = f"anthropic-ratelimit-unified-{period}"
    return f"{name}-utilization".encode(), f"{name}-reset".encode()


@functools.lru_cache(maxsize=256)
def _epoch(reset_at: datetime) -> bytes:
    """A period boundary as epoch seconds: a handful of distinct values a day, so formatted once each."""
    return str(int(reset_at.timestamp())).encode()


_ZERO = b"0.0000"


def _fraction(value: float) -> bytes:
    return _ZERO if value == 0 else f"{value:.4f}".encode()


class Limits:
    def __init__(
        self,
        counters: Counters,
        book: PriceBook,
        clock: Callable[[], datetime],
        *,
        estimator: str = "expected",
        fail_open: bool = True,
        timeout_s: float = 2.0,
        group_limit_mode: str = "min",
        blocked_message: str = "",
        rate: RateLimiter | None = None,
    ) -> None:
        self.counters = counters
        self.clock = clock
        self.blocked_message = blocked_message
        self.guard = SpendGuard(
            counters, (), fail_open=fail_open, timeout_s=timeout_s, group_limit_mode=group_limit_mode
        )
        self.estimator = make_estimator(estimator, book)
        self.estimator_name = estimator
        self.rate = rate if rate is not None else RateLimiter(counters, clock)

    async def seed_from_ledger(self, ledger: Ledger) -> None:
        """Counters start from recorded spend in the current periods, so a restart forgets nothing."""
        now = self.clock()
        for period in PERIODS:
            start_ms = to_ms(utc_period(period, now)[0])
            key = utc_period_key(period, now)
            for column, prefix in (("user_id", "user:"), ("key_id", "key:")):
                spent = await asyncio.to_thread(ledger.spend_since, column, start_ms)
                for ident, nanos in spent.items():
                    await self.counters.seed(prefix + ident, key, nanos)

    async def admit(
        self, principal: Principal, head: BodyHead, body_len: int, session_id: str, request_id: str
    ) -> Ticket | Rejection:
        now = self.clock()
        # A guess from history (the expected estimator, once a session or user has settled a request)
        # needs no description of the request; only a bound does.
        est = self.estimator.recent(principal.user_id, session_id)
        if est is None:
            searches, unbounded = head.web_search()
            shape = RequestShape(
                model=head.model or "unknown", ts=now, body_bytes=body_len, max_tokens=head.max_tokens,
                speed=head.speed, inference_geo=head.inference_geo, web_search_max_uses=searches,
                web_search_unbounded=unbounded, user_id=principal.user_id, session_id=session_id,
            )  # fmt: skip
            try:
                est = self.estimator.estimate(shape)
            except UnboundedRequest as exc:  # strict mode and a cost nothing in the body bounds
                return Rejection(400, "invalid_request_error", str(exc), "unbounded")
        cap_p = CapPrincipal(principal.user_id, principal.group_ids, principal.key_id)
        rate = self.rate
        rate_ticket = None
        adm = None
        policy = rate.policy
        if rate.enabled and policy is not None:
            # Rate limits first (refusing there holds no spend reservation), and the spend reservation
            # in the same counters call when they admit.
            if policy.counters is self.guard.counters:
                decision, adm = await admit_together(
                    self.guard, policy, request_id, cap_p, est.nanos, now, mode=est.mode
                )
            else:
                decision = await policy.admit(principal.user_id, now)
            verdict = await rate.verdict(principal.user_id, decision)
            if isinstance(verdict, Rejection):
                return verdict
            rate_ticket = verdict
        if adm is None:  # no rate limits, or admitted only after queueing: reserve on its own
            adm = await self.guard.admit(request_id, cap_p, est.nanos, now, mode=est.mode)
        if adm.degraded:
            log.warning("spend counters unavailable (%s); fail-%s", adm.error, "open" if adm.ok else "closed")
        if not adm.ok:
            # The request token stays taken: a refused request still counts as a request made.
            headers = [(b"x-should-retry", b"false")]
            retry = adm.retry_after_s
            if retry is not None:
                headers.append((b"retry-after", retry_after_seconds(retry)))
            headers.extend(_unified_headers(adm))
            limit = "spend_unavailable" if adm.degraded else "spend"
            message = adm.message or "spend limit reached"
            if self.blocked_message and not adm.degraded:
                message = f"{message} {self.blocked_message}"
            return Rejection(429, "billing_error", message, limit, headers)
        return Ticket(self, request_id, cap_p, now, session_id, adm, rate_ticket)
