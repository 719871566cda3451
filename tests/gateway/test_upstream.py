"""The upstream client: incremental relay, unreachable upstream, connection reuse."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from ccledger.core.periods import utc_period_key
from tests.gateway.conftest import body


@pytest.fixture
def store_url(tmp_path, _sqlite_template):
    import shutil

    target = tmp_path / "ledger.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


def test_slow_stream_is_relayed_as_it_arrives(gw):
    key = gw.user("alice")
    headers = {"x-api-key": key, "x-fake-scenario": "slow", "x-fake-delay-ms": "150", "x-fake-chunks": "3"}
    arrivals = []
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        start = time.monotonic()
        with c.stream("POST", "/v1/messages", content=body(stream=True), headers=headers) as r:
            for chunk in r.iter_raw():
                arrivals.append((time.monotonic() - start, chunk))
    total = arrivals[-1][0]
    first_delta = next(t for t, ch in arrivals if b"content_block_delta" in ch)
    # Nothing is buffered: the first delta reaches the client long before the stream ends.
    assert first_delta < total * 0.7
    assert len(arrivals) > 5
    assert len(gw.rows()) == 1


def test_unreachable_upstream_is_502_and_releases(gateway_factory):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    gw = gateway_factory(upstream_url=f"http://127.0.0.1:{dead}")
    key = gw.user("alice")
    gw.identity.upsert_spend_limit("user", "alice", "daily", "100", "test", gw.clock())
    gw.refresh()
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "api_error"
    assert r.json()["request_id"] == r.headers["request-id"]
    now = gw.clock()
    state = gw.run(gw.state.counters.read("user:alice", utc_period_key("daily", now), now))
    assert state.reserved_nanos == 0 and state.spent_nanos == 0


def test_keep_alive_connections_are_reused(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        for _ in range(5):
            assert c.post("/v1/messages", content=body()).status_code == 200
            assert c.post("/v1/messages", content=body(stream=True)).status_code == 200
    pool = gw.state.upstream
    assert len(pool._all) == 1  # sequential requests share one upstream connection
