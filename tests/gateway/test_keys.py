"""Virtual keys against the store (both engines): revocation and expiry take effect at once."""

from __future__ import annotations

from tests.gateway.conftest import body


def test_revoked_key_is_refused_immediately(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200
        key_id = gw.identity.list_keys("alice")[0]["id"]
        gw.identity.revoke_key(key_id, gw.clock())
        gw.refresh()  # what the version poll does within limits_refresh_seconds
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 401


def test_revoke_seen_by_version_poll(gw):
    import time

    key = gw.user("alice")
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200
        gw.identity.revoke_key(gw.identity.list_keys("alice")[0]["id"], gw.clock())
        deadline = time.monotonic() + 5
        while c.post("/v1/messages", content=body()).status_code != 401:
            assert time.monotonic() < deadline, "revocation not picked up"
            time.sleep(0.05)


def test_expired_key_refused(gw):
    from datetime import timedelta

    key = gw.user("alice", expires=gw.clock() + timedelta(hours=1))
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200
        gw.clock.advance(hours=2)
        r = c.post("/v1/messages", content=body())
    assert r.status_code == 401


def test_key_expiry_comes_from_the_principal_not_a_second_query(gw, monkeypatch):
    """``authenticate`` already returns the key's expiry; a cache miss must not list the user's keys."""
    from datetime import timedelta

    key = gw.user("alice", expires=gw.clock() + timedelta(hours=1))

    def no_list_keys(*a, **kw):  # type: ignore[no-untyped-def]
        raise AssertionError("list_keys queried on the request path")

    monkeypatch.setattr(gw.identity, "list_keys", no_list_keys)
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body()).status_code == 200
        gw.clock.advance(hours=2)
        assert c.post("/v1/messages", content=body()).status_code == 401  # the cached entry expires too
