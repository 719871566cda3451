"""A real SQLite ledger per test, and a helper to write priced records into it.

Expected values in these tests are computed from token counts and the prices written below, never from
the code under test. Prices are USD per MTok; one MTok at $1 is 1,000 nano-dollars per token.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from datetime import datetime

import pytest
from rich.console import Console

from ccledger.bootstrap import App, bootstrap
from ccledger.core.records import TokenCounts, UsageRecord
from ccledger.settings import Settings
from ccledger.store.ledger import price_record

SONNET = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5-20251001"
UNKNOWN = "claude-nonexistent-9"

# nano-dollars per token: (input, output, cache write 5m, cache write 1h, cache read)
SONNET_NANOS = (3_000, 15_000, 3_750, 6_000, 300)  # $3 / $15 / $3.75 / $6 / $0.30 per MTok
HAIKU_NANOS = (1_000, 5_000, 1_250, 2_000, 100)  # $1 / $5 / $1.25 / $2 / $0.10 per MTok
FALLBACK_NANOS = (5_000, 25_000, 6_250, 10_000, 500)  # default fallback $5 / $25 per MTok


def expected_nanos(rates: tuple[int, ...], inp=0, out=0, cw5=0, cw1=0, cr=0) -> int:
    return inp * rates[0] + out * rates[1] + cw5 * rates[2] + cw1 * rates[3] + cr * rates[4]


def nine(nanos: int) -> str:
    """Independent rendering of nano-dollars as the 9-decimal string the JSON promises."""
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


@pytest.fixture
def app(tmp_path, monkeypatch) -> App:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    settings = Settings(db=f"sqlite:///{tmp_path}/l.db", price_files=[], extra_paths=[])
    a = bootstrap(settings)
    yield a
    a.ledger.close()


_ids = itertools.count()


@pytest.fixture
def add(app: App) -> Callable[..., UsageRecord]:
    """``add("2026-11-23T23:30:00Z", inp=.., out=..)`` writes one priced record and returns it."""

    def _add(
        ts: str,
        *,
        model: str = SONNET,
        inp: int = 0,
        out: int = 0,
        cw5: int = 0,
        cw1: int = 0,
        cr: int = 0,
        web: int = 0,
        session: str = "sess-a",
        project: str = "/home/alice/web-app",
        duration_ms: int | None = None,
    ) -> UsageRecord:
        rec = UsageRecord(
            ts=datetime.fromisoformat(ts.replace("Z", "+00:00")),
            source="transcript",
            dedupe_key=f"k{next(_ids)}",
            model=model,
            tokens=TokenCounts(inp, out, cw5, cw1, cr),
            web_search_requests=web,
            session_id=session,
            project=project,
            duration_ms=duration_ms,
        )
        app.ledger.write([price_record(app.book, rec)])
        return rec

    return _add


@pytest.fixture
def console() -> Console:
    return Console(file=io.StringIO(), width=220, color_system=None, force_terminal=False)


def console_text(c: Console) -> str:
    return c.file.getvalue()  # type: ignore[attr-defined]
