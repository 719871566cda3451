"""Spend caps through the HTTP gateway: the 429 shape, UTC resets, utilisation headers, concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from ccledger.control.counters import MemoryCounters
from ccledger.core.periods import utc_period_key
from tests.gateway.conftest import DEFAULT_COST, body


def _cap(gw, cents: str, period: str = "daily", scope: str = "user", scope_id: str | None = "alice"):
    gw.identity.upsert_spend_limit(scope, scope_id, period, cents, "test", gw.clock())
    gw.refresh()


def test_cap_blocks_with_billing_error_and_resets_at_utc_midnight(gw, fake_upstream):
    key = gw.user("alice")
    _cap(gw, "1")  # 1 cent = 10,000,000 nanos; each request costs DEFAULT_COST (3,468,000)
    codes = []
    with gw.client(key) as c:
        for _ in range(5):
            r = c.post("/v1/messages", content=body())
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 429, 429]  # expected mode: the 3rd crosses, then blocked
        upstream_calls = len(fake_upstream.requests)
        assert r.json()["error"] == {
            "type": "billing_error",
            "message": "spend limit reached (daily; resets 2026-08-08 00:00 UTC)",
        }
        assert r.json()["request_id"] == r.headers["request-id"]
        assert r.headers["x-should-retry"] == "false"
        assert r.headers["retry-after"] == str(12 * 3600)  # clock at 12:00 UTC
        assert upstream_calls == 3  # a blocked request never reaches the upstream
        # count_tokens is never blocked by a spend cap.
        assert c.post("/v1/messages/count_tokens", content=body()).status_code == 200
        gw.clock.set(datetime(2026, 8, 8, 0, 0, 1, tzinfo=UTC))
        assert c.post("/v1/messages", content=body()).status_code == 200
    assert sum(r["cost_nanos"] for r in gw.rows()) == 4 * DEFAULT_COST


def test_utilisation_headers_for_capped_developer(gw):
    key = gw.user("alice")
    other = gw.user("bob")
    _cap(gw, "10", "weekly")  # 100,000,000 nanos
    with gw.client(key) as c:
        c.post("/v1/messages", content=body())
        r = c.post("/v1/messages", content=body())
    util = float(r.headers["anthropic-ratelimit-unified-weekly-utilization"])
    assert util == pytest.approx(DEFAULT_COST / 100_000_000, abs=1e-4)
    assert r.headers["anthropic-ratelimit-unified-status"] == "allowed"
    monday = datetime(2026, 8, 10, tzinfo=UTC)
    assert r.headers["anthropic-ratelimit-unified-weekly-reset"] == str(int(monday.timestamp()))
    with gw.client(other) as c:
        r2 = c.post("/v1/messages", content=body())
    assert not any(h.startswith("anthropic-ratelimit-unified") for h in r2.headers)


def test_group_and_org_caps_resolve(gw):
    key = gw.user("alice", groups=("interns",))
    _cap(gw, "100", scope="organization", scope_id=None)
    _cap(gw, "0", scope="rbac_group", scope_id="interns")  # most restrictive group cap wins over org
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 429 and r.json()["error"]["type"] == "billing_error"
    _cap(gw, "100")  # a user override beats the group
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200


def test_counters_seeded_from_ledger_at_start(gateway_factory, clock):
    gw1 = gateway_factory()
    key = gw1.user("alice")
    with gw1.client(key) as c:
        for _ in range(3):
            c.post("/v1/messages", content=body())
    gw1.flush()
    gw1.identity.upsert_spend_limit("user", "alice", "daily", "1", "test", clock())
    gw1.stop()
    gw2 = gateway_factory()  # same store: starts from the 3 requests already recorded
    with gw2.client(key) as c:
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 429


def _blast(url: str, key: str, n: int) -> list[int]:
    async def go() -> list[int]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(
            base_url=url, headers={"x-api-key": key}, limits=limits, timeout=30
        ) as c:
            rs = await asyncio.gather(
                *(c.post("/v1/messages", content=body(max_tokens=100)) for _ in range(n))
            )
        return [r.status_code for r in rs]

    return asyncio.run(go())


@pytest.mark.parametrize("rate_limits", [None, {"rpm_per_user": 10_000, "tpm_per_user": 10_000_000}])
@pytest.mark.parametrize("estimator", ["strict", "expected"])
def test_100_concurrent_requests_against_a_cap(gateway_factory, estimator, rate_limits):
    # With rate limits on, each admission takes the request token and reserves spend in one call.
    gw = gateway_factory(estimator=estimator, **({"rate_limits": rate_limits} if rate_limits else {}))
    key = gw.user("alice")
    cap_nanos = 5 * 10_000_000  # 5 cents: ~14 requests' worth
    gw.identity.upsert_spend_limit("user", "alice", "daily", "5", "test", gw.clock())
    gw.refresh()
    codes = _blast(gw.url, key, 100)
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes
    spend = sum(r["cost_nanos"] for r in gw.rows(user_id="alice"))
    assert spend == codes.count(200) * DEFAULT_COST
    if estimator == "strict":
        assert spend <= cap_nanos
    else:
        assert spend <= cap_nanos + DEFAULT_COST
    now = gw.clock()
    for period in ("daily", "weekly", "monthly"):
        state = gw.run(gw.state.counters.read("user:alice", utc_period_key(period, now), now))
        assert state.reserved_nanos == 0  # no reservation left behind
        assert state.spent_nanos == spend


class _BrokenCounters(MemoryCounters):
    async def reserve(self, *a, **kw):  # type: ignore[override]
        raise ConnectionError("counter store down")


class _DownCounters(_BrokenCounters):
    """A shared counter store that is down: every call fails, the combined admission included."""

    async def admit(self, *a, **kw):  # type: ignore[override]
        raise ConnectionError("counter store down")

    async def take_tokens(self, *a, **kw):  # type: ignore[override]
        raise ConnectionError("counter store down")


@pytest.mark.parametrize("mode", ["open", "closed"])
@pytest.mark.parametrize(
    ("counters", "rate_limits"), [(_BrokenCounters, None), (_DownCounters, {"rpm_per_user": 100})],
    ids=["caps-only", "with-rate-limits"],
)  # fmt: skip
def test_fail_open_or_closed_when_counters_fail(gateway_factory, mode, counters, rate_limits):
    # With rate limits on, caps and limits are admitted in one counters call: its failure must still be
    # decided by the configured fail mode for the cap (the rate limiter itself fails open), never a 500.
    extra = {"rate_limits": rate_limits} if rate_limits else {}
    gw = gateway_factory(counters=counters(), fail_mode=mode, **extra)
    key = gw.user("alice")
    gw.identity.upsert_spend_limit("user", "alice", "daily", "100", "test", gw.clock())
    gw.refresh()
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body())
    if mode == "open":
        assert r.status_code == 200
        assert "anthropic-ratelimit-unified-status" not in r.headers
        assert not any(h.startswith("anthropic-ratelimit-") for h in r.headers)
    else:
        assert r.status_code == 429
        assert r.json()["error"] == {"type": "billing_error", "message": "spend limit unavailable"}
        assert "retry-after" not in r.headers


# -- the strict estimator is an upper bound for residency and web search too -----------------------------

# Reported usage at the edge of what the old bound assumed: every body byte (+1024 overhead) a 1h cache
# write, and all of max_tokens used. At the test prices that is $0.12 + $0.03 = 15 cents.
_PROMPT, _MAX_TOKENS = 20_000, 2000


def _sized_body(model: str, extra: str = "") -> bytes:
    """A Messages body of exactly ``_PROMPT - 1024`` bytes."""
    head = f'{{"model":"{model}","max_tokens":{_MAX_TOKENS},{extra}"messages":[{{"role":"user","content":"'
    tail = '"}]}'
    pad = _PROMPT - 1024 - len(head) - len(tail)
    out = (head + "x" * pad + tail).encode()
    assert len(out) == _PROMPT - 1024
    return out


def _usage(geo: str, searches: int) -> str:
    import json

    return json.dumps(
        {
            "input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": _MAX_TOKENS,
            "cache_creation_input_tokens": _PROMPT,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": _PROMPT},
            "server_tool_use": {"web_search_requests": searches}, "inference_geo": geo,
        }
    )  # fmt: skip


def _until_refused(gw, key: str, content: bytes, usage: str, limit: int = 12) -> list[int]:
    codes = []
    with gw.client(key) as c:
        for _ in range(limit):
            r = c.post("/v1/messages", content=content, headers={"x-fake-usage": usage})
            codes.append(r.status_code)
            if r.status_code != 200:
                break
    return codes


def test_strict_cap_holds_when_the_request_runs_in_the_us(gateway_factory):
    """No ``inference_geo`` in the body, but the upstream ran it in the US (a workspace default): x1.1.
    Each request costs 16.5 cents; a bound without the premium (15 cents) would admit a second one
    under a 32-cent cap (16.5 + 15 <= 32) and end at 33 cents."""
    from tests.gateway.conftest import TEST_GEO_MODEL, expected_nanos

    gw = gateway_factory(estimator="strict")
    key = gw.user("alice")
    _cap(gw, "32")
    codes = _until_refused(gw, key, _sized_body(TEST_GEO_MODEL), _usage("us", 0))
    rows = gw.rows(user_id="alice")
    spend = sum(r["cost_nanos"] for r in rows)
    assert codes == [200, 429]
    assert all(r["inference_geo"] == "us" for r in rows)
    assert spend == expected_nanos(w1=_PROMPT, output=_MAX_TOKENS) * 11 // 10 <= 32 * 10_000_000


def test_strict_cap_holds_with_web_searches(gateway_factory):
    """Two searches at $0.01 each, plus the tokens: 17 cents a request. A bound without the search fees
    (15 cents) would admit a sixth request under a 101-cent cap (5 x 17 + 15 <= 101) and end at 102."""
    from tests.gateway.conftest import TEST_MODEL, expected_nanos

    gw = gateway_factory(estimator="strict")
    key = gw.user("alice")
    _cap(gw, "101")
    tools = '"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":2}],'
    codes = _until_refused(gw, key, _sized_body(TEST_MODEL, tools), _usage("global", 2))
    rows = gw.rows(user_id="alice")
    spend = sum(r["cost_nanos"] for r in rows)
    assert codes[0] == 200 and codes[-1] == 429
    assert all(r["web_search_requests"] == 2 for r in rows)
    assert spend == len(rows) * expected_nanos(w1=_PROMPT, output=_MAX_TOKENS, searches=2)
    assert spend <= 101 * 10_000_000


def test_strict_refuses_a_web_search_it_cannot_bound(gateway_factory, fake_upstream):
    gw = gateway_factory(estimator="strict")
    key = gw.user("alice")
    tools = '"tools":[{"type":"web_search_20260209","name":"web_search"}],'
    fake_upstream.clear()
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=_sized_body("claude-test-1", tools))
    assert r.status_code == 400
    err = r.json()
    assert err["error"]["type"] == "invalid_request_error" and "max_uses" in err["error"]["message"]
    assert r.headers["request-id"] == err["request_id"]
    assert fake_upstream.requests == []  # never forwarded
    # The expected estimator guesses instead of refusing.
    gw2 = gateway_factory()
    key2 = gw2.user("bob")
    with gw2.client(key2) as c:
        assert c.post("/v1/messages", content=_sized_body("claude-test-1", tools)).status_code == 200
