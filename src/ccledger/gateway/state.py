"""Everything one gateway process holds, in one object: what routes, the admin API and tests share.

The admin routes (``gateway.admin``) receive this object as their ``ctx`` and use ``identity``,
``ledger``, ``guard``, ``settings``, ``clock`` and ``admin_keyring``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from ccledger.control.counters.base import Counters
from ccledger.control.spend import SpendGuard
from ccledger.core.pricing import PriceBook
from ccledger.gateway.auth import KeyCache
from ccledger.gateway.config import AdminKeyring, GatewaySettings
from ccledger.gateway.limits import Limits
from ccledger.gateway.metrics import Metrics
from ccledger.gateway.upstream import UpstreamPool
from ccledger.gateway.writer import BatchWriter
from ccledger.store.identity import IdentityStore
from ccledger.store.ledger import Ledger


def utc_now() -> datetime:
    return datetime.now(UTC)


class GatewayState(msgspec.Struct):
    settings: GatewaySettings
    book: PriceBook
    ledger: Ledger
    identity: IdentityStore
    counters: Counters
    limits: Limits
    keys: KeyCache
    writer: BatchWriter
    metrics: Metrics
    admin_keyring: AdminKeyring
    clock: Callable[[], datetime] = utc_now
    upstream_base: str = ""
    upstream_credential: tuple[str, str] | None = None
    upstream: UpstreamPool = None  # type: ignore[assignment]  # set at startup
    limits_version: int = -1
    # Called by the admin API after a mutation, so this worker enforces a new cap on the next request.
    on_limits_changed: Callable[[], Awaitable[Any]] | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def guard(self) -> SpendGuard:
        return self.limits.guard
