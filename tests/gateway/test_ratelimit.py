"""Rate limits through the gateway: 429 rate_limit_error, the user's own headers, settings_kv."""

from __future__ import annotations

from tests.gateway.conftest import body


def test_rpm_limit_429_with_own_headers_and_org_pool(gateway_factory):
    # Own bucket 2 RPM; org pool 3 RPM: alice borrows one request from the pool, then is refused.
    gw = gateway_factory(rate_limits={"rpm_per_user": 2, "org_rpm": 3})
    key = gw.user("alice")
    other = gw.user("bob")
    gw.refresh()
    with gw.client(key) as c:
        ok = c.post("/v1/messages", content=body())
        assert ok.status_code == 200
        assert ok.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert ok.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert c.post("/v1/messages", content=body()).status_code == 200
        assert c.post("/v1/messages", content=body()).status_code == 200  # borrowed from the pool
        r = c.post("/v1/messages", content=body())
        # count_tokens is never limited.
        assert c.post("/v1/messages/count_tokens", content=body()).status_code == 200
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["request_id"] == r.headers["request-id"]
    assert r.headers["retry-after"] == "20"  # the pool refills one request in 60 s / 3
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert "x-should-retry" not in r.headers
    with gw.client(other) as c:  # bob's own share is guaranteed even with the pool empty
        assert c.post("/v1/messages", content=body()).status_code == 200
    gw.clock.advance(seconds=60)  # the borrowed request left alice's own bucket one request in debt
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200


def test_tpm_debited_from_reported_tokens(gateway_factory):
    # Each request reports 21 + 300 + 57 = 378 TPM tokens (cache reads excluded).
    gw = gateway_factory(rate_limits={"tpm_per_user": 500})
    key = gw.user("alice")
    gw.refresh()  # the org pool (users x 500) is sized from the user count: include alice now
    with gw.client(key) as c:
        first = c.post("/v1/messages", content=body())
        assert first.status_code == 200
        second = c.post("/v1/messages", content=body())  # bucket 122 >= 0: admitted, goes into debt
        assert second.status_code == 200
        third = c.post("/v1/messages", content=body())
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert third.headers["anthropic-ratelimit-tokens-limit"] == "500"
    assert int(third.headers["retry-after"]) >= 1


def test_limits_plan_apply_setting_is_picked_up(gw):
    key = gw.user("alice")
    gw.identity.set_setting("rate_limits", {"rpm_per_user": 1, "tpm_per_user": 100000}, gw.clock())
    gw.refresh()
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 429 and r.headers["anthropic-ratelimit-requests-limit"] == "1"


def test_short_queueing_instead_of_429(gateway_factory):
    import threading

    # 6,000 TPM refills 100 tokens/s; 16 requests of 378 tokens leave the bucket 48 tokens in debt.
    gw = gateway_factory(rate_limits={"tpm_per_user": 6000, "queue_ms": 3000})
    key = gw.user("alice")
    gw.refresh()
    with gw.client(key) as c:
        for _ in range(16):
            assert c.post("/v1/messages", content=body()).status_code == 200
        # The next request waits (~0.5 s of refill) instead of failing; move the test clock meanwhile.
        timer = threading.Timer(0.2, lambda: gw.clock.advance(seconds=1))
        timer.start()
        r = c.post("/v1/messages", content=body())
        timer.join()
    assert r.status_code == 200


def test_queueing_gives_up_when_the_wait_is_too_long(gateway_factory):
    gw = gateway_factory(rate_limits={"rpm_per_user": 1, "queue_ms": 200})
    key = gw.user("alice")
    gw.refresh()
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200
        r = c.post("/v1/messages", content=body())  # next token in 60 s: no point queueing
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
