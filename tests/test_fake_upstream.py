"""Tests for the fake Anthropic upstream.

The gateway tests and the benchmark trust this fake to speak the Messages API
faithfully (SSE order, usage placement, error envelopes) and to record exactly what
it received; if the fake were wrong, every gateway test built on it would be too.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.fake_upstream import (
    DEFAULT_USAGE,
    RATELIMIT_HEADERS,
    FakeUpstream,
    merge_usage,
    parse_sse,
)

BODY = {"model": "claude-test-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture()
def up(upstream: FakeUpstream) -> FakeUpstream:
    upstream.clear()
    return upstream


@pytest.fixture(scope="module")
def client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=5) as c:
        yield c


def _stream(
    client: httpx.Client, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None
) -> tuple[httpx.Response, list[tuple[str, Any]], list[str]]:
    payload = {**(body or BODY), "stream": True}
    with client.stream("POST", "/v1/messages", json=payload, headers=headers or {}) as resp:
        raw = b"".join(resp.iter_raw())
    events, comments = parse_sse(raw)
    return resp, events, comments


def _names(events: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in events]


# --------------------------------------------------------------------------- non-streaming


def test_non_stream_message_shape_and_headers(up: FakeUpstream, client: httpx.Client) -> None:
    resp = client.post("/v1/messages?beta=true", json=BODY)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    msg = resp.json()
    assert msg["id"].startswith("msg_")
    assert msg["type"] == "message"
    assert msg["role"] == "assistant"
    assert msg["model"] == "claude-test-1"
    assert msg["content"] == [{"type": "text", "text": "part0 part1 part2 "}]
    assert msg["stop_reason"] == "end_turn"
    assert msg["usage"] == DEFAULT_USAGE
    assert resp.headers["request-id"].startswith("req_")
    for name, value in RATELIMIT_HEADERS.items():
        assert resp.headers[name] == value


def test_ids_are_unique_per_request(up: FakeUpstream, client: httpx.Client) -> None:
    responses = [client.post("/v1/messages", json=BODY) for _ in range(5)]
    assert len({r.json()["id"] for r in responses}) == 5
    assert len({r.headers["request-id"] for r in responses}) == 5


def test_usage_header_overrides_defaults(up: FakeUpstream, client: httpx.Client) -> None:
    usage = {
        "input_tokens": 7,
        "output_tokens": 9,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 30,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        "server_tool_use": {"web_search_requests": 2},
        "service_tier": "priority",
        "inference_geo": None,
    }
    resp = client.post("/v1/messages", json=BODY, headers={"x-fake-usage": json.dumps(usage)})
    assert resp.json()["usage"] == usage


@pytest.mark.parametrize(
    ("override", "expected_total", "expected_split"),
    [
        ({"cache_creation_input_tokens": 50}, 50, (50, 0)),
        ({"cache_creation": {"ephemeral_1h_input_tokens": 8}}, 8, (0, 8)),
        ({"input_tokens": 1}, 300, (200, 100)),
    ],
)
def test_merge_usage_keeps_split_consistent(
    override: dict[str, Any], expected_total: int, expected_split: tuple[int, int]
) -> None:
    usage = merge_usage(override)
    assert usage["cache_creation_input_tokens"] == expected_total
    split = usage["cache_creation"]
    assert (split["ephemeral_5m_input_tokens"], split["ephemeral_1h_input_tokens"]) == expected_split


def test_merge_usage_does_not_mutate_defaults() -> None:
    before = json.dumps(DEFAULT_USAGE, sort_keys=True)
    merge_usage({"cache_creation": {"ephemeral_5m_input_tokens": 1}, "server_tool_use": None})
    assert json.dumps(DEFAULT_USAGE, sort_keys=True) == before


def test_chunks_knob_sets_text(up: FakeUpstream, client: httpx.Client) -> None:
    # Header values are latin-1 on the wire, so non-ASCII text travels as JSON escapes.
    chunks = json.dumps(["Hé", "llo", " ✓"])
    resp = client.post("/v1/messages", json=BODY, headers={"x-fake-chunks": chunks})
    assert resp.json()["content"][0]["text"] == "Hé" + "llo" + " ✓"
    resp = client.post("/v1/messages", json=BODY, headers={"x-fake-chunks": "1"})
    assert resp.json()["content"][0]["text"] == "part0 "


def test_missing_model_and_non_string_model_are_tolerated(up: FakeUpstream, client: httpx.Client) -> None:
    assert client.post("/v1/messages", json={"messages": []}).json()["model"] == "claude-sonnet-4-5"
    assert client.post("/v1/messages", json={"model": 'a"b\\c'}).json()["model"] == 'a"b\\c'


# --------------------------------------------------------------------------- streaming


def test_stream_event_order_and_full_delta_usage(up: FakeUpstream, client: httpx.Client) -> None:
    usage = {"input_tokens": 5, "output_tokens": 77, "cache_read_input_tokens": 11}
    resp, events, comments = _stream(client, {"x-fake-usage": json.dumps(usage)})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["request-id"].startswith("req_")
    assert (
        resp.headers["anthropic-ratelimit-requests-limit"]
        == RATELIMIT_HEADERS["anthropic-ratelimit-requests-limit"]
    )
    assert _names(events) == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert comments == ["keepalive"]
    for name, data in events:
        assert data["type"] == name  # the event: line and the data type always agree

    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == "claude-test-1"
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {**merge_usage(usage), "output_tokens": 1}
    assert start["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 200,
        "ephemeral_1h_input_tokens": 100,
    }

    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "part0 part1 part2 "

    delta = events[7][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"] == {
        "input_tokens": 5,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 11,
        "output_tokens": 77,
        "server_tool_use": {"web_search_requests": 0},
    }
    assert "cache_creation" not in delta["usage"]


def test_stream_delta_usage_output_only(up: FakeUpstream, client: httpx.Client) -> None:
    _, events, _ = _stream(client, {"x-fake-delta-usage": "output", "x-fake-usage": '{"output_tokens": 3}'})
    (delta,) = [d for n, d in events if n == "message_delta"]
    assert delta["usage"] == {"output_tokens": 3}


def test_stream_chunks_list(up: FakeUpstream, client: httpx.Client) -> None:
    _, events, _ = _stream(client, {"x-fake-chunks": '["a", "b", "c", "d", "e"]'})
    assert [d["delta"]["text"] for n, d in events if n == "content_block_delta"] == list("abcde")


def test_stream_error_mid_stream(up: FakeUpstream, client: httpx.Client) -> None:
    resp, events, _ = _stream(client, {"x-fake-scenario": "stream_error"})
    assert resp.status_code == 200
    names = _names(events)
    assert names[0] == "message_start"
    assert names.count("content_block_delta") == 2
    assert names[-1] == "error"
    assert "message_stop" not in names and "message_delta" not in names
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_slow_stream_spaces_events_with_pings(up: FakeUpstream, client: httpx.Client) -> None:
    t0 = time.perf_counter()
    _, events, _ = _stream(client, {"x-fake-scenario": "slow", "x-fake-delay-ms": "20", "x-fake-chunks": "1"})
    elapsed = time.perf_counter() - t0
    names = _names(events)
    # 7 frames -> 6 gaps of 20 ms, each with a ping in the middle, plus the regular ping.
    assert elapsed >= 0.11
    assert names.count("ping") == 7
    assert [n for n in names if n != "ping"] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_hang_after_start_stalls_then_finishes(up: FakeUpstream, client: httpx.Client) -> None:
    payload = {**BODY, "stream": True}
    headers = {"x-fake-scenario": "hang_after_start", "x-fake-delay-ms": "150"}
    arrivals: list[tuple[float, bytes]] = []
    with client.stream("POST", "/v1/messages", json=payload, headers=headers) as resp:
        for chunk in resp.iter_raw():
            arrivals.append((time.perf_counter(), chunk))
    events, _ = parse_sse(b"".join(c for _, c in arrivals))
    assert _names(events)[-1] == "message_stop"
    assert len([n for n in _names(events) if n == "content_block_delta"]) == 3
    # The stall sits between the 2nd and 3rd delta: some chunk arrived >= ~150 ms after its predecessor.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) >= 0.13
    before_stall = b"".join(c for t, c in arrivals if t < arrivals[0][0] + 0.1)
    assert b"part1 " in before_stall and b"part2 " not in before_stall


def test_client_abort_is_seen_by_upstream(up: FakeUpstream, client: httpx.Client) -> None:
    payload = {**BODY, "stream": True}
    headers = {"x-fake-scenario": "hang_after_start", "x-fake-delay-ms": "10000"}
    # A private client, so leaving the stream early really closes the connection.
    with (
        httpx.Client(base_url=up.url, timeout=5) as own,
        own.stream("POST", "/v1/messages", json=payload, headers=headers) as resp,
    ):
        buf = b""
        for chunk in resp.iter_raw():
            buf += chunk
            if b"part1 " in buf:
                break
    deadline = time.monotonic() + 2
    while up.aborted_streams < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert up.aborted_streams == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("scenario", "status", "err_type", "message"),
    [
        ("error:529:overloaded_error", 529, "overloaded_error", "Overloaded"),
        ("error:400:invalid_request_error", 400, "invalid_request_error", None),
        ("error:401", 401, "authentication_error", None),
        ("error:429:rate_limit_error", 429, "rate_limit_error", None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_error_scenarios(
    up: FakeUpstream,
    client: httpx.Client,
    scenario: str,
    status: int,
    err_type: str,
    message: str | None,
    stream: bool,
) -> None:
    resp = client.post("/v1/messages", json={**BODY, "stream": stream}, headers={"x-fake-scenario": scenario})
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == err_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if message is not None:
        assert body["error"]["message"] == message
    assert body["request_id"] == resp.headers["request-id"]
    assert body["request_id"].startswith("req_")
    assert "anthropic-ratelimit-tokens-limit" in resp.headers
    assert "retry-after" not in resp.headers


def test_error_message_and_retry_after_knobs(up: FakeUpstream, client: httpx.Client) -> None:
    msg = "You have reached your specified API usage limits."
    resp = client.post(
        "/v1/messages",
        json=BODY,
        headers={"x-fake-scenario": "error:429", "x-fake-error-message": msg, "x-fake-retry-after": "7"},
    )
    assert resp.status_code == 429
    assert resp.json()["error"] == {"type": "rate_limit_error", "message": msg}
    assert resp.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    "headers",
    [
        {"x-fake-scenario": "nope"},
        {"x-fake-scenario": "error:abc"},
        {"x-fake-scenario": "error:200"},
        {"x-fake-usage": "{not json"},
        {"x-fake-usage": "[1]"},
        {"x-fake-chunks": "many"},
        {"x-fake-chunks": "[1, 2]"},
        {"x-fake-delta-usage": "sometimes"},
    ],
)
def test_bad_knobs_give_invalid_request(client: httpx.Client, headers: dict[str, str]) -> None:
    resp = client.post("/v1/messages", json=BODY, headers=headers)
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("fake upstream:")


def test_bad_delay_on_slow_stream(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/messages",
        json={**BODY, "stream": True},
        headers={"x-fake-scenario": "slow", "x-fake-delay-ms": "-1"},
    )
    assert resp.status_code == 400


def test_invalid_json_body(client: httpx.Client) -> None:
    resp = client.post("/v1/messages", content=b"{oops", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- other endpoints


def test_count_tokens(up: FakeUpstream, client: httpx.Client) -> None:
    resp = client.post("/v1/messages/count_tokens?beta=true", json=BODY)
    assert resp.status_code == 200
    assert resp.json() == {"input_tokens": DEFAULT_USAGE["input_tokens"]}
    assert resp.headers["request-id"].startswith("req_")
    resp = client.post(
        "/v1/messages/count_tokens", json=BODY, headers={"x-fake-usage": '{"input_tokens": 99}'}
    )
    assert resp.json() == {"input_tokens": 99}
    resp = client.post("/v1/messages/count_tokens", json=BODY, headers={"x-fake-scenario": "error:529"})
    assert resp.status_code == 529


def test_models(up: FakeUpstream, client: httpx.Client) -> None:
    resp = client.get("/v1/models?limit=1000")
    assert resp.status_code == 200
    body = resp.json()
    ids = [m["id"] for m in body["data"]]
    assert ids and all("claude" in i for i in ids)
    assert body["first_id"] == ids[0] and body["last_id"] == ids[-1] and body["has_more"] is False
    assert all(m["type"] == "model" and m["display_name"] for m in body["data"])


def test_unknown_path_and_wrong_method(client: httpx.Client) -> None:
    resp = client.head("/api/hello")
    assert resp.status_code == 404
    resp = client.get("/v1/messages")
    assert resp.status_code == 405
    assert resp.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- recording


def test_records_raw_bytes_headers_and_query(up: FakeUpstream, client: httpx.Client) -> None:
    raw = b'{ "model" :"claude-x",\n  "messages": [], "z": "\xc3\xa9\\u00e9" }'
    headers = [
        ("X-Api-Key", "sk-gw-123"),
        ("anthropic-beta", "a-2025,b-2026"),
        ("X-Dup", "one"),
        ("X-Dup", "two"),
        ("Content-Type", "application/json"),
    ]
    resp = client.post("/v1/messages?beta=true", content=raw, headers=headers)
    assert resp.status_code == 200
    (rec,) = up.requests
    assert rec.method == "POST"
    assert rec.path == "/v1/messages?beta=true"
    assert rec.body == raw
    sent = [(k, v) for k, v in rec.headers if k in {"X-Api-Key", "anthropic-beta", "X-Dup"}]
    assert sent == headers[:4]  # wire order, original case, duplicates kept
    assert rec.header("x-api-key") == "sk-gw-123"
    assert rec.header_values("x-dup") == ["one", "two"]
    assert rec.header("authorization") is None
    assert rec.json()["model"] == "claude-x"
    assert up.last_request is rec or up.last_request == rec


def test_records_every_endpoint_and_clear(up: FakeUpstream, client: httpx.Client) -> None:
    client.get("/v1/models?limit=1000")
    client.post("/v1/messages/count_tokens", json=BODY)
    client.head("/api/hello")
    assert [(r.method, r.path) for r in up.requests] == [
        ("GET", "/v1/models?limit=1000"),
        ("POST", "/v1/messages/count_tokens"),
        ("HEAD", "/api/hello"),
    ]
    assert up.request_count == 3
    up.clear()
    assert up.requests == [] and up.request_count == 0


def test_gzip_body_recorded_compressed(up: FakeUpstream, client: httpx.Client) -> None:
    raw = gzip.compress(json.dumps({**BODY, "model": "claude-gz"}).encode())
    resp = client.post(
        "/v1/messages", content=raw, headers={"content-encoding": "gzip", "content-type": "application/json"}
    )
    assert resp.json()["model"] == "claude-gz"
    assert up.last_request.body == raw


def test_record_off_and_bounded() -> None:
    with FakeUpstream(record=False) as quiet, httpx.Client(base_url=quiet.url) as c:
        c.post("/v1/messages", json=BODY)
        assert quiet.requests == [] and quiet.request_count == 1
    with FakeUpstream(max_records=3) as small, httpx.Client(base_url=small.url) as c:
        for i in range(5):
            c.post(f"/v1/messages?i={i}", json=BODY)
        assert [r.path for r in small.requests] == [f"/v1/messages?i={i}" for i in (2, 3, 4)]


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle() -> None:
    up = FakeUpstream()
    with pytest.raises(RuntimeError):
        _ = up.url
    up.start()
    try:
        assert up.url.startswith("http://127.0.0.1:") and up.port > 0
        with pytest.raises(RuntimeError):
            up.start()
    finally:
        up.stop()
    up.stop()  # idempotent
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(1)
        s.connect(("127.0.0.1", up.port))


def test_start_fails_loudly_when_port_taken(upstream: FakeUpstream) -> None:
    with pytest.raises(OSError):
        FakeUpstream(port=upstream.port).start()


# --------------------------------------------------------------------------- official SDK


def test_anthropic_sdk_accepts_json_and_sse(up: FakeUpstream) -> None:
    anthropic = pytest.importorskip("anthropic")
    usage = {
        "input_tokens": 13,
        "output_tokens": 31,
        "cache_read_input_tokens": 400,
        "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 6},
    }
    knobs = {"x-fake-usage": json.dumps(usage), "x-fake-chunks": '["Hello", ", ", "world"]'}
    sdk = anthropic.Anthropic(api_key="sk-ant-sdk-test", base_url=up.url, max_retries=0, timeout=5)
    kwargs: dict[str, Any] = {
        "model": "claude-sdk-model",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "hi"}],
        "extra_headers": knobs,
    }

    msg = sdk.messages.create(**kwargs)
    assert msg.model == "claude-sdk-model"
    assert msg.content[0].text == "Hello, world"
    assert msg.usage.input_tokens == 13 and msg.usage.output_tokens == 31
    assert msg.usage.cache_creation_input_tokens == 11
    assert msg.usage.cache_creation.ephemeral_1h_input_tokens == 6
    # SDK versions differ in which credential header they use; either must be recorded verbatim.
    sent = up.last_request
    assert "sk-ant-sdk-test" in f"{sent.header('x-api-key')} {sent.header('authorization')}"

    for mode in ("full", "output"):
        with sdk.messages.stream(**{**kwargs, "extra_headers": {**knobs, "x-fake-delta-usage": mode}}) as s:
            final = s.get_final_message()
        assert final.content[0].text == "Hello, world"
        assert final.stop_reason == "end_turn"
        u = final.usage
        assert (u.input_tokens, u.output_tokens, u.cache_read_input_tokens) == (13, 31, 400)
        assert u.cache_creation_input_tokens == 11
        assert u.cache_creation.ephemeral_5m_input_tokens == 5
        assert up.last_request.json()["stream"] is True

    with pytest.raises(anthropic.InternalServerError) as info:
        sdk.messages.create(**{**kwargs, "extra_headers": {"x-fake-scenario": "error:529:overloaded_error"}})
    assert info.value.status_code == 529

    with (
        pytest.raises(anthropic.APIStatusError),
        sdk.messages.stream(**{**kwargs, "extra_headers": {"x-fake-scenario": "stream_error"}}) as s,
    ):
        s.get_final_message()
