"""Gateway harness: the real gateway app on a real port (uvicorn in a thread) against the fake upstream.

Each test gets its own store (SQLite file or PostgreSQL schema via ``store_url``), its own spool file and
a controllable clock. Prices come from a price file written here, so expected costs in tests are computed
from numbers the test can see, never from the code under test.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ccledger.gateway.app import GatewayApp, create_app, refresh_limits
from ccledger.gateway.config import GatewaySettings
from ccledger.gateway.state import GatewayState
from ccledger.store.identity import IdentityStore

TEST_MODEL = "claude-test-1"
TEST_GEO_MODEL = "claude-test-geo"  # same prices, plus the 1.1x US-residency premium (geo_premium)
UPSTREAM_KEY = "sk-ant-upstream-secret-0123456789"
ADMIN_WRITE = "w" * 40
ADMIN_READ = "r" * 40

# USD per MTok for TEST_MODEL, written to the test price file below.
PRICES = {
    "input": Decimal("3"),
    "output": Decimal("15"),
    "cache_write_5m": Decimal("3.75"),
    "cache_write_1h": Decimal("6"),
    "cache_read": Decimal("0.30"),
}

PRICE_FILE = f"""
[[models]]
key = "{TEST_MODEL}"
ids = ["{TEST_MODEL}"]
[[models.prices]]
input = "3"
output = "15"
cache_write_5m = "3.75"
cache_write_1h = "6"
cache_read = "0.30"

[[models]]
key = "{TEST_GEO_MODEL}"
ids = ["{TEST_GEO_MODEL}"]
geo_premium = true
[[models.prices]]
input = "3"
output = "15"
cache_write_5m = "3.75"
cache_write_1h = "6"
cache_read = "0.30"
"""


def expected_nanos(
    input: int = 0, output: int = 0, w5: int = 0, w1: int = 0, read: int = 0, searches: int = 0
) -> int:
    """Cost in nano-dollars from the test's own prices (USD/MTok -> nanos per token = rate * 1000)."""
    usd = (
        input * PRICES["input"]
        + output * PRICES["output"]
        + w5 * PRICES["cache_write_5m"]
        + w1 * PRICES["cache_write_1h"]
        + read * PRICES["cache_read"]
    ) / Decimal(1_000_000) + searches * Decimal("0.01")
    nanos = usd * 1_000_000_000
    assert nanos == nanos.to_integral_value()
    return int(nanos)


# The fake upstream's default usage: 21 in, 57 out, 200 5m + 100 1h writes, 4000 reads.
DEFAULT_COST = expected_nanos(input=21, output=57, w5=200, w1=100, read=4000)


class Clock:
    """An injectable UTC clock that moves only when told (plus a tiny tick so timestamps differ)."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **kw: float) -> None:
        with self._lock:
            self.now = self.now + timedelta(**kw)

    def set(self, when: datetime) -> None:
        with self._lock:
            self.now = when


@dataclass
class RunningGateway:
    url: str
    app: GatewayApp
    server: uvicorn.Server
    thread: threading.Thread
    clock: Clock
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> GatewayState:
        return self.app.state

    @property
    def identity(self) -> IdentityStore:
        return self.state.identity

    def run(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the gateway's event loop (where its counters live)."""
        loop = self.state.extra["loop"]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def flush(self) -> None:
        self.run(self.state.writer.flush())

    def refresh(self) -> None:
        self.run(refresh_limits(self.state, force=True))

    def user(self, user_id: str, groups: tuple[str, ...] = (), expires: datetime | None = None) -> str:
        """Create a user (and groups) and return a fresh raw key for them."""
        ident = self.identity
        if ident.get_user(user_id) is None:
            ident.create_user(user_id, name=user_id.title(), email=f"{user_id}@example.com")
        for g in groups:
            ident.add_member(user_id, g)
        _, raw = ident.create_key(user_id, "test", expires, now=self.clock())
        self.keys[user_id] = raw
        return raw

    def rows(self, **where: str) -> list[dict[str, Any]]:
        self.flush()
        return list(self.state.ledger.iter_records(**where))

    def client(self, key: str, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-api-key": key}, timeout=30, verify=False, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.state.ledger.close()  # return PostgreSQL connections before the next test truncates


def start_gateway(settings: GatewaySettings, clock: Clock, **kw: Any) -> RunningGateway:
    app = create_app(settings, clock=clock, **kw)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="on", access_log=False, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    return RunningGateway(f"http://127.0.0.1:{port}", app, server, thread, clock)


@pytest.fixture
def price_file(tmp_path: Path) -> Path:
    p = tmp_path / "prices.toml"
    p.write_text(PRICE_FILE)
    return p


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 8, 7, 12, 0, tzinfo=UTC))


@pytest.fixture
def gateway_factory(
    store_url: str, fake_upstream: Any, tmp_path: Path, price_file: Path, clock: Clock
) -> Iterator[Callable[..., RunningGateway]]:
    """``gateway_factory(**settings)`` starts a gateway; all are stopped at teardown."""
    started: list[RunningGateway] = []
    fake_upstream.clear()

    def make(counters: Any = None, **overrides: Any) -> RunningGateway:
        values: dict[str, Any] = {
            "upstream_url": fake_upstream.url,
            "upstream_api_key": UPSTREAM_KEY,
            "store_url": store_url,
            "price_files": [price_file],
            "spool_path": tmp_path / "spool.jsonl",
            "writer_flush_ms": 10,
            "limits_refresh_seconds": 0.05,
            "admin_write_keys": [{"id": "ops", "key": ADMIN_WRITE}],
            "admin_read_keys": [{"id": "viewer", "key": ADMIN_READ}],
            "models": [
                {"id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5"},
                {"id": "claude-opus-4-6", "display_name": "Claude Opus 4.6"},
                {"id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5"},
            ],
        }
        values.update(overrides)
        gw = start_gateway(GatewaySettings(**values), clock, counters=counters)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()


def body(stream: bool = False, max_tokens: int = 1024, model: str = TEST_MODEL, text: str = "hi") -> bytes:
    """A Messages body with deliberately odd spacing and key order, to prove byte-exact forwarding."""
    s = "true" if stream else "false"
    return (
        f'{{ "model" :"{model}",  "max_tokens": {max_tokens}, "stream":{s},'
        f'"messages":[{{"role":"user","content":"{text}"}}], "metadata": {{"user_id": "x"}} }}'
    ).encode()
