"""Spend-cap values shared by the store (which persists them) and control (which enforces them)."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from ccledger.core.periods import PERIODS

SCOPE_TYPES = ("organization", "rbac_group", "user", "api_key")


class SpendLimit(msgspec.Struct, frozen=True):
    """One cap: ``amount_cents`` None is unlimited, 0 blocks everything. ``scope_id`` is the user's OIDC
    sub, the IdP group name or the key id; None for ``organization``."""

    id: str
    scope_type: str
    scope_id: str | None
    period: str
    amount_cents: Decimal | None

    def __post_init__(self) -> None:
        if self.scope_type not in SCOPE_TYPES:
            raise ValueError(f"{self.id}: scope_type {self.scope_type!r} not in {SCOPE_TYPES}")
        if self.period not in PERIODS:
            raise ValueError(f"{self.id}: period {self.period!r} not in {PERIODS}")
        if (self.scope_type == "organization") != (self.scope_id is None):
            raise ValueError(f"{self.id}: organization caps have no scope_id, every other scope needs one")
        if self.amount_cents is not None and self.amount_cents < 0:
            raise ValueError(f"{self.id}: negative amount")
