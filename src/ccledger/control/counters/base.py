"""The counter interface the gateway's limits run on, and the decision rules every backend shares.

Two kinds of state live behind one object, because both must be shared by every gateway process and both
are hot-path reads (spend-limits.md §C5, §C8):

* **Spend counters**: per ``(counter, period_key)`` an integer ``spent`` and ``reserved`` in nano-dollars.
  Admission *reserves* an estimate on every counter/period of a request in one atomic step (§C1) and
  settlement swaps the reservation for the actual cost (§C3).
* **Token buckets** for RPM/TPM: continuously refilling levels (rate-limits.md §3).

Design constraints that shaped the signatures:

* A Redis backend must implement each method as **one Lua script** over keys the caller can name, so every
  call carries all the data it needs (caps, bucket sizes) instead of the store holding configuration, and
  the decision rules are small pure functions here (``item_blocks``, ``refill``) that the script mirrors.
* Time is always passed in (``now``); expiry of reservations and refill of buckets are evaluated lazily
  against it, so tests drive the clock and no background job can be missed (§C7).
* Reservation expiry is tracked in one index ordered by expiry time, so purging is amortised O(1) per
  reservation; no call scans all counters. (For Redis: a sorted set of request ids by expiry, a hash per
  reservation, a hash per counter/period with ``PEXPIREAT`` from ``period_key_end``; the script touches
  user and key counters together, so on a cluster all spend keys must share one hash slot.)

The value types a request creates (``ReserveItem``, ``CounterState``, results, bucket checks and levels)
are ``NamedTuple``s rather than frozen dataclasses: equally immutable, but a frozen dataclass sets each
field through ``object.__setattr__``, ~1 µs an object on the bench VM, and a request makes dozens.

Guarantees of the two admission modes (see ``AdmitMode``) are stated in terms of ``used = spent + reserved``
read atomically with the reservation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple, Protocol

import msgspec

from ccledger.core.periods import PERIODS, utc_period


class AdmitMode(StrEnum):
    """How a reservation is admitted against a cap.

    ``FIT`` (hard cap): admitted iff, for every capped item, ``used < cap`` and ``used + amount <= cap``.
    If every request's reservation is an upper bound of its actual cost, every reservation settles before
    its lease expires and all spend on the counter goes through reserve/settle, then ``spent`` never
    exceeds ``cap``. The price is false blocks near the cap: a request whose worst case does not fit is
    refused even if its real cost would have.

    ``HEADROOM`` (soft cap): admitted iff, for every capped item, ``used < cap``; the full amount is still
    reserved, so a request that crosses the cap fills it and holds everyone else out until it settles.
    Overshoot bound (FIT's preconditions, with "upper bound" relaxed to "not below the actual cost"): let
    L be the last request admitted. At L's admission every other admitted request was counted in ``used``
    either as its settled actual or as a reservation no smaller than its actual, and ``used < cap``; so
    they cost less than ``cap`` together and final ``spent < cap + actual(L)``: at most one request's
    cost over the cap. Each request in flight at L's admission whose reservation was *below* its actual
    cost adds its shortfall on top, so the mode suits estimates that are usually right (the previous
    request's cost), and a hard guarantee needs ``FIT`` with a bound.

    In both modes a cap that is already reached (``used >= cap``, including a cap of 0) blocks everything.
    """

    FIT = "fit"
    HEADROOM = "headroom"


class SettleOutcome(StrEnum):
    """What ``settle`` did; the gateway logs anything other than ``SETTLED``."""

    SETTLED = "settled"  # a live reservation was replaced by the actual cost
    LATE = "late"  # the reservation had expired or been released; actual added to its counters
    UNKNOWN = "unknown"  # no record of the id; actual added to the caller's fallback targets
    DUPLICATE = "duplicate"  # already settled: nothing added (idempotence)
    DROPPED = "dropped"  # no record and no fallback targets: nothing could be added


class DuplicateRequestId(ValueError):
    """``reserve`` was called with an id that already finished (settled or released): ids must be unique
    per request, or its second settle would be swallowed as a duplicate while its hold leaked."""


class SpendTarget(NamedTuple):
    """One spend counter in one period."""

    counter: str
    period_key: str


class ReserveItem(NamedTuple):
    """Reserve ``amount_nanos`` on ``counter`` in ``period_key``; ``cap_nanos`` None means uncapped (the
    amount is still reserved and settled there, so period-to-date spend is right if a cap is added later)."""

    counter: str
    period_key: str
    amount_nanos: int
    cap_nanos: int | None = None

    @property
    def target(self) -> SpendTarget:
        return SpendTarget(self.counter, self.period_key)


class CounterState(NamedTuple):
    spent_nanos: int = 0
    reserved_nanos: int = 0

    @property
    def used_nanos(self) -> int:
        """What admission compares with a cap: recorded spend plus everything in flight."""
        return self.spent_nanos + self.reserved_nanos


class ReserveResult(NamedTuple):
    """``states[i]`` is item i's counter as read inside the atomic step, *before* this reservation (other
    requests' holds included, this one's not); ``blocked`` are indices of items that refused admission."""

    admitted: bool
    states: tuple[CounterState, ...]
    blocked: tuple[int, ...] = ()
    replayed: bool = False  # the id was already holding a reservation; nothing new was reserved


def item_blocks(item: ReserveItem, state: CounterState, mode: AdmitMode) -> bool:
    """The admission rule for one item; every backend must apply exactly this (see ``AdmitMode``)."""
    if item.cap_nanos is None:
        return False
    used = state.used_nanos
    if used >= item.cap_nanos:
        return True
    return mode is AdmitMode.FIT and used + item.amount_nanos > item.cap_nanos


def validate_items(items: Sequence[ReserveItem], ttl_s: float | None = None) -> None:
    """Shared argument checks: a backend must reject what would corrupt its sums (and a lease that
    would expire before it starts)."""
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError("ttl_s must be > 0")
    for item in items:
        if item.amount_nanos < 0:
            raise ValueError(f"negative reservation for {item.target}")
        if item.cap_nanos is not None and item.cap_nanos < 0:
            raise ValueError(f"negative cap for {item.target}")
    if len({(i.counter, i.period_key) for i in items}) == len(items):
        return
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.counter, item.period_key)
        if key in seen:
            raise ValueError(f"{item.target} appears twice in one reservation")
        seen.add(key)


def period_key_end(period_key: str) -> datetime | None:
    """The exclusive UTC end of a ``core.periods.utc_period_key`` key (``daily:2026-11-25``), else None.

    Backends use it to forget counters of finished periods (Redis: ``PEXPIREAT``); a key of another shape
    is never expired by period.
    """
    period, sep, day = period_key.partition(":")
    if not sep or period not in PERIODS:
        return None
    try:
        start = date.fromisoformat(day)
    except ValueError:
        return None
    return utc_period(period, datetime(start.year, start.month, start.day, tzinfo=UTC))[1]


# --- token buckets ---------------------------------------------------------------------------------


class BucketSpec(msgspec.Struct, frozen=True):
    """A continuously refilling bucket: ``refill_per_s`` tokens a second up to ``capacity``.

    The spec travels with every call instead of living in the store, so a changed limit takes effect on
    the next request (a level above a lowered capacity is clipped to it). A bucket never seen starts full.
    """

    key: str
    capacity: float
    refill_per_s: float

    def __post_init__(self) -> None:
        if self.capacity < 0 or self.refill_per_s < 0:
            raise ValueError(f"bucket {self.key}: capacity and refill must be >= 0")


class BucketCheck(NamedTuple):
    """Condition ``level >= min_level`` on a bucket, evaluated after refilling to ``now``."""

    spec: BucketSpec
    min_level: float


class BucketDebit(NamedTuple):
    """Take ``amount`` from a bucket; the level may go negative (debt), which later refill pays off."""

    spec: BucketSpec
    amount: float


class BucketLevel(NamedTuple):
    """A bucket's level at ``at`` (after refill and any debit of the call that returned it)."""

    spec: BucketSpec
    level: float
    at: datetime

    def seconds_until(self, target: float) -> float:
        """Seconds of refill until the level reaches ``target`` (inf if it never can)."""
        if self.level >= target:
            return 0.0
        if target > self.spec.capacity or self.spec.refill_per_s <= 0:
            return float("inf")
        return (target - self.level) / self.spec.refill_per_s

    @property
    def full_at(self) -> datetime:
        """When the bucket will be full again if nothing more is taken (``...-reset`` headers)."""
        wait = self.seconds_until(self.spec.capacity)
        if wait == float("inf"):
            wait = 0.0
        return self.at + timedelta(seconds=wait)


class TakeResult(NamedTuple):
    """``clauses[i]`` says whether alternative i held; ``levels`` maps every bucket touched to its level
    after the call (debits applied only if admitted)."""

    admitted: bool
    clauses: tuple[bool, ...]
    levels: dict[str, BucketLevel]


class AdmitResult(NamedTuple):
    """``Counters.admit``: the rate-limit step's result, and the spend step's (None when the buckets
    refused, in which case nothing was reserved)."""

    take: TakeResult
    reserve: ReserveResult | None


def refill(level: float, updated_at_s: float, spec: BucketSpec, now_s: float) -> float:
    """Level after refilling from ``updated_at_s`` to ``now_s`` (epoch seconds). A clock that went backwards
    refills nothing rather than draining; a level above a lowered capacity is clipped."""
    elapsed = max(0.0, now_s - updated_at_s)
    return min(spec.capacity, level + elapsed * spec.refill_per_s)


# --- the protocol ----------------------------------------------------------------------------------


class Counters(Protocol):
    """Shared counters for spend caps and rate limits. Every method is one atomic step of the backend."""

    async def reserve(
        self,
        request_id: str,
        items: Sequence[ReserveItem],
        ttl_s: float,
        now: datetime,
        *,
        mode: AdmitMode = AdmitMode.FIT,
    ) -> ReserveResult:
        """All-or-nothing: if no item blocks (``item_blocks``), add every amount to its ``reserved`` under a
        lease that expires at ``now + ttl_s``; otherwise change nothing and name the blocking items.
        An id already holding a live reservation is replayed (``replayed=True``, nothing added); an id that
        already finished raises ``DuplicateRequestId``."""
        ...

    async def extend(self, request_id: str, ttl_s: float, now: datetime) -> bool:
        """Renew a live lease to ``now + ttl_s`` (long streams); False if the id holds no live lease."""
        ...

    async def settle(
        self,
        request_id: str,
        actual_nanos: int,
        now: datetime,
        *,
        targets: Sequence[SpendTarget] = (),
        debits: Sequence[BucketDebit] = (),
    ) -> SettleOutcome:
        """Idempotent. Drop the reservation and add ``actual_nanos`` to ``spent`` of every counter/period it
        touched. If the lease expired or was released, the actual is still added to those counters (the
        request ran). If the id is unknown, it is added to ``targets``. Never adds twice for one id while
        the id is remembered (a bounded set with a TTL).

        ``debits``: the tokens the response reported, applied as ``debit_tokens`` in the same atomic step
        (the gateway settles spend and tokens together, one call instead of two), except on a
        ``DUPLICATE`` settle, whose tokens were debited the first time."""
        ...

    async def release(self, request_id: str, now: datetime | None = None) -> bool:
        """Idempotent. Drop a live reservation without spend (the request did not run or cost nothing).
        True if a live reservation was dropped. A later ``settle`` of the id still adds its actual."""
        ...

    async def read(self, counter: str, period_key: str, now: datetime | None = None) -> CounterState:
        """One counter; with ``now``, expired leases are purged first so ``reserved`` is current."""
        ...

    async def seed(self, counter: str, period_key: str, spent_nanos: int) -> None:
        """Set ``spent`` (startup seeding from the ledger); leaves ``reserved`` alone."""
        ...

    async def add_spent(self, counter: str, period_keys: Sequence[str], nanos: int) -> None:
        """Add spend that arrived without a reservation (the caller deduplicates such records)."""
        ...

    async def take_tokens(
        self,
        alternatives: Sequence[Sequence[BucketCheck]],
        debits: Sequence[BucketDebit],
        now: datetime,
    ) -> TakeResult:
        """Refill every bucket named to ``now``; admitted iff some alternative has all its checks true (no
        alternatives = always admitted); if admitted apply all debits. Atomic across all buckets."""
        ...

    async def debit_tokens(self, debits: Sequence[BucketDebit], now: datetime) -> tuple[BucketLevel, ...]:
        """Unconditional debit (tokens reported by a response); levels may go negative."""
        ...

    async def peek_tokens(self, specs: Sequence[BucketSpec], now: datetime) -> tuple[BucketLevel, ...]:
        """Levels at ``now`` without changing anything."""
        ...

    async def admit(
        self,
        request_id: str,
        items: Sequence[ReserveItem],
        ttl_s: float,
        now: datetime,
        *,
        mode: AdmitMode = AdmitMode.FIT,
        alternatives: Sequence[Sequence[BucketCheck]] = (),
        debits: Sequence[BucketDebit] = (),
    ) -> AdmitResult:
        """A request's whole admission as ONE atomic step: ``take_tokens(alternatives, debits, now)``,
        then, only if that admitted, ``reserve(request_id, items, ttl_s, now, mode=mode)``.

        Why one call: the gateway needs both for every request, and each call is a round trip to a
        shared store (one Lua script each for Redis) plus its fixed cost in process; one call halves
        that. The rules are exactly those of the two methods: buckets refusing means nothing is reserved;
        spend caps refusing leaves the request tokens taken (a refused request still counts as a request
        made). An id that already finished raises ``DuplicateRequestId`` before anything changes; an id
        still holding a live reservation is a replay: no tokens are taken (checks are still evaluated),
        nothing is reserved, and ``reserve`` reports ``replayed``."""
        ...
