"""Per-user RPM/TPM limits with an org pool, as continuously refilling token buckets.

Model (rate-limits.md §3, §4): a limit of N per minute is a bucket of capacity N refilling N/60 per
second, never reset at interval boundaries. A request needs one request token and a non-negative token
bucket; its tokens (input + cache writes + output; cache reads excluded, as in Anthropic's ITPM) are
debited when the response reports them, so a bucket may go into debt and the debt delays the next
request. Because tokens are charged afterwards, requests admitted together can overshoot TPM by their
own tokens; the debt then holds the user back until refill repays it.

Org pool (``PoolMode``), sized users × per-user allowance unless set explicitly. Every admitted request
debits both the user's buckets and the pool's, so what a user borrows is charged to their own allowance
too: after a burst their bucket is in debt and they are back "in share" once refill repays it.

``BORROW`` (default): admit iff the user's own buckets allow it, OR the pool's do.
  * Share guarantee: a user whose own buckets have room (their total traffic, borrowed included, is
    within their allowance) is admitted whatever everyone else does; the own-bucket test never looks at
    the pool, so others' borrowing cannot eat anyone's share.
  * Bursting: a user past their allowance is still admitted while the pool has room (idle colleagues).
  * Org total: borrowing needs a non-empty pool, so borrowed traffic in any window is at most the pool's
    burst plus its refill minus the in-share traffic before it. With the default pool (= the sum of the
    shares) the org stays within its total plus one burst; an explicit pool below the sum of the shares
    is exceeded only by in-share traffic (the share guarantee wins).
``HARD``: admit iff own buckets AND pool allow: the pool is an absolute org cap, with no borrowing and
  no share guarantee under contention.

A user with no own limit in a dimension always passes that dimension's own check.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple

import msgspec

from ccledger.control.counters.base import (
    BucketCheck,
    BucketDebit,
    BucketLevel,
    BucketSpec,
    Counters,
    TakeResult,
)
from ccledger.control.deadline import within
from ccledger.control.plan import Plan
from ccledger.core.records import TokenCounts


def tpm_tokens(tokens: TokenCounts) -> int:
    """What counts against TPM: input + cache writes + output; cache reads are free (as ITPM)."""
    return tokens.input + tokens.cache_write + tokens.output


class RateLimits(msgspec.Struct, frozen=True):
    """Per-minute limits; None means unlimited in that dimension. Fractional RPM is allowed (the team
    table goes down to 0.25): the request bucket holds at least one token so such a user still gets a
    request every 60/rpm seconds."""

    rpm: float | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        if (self.rpm is not None and self.rpm <= 0) or (self.tpm is not None and self.tpm <= 0):
            raise ValueError("rate limits must be > 0 (None for unlimited; block a user with a spend cap)")


class PoolMode(StrEnum):
    BORROW = "borrow"
    HARD = "hard"


class RatePolicy(msgspec.Struct, frozen=True):
    """Limits in force. ``org`` None derives the pool as ``users`` × ``per_user`` (no pool when
    ``users`` is 0 and ``org`` unset, or ``pool_mode`` None)."""

    per_user: RateLimits
    users: int = 0
    org: RateLimits | None = None
    pool_mode: PoolMode | None = PoolMode.BORROW
    overrides: Mapping[str, RateLimits] = msgspec.field(default_factory=dict)

    def user_limits(self, user_id: str) -> RateLimits:
        return self.overrides.get(user_id, self.per_user)

    def org_limits(self) -> RateLimits | None:
        if self.pool_mode is None:
            return None
        if self.org is not None:
            return self.org
        if self.users <= 0:
            return None
        rpm, tpm, n = self.per_user.rpm, self.per_user.tpm, self.users
        return RateLimits(None if rpm is None else rpm * n, None if tpm is None else tpm * n)

    @classmethod
    def from_plan(cls, plan: Plan, pool_mode: PoolMode | None = PoolMode.BORROW) -> RatePolicy:
        return cls(
            per_user=RateLimits(float(plan.rpm_per_user), plan.tpm_per_user),
            users=plan.users,
            org=RateLimits(float(plan.org_rpm), plan.org_tpm),
            pool_mode=pool_mode,
        )


def _rpm_spec(key: str, rpm: float) -> BucketSpec:
    return BucketSpec(key, max(rpm, 1.0), rpm / 60.0)


def _tpm_spec(key: str, tpm: int) -> BucketSpec:
    return BucketSpec(key, float(tpm), tpm / 60.0)


class _Buckets(msgspec.Struct, frozen=True):
    rpm: BucketSpec | None
    tpm: BucketSpec | None

    def checks(self) -> list[BucketCheck]:
        out = []
        if self.rpm is not None:
            out.append(BucketCheck(self.rpm, 1.0))
        if self.tpm is not None:
            out.append(BucketCheck(self.tpm, 0.0))
        return out


def _buckets(prefix: str, limits: RateLimits | None) -> _Buckets:
    if limits is None:
        return _Buckets(None, None)
    return _Buckets(
        None if limits.rpm is None else _rpm_spec(f"{prefix}:rpm", limits.rpm),
        None if limits.tpm is None else _tpm_spec(f"{prefix}:tpm", limits.tpm),
    )


_FORMAT_CACHE_SIZE = 4096
_rfc3339_cache: dict[int, bytes] = {}
_number_cache: dict[float, bytes] = {}


def _reset_second(level: BucketLevel) -> int:
    """When the bucket is full again (``full_at``), as a whole epoch second (truncated); computed on
    floats, since the headers show the second and building a datetime per request costs more."""
    wait = level.seconds_until(level.spec.capacity)
    if wait == math.inf:
        wait = 0.0
    return math.floor(level.at.timestamp() + wait)


def _rfc3339(second: int) -> bytes:
    """RFC 3339 to the whole second. A bucket's full-at time moves by sub-second amounts between
    requests, so the text is memoised per epoch second: formatting runs at most once a second per value."""
    out = _rfc3339_cache.get(second)
    if out is None:
        out = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        if len(_rfc3339_cache) >= _FORMAT_CACHE_SIZE:
            _rfc3339_cache.clear()
        _rfc3339_cache[second] = out
    return out


def _number(value: float) -> bytes:
    out = _number_cache.get(value)
    if out is None:
        out = (str(int(value)) if float(value).is_integer() else f"{value:g}").encode()
        if len(_number_cache) >= _FORMAT_CACHE_SIZE:
            _number_cache.clear()
        _number_cache[value] = out
    return out


class RateDecision(NamedTuple):
    """Admit or refuse, with the numbers for ``retry-after`` and ``anthropic-ratelimit-*`` headers.

    ``requests``/``tokens`` are the buckets reported in headers: the user's own when they have a limit in
    that dimension, else the pool's. ``borrowed``: admitted only thanks to the pool.
    """

    ok: bool
    now: datetime
    retry_after_s: float | None = None
    borrowed: bool = False
    requests: BucketLevel | None = None
    tokens: BucketLevel | None = None
    requests_limit: float | None = None
    tokens_limit: int | None = None
    degraded: bool = False
    error: str | None = None

    @property
    def retry_after_header(self) -> int | None:
        """Whole seconds, rounded up, at least 1; None when admitted or when waiting cannot help."""
        if self.ok or self.retry_after_s is None or math.isinf(self.retry_after_s):
            return None
        return max(1, math.ceil(self.retry_after_s))

    def headers(self) -> dict[str, str]:
        """``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` (+ ``retry-after`` when
        refused); reset is the RFC 3339 time the bucket is full again. Empty when degraded."""
        return {k.decode(): v.decode() for k, v in self.header_pairs()}

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """``headers()`` as ASGI ``(name, value)`` byte pairs, names pre-encoded (the gateway's hot path)."""
        out: list[tuple[bytes, bytes]] = []
        if self.degraded:
            return out
        level, limit = self.requests, self.requests_limit
        if level is not None and limit is not None:
            out.append((_REQ_NAMES[0], _number(limit)))
            out.append((_REQ_NAMES[1], b"%d" % max(0, math.floor(level.level + 1e-9))))
            out.append((_REQ_NAMES[2], _rfc3339(_reset_second(level))))
        level, limit = self.tokens, self.tokens_limit
        if level is not None and limit is not None:
            out.append((_TOK_NAMES[0], _number(limit)))
            out.append((_TOK_NAMES[1], b"%d" % max(0, math.floor(level.level + 1e-9))))
            out.append((_TOK_NAMES[2], _rfc3339(_reset_second(level))))
        retry = self.retry_after_header
        if retry is not None:
            out.append((b"retry-after", b"%d" % retry))
        return out


def _names(dim: str) -> tuple[bytes, bytes, bytes]:
    return tuple(f"anthropic-ratelimit-{dim}-{part}".encode() for part in ("limit", "remaining", "reset"))  # type: ignore[return-value]


_REQ_NAMES = _names("requests")
_TOK_NAMES = _names("tokens")
_PLANS_CACHE_SIZE = 10_000


class _UserPlan(msgspec.Struct, frozen=True):
    """Everything one user's admissions and token debits need from the policy: bucket specs, the
    alternatives to check, the debits, which buckets the headers show. Derived once per user and scope
    (until the policy changes) so a request builds no specs, keys or checks."""

    alternatives: tuple[tuple[BucketCheck, ...], ...]
    mode: PoolMode | None
    request_debits: tuple[BucketDebit, ...]
    token_specs: tuple[BucketSpec, ...]
    requests_shown: BucketSpec | None
    tokens_shown: BucketSpec | None
    requests_limit: float | None
    tokens_limit: int | None


class RateLimiter:
    """Admission against per-user and pooled RPM/TPM buckets kept in a shared ``Counters``.

    ``scope`` (on every call) separates independent bucket sets, e.g. a model class ("opus-4", "sonnet-4")
    when limits should mirror Anthropic's per-class buckets; the default "" is one set for all models.
    Counter failures are bounded by ``timeout_s`` and decided by ``fail_open`` like spend caps.
    """

    def __init__(
        self,
        counters: Counters,
        policy: RatePolicy,
        *,
        fail_open: bool = True,
        timeout_s: float = 2.0,
        namespace: str = "rl",
    ) -> None:
        self.counters = counters
        self.fail_open = fail_open
        self.timeout_s = timeout_s
        self.namespace = namespace
        self._plans: dict[tuple[str, str], _UserPlan] = {}
        self.policy = policy

    @property
    def policy(self) -> RatePolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: RatePolicy) -> None:
        """A new policy takes effect on the next call: the per-user plans derived from the old one go."""
        self._policy = policy
        self._plans = {}

    def _plan(self, user_id: str, scope: str) -> _UserPlan:
        plan = self._plans.get((user_id, scope))
        if plan is not None:
            return plan
        limits = self._policy.user_limits(user_id)
        own = _buckets(f"{self.namespace}:{scope}:user:{user_id}", limits)
        org_limits = self._policy.org_limits()
        pool = _buckets(f"{self.namespace}:{scope}:org", org_limits)
        own_checks, pool_checks = tuple(own.checks()), tuple(pool.checks())
        mode = self._policy.pool_mode if pool_checks else None
        if mode is PoolMode.HARD:
            alternatives = (own_checks + pool_checks,)
        elif mode is PoolMode.BORROW:
            alternatives = (own_checks, pool_checks)
        else:
            alternatives = (own_checks,)
        plan = _UserPlan(
            alternatives=alternatives,
            mode=mode,
            request_debits=tuple(BucketDebit(spec, 1.0) for spec in (own.rpm, pool.rpm) if spec is not None),
            token_specs=tuple(spec for spec in (own.tpm, pool.tpm) if spec is not None),
            requests_shown=own.rpm or pool.rpm,
            tokens_shown=own.tpm or pool.tpm,
            requests_limit=limits.rpm if own.rpm is not None else (org_limits.rpm if org_limits else None),
            tokens_limit=limits.tpm if own.tpm is not None else (org_limits.tpm if org_limits else None),
        )
        if len(self._plans) >= _PLANS_CACHE_SIZE:
            self._plans.clear()
        self._plans[(user_id, scope)] = plan
        return plan

    async def admit(self, user_id: str, now: datetime, *, scope: str = "") -> RateDecision:
        """Take one request token (user and pool) if the policy admits the request at ``now``."""
        plan = self._plan(user_id, scope)
        try:
            result = await within(
                self.counters.take_tokens(plan.alternatives, plan.request_debits, now), self.timeout_s
            )
        except Exception as exc:
            return self.failed(exc, now)
        return self.decide(plan, result, now)

    # ``admit`` in steps, so a caller that takes the request tokens together with other counter work in
    # one call (``control.admission``) applies exactly the same rules.

    def plan(self, user_id: str, scope: str = "") -> _UserPlan:
        """What to check and debit for one request of ``user_id`` (``plan.alternatives``,
        ``plan.request_debits``), derived once per user and scope until the policy changes."""
        return self._plan(user_id, scope)

    def decide(self, plan: _UserPlan, result: TakeResult, now: datetime) -> RateDecision:
        """The decision a ``take_tokens`` of ``plan``'s alternatives and request debits amounts to."""
        levels = result.levels
        retry = None
        if not result.admitted:
            retry = min(
                max((levels[c.spec.key].seconds_until(c.min_level) for c in alt), default=0.0)
                for alt in plan.alternatives
            )
        borrowed = result.admitted and plan.mode is PoolMode.BORROW and not result.clauses[0]
        req, tok = plan.requests_shown, plan.tokens_shown
        return RateDecision(
            result.admitted,
            now,
            retry_after_s=retry,
            borrowed=borrowed,
            requests=None if req is None else levels[req.key],
            tokens=None if tok is None else levels[tok.key],
            requests_limit=plan.requests_limit,
            tokens_limit=plan.tokens_limit,
        )

    def failed(self, exc: Exception, now: datetime) -> RateDecision:
        """The counters failed: admitted or refused by ``fail_open``, marked degraded."""
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return RateDecision(self.fail_open, now, degraded=True, error=error)

    async def record_tokens(
        self, user_id: str, tokens: TokenCounts | int, now: datetime, *, scope: str = "", bounded: bool = True
    ) -> tuple[BucketLevel, ...]:
        """Debit the tokens a response reported from the user's and the pool's TPM buckets (debt allowed).
        Errors propagate (log them; the next admission still works from the levels it finds).
        ``bounded=False``: the caller holds the ``timeout_s`` bound around this and more (one timer)."""
        debits = self.token_debits(user_id, tokens, scope=scope)
        if not debits:
            return ()
        if not bounded:
            return await self.counters.debit_tokens(debits, now)
        return await within(self.counters.debit_tokens(debits, now), self.timeout_s)

    def token_debits(self, user_id: str, tokens: TokenCounts | int, *, scope: str = "") -> list[BucketDebit]:
        """What ``record_tokens`` debits, for a caller that applies it in another counters call (the
        gateway settles spend and tokens together: ``Counters.settle(debits=...)``)."""
        amount = tokens if isinstance(tokens, int) else tpm_tokens(tokens)
        if amount < 0:
            raise ValueError("token count must be >= 0")
        return [BucketDebit(spec, float(amount)) for spec in self._plan(user_id, scope).token_specs]

    async def wait_admit(
        self,
        user_id: str,
        *,
        clock: Callable[[], datetime],
        max_wait_s: float,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        scope: str = "",
    ) -> RateDecision:
        """Queue briefly instead of refusing: retry at the predicted refill time until admitted, or return
        the refusal as soon as the next chance lies beyond ``max_wait_s``. Not FIFO: a newcomer can take a
        freed token first; the waiter then retries at the next predicted time."""
        deadline = clock().timestamp() + max_wait_s
        slept = 0.0  # also bounds the wait when the injected clock does not move
        while True:
            now = clock()
            decision = await self.admit(user_id, now, scope=scope)
            if decision.ok or decision.retry_after_s is None:
                return decision
            pause = max(decision.retry_after_s, 0.001)
            if now.timestamp() + decision.retry_after_s > deadline or slept + pause > max_wait_s:
                return decision
            await sleep(pause)
            slept += pause
