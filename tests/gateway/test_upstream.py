"""The upstream client: incremental relay, unreachable upstream, connection reuse."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ccledger.core.periods import utc_period_key
from tests.gateway.conftest import TEST_MODEL, body, expected_nanos


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


class RawUpstream:
    """A raw socket server on 127.0.0.1 that answers each request with scripted bytes, then closes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, rest = data.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_upstream() -> Iterator[type[RawUpstream]]:
    servers: list[RawUpstream] = []

    def make(reply: bytes) -> RawUpstream:
        servers.append(RawUpstream(reply))
        return servers[-1]

    yield make  # type: ignore[misc]
    for s in servers:
        s.close()


MESSAGE = {
    "id": "msg_close_1", "type": "message", "role": "assistant", "model": TEST_MODEL,
    "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 10, "output_tokens": 5},
}  # fmt: skip


def _spend_state(gw):
    now = gw.clock()
    return gw.run(gw.state.counters.read("user:alice", utc_period_key("daily", now), now))


def test_close_delimited_upstream_response_is_relayed_and_metered(gateway_factory, raw_upstream):
    payload = json.dumps(MESSAGE).encode()
    up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_up1\r\n"
        b"connection: close\r\n\r\n" + payload
    )
    gw = gateway_factory(upstream_url=up.url)
    key = gw.user("alice")
    _cap(gw, "100")
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 200 and r.content == payload
    (row,) = gw.rows()
    assert row["cost_nanos"] == expected_nanos(input=10, output=5)
    state = _spend_state(gw)
    assert state.reserved_nanos == 0 and state.spent_nanos == row["cost_nanos"]


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{"id":"msg_',
        b'HTTP/1.1 529 Overloaded\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{"type"',
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"id"',
    ],
    ids=["short-json", "short-error", "unfinished-chunks"],
)
def test_upstream_dying_mid_body_is_a_502_envelope(gateway_factory, raw_upstream, reply):
    """Not a bare 500 from the ASGI server: Anthropic's envelope with a request-id, the reservation
    released, nothing metered."""
    up = raw_upstream(reply)
    gw = gateway_factory(upstream_url=up.url)
    key = gw.user("alice")
    _cap(gw, "100")
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body())
        counted = c.post("/v1/messages/count_tokens", content=body())
    assert r.status_code == 502, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    assert r.headers["request-id"] == err["request_id"]
    assert counted.status_code == 502 and counted.json()["error"]["type"] == "api_error"
    assert gw.rows() == []
    state = _spend_state(gw)
    assert state.reserved_nanos == 0 and state.spent_nanos == 0


def _cap(gw, cents: str) -> None:
    gw.identity.upsert_spend_limit("user", "alice", "daily", cents, "test", gw.clock())
    gw.refresh()
