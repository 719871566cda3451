"""Spend caps: which cap applies to a developer, and admission by reservation against shared counters.

The shape follows Anthropic's gateway (spend-limits.md §A1, §A3): caps per day/week/month on UTC calendar
boundaries; a per-user override beats the most restrictive group cap, which beats the org default; group
and org caps are per-seat defaults applied to each member's *own* spend, never pooled. We add caps on an
API key (scope ``api_key``), enforced on the key's own counter alongside the user's.

Unlike a check of recorded spend, admission here reserves an estimate on every counter/period in one
atomic step and settlement swaps it for the actual cost, so concurrent requests cannot all slip under a
cap (§C1, §C3). Counter keys are ``user:<id>`` and ``key:<id>``; period keys come from
``core.periods.utc_period_key``, so a period "resets" by its key changing (§C7).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Awaitable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

import msgspec

from ccledger.control.counters.base import (
    AdmitMode,
    BucketDebit,
    Counters,
    CounterState,
    DuplicateRequestId,
    ReserveItem,
    ReserveResult,
    SettleOutcome,
    SpendTarget,
    item_blocks,
)
from ccledger.control.deadline import within
from ccledger.core.limits import SpendLimit
from ccledger.core.periods import PERIODS, utc_period, utc_period_key

USER, API_KEY = "user", "api_key"
GROUP_LIMIT_MODES = ("min", "max")
NANOS_PER_CENT = 10_000_000
UNAVAILABLE_MESSAGE = "spend limit unavailable"
_CAPS_CACHE_SIZE = 10_000
T = TypeVar("T")


# --- caps and their resolution ---------------------------------------------------------------------


class EffectiveCap(msgspec.Struct, frozen=True):
    """The cap in force for one period and where it came from (``source_type`` None: no cap anywhere)."""

    amount_cents: Decimal | None
    source_type: str | None = None
    limit_id: str | None = None

    @property
    def cap_nanos(self) -> int | None:
        """Exact: a cent is 10^7 nano-dollars; a fractional cent below a nano-dollar rounds down."""
        if self.amount_cents is None:
            return None
        return int(self.amount_cents * NANOS_PER_CENT)


UNLIMITED = EffectiveCap(None)


class CapTable:
    """Caps indexed by ``(scope_type, scope_id, period)``, so resolving a request is a few dict lookups
    however many user overrides exist. Immutable: swap a new table in when caps change."""

    def __init__(self, limits: Iterable[SpendLimit] = (), *, group_limit_mode: str = "min") -> None:
        if group_limit_mode not in GROUP_LIMIT_MODES:
            raise ValueError(f"group_limit_mode {group_limit_mode!r} not in {GROUP_LIMIT_MODES}")
        self.group_limit_mode = group_limit_mode
        self._index: dict[tuple[str, str | None, str], SpendLimit] = {}
        for limit in limits:
            key = (limit.scope_type, limit.scope_id, limit.period)
            if key in self._index:
                raise ValueError(f"two caps for {key}: {self._index[key].id} and {limit.id}")
            self._index[key] = limit

    def get(self, scope_type: str, scope_id: str | None, period: str) -> SpendLimit | None:
        return self._index.get((scope_type, scope_id, period))

    def __len__(self) -> int:
        return len(self._index)


def _cap(limit: SpendLimit) -> EffectiveCap:
    return EffectiveCap(limit.amount_cents, limit.scope_type, limit.id)


def _group_cap(table: CapTable, group_ids: Iterable[str], period: str) -> EffectiveCap | None:
    """Most (``min``) or least (``max``) restrictive of the user's group caps; None when no group has one.
    Unlimited counts as infinitely large; ties go to the lowest group id so the answer is stable."""
    found = [lim for g in sorted(set(group_ids)) if (lim := table.get("rbac_group", g, period)) is not None]
    if not found:
        return None

    def size(lim: SpendLimit) -> Decimal:
        return Decimal("Infinity") if lim.amount_cents is None else lim.amount_cents

    pick = min if table.group_limit_mode == "min" else max
    return _cap(pick(found, key=size))


@dataclass(frozen=True)
class ResolvedCaps(Mapping[str, EffectiveCap]):
    """The caps a principal is held to: as a mapping, the user's cap per period (every period present,
    ``UNLIMITED`` where none applies); ``key`` holds the API key's own caps the same way."""

    user: Mapping[str, EffectiveCap]
    key: Mapping[str, EffectiveCap] = field(default_factory=dict)

    def __getitem__(self, period: str) -> EffectiveCap:
        return self.user[period]

    def __iter__(self) -> Iterator[str]:
        return iter(self.user)

    def __len__(self) -> int:
        return len(self.user)


def resolve_caps(
    limits: Iterable[SpendLimit] | CapTable,
    user_id: str,
    group_ids: Iterable[str] = (),
    key_id: str | None = None,
    *,
    group_limit_mode: str = "min",
) -> ResolvedCaps:
    """Per period: the user's override, else the most restrictive of their groups' caps (``max`` mode: the
    least), else the org default, else unlimited. The first level that has a row wins even if that row is
    unlimited (an override of ``None`` exempts a user from a group cap). Key caps come from ``api_key``
    rows only; they do not inherit org or group defaults (a key is not a seat)."""
    table = limits if isinstance(limits, CapTable) else CapTable(limits, group_limit_mode=group_limit_mode)
    groups = tuple(group_ids)
    user: dict[str, EffectiveCap] = {}
    key: dict[str, EffectiveCap] = {}
    for period in PERIODS:
        own = table.get("user", user_id, period)
        org = table.get("organization", None, period)
        if own is not None:
            user[period] = _cap(own)
        elif (group := _group_cap(table, groups, period)) is not None:
            user[period] = group
        elif org is not None:
            user[period] = _cap(org)
        else:
            user[period] = UNLIMITED
        key_limit = table.get("api_key", key_id, period) if key_id else None
        key[period] = UNLIMITED if key_limit is None else _cap(key_limit)
    return ResolvedCaps(user, key)


# --- admission -------------------------------------------------------------------------------------


class Principal(NamedTuple):
    """Who a request is billed to: the developer (OIDC sub), their IdP groups, and the API key used."""

    user_id: str
    group_ids: tuple[str, ...] = ()
    key_id: str | None = None


class PeriodUsage(NamedTuple):
    """One capped counter in one period, read atomically with admission (this request excluded)."""

    scope: str  # "user" or "api_key"
    period: str
    cap: EffectiveCap
    cap_nanos: int
    spent_nanos: int
    reserved_nanos: int
    reset_at: datetime  # the UTC boundary where the period's key changes

    @property
    def used_nanos(self) -> int:
        return self.spent_nanos + self.reserved_nanos

    @property
    def fraction(self) -> float:
        """Utilisation 0..1+ (a zero cap reads as fully used)."""
        return 1.0 if self.cap_nanos == 0 else self.used_nanos / self.cap_nanos


class CapHit(msgspec.Struct, frozen=True):
    """A cap that refused the request. ``transient``: it refused only because of other requests still in
    flight (their settlement may free room before the period resets)."""

    usage: PeriodUsage
    transient: bool

    @property
    def period(self) -> str:
        return self.usage.period

    @property
    def scope(self) -> str:
        return self.usage.scope

    @property
    def reset_at(self) -> datetime:
        return self.usage.reset_at


class Admission(NamedTuple):
    """Everything the gateway needs to answer: proceed, or the 429 ``billing_error`` and its headers.

    ``degraded``: the counters failed or timed out and the decision was taken without them (fail-open
    admits, fail-closed refuses with ``spend limit unavailable``); log it and omit utilisation headers.
    """

    ok: bool
    now: datetime
    usage: tuple[PeriodUsage, ...] = ()
    blocked: tuple[CapHit, ...] = ()
    degraded: bool = False
    error: str | None = None
    replayed: bool = False

    @property
    def headline(self) -> CapHit | None:
        """With several caps exceeded, the one that resets last (§A3): waiting for it frees them all."""
        if not self.blocked:
            return None
        return max(self.blocked, key=lambda h: (h.reset_at, h.scope == USER))

    @property
    def retry_after_s(self) -> int | None:
        """Whole seconds to the headline cap's reset (rounded up); None when there is no reset to name."""
        hit = self.headline
        if hit is None:
            return None
        return max(1, math.ceil((hit.reset_at - self.now).total_seconds()))

    @property
    def message(self) -> str | None:
        """``spend limit reached (daily; resets 2026-08-08 00:00 UTC)`` for a block (the gateway appends
        its configured ``blocked_message``); ``spend limit unavailable`` for a fail-closed refusal."""
        if self.ok:
            return None
        hit = self.headline
        if hit is None:
            return UNAVAILABLE_MESSAGE
        what = "spend limit" if hit.scope == USER else "API key spend limit"
        return f"{what} reached ({hit.period}; resets {hit.reset_at:%Y-%m-%d %H:%M} UTC)"

    @property
    def transient(self) -> bool:
        """Every refusing cap would have admitted without other in-flight reservations."""
        return bool(self.blocked) and all(h.transient for h in self.blocked)

    @property
    def fullest(self) -> PeriodUsage | None:
        """The cap closest to (or furthest past) its limit: what the 75 %/95 % client warnings track."""
        if self.degraded or not self.usage:
            return None
        return max(self.usage, key=lambda u: (u.fraction, u.reset_at))

    @property
    def utilisation(self) -> dict[str, float]:
        """Per period, the fraction of the fullest cap (user or key); empty when degraded or uncapped."""
        if self.degraded:
            return {}
        out: dict[str, float] = {}
        for u in self.usage:
            out[u.period] = max(out.get(u.period, 0.0), u.fraction)
        return out


def _counter(scope: str, ident: str) -> str:
    return f"user:{ident}" if scope == USER else f"key:{ident}"


class _Slot(msgspec.Struct, frozen=True):
    """One counter/period a principal's requests touch; the request's amount is not part of it, so the
    slots are built once per principal and UTC day (``SpendGuard._shells``) and reused."""

    scope: str
    period: str
    cap: EffectiveCap
    counter: str
    period_key: str
    cap_nanos: int | None
    reset_at: datetime
    target: SpendTarget

    def item(self, amount_nanos: int) -> ReserveItem:
        return ReserveItem(self.counter, self.period_key, amount_nanos, self.cap_nanos)


class _Shell(msgspec.Struct, frozen=True):
    """A principal's slots for one UTC day, their targets, and which of them are capped (the only ones
    admission reports usage for)."""

    slots: tuple[_Slot, ...]
    targets: tuple[SpendTarget, ...]
    capped: tuple[int, ...]


class SpendGuard:
    """Admission, settlement and release of spend reservations for one gateway.

    Wiring, per ``/v1/messages`` request (``count_tokens`` is never guarded):
    ``admit`` before going upstream; then exactly one of ``settle`` (any response that may have cost
    money: success, abort with the streamed floor, upstream error after tokens) or ``release`` (nothing
    was spent: refused, connection failed) on every exit path; ``extend`` every few minutes during long
    streams so the lease (``lease_ttl_s``) outlives the request. Both are idempotent, so a ``finally``
    that calls ``release`` after a ``settle`` is harmless.

    Caps are held in memory (``set_limits`` swaps a new snapshot in when the admin API changes them), so
    a counter outage never hides which caps apply. Counter calls are bounded by ``timeout_s``; on failure
    ``fail_open`` decides (§A6, §C6), and a principal with no cap at all is admitted (degraded) either way,
    since there is nothing to enforce.
    """

    def __init__(
        self,
        counters: Counters,
        limits: Iterable[SpendLimit] | CapTable = (),
        *,
        fail_open: bool = True,
        timeout_s: float = 2.0,
        lease_ttl_s: float = 900.0,
        group_limit_mode: str = "min",
    ) -> None:
        if timeout_s <= 0 or lease_ttl_s <= 0:
            raise ValueError("timeout_s and lease_ttl_s must be > 0")
        self.counters = counters
        self.fail_open = fail_open
        self.timeout_s = timeout_s
        self.lease_ttl_s = lease_ttl_s
        self._group_limit_mode = group_limit_mode
        self._table = CapTable((), group_limit_mode=group_limit_mode)
        self._caps: dict[Principal, ResolvedCaps] = {}
        # (principal, UTC day) -> the slots and their targets; dropped with the caps when they change,
        # and keyed by day so a period rollover (a new period key) is a cache miss by construction.
        self._shells: dict[tuple[Principal, date], _Shell] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.set_limits(limits)

    def set_limits(self, limits: Iterable[SpendLimit] | CapTable) -> None:
        """Replace the caps in force (validated first: a bad set leaves the old one in place)."""
        if not isinstance(limits, CapTable):
            limits = CapTable(limits, group_limit_mode=self._group_limit_mode)
        self._table = limits
        self._caps = {}
        self._shells = {}

    def caps_for(self, principal: Principal) -> ResolvedCaps:
        """Resolved caps, memoised per principal until the caps change (the hot path resolves once)."""
        caps = self._caps.get(principal)
        if caps is None:
            caps = resolve_caps(self._table, principal.user_id, principal.group_ids, principal.key_id)
            if len(self._caps) >= _CAPS_CACHE_SIZE:
                self._caps.clear()
            self._caps[principal] = caps
        return caps

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        """Every counter call is bounded (§A6: 2 s); a timer is armed only if the call waits (``within``)."""
        return await within(awaitable, self.timeout_s)

    def _shells_for(self, principal: Principal, at: datetime) -> _Shell:
        """Every counter/period the request touches: user and key, each period, capped or not (uncapped
        periods are still counted so a cap added mid-period starts from the right spend). Memoised per
        principal and UTC day until the caps change: the hot path builds nothing but the reserve items."""
        _require_aware(at)
        day = at.astimezone(UTC).date()
        cache_key = (principal, day)
        hit = self._shells.get(cache_key)
        if hit is not None:
            return hit
        caps = self.caps_for(principal)
        scopes: list[tuple[str, str, Mapping[str, EffectiveCap]]] = [(USER, principal.user_id, caps.user)]
        if principal.key_id:
            scopes.append((API_KEY, principal.key_id, caps.key))
        slots = []
        for scope, ident, by_period in scopes:
            counter = _counter(scope, ident)
            for period, key, reset_at in _periods_on(day):
                cap = by_period[period]
                target = SpendTarget(counter, key)
                slots.append(_Slot(scope, period, cap, counter, key, cap.cap_nanos, reset_at, target))
        capped = tuple(i for i, s in enumerate(slots) if s.cap_nanos is not None)
        entry = _Shell(tuple(slots), tuple(s.target for s in slots), capped)
        if len(self._shells) >= _CAPS_CACHE_SIZE:
            self._shells.clear()
        self._shells[cache_key] = entry
        return entry

    def _slots(self, principal: Principal, at: datetime) -> tuple[_Slot, ...]:
        return self._shells_for(principal, at).slots

    def targets(self, principal: Principal, at: datetime) -> tuple[SpendTarget, ...]:
        """The counters a request started at ``at`` is billed to (what ``settle`` falls back to)."""
        return self._shells_for(principal, at).targets

    async def admit(
        self,
        request_id: str,
        principal: Principal,
        estimate_nanos: int,
        now: datetime,
        *,
        mode: AdmitMode = AdmitMode.FIT,
    ) -> Admission:
        """Reserve ``estimate_nanos`` on all the principal's counters for the periods holding ``now``, or
        refuse naming the caps. Pass the ``Estimate.mode`` of the estimator used (strict → FIT, expected →
        HEADROOM). Raises only ``DuplicateRequestId`` (a caller bug); store trouble becomes ``degraded``."""
        shell, items = self.prepare(principal, estimate_nanos, now)
        try:
            result = await within(
                self.counters.reserve(request_id, items, self.lease_ttl_s, now, mode=mode), self.timeout_s
            )
        except DuplicateRequestId:
            raise
        except Exception as exc:
            return self.unavailable(request_id, shell, now, exc)
        return self.conclude(shell, items, result, now, mode)

    # ``admit`` in three steps, so a caller that reserves together with other counter work in one call
    # (``control.admission``) applies exactly the same rules: items before, decision after.

    def prepare(
        self, principal: Principal, estimate_nanos: int, now: datetime
    ) -> tuple[_Shell, list[ReserveItem]]:
        """The principal's slots at ``now`` and the items reserving ``estimate_nanos`` on each."""
        if estimate_nanos < 0:
            raise ValueError("estimate_nanos must be >= 0")
        shell = self._shells_for(principal, now)
        return shell, [ReserveItem(s.counter, s.period_key, estimate_nanos, s.cap_nanos) for s in shell.slots]

    def conclude(
        self,
        shell: _Shell,
        items: Sequence[ReserveItem],
        result: ReserveResult,
        now: datetime,
        mode: AdmitMode,
    ) -> Admission:
        """The admission a ``reserve`` of ``prepare``'s items amounts to."""
        slots = shell.slots
        states = result.states
        usage = tuple(_usage(slots[i], states[i]) for i in shell.capped)
        if not result.blocked:
            return Admission(result.admitted, now, usage, replayed=result.replayed)
        by_index = dict(zip(shell.capped, usage, strict=True))
        blocked = tuple(
            CapHit(by_index[i], not item_blocks(items[i], CounterState(states[i].spent_nanos), mode))
            for i in result.blocked
        )
        return Admission(result.admitted, now, usage, blocked, replayed=result.replayed)

    def unavailable(self, request_id: str, shell: _Shell, now: datetime, exc: Exception) -> Admission:
        """The counters failed: admit or refuse by the fail mode (a principal with no cap is admitted)."""
        return self._unavailable(request_id, shell.slots, now, exc)

    def _unavailable(
        self, request_id: str, slots: Sequence[_Slot], now: datetime, exc: Exception
    ) -> Admission:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        capped = any(s.cap_nanos is not None for s in slots)
        if self.fail_open or not capped:
            return Admission(True, now, degraded=True, error=error)
        # Refused: the gateway will never settle this id, so undo a reservation that may have landed
        # after the timeout rather than leave it to hold room until its lease expires.
        self._spawn(self._quiet_release(request_id, now))
        return Admission(False, now, degraded=True, error=error)

    async def extend(self, request_id: str, now: datetime) -> bool:
        """Renew the lease of a request still streaming; False if it has none (expired or unknown)."""
        return await self._bounded(self.counters.extend(request_id, self.lease_ttl_s, now))

    async def settle(
        self,
        request_id: str,
        principal: Principal,
        actual_nanos: int,
        now: datetime,
        *,
        started_at: datetime | None = None,
        bounded: bool = True,
        debits: Sequence[BucketDebit] = (),
    ) -> SettleOutcome:
        """Replace the reservation with the actual cost (idempotent). ``started_at`` (the admission time,
        default ``now``) names the periods to bill if the reservation is unknown, e.g. admitted degraded.
        Errors and timeouts propagate: the ledger write is the durable record (§C9); log and count them.
        ``bounded=False``: the caller holds the ``timeout_s`` bound around this and more (one timer).
        ``debits``: rate-limit token debits to apply in the same counters call (``Counters.settle``)."""
        targets = self.targets(principal, started_at or now)
        call = self.counters.settle(request_id, actual_nanos, now, targets=targets, debits=debits)
        if not bounded:
            return await call
        return await within(call, self.timeout_s)

    async def release(self, request_id: str, now: datetime | None = None) -> bool:
        """Drop the reservation without spend (idempotent); True if one was held."""
        return await self._bounded(self.counters.release(request_id, now))

    async def record(self, principal: Principal, nanos: int, ts: datetime) -> None:
        """Count spend that came without a reservation (e.g. a record ingested from another source)."""
        by_counter: dict[str, list[str]] = {}
        for target in self.targets(principal, ts):
            by_counter.setdefault(target.counter, []).append(target.period_key)
        for counter, keys in by_counter.items():
            await self._bounded(self.counters.add_spent(counter, keys, nanos))

    async def usage(self, principal: Principal, now: datetime) -> tuple[PeriodUsage, ...]:
        """Cap and period-to-date spend for every capped period (the ``/effective`` view)."""
        out = []
        for slot in self._slots(principal, now):
            if slot.cap_nanos is None:
                continue
            state = await self._bounded(self.counters.read(slot.counter, slot.period_key, now))
            out.append(_usage(slot, state))
        return tuple(out)

    async def _quiet_release(self, request_id: str, now: datetime) -> None:
        with contextlib.suppress(Exception):
            await self._bounded(self.counters.release(request_id, now))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _usage(slot: _Slot, state: CounterState) -> PeriodUsage:
    assert slot.cap_nanos is not None
    return PeriodUsage(
        slot.scope,
        slot.period,
        slot.cap,
        slot.cap_nanos,
        state.spent_nanos,
        state.reserved_nanos,
        slot.reset_at,
    )


@functools.lru_cache(maxsize=64)
def _periods_on(day: date) -> tuple[tuple[str, str, datetime], ...]:
    """(period, key, reset) for each period holding a UTC day: they depend on the day alone, so the hot
    path computes calendar arithmetic once a day rather than six times a request."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return tuple((p, utc_period_key(p, start), utc_period(p, start)[1]) for p in PERIODS)


def _require_aware(ts: datetime) -> None:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware (UTC periods depend on it)")
