"""Forwarding: bytes, headers, credentials, streaming relay, errors, probes, models, metrics."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.gateway.conftest import TEST_MODEL, UPSTREAM_KEY, body
from tests.support.fake_upstream import RATELIMIT_HEADERS, parse_sse


@pytest.fixture
def store_url(tmp_path, _sqlite_template):
    """Forwarding does not depend on the store engine: these run on SQLite only (keys, ledger and
    limits run on both engines in the other modules)."""
    import shutil

    target = tmp_path / "ledger.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


CC_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "context-management-2025-06-27,some-future-beta-2027-01-01",
    "x-claude-code-session-id": "sess-1",
    "x-claude-code-agent-id": "agent-7",
    "x-claude-code-parent-agent-id": "agent-1",
    "user-agent": "claude-cli/2.1.239 (external, cli)",
    "x-custom-tenant": "team-a",
    "content-type": "application/json",
}


def test_body_and_headers_reach_upstream_unchanged(gw, fake_upstream):
    key = gw.user("alice")
    raw = body(text="keep   my  spacing \\u00e9")
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post("/v1/messages?beta=true", content=raw, headers={**CC_HEADERS, "x-api-key": key})
    assert r.status_code == 200, r.text
    rec = fake_upstream.last_request
    assert rec.body == raw  # byte-exact: never re-serialised
    assert rec.path == "/v1/messages?beta=true"  # query string forwarded as is
    for name, value in CC_HEADERS.items():
        assert rec.header(name) == value, name
    # Credential swap: the upstream sees the operator's key, never the developer's.
    assert rec.header("x-api-key") == UPSTREAM_KEY
    assert rec.header("authorization") is None
    assert all(key not in v for _, v in rec.headers)


def test_bearer_and_both_headers_accepted(gw, fake_upstream):
    key = gw.user("alice")
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r1 = c.post("/v1/messages", content=body(), headers={"authorization": f"Bearer {key}"})
        r2 = c.post(
            "/v1/messages", content=body(), headers={"authorization": f"Bearer {key}", "x-api-key": key}
        )
    assert r1.status_code == 200 and r2.status_code == 200
    for rec in fake_upstream.requests:
        assert rec.header("x-api-key") == UPSTREAM_KEY
        assert rec.header("authorization") is None


def test_empty_api_key_header_does_not_hide_a_valid_bearer(gw, fake_upstream):
    """Some clients always send ``x-api-key``, empty when they authenticate by bearer token."""
    from ccledger.gateway.headers import client_key

    assert client_key([(b"x-api-key", b""), (b"authorization", b"Bearer ccl_abc")]) == "ccl_abc"
    assert client_key([(b"authorization", b"Bearer ccl_abc"), (b"x-api-key", b"  ")]) == "ccl_abc"
    assert client_key([(b"x-api-key", b"ccl_k"), (b"authorization", b"Bearer ccl_b")]) == "ccl_k"
    assert client_key([(b"x-api-key", b""), (b"authorization", b"Bearer ")]) is None
    assert client_key([(b"authorization", b"Basic eA==")]) is None
    key = gw.user("alice")
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post(
            "/v1/messages", content=body(), headers={"x-api-key": "", "authorization": f"Bearer {key}"}
        )
    assert r.status_code == 200, r.text
    assert fake_upstream.last_request.header("x-api-key") == UPSTREAM_KEY


def test_upstream_ratelimit_headers_stripped_request_id_kept(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 200
    for name in RATELIMIT_HEADERS:
        assert name not in r.headers
    assert r.headers["request-id"].startswith("req_")


def test_sdk_non_stream_and_stream(gw):
    key = gw.user("alice")
    client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    msg = client.messages.create(
        model=TEST_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text == "part0 part1 part2 "
    assert msg.usage.input_tokens == 21
    with client.messages.stream(
        model=TEST_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "part0 part1 part2 "
    assert final.usage.output_tokens == 57
    assert len(gw.rows()) == 2


def test_stream_relayed_byte_for_byte_with_pings_and_comments(gw, fake_upstream):
    key = gw.user("alice")
    direct = httpx.post(f"{fake_upstream.url}/v1/messages", content=body(stream=True), timeout=10)
    with gw.client(key) as c, c.stream("POST", "/v1/messages", content=body(stream=True)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = b"".join(r.iter_raw())
    events, comments = parse_sse(got)
    assert [e for e, _ in events].count("ping") >= 1
    assert "keepalive" in comments
    # Same bytes as direct, except the per-request message id.
    ev_direct, _ = parse_sse(direct.content)
    assert len(events) == len(ev_direct)
    assert len(got) == len(direct.content)


def test_upstream_error_passthrough_costs_nothing(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        r = c.post(
            "/v1/messages", content=body(),
            headers={"x-fake-scenario": "error:529:overloaded_error", "x-fake-retry-after": "7"},
        )  # fmt: skip
    assert r.status_code == 529
    data = r.json()
    assert data["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert data["request_id"] == r.headers["request-id"]  # the upstream's own body, unmodified
    assert r.headers["retry-after"] == "7"
    assert gw.rows() == []


def test_sdk_sees_upstream_error_type(gw):
    key = gw.user("alice")
    client = anthropic.Anthropic(
        base_url=gw.url, api_key=key, max_retries=0,
        default_headers={"x-fake-scenario": "error:400:invalid_request_error"},
    )  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=TEST_MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "ccl_not-a-real-key"}, {"authorization": "Basic abc"}],
    ids=["missing", "unknown", "basic"],
)
def test_auth_errors_use_anthropic_envelope(gw, fake_upstream, headers):
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post("/v1/messages", content=body(), headers=headers)
    assert r.status_code == 401
    data = r.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == "authentication_error"
    assert data["request_id"] == r.headers["request-id"]
    assert fake_upstream.requests == []


def test_count_tokens_forwarded_not_metered(gw, fake_upstream):
    key = gw.user("alice")
    raw = b'{"model":"claude-test-1","messages":[{"role":"user","content":"hi"}]}'
    with gw.client(key) as c:
        r = c.post("/v1/messages/count_tokens?beta=true", content=raw, headers={"anthropic-beta": "b1"})
    assert r.status_code == 200
    assert r.json() == {"input_tokens": 21}
    rec = fake_upstream.last_request
    assert rec.body == raw and rec.header("anthropic-beta") == "b1"
    assert rec.header("x-api-key") == UPSTREAM_KEY
    assert gw.rows() == []


def test_models_list_shape_and_limit(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        r = c.get("/v1/models", params={"limit": 1000})
        page = c.get("/v1/models", params={"limit": 2}).json()
        bad = c.get("/v1/models", params={"limit": 0})
    assert r.status_code == 200
    data = r.json()
    assert [m["id"] for m in data["data"]] == ["claude-sonnet-4-5", "claude-opus-4-6", "claude-haiku-4-5"]
    m = data["data"][0]
    assert m["type"] == "model" and m["display_name"] == "Claude Sonnet 4.5"
    assert {"created_at", "max_input_tokens", "max_tokens"} <= set(m)
    assert data["first_id"] == "claude-sonnet-4-5" and data["last_id"] == "claude-haiku-4-5"
    assert data["has_more"] is False
    assert len(page["data"]) == 2 and page["has_more"] is True
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    with httpx.Client(base_url=gw.url) as c:
        assert c.get("/v1/models").status_code == 401


def test_probes_and_unknown_paths(gw):
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.head("/api/hello").status_code == 200
        h = c.get("/healthz")
        assert h.status_code == 200 and h.json()["status"] == "ok"
        nf = c.get("/v1/nope")
        assert nf.status_code == 404 and nf.json()["error"]["type"] == "not_found_error"
        assert "request-id" in nf.headers
        wrong = c.get("/v1/messages")
        assert wrong.status_code == 405


def test_metrics_exposition(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        c.post("/v1/messages", content=body())
        c.post("/v1/messages", content=body(), headers={"x-fake-scenario": "error:500"})
        text = httpx.get(f"{gw.url}/metrics").text
    assert 'ccledger_gateway_requests_total{route="messages",status="200"} 1.0' in text
    assert 'ccledger_gateway_requests_total{route="messages",status="500"} 1.0' in text
    assert 'ccledger_gateway_tokens_total{kind="cache_read",model="claude-test-1"} 4000.0' in text
    assert "ccledger_gateway_cost_usd_total" in text
    assert "ccledger_gateway_request_seconds_bucket" in text
    assert "ccledger_gateway_limit_rejections" in text
