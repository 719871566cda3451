"""Counter backends behind one async interface: spend counters with reservations, and token buckets.

``base`` holds the protocol and the pure decision rules every backend must apply identically;
``memory`` is the in-process backend (one event loop, tests and single-process gateways).
"""

from ccledger.control.counters.base import (
    AdmitMode,
    AdmitResult,
    BucketCheck,
    BucketDebit,
    BucketLevel,
    BucketSpec,
    Counters,
    CounterState,
    DuplicateRequestId,
    ReserveItem,
    ReserveResult,
    SettleOutcome,
    SpendTarget,
    TakeResult,
    item_blocks,
    period_key_end,
)
from ccledger.control.counters.memory import MemoryCounters

__all__ = [
    "AdmitMode",
    "AdmitResult",
    "BucketCheck",
    "BucketDebit",
    "BucketLevel",
    "BucketSpec",
    "CounterState",
    "Counters",
    "DuplicateRequestId",
    "MemoryCounters",
    "ReserveItem",
    "ReserveResult",
    "SettleOutcome",
    "SpendTarget",
    "TakeResult",
    "item_blocks",
    "period_key_end",
]
