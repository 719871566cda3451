"""A real ledger per test — SQLite, and PostgreSQL when it is reachable (the shared ``store_url``
fixture) — and a helper to write priced records into it."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from rich.console import Console

from ccledger.bootstrap import App, bootstrap
from ccledger.core.records import TokenCounts, UsageRecord
from ccledger.settings import Settings
from ccledger.store.ledger import price_record
from tests.reports.support import SONNET


@pytest.fixture
def app(store_url: str, tmp_path, monkeypatch) -> Iterator[App]:
    """An App on an empty, migrated store (``store_url`` from tests/conftest.py: SQLite and PostgreSQL)."""
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    a = bootstrap(Settings(db=store_url, price_files=[], extra_paths=[]))
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
