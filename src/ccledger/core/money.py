"""Money is Decimal in memory and integer nano-dollars at rest.

Why nano-dollars: every price in the book is a multiple of $0.01 per MTok, so one token costs a multiple of
1e-8 USD; batch (x0.5) and US residency (x1.1) push that to 5.5e-9 at worst, which 1e-9 still holds
exactly. Integers sum exactly and fast in both SQLite and PostgreSQL, where a decimal column would be a float
on SQLite. A user multiplier can need more digits; those are rounded half-even at 1e-9 (documented).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal("1e-9")
ZERO = Decimal(0)


def to_nanos(amount: Decimal) -> int:
    """Round an exact Decimal amount to whole nano-dollars (half-even, so errors do not drift one way)."""
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_nanos(nanos: int) -> Decimal:
    """Exact Decimal dollars for an integer number of nano-dollars."""
    return (Decimal(int(nanos)) / NANOS_PER_USD).quantize(_NANO)


def usd_display(amount: Decimal, places: int = 2) -> str:
    """Dollars for people: rounding happens here, at the edge, never in stored or summed values."""
    q = Decimal(1).scaleb(-places)
    return f"${amount.quantize(q, rounding=ROUND_HALF_EVEN):,}"


def cents_to_usd(cents: str | int | Decimal) -> Decimal:
    return Decimal(cents) / 100


def usd_to_cents_str(amount: Decimal) -> str:
    """Admin-API style cents string: whole cents unless the value carries a fraction of a cent."""
    cents = (amount * 100).normalize()
    if cents == cents.to_integral_value():
        return str(int(cents))
    return format(cents, "f")
