"""The price book as JSON: what ``PriceBook.load`` reads at run time, written from ``prices.toml``.

Why: ``prices.toml`` is the book people read and edit (comments, sources), but importing tomllib and
parsing it cost ~7 ms of every report, a twentieth of a warm ``ccledger daily``; msgspec decodes the same
data from JSON in well under a millisecond. ``tests/core/test_price_snapshot.py`` fails when the snapshot
differs from the TOML; regenerate it with ``python -m ccledger.core.price_snapshot``. (A development
tool: nothing at run time writes here.)
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from ccledger.core.pricing import SNAPSHOT

SOURCE = Path(__file__).with_name("prices.toml")


def book_data() -> dict[str, Any]:
    """``prices.toml`` parsed: only strings, numbers, booleans, tables and arrays (no TOML dates), so
    JSON holds it exactly."""
    return tomllib.loads(SOURCE.read_text(encoding="utf-8"))


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SNAPSHOT.write_text(render(book_data()), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
