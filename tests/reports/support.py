"""Constants and independent arithmetic for report tests.

Expected values are computed from token counts and the prices written here, never from the code under
test. Prices are USD per MTok; one MTok at $1 is 1,000 nano-dollars per token.
"""

from __future__ import annotations

from rich.console import Console

SONNET = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5-20251001"
UNKNOWN = "claude-nonexistent-9"
# Reports name models by the price book's key, so every id form of one model is one row.
SONNET_KEY = "claude-sonnet-4-5"
HAIKU_KEY = "claude-haiku-4-5"

# nano-dollars per token: (input, output, cache write 5m, cache write 1h, cache read)
SONNET_NANOS = (3_000, 15_000, 3_750, 6_000, 300)  # $3 / $15 / $3.75 / $6 / $0.30 per MTok
HAIKU_NANOS = (1_000, 5_000, 1_250, 2_000, 100)  # $1 / $5 / $1.25 / $2 / $0.10 per MTok
FALLBACK_NANOS = (5_000, 25_000, 6_250, 10_000, 500)  # default fallback $5 / $25 per MTok


def expected_nanos(rates: tuple[int, ...], inp=0, out=0, cw5=0, cw1=0, cr=0) -> int:
    return inp * rates[0] + out * rates[1] + cw5 * rates[2] + cw1 * rates[3] + cr * rates[4]


def nine(nanos: int) -> str:
    """Independent rendering of nano-dollars as the 9-decimal string the JSON promises."""
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


def console_text(c: Console) -> str:
    return c.file.getvalue()  # type: ignore[attr-defined]
