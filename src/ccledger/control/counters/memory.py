"""In-process counters: the reference backend, for tests and single-process gateways.

Every method is a coroutine that never awaits, so on one event loop each call is atomic without a lock
(no other task can run between its read and its write). It is NOT thread-safe and NOT shared between
processes: with several gateway workers each would enforce the caps separately (spend-limits.md §C5), so
multi-worker deployments need the shared (Redis) backend.

Cost per call is O(items) plus amortised purging: expired leases, forgotten request ids, finished periods
and refilled buckets each sit in a queue ordered by the time they stop mattering, and a call pops only
what is due, so nothing is ever scanned.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from ccledger.control.counters.base import (
    AdmitMode,
    AdmitResult,
    BucketCheck,
    BucketDebit,
    BucketLevel,
    BucketSpec,
    CounterState,
    DuplicateRequestId,
    ReserveItem,
    ReserveResult,
    SettleOutcome,
    SpendTarget,
    TakeResult,
    item_blocks,
    period_key_end,
    refill,
    validate_items,
)

_EPS = 1e-9  # float refill arithmetic must not turn 1.0 into 0.9999999 and refuse a due request

_SETTLED, _RELEASED, _EXPIRED = "settled", "released", "expired"
_EMPTY = CounterState()  # immutable: every never-touched counter reads as this one instance


class _Slot(msgspec.Struct):
    spent: int = 0
    reserved: int = 0
    live: bool = True  # False once its period was pruned: a lease still holding it must look up anew


class _Lease(msgspec.Struct):
    """A live reservation: the counters it holds room on (the slot objects themselves, so dropping the
    holds needs no lookups; a slot whose period was pruned meanwhile is detached, and decrementing it
    changes nothing that is read), the items that reserved there (amounts, and the counters by name where
    a settle adds), and its expiry."""

    slots: tuple[_Slot, ...]
    items: tuple[ReserveItem, ...]
    expires_at: float

    @property
    def targets(self) -> tuple[SpendTarget, ...]:
        """Only a released or expired lease needs its targets by name (a late settle adds there), so
        they are built then rather than for every reservation."""
        return tuple(SpendTarget(i.counter, i.period_key) for i in self.items)


class _Finished(msgspec.Struct):
    state: str
    targets: tuple[SpendTarget, ...]
    forget_at: float


class _Bucket(msgspec.Struct):
    level: float
    updated_at: float
    full_at: float
    queued_at: float = math.inf  # its one live entry in the expiry queue (inf: none); never after full_at


def _check_debits(debits: Sequence[BucketDebit]) -> None:
    specs: dict[str, BucketSpec] = {}
    for debit in debits:
        spec = debit.spec
        seen = specs.setdefault(spec.key, spec)
        if seen is not spec and seen != spec:
            raise ValueError(f"bucket {spec.key!r} named with two different specs in one call")


class MemoryCounters:
    """``Counters`` in one process. Timing knobs:

    * ``finished_ttl_s`` / ``max_finished``: how long and how many finished request ids are remembered, so
      a second settle is recognised as a duplicate and a settle after expiry/release still finds the
      counters its reservation touched. Past either bound an id is forgotten (a settle then needs targets).
      The defaults (1 h, 50,000 ids) bound memory: a gateway settles each request once, within its lease.
    * ``period_retention_s``: counters of a period are dropped this long after the period ends; admission
      only ever reads current periods, and late settles of the previous period still land meanwhile.
    """

    def __init__(
        self,
        *,
        finished_ttl_s: float = 3_600.0,
        max_finished: int = 50_000,
        period_retention_s: float = 2 * 86_400.0,
    ) -> None:
        if finished_ttl_s <= 0 or max_finished <= 0 or period_retention_s < 0:
            raise ValueError("finished_ttl_s and max_finished must be > 0, period_retention_s >= 0")
        self._finished_ttl_s = finished_ttl_s
        self._max_finished = max_finished
        self._period_retention_s = period_retention_s
        self._periods: dict[str, dict[str, _Slot]] = {}
        self._period_queue: list[tuple[float, str]] = []
        self._leases: dict[str, _Lease] = {}
        self._lease_queue: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._finished: OrderedDict[str, _Finished] = OrderedDict()
        self._finished_due = math.inf  # no remembered id is due to be forgotten before this (epoch s)
        self._buckets: dict[str, _Bucket] = {}
        self._bucket_queue: list[tuple[float, str]] = []
        self._last_now = -math.inf

    # -- spend ------------------------------------------------------------------------------------

    async def reserve(
        self,
        request_id: str,
        items: Sequence[ReserveItem],
        ttl_s: float,
        now: datetime,
        *,
        mode: AdmitMode = AdmitMode.FIT,
    ) -> ReserveResult:
        validate_items(items, ttl_s)
        now_s = self._purge(now)
        if request_id in self._leases:
            return self._replayed(items)
        self._check_unfinished(request_id)
        return self._reserve(request_id, items, ttl_s, now_s, mode)

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
        validate_items(items, ttl_s)
        now_s = self._purge(now)
        if request_id in self._leases:
            return AdmitResult(self._take(alternatives, (), now, now_s), self._replayed(items))
        self._check_unfinished(request_id)  # before the buckets change: a caller bug changes nothing
        take = self._take(alternatives, debits, now, now_s)
        if not take.admitted:
            return AdmitResult(take, None)
        return AdmitResult(take, self._reserve(request_id, items, ttl_s, now_s, mode))

    def _replayed(self, items: Sequence[ReserveItem]) -> ReserveResult:
        states = tuple(self._state(i.counter, i.period_key) for i in items)
        return ReserveResult(True, states, (), replayed=True)

    def _check_unfinished(self, request_id: str) -> None:
        finished = self._finished.get(request_id)
        if finished is not None:
            raise DuplicateRequestId(f"request id {request_id!r} already {finished.state}")

    def _reserve(
        self, request_id: str, items: Sequence[ReserveItem], ttl_s: float, now_s: float, mode: AdmitMode
    ) -> ReserveResult:
        """The atomic step of ``reserve`` for a validated, new id, after purging to ``now_s``."""
        # One pass finds each counter (without creating it), reads its state and applies the shared rule
        # to capped items (an uncapped item never blocks); the second creates only what is missing.
        periods = self._periods
        found: list[_Slot | None] = []
        states = []
        blocked = []
        for n, item in enumerate(items):
            group = periods.get(item.period_key)
            slot = None if group is None else group.get(item.counter)
            found.append(slot)
            state = _EMPTY if slot is None else CounterState(slot.spent, slot.reserved)
            states.append(state)
            if item.cap_nanos is not None and item_blocks(item, state, mode):
                blocked.append(n)
        if blocked:
            return ReserveResult(False, tuple(states), tuple(blocked))
        for n, slot in enumerate(found):
            item = items[n]
            if slot is None:
                slot = found[n] = self._slot(item.counter, item.period_key)
            slot.reserved += item.amount_nanos
        expires_at = now_s + ttl_s
        # (``found`` holds no None any more.)
        self._leases[request_id] = _Lease(tuple(found), tuple(items), expires_at)  # type: ignore[arg-type]
        self._queue_lease(request_id, expires_at)
        return ReserveResult(True, tuple(states))

    async def extend(self, request_id: str, ttl_s: float, now: datetime) -> bool:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        now_s = self._purge(now)
        lease = self._leases.get(request_id)
        if lease is None:
            return False
        lease.expires_at = max(lease.expires_at, now_s + ttl_s)
        # The old queue entry stays; when it pops, the lease's later expiry tells the purge to skip it.
        self._queue_lease(request_id, lease.expires_at)
        return True

    async def settle(
        self,
        request_id: str,
        actual_nanos: int,
        now: datetime,
        *,
        targets: Sequence[SpendTarget] = (),
        debits: Sequence[BucketDebit] = (),
    ) -> SettleOutcome:
        if actual_nanos < 0:
            raise ValueError("actual_nanos must be >= 0")
        if debits:
            _check_debits(debits)  # before anything changes: the step is all or nothing
        now_s = self._purge(now)
        outcome = self._settle(request_id, actual_nanos, now_s, targets)
        if debits and outcome is not SettleOutcome.DUPLICATE:
            self._debit(debits, now_s)
        return outcome

    def _settle(
        self, request_id: str, actual_nanos: int, now_s: float, targets: Sequence[SpendTarget]
    ) -> SettleOutcome:
        lease = self._leases.pop(request_id, None)
        if lease is not None:
            for slot, item in zip(lease.slots, lease.items, strict=True):
                slot.reserved -= item.amount_nanos
                if not slot.live:  # its period was pruned meanwhile: land where a lookup finds it
                    slot = self._slot(item.counter, item.period_key)
                slot.spent += actual_nanos
            self._remember(request_id, _SETTLED, (), now_s)
            return SettleOutcome.SETTLED
        finished = self._finished.get(request_id)
        if finished is not None:
            if finished.state == _SETTLED:
                return SettleOutcome.DUPLICATE
            self._add(finished.targets, actual_nanos)
            self._remember(request_id, _SETTLED, finished.targets, now_s)
            return SettleOutcome.LATE
        if not targets:
            return SettleOutcome.DROPPED
        unique = tuple(dict.fromkeys(SpendTarget(*t) for t in targets))
        self._add(unique, actual_nanos)
        self._remember(request_id, _SETTLED, unique, now_s)
        return SettleOutcome.UNKNOWN

    async def release(self, request_id: str, now: datetime | None = None) -> bool:
        now_s = self._purge(now) if now is not None else self._last_now
        lease = self._leases.pop(request_id, None)
        if lease is None:
            return False
        self._drop_holds(lease)
        self._remember(request_id, _RELEASED, lease.targets, now_s)
        return True

    async def read(self, counter: str, period_key: str, now: datetime | None = None) -> CounterState:
        if now is not None:
            self._purge(now)
        return self._state(counter, period_key)

    async def seed(self, counter: str, period_key: str, spent_nanos: int) -> None:
        if spent_nanos < 0:
            raise ValueError("spent_nanos must be >= 0")
        self._slot(counter, period_key).spent = spent_nanos

    async def add_spent(self, counter: str, period_keys: Sequence[str], nanos: int) -> None:
        if nanos < 0:
            raise ValueError("nanos must be >= 0")
        self._add((SpendTarget(counter, pk) for pk in dict.fromkeys(period_keys)), nanos)

    # -- buckets ----------------------------------------------------------------------------------

    async def take_tokens(
        self,
        alternatives: Sequence[Sequence[BucketCheck]],
        debits: Sequence[BucketDebit],
        now: datetime,
    ) -> TakeResult:
        return self._take(alternatives, debits, now, self._purge(now))

    def _take(
        self,
        alternatives: Sequence[Sequence[BucketCheck]],
        debits: Sequence[BucketDebit],
        now: datetime,
        now_s: float,
    ) -> TakeResult:
        """The atomic step of ``take_tokens``, after purging to ``now_s``."""
        specs: dict[str, BucketSpec] = {}
        levels: dict[str, float] = {}
        clauses = []
        for alt in alternatives:
            held = True
            for check in alt:
                spec = check.spec
                level = levels.get(spec.key)
                if level is None:
                    specs[spec.key] = spec
                    level = levels[spec.key] = self._level(spec, now_s)
                elif specs[spec.key] is not spec and specs[spec.key] != spec:
                    raise ValueError(f"bucket {spec.key!r} named with two different specs in one call")
                if level + _EPS < check.min_level:
                    held = False
            clauses.append(held)
        for debit in debits:
            spec = debit.spec
            seen = specs.get(spec.key)
            if seen is None:
                specs[spec.key] = spec
                levels[spec.key] = self._level(spec, now_s)
            elif seen is not spec and seen != spec:
                raise ValueError(f"bucket {spec.key!r} named with two different specs in one call")
        admitted = not alternatives or any(clauses)
        if admitted:
            for debit in debits:
                levels[debit.spec.key] -= debit.amount
            for debit in debits:
                self._store(specs[debit.spec.key], levels[debit.spec.key], now_s)
        return TakeResult(
            admitted, tuple(clauses), {k: BucketLevel(specs[k], v, now) for k, v in levels.items()}
        )

    async def debit_tokens(self, debits: Sequence[BucketDebit], now: datetime) -> tuple[BucketLevel, ...]:
        # Same result as ``take_tokens((), debits, now)`` without its bookkeeping for checks: debits apply
        # in order, so a bucket named twice is debited twice.
        _check_debits(debits)
        final = self._debit(debits, self._purge(now))
        # Levels as after the whole call (a bucket debited twice reports its final level both times).
        return tuple(BucketLevel(d.spec, final[d.spec.key], now) for d in debits)

    def _debit(self, debits: Sequence[BucketDebit], now_s: float) -> dict[str, float]:
        """Apply checked debits at ``now_s``; returns each bucket's final level."""
        final: dict[str, float] = {}
        for debit in debits:
            spec = debit.spec
            level = self._level(spec, now_s) - debit.amount
            self._store(spec, level, now_s)
            final[spec.key] = level
        return final

    async def peek_tokens(self, specs: Sequence[BucketSpec], now: datetime) -> tuple[BucketLevel, ...]:
        now_s = self._purge(now)
        return tuple(BucketLevel(s, self._level(s, now_s), now) for s in specs)

    # -- internals --------------------------------------------------------------------------------

    def _purge(self, now: datetime) -> float:
        """Pop everything due by ``now``; returns ``now`` as epoch seconds."""
        now_s = now.timestamp()
        self._last_now = max(self._last_now, now_s)
        while self._lease_queue and self._lease_queue[0][0] <= now_s:
            _, _, rid = heapq.heappop(self._lease_queue)
            lease = self._leases.get(rid)
            if lease is not None and lease.expires_at <= now_s:  # else extended: a later entry exists
                del self._leases[rid]
                self._drop_holds(lease)
                self._remember(rid, _EXPIRED, lease.targets, lease.expires_at)
        if now_s >= self._finished_due:
            finished = self._finished
            self._finished_due = math.inf
            while finished:
                rid = next(iter(finished))
                forget_at = finished[rid].forget_at
                if forget_at > now_s:
                    self._finished_due = forget_at  # nothing to look at before then
                    break
                del finished[rid]
        while self._period_queue and self._period_queue[0][0] <= now_s:
            _, key = heapq.heappop(self._period_queue)
            for slot in self._periods.pop(key, {}).values():
                slot.live = False
        queue = self._bucket_queue
        while queue and queue[0][0] <= now_s:
            due, key = heapq.heappop(queue)
            bucket = self._buckets.get(key)
            if bucket is None or bucket.queued_at != due:
                continue  # the bucket was dropped (and maybe made again) since: a stale entry
            if bucket.full_at <= now_s:
                del self._buckets[key]
            elif bucket.full_at < math.inf:  # debited since: look again when it can be full
                bucket.queued_at = bucket.full_at
                heapq.heappush(queue, (bucket.full_at, key))
            else:
                bucket.queued_at = math.inf
        return now_s

    def _state(self, counter: str, period_key: str) -> CounterState:
        group = self._periods.get(period_key)
        slot = None if group is None else group.get(counter)
        return _EMPTY if slot is None else CounterState(slot.spent, slot.reserved)

    def _slot(self, counter: str, period_key: str) -> _Slot:
        group = self._periods.get(period_key)
        if group is None:
            group = self._periods[period_key] = {}
            end = period_key_end(period_key)
            if end is not None:
                forget_at = end.timestamp() + self._period_retention_s
                heapq.heappush(self._period_queue, (forget_at, period_key))
        slot = group.get(counter)
        if slot is None:
            slot = group[counter] = _Slot()
        return slot

    def _add(self, targets: Iterable[SpendTarget], nanos: int) -> None:
        for counter, period_key in targets:
            self._slot(counter, period_key).spent += nanos

    @staticmethod
    def _drop_holds(lease: _Lease) -> None:
        for slot, item in zip(lease.slots, lease.items, strict=True):
            slot.reserved -= item.amount_nanos

    def _queue_lease(self, rid: str, expires_at: float) -> None:
        heapq.heappush(self._lease_queue, (expires_at, next(self._seq), rid))
        # Settled or released leases leave their entry behind until it falls due (up to the lease TTL):
        # at high request rates those pile up, so rebuild the queue from live leases once they dominate.
        if len(self._lease_queue) > 2 * len(self._leases) + 1024:
            self._lease_queue = [(lease.expires_at, next(self._seq), r) for r, lease in self._leases.items()]
            heapq.heapify(self._lease_queue)

    def _remember(self, rid: str, state: str, targets: tuple[SpendTarget, ...], at_s: float) -> None:
        # A settled id only has to be recognised as a duplicate; only a released or expired one needs
        # its counters (a late settle still adds there). Keeping no targets for settled ids keeps the
        # memory per remembered request to its id.
        kept = () if state is _SETTLED else targets
        finished = self._finished
        finished.pop(rid, None)  # (re)inserted at the end, so the map stays in forget-at order
        forget_at = at_s + self._finished_ttl_s
        finished[rid] = _Finished(state, kept, forget_at)
        if len(finished) > self._max_finished:
            finished.popitem(last=False)
            self._finished_due = -math.inf  # the head changed: look again on the next purge
        elif forget_at < self._finished_due:
            self._finished_due = forget_at

    def _level(self, spec: BucketSpec, now_s: float) -> float:
        bucket = self._buckets.get(spec.key)
        return spec.capacity if bucket is None else refill(bucket.level, bucket.updated_at, spec, now_s)

    def _store(self, spec: BucketSpec, level: float, now_s: float) -> None:
        """Keep a bucket only while it is below capacity: a missing bucket reads as full.

        A kept bucket has one entry in the expiry queue, at or before the time it is full again; a debit
        only moves that time later, so it changes the bucket in place and queues nothing, and the purge
        re-queues an entry that fell due early. (A changed spec can move the time earlier: the bucket is
        then dropped a little late, which costs memory only, since reads refill from its state.)
        """
        key = spec.key
        bucket = self._buckets.get(key)
        if level >= spec.capacity:
            if bucket is not None:
                del self._buckets[key]
            return
        updated_at = now_s if bucket is None else max(bucket.updated_at, now_s)
        rate = spec.refill_per_s
        full_at = updated_at + (spec.capacity - level) / rate if rate > 0 else math.inf
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(level, updated_at, full_at)
        else:
            bucket.level = level
            bucket.updated_at = updated_at
            bucket.full_at = full_at
        if bucket.queued_at == math.inf and full_at < math.inf:
            bucket.queued_at = full_at
            heapq.heappush(self._bucket_queue, (full_at, key))
