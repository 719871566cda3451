"""The spend-limit admin API mounted in a bare Starlette app, driven over ASGI with a hand-built ctx."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from ccledger.core.records import TokenCounts, UsageRecord
from ccledger.gateway.admin import admin_routes
from ccledger.gateway.config import AdminKey, AdminKeyring
from ccledger.store.identity import IdentityStore
from ccledger.store.ledger import Ledger, PricedRow

NOW = datetime(2026, 8, 7, 12, 0, tzinfo=UTC)
WRITE_KEY = "w" * 40
READ_KEY = "r" * 40
BASE = "/v1/organizations/spend_limits"
W = {"x-api-key": WRITE_KEY}
R = {"x-api-key": READ_KEY}


@dataclass
class Ctx:
    identity: IdentityStore
    ledger: Ledger
    guard: Any = None
    settings: Any = None
    admin_keyring: AdminKeyring = field(
        default_factory=lambda: AdminKeyring(
            [AdminKey(id="viewer", key=READ_KEY)], [AdminKey(id="ops", key=WRITE_KEY)]
        )
    )
    changes: int = 0

    def clock(self) -> datetime:
        return NOW

    def on_limits_changed(self) -> None:
        self.changes += 1


@pytest.fixture
def ctx(tmp_path) -> Ctx:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'admin.db'}")
    yield Ctx(IdentityStore(ledger.engine), ledger)
    ledger.close()


@pytest.fixture
def client(ctx: Ctx) -> TestClient:
    return TestClient(Starlette(routes=admin_routes(ctx)))


def _assert_error(resp, status: int, err_type: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == err_type
    assert body["error"]["message"]
    assert resp.headers["request-id"] == body["request_id"]
    return body


def _post(client: TestClient, scope: dict[str, Any], amount: str | None, period: str = "daily", **extra):
    return client.post(BASE, headers=W, json={"scope": scope, "amount": amount, "period": period, **extra})


def _spend(ctx: Ctx, user_id: str, nanos: int, ts: datetime = NOW, n: int = 0) -> None:
    rec = UsageRecord(
        ts=ts, source="gateway", dedupe_key=f"{user_id}-{nanos}-{n}-{ts.timestamp()}", model="claude-x",
        tokens=TokenCounts(input=1), user_id=user_id, cost_nanos=nanos,
    )  # fmt: skip
    ctx.ledger.write([PricedRow(rec, None, False)])


# -- auth and envelopes ------------------------------------------------------------------------------


def test_auth(client: TestClient, ctx: Ctx) -> None:
    _assert_error(client.get(BASE), 401, "authentication_error")
    _assert_error(client.get(BASE, headers={"x-api-key": "x" * 40}), 401, "authentication_error")
    ok = client.get(BASE, headers=R)
    assert ok.status_code == 200 and ok.headers["request-id"]
    _assert_error(_post_with(client, R), 403, "permission_error")
    created = _post(client, {"type": "user", "user_id": "alice"}, "100")
    assert created.status_code == 200 and created.headers["request-id"]
    _assert_error(client.delete(f"{BASE}/{created.json()['id']}", headers=R), 403, "permission_error")
    assert client.get(f"{BASE}/{created.json()['id']}", headers=R).status_code == 200
    # A bearer token is not an admin credential.
    _assert_error(
        client.get(BASE, headers={"authorization": f"Bearer {WRITE_KEY}"}), 401, "authentication_error"
    )
    rows, _ = ctx.identity.audit_page(10, action_prefix="spend_limit.")
    assert rows[0]["actor"] == "admin-key:ops"


def _post_with(client: TestClient, headers: dict[str, str]):
    body = {"scope": {"type": "organization"}, "amount": "100", "period": "daily"}
    return client.post(BASE, headers=headers, json=body)


def test_admin_keys_compared_in_constant_time(client: TestClient, monkeypatch) -> None:
    from ccledger.gateway import config

    calls = []
    real = config.hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(config.hmac, "compare_digest", spy)
    assert client.get(BASE, headers=W).status_code == 200  # the first entry matches...
    assert len(calls) == 2  # ...and every configured key is still checked: no early exit


def test_admin_auth_uses_the_keyring_digests_only(ctx: Ctx, monkeypatch) -> None:
    """The raw keys are hashed once, when the keyring is built; a request hashes only what it presents."""
    from ccledger.gateway import config

    client = TestClient(Starlette(routes=admin_routes(ctx)))
    hashed: list[bytes] = []
    real = config.hashlib.sha256

    def spy(data=b""):  # type: ignore[no-untyped-def]
        hashed.append(data)
        return real(data)

    monkeypatch.setattr(config.hashlib, "sha256", spy)
    assert client.get(BASE, headers=R).status_code == 200
    assert hashed == [READ_KEY.encode()]
    assert all(READ_KEY not in repr(v) and WRITE_KEY not in repr(v) for v in vars(ctx.admin_keyring).values())


def test_disabled_without_admin_keys(ctx: Ctx) -> None:
    ctx.admin_keyring = AdminKeyring([], [])
    client = TestClient(Starlette(routes=admin_routes(ctx)))
    _assert_error(client.get(BASE, headers=W), 404, "not_found_error")


def test_keys_as_objects(ctx: Ctx) -> None:
    ctx.admin_keyring = AdminKeyring([], [SimpleNamespace(id="obj", key=WRITE_KEY)])
    client = TestClient(Starlette(routes=admin_routes(ctx)))
    assert _post(client, {"type": "organization"}, "5").status_code == 200
    assert ctx.identity.audit_page(1)[0][0]["actor"] == "admin-key:obj"


def test_wrong_method_gets_envelope(client: TestClient) -> None:
    _assert_error(client.put(BASE, headers=W, json={}), 405, "invalid_request_error")


# -- create / get / delete ---------------------------------------------------------------------------


def test_create_is_an_upsert(client: TestClient, ctx: Ctx) -> None:
    first = _post(client, {"type": "user", "user_id": "alice"}, "2500")
    assert first.status_code == 200
    obj = first.json()
    assert obj["type"] == "spend_limit" and obj["id"].startswith("spl_")
    assert obj["scope"] == {"type": "user", "user_id": "alice"}
    assert obj["amount"] == "2500" and obj["currency"] == "USD" and obj["period"] == "daily"
    assert obj["created_at"] == "2026-08-07T12:00:00.000Z" == obj["updated_at"]
    assert datetime.fromisoformat(obj["created_at"]) == NOW
    assert ctx.changes == 1

    again = _post(client, {"type": "user", "user_id": "alice"}, None, currency="USD").json()
    assert again["id"] == obj["id"] and again["amount"] is None
    assert ctx.changes == 2
    listed = client.get(BASE, headers=R).json()["data"]
    assert len(listed) == 1

    assert _post(client, {"type": "organization"}, "0").json()["scope"] == {"type": "organization"}
    group = _post(client, {"type": "rbac_group", "rbac_group_id": "eng"}, "100", "weekly").json()
    assert group["scope"] == {"type": "rbac_group", "rbac_group_id": "eng"}
    key = _post(client, {"type": "api_key", "api_key_id": "key_1"}, "7", "monthly").json()
    assert key["scope"] == {"type": "api_key", "api_key_id": "key_1"}

    got = client.get(f"{BASE}/{group['id']}", headers=R)
    assert got.status_code == 200 and got.json() == group and got.headers["request-id"]


@pytest.mark.parametrize(
    "body",
    [
        {"scope": {"type": "user", "user_id": "a"}, "amount": "1", "period": "daily", "currency": "EUR"},
        {"scope": {"type": "user", "user_id": "a"}, "period": "daily"},
        {"scope": {"type": "user", "user_id": "a"}, "amount": 100, "period": "daily"},
        {"scope": {"type": "user", "user_id": "a"}, "amount": "1.5", "period": "daily"},
        {"scope": {"type": "user", "user_id": "a"}, "amount": "-1", "period": "daily"},
        {"scope": {"type": "user", "user_id": "a"}, "amount": "1", "period": "hourly"},
        {"scope": {"type": "user"}, "amount": "1", "period": "daily"},
        {"scope": {"type": "team", "team_id": "x"}, "amount": "1", "period": "daily"},
        {"scope": "user:a", "amount": "1", "period": "daily"},
        [1, 2],
    ],
)
def test_create_validation(client: TestClient, ctx: Ctx, body: Any) -> None:
    _assert_error(client.post(BASE, headers=W, json=body), 400, "invalid_request_error")
    assert ctx.identity.list_spend_limit_rows() == []
    assert ctx.changes == 0


def test_currency_message(client: TestClient) -> None:
    body = _assert_error(
        _post(client, {"type": "organization"}, "1", currency="EUR"), 400, "invalid_request_error"
    )
    assert "USD" in body["error"]["message"]


def test_invalid_json(client: TestClient) -> None:
    resp = client.post(BASE, headers={**W, "content-type": "application/json"}, content=b"{nope")
    _assert_error(resp, 400, "invalid_request_error")


def test_get_and_delete(client: TestClient, ctx: Ctx) -> None:
    _assert_error(client.get(f"{BASE}/spl_missing", headers=R), 404, "not_found_error")
    _assert_error(client.delete(f"{BASE}/spl_missing", headers=W), 404, "not_found_error")
    made = _post(client, {"type": "user", "user_id": "alice"}, "100").json()
    before = ctx.changes
    resp = client.delete(f"{BASE}/{made['id']}", headers=W)
    assert resp.status_code == 200 and resp.headers["request-id"]
    assert resp.json() == {"type": "spend_limit_deleted", "id": made["id"]}
    assert ctx.changes == before + 1
    _assert_error(client.get(f"{BASE}/{made['id']}", headers=R), 404, "not_found_error")


# -- list --------------------------------------------------------------------------------------------


def test_list_pagination(client: TestClient) -> None:
    ids = [
        _post(client, {"type": "user", "user_id": f"u{i}"} if i % 2 else {"type": "rbac_group", "rbac_group_id": f"g{i}"},
              str(i)).json()["id"]
        for i in range(5)
    ]  # fmt: skip
    page = client.get(BASE, headers=R, params={"limit": 2}).json()
    assert [o["id"] for o in page["data"]] == ids[:2]
    assert page["has_more"] is True and page["first_id"] == ids[0] and page["last_id"] == ids[1]
    page = client.get(BASE, headers=R, params={"limit": 2, "after_id": page["last_id"]}).json()
    assert [o["id"] for o in page["data"]] == ids[2:4] and page["has_more"]
    page = client.get(BASE, headers=R, params={"limit": 2, "after_id": page["last_id"]}).json()
    assert [o["id"] for o in page["data"]] == ids[4:] and page["has_more"] is False
    back = client.get(BASE, headers=R, params={"limit": 2, "before_id": ids[4]}).json()
    assert [o["id"] for o in back["data"]] == ids[2:4] and back["has_more"] is True
    back = client.get(BASE, headers=R, params={"limit": 2, "before_id": ids[2]}).json()
    assert [o["id"] for o in back["data"]] == ids[:2] and back["has_more"] is False

    users = client.get(BASE, headers=R, params={"scope_type": "user"}).json()
    assert [o["id"] for o in users["data"]] == [ids[1], ids[3]]

    empty = client.get(BASE, headers=R, params={"scope_type": "api_key"}).json()
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}

    for params in (
        {"after_id": ids[0], "before_id": ids[1]},
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"scope_type": "team"},
        {"after_id": "spl_unknown"},
    ):
        _assert_error(client.get(BASE, headers=R, params=params), 400, "invalid_request_error")


# -- audit -------------------------------------------------------------------------------------------


def test_audit_trail(client: TestClient, ctx: Ctx) -> None:
    made = _post(client, {"type": "user", "user_id": "alice"}, "100").json()
    _post(client, {"type": "user", "user_id": "alice"}, "200")
    client.delete(f"{BASE}/{made['id']}", headers=W)
    ctx.identity.create_user("bob")  # not a spend-limit change: not in this trail

    resp = client.get(f"{BASE}/audit", headers=R)
    assert resp.status_code == 200 and resp.headers["request-id"]
    page = resp.json()
    assert [e["action"] for e in page["data"]] == ["delete", "update", "create"]
    assert page["has_more"] is False
    delete, update, create = page["data"]
    assert all(e["actor"] == "admin-key:ops" and e["spend_limit_id"] == made["id"] for e in page["data"])
    assert create["before"] is None and create["after"]["amount"] == "100"
    assert create["after"]["type"] == "spend_limit"
    assert update["before"]["amount"] == "100" and update["after"]["amount"] == "200"
    assert delete["before"]["amount"] == "200" and delete["after"] is None
    assert isinstance(delete["id"], int) and delete["id"] > update["id"] > create["id"]
    assert create["created_at"] == "2026-08-07T12:00:00.000Z"

    first = client.get(f"{BASE}/audit", headers=R, params={"limit": 1}).json()
    assert [e["action"] for e in first["data"]] == ["delete"] and first["has_more"] is True
    rest = client.get(f"{BASE}/audit", headers=R, params={"after_id": first["data"][0]["id"]}).json()
    assert [e["action"] for e in rest["data"]] == ["update", "create"] and rest["has_more"] is False
    _assert_error(
        client.get(f"{BASE}/audit", headers=R, params={"after_id": "x"}), 400, "invalid_request_error"
    )


# -- effective ---------------------------------------------------------------------------------------


def _setup_team(client: TestClient, ctx: Ctx) -> dict[str, str]:
    ids = {}
    ctx.identity.create_user("alice", "Alice", "alice@example.com")
    ctx.identity.create_user("bob", "Bob", "bob@example.com")
    ctx.identity.create_user("carol", "Carol", "carol@example.com")
    ctx.identity.create_user("dave")
    for g in ("eng", "ops"):
        ctx.identity.add_member("alice", g)
    ctx.identity.add_member("carol", "eng")
    ids["org"] = _post(client, {"type": "organization"}, "1000").json()["id"]
    ids["eng"] = _post(client, {"type": "rbac_group", "rbac_group_id": "eng"}, "500").json()["id"]
    ids["ops"] = _post(client, {"type": "rbac_group", "rbac_group_id": "ops"}, "800").json()["id"]
    ids["carol"] = _post(client, {"type": "user", "user_id": "carol"}, None).json()["id"]
    ids["org_monthly"] = _post(client, {"type": "organization"}, "20000", "monthly").json()["id"]
    return ids


def test_effective_resolution_order(client: TestClient, ctx: Ctx) -> None:
    ids = _setup_team(client, ctx)
    resp = client.get(f"{BASE}/effective", headers=R, params={"period[]": "daily", "limit": 100})
    assert resp.status_code == 200 and resp.headers["request-id"]
    rows = {r["scope"]["user_id"]: r for r in resp.json()["data"]}
    assert set(rows) == {"alice", "bob", "carol", "dave"}
    # alice: in eng (500) and ops (800): the most restrictive group wins over the org default.
    assert rows["alice"]["amount"] == "500" and rows["alice"]["source"] == {"type": "rbac_group"}
    assert rows["alice"]["spend_limit_id"] == ids["eng"]
    assert rows["alice"]["groups"] == ["eng", "ops"]
    # bob: no groups, no override: org default.
    assert rows["bob"]["amount"] == "1000" and rows["bob"]["source"] == {"type": "organization"}
    # carol: a user override of null (unlimited) beats her group's cap.
    assert rows["carol"]["amount"] is None and rows["carol"]["source"] == {"type": "user"}
    assert rows["carol"]["spend_limit_id"] == ids["carol"]
    a = rows["alice"]
    assert a["actor"] == {
        "type": "user_actor", "user_id": "alice", "name": "Alice", "email_address": "alice@example.com",
        "deleted": False,
    }  # fmt: skip
    assert a["currency"] == "USD" and a["period"] == "daily" and a["period_to_date_spend"] == "0"
    assert rows["dave"]["actor"]["name"] is None and rows["dave"]["actor"]["email_address"] is None

    weekly = client.get(f"{BASE}/effective", headers=R, params={"period[]": "weekly", "limit": 100}).json()
    for row in weekly["data"]:  # nothing at any level: unlimited
        assert row["amount"] is None and row["source"] is None and row["spend_limit_id"] is None

    everything = client.get(f"{BASE}/effective", headers=R, params={"limit": 100}).json()["data"]
    assert len(everything) == 4 * 3
    assert [(r["scope"]["user_id"], r["period"]) for r in everything][:3] == [
        ("alice", "daily"), ("alice", "weekly"), ("alice", "monthly"),
    ]  # fmt: skip


def test_effective_user_override_beats_groups(client: TestClient, ctx: Ctx) -> None:
    _setup_team(client, ctx)
    _post(client, {"type": "user", "user_id": "alice"}, "4000")
    rows = client.get(
        f"{BASE}/effective", headers=R, params={"user_ids[]": "alice", "period[]": "daily"}
    ).json()["data"]
    assert len(rows) == 1 and rows[0]["amount"] == "4000" and rows[0]["source"] == {"type": "user"}


def test_effective_spend_from_ledger(client: TestClient, ctx: Ctx) -> None:
    _setup_team(client, ctx)
    _spend(ctx, "alice", 1_234_567_891)  # $1.234567891 -> 123.4567891 cents
    _spend(ctx, "bob", 5_000_000_000)  # $5
    _spend(ctx, "bob", 1_000_000_000, ts=datetime(2026, 8, 6, 23, 0, tzinfo=UTC))  # yesterday
    _spend(ctx, "eve", 10_000_000)  # not a known user, but has recorded spend
    data = client.get(f"{BASE}/effective", headers=R, params={"period[]": "daily", "limit": 100}).json()[
        "data"
    ]
    rows = {r["scope"]["user_id"]: r for r in data}
    assert rows["alice"]["period_to_date_spend"] == "123.4567891"
    assert rows["bob"]["period_to_date_spend"] == "500"
    assert rows["eve"]["period_to_date_spend"] == "1" and rows["eve"]["amount"] == "1000"
    monthly = client.get(
        f"{BASE}/effective", headers=R, params={"period[]": "monthly", "user_ids[]": ["bob", "zed"]}
    ).json()["data"]
    assert [(r["scope"]["user_id"], r["period_to_date_spend"]) for r in monthly] == [
        ("bob", "600"),
        ("zed", "0"),
    ]

    ranked = client.get(
        f"{BASE}/effective", headers=R, params={"period[]": "daily", "sort": "spend_desc", "limit": 2}
    ).json()
    assert [r["scope"]["user_id"] for r in ranked["data"]] == ["bob", "alice"]
    assert ranked["has_more"] and ranked["next_page"]
    more = client.get(
        f"{BASE}/effective",
        headers=R,
        params={"period[]": "daily", "sort": "spend_desc", "limit": 2, "page": ranked["next_page"]},
    ).json()
    assert [r["scope"]["user_id"] for r in more["data"]] == ["eve", "carol"]


def test_effective_filters_and_pages(client: TestClient, ctx: Ctx) -> None:
    _setup_team(client, ctx)
    found = client.get(
        f"{BASE}/effective", headers=R, params={"q": "EXAMPLE.com", "period[]": "daily"}
    ).json()
    assert [r["scope"]["user_id"] for r in found["data"]] == ["alice", "bob", "carol"]
    found = client.get(f"{BASE}/effective", headers=R, params={"q": "car", "period[]": "daily"}).json()
    assert [r["scope"]["user_id"] for r in found["data"]] == ["carol"]

    seen = []
    params: dict[str, Any] = {"limit": 5}
    while True:
        page = client.get(f"{BASE}/effective", headers=R, params=params).json()
        seen.extend((r["scope"]["user_id"], r["period"]) for r in page["data"])
        if not page["next_page"]:
            assert page["has_more"] is False
            break
        params = {"limit": 5, "page": page["next_page"]}
    assert len(seen) == 12 and len(set(seen)) == 12

    first = client.get(f"{BASE}/effective", headers=R, params={"limit": 1, "period[]": "daily"}).json()
    bad = client.get(
        f"{BASE}/effective", headers=R, params={"limit": 1, "period[]": "weekly", "page": first["next_page"]}
    )
    body = _assert_error(bad, 400, "invalid_request_error")
    assert "cursor does not match" in body["error"]["message"]
    for params in (
        {"sort": "spend_desc"},
        {"sort": "name"},
        {"period[]": "hourly"},
        {"page": "garbage!"},
        {"limit": 0},
    ):
        _assert_error(client.get(f"{BASE}/effective", headers=R, params=params), 400, "invalid_request_error")


def test_effective_prefers_guard_counters(client: TestClient, ctx: Ctx) -> None:
    _setup_team(client, ctx)
    _spend(ctx, "bob", 5_000_000_000)

    class FakeGuard:
        async def usage(self, principal, now):  # type: ignore[no-untyped-def]
            assert now == NOW
            return (SimpleNamespace(scope="user", period="daily", spent_nanos=7_000_000_000),)

    ctx.guard = FakeGuard()
    rows = client.get(
        f"{BASE}/effective", headers=R, params={"user_ids[]": "bob", "period[]": ["daily", "monthly"]}
    ).json()["data"]
    spend = {r["period"]: r["period_to_date_spend"] for r in rows}
    assert spend == {"daily": "700", "monthly": "500"}  # monthly is uncapped in the guard: from the ledger

    class BrokenGuard:
        async def usage(self, principal, now):  # type: ignore[no-untyped-def]
            raise TimeoutError

    ctx.guard = BrokenGuard()
    rows = client.get(
        f"{BASE}/effective", headers=R, params={"user_ids[]": "bob", "period[]": "daily"}
    ).json()["data"]
    assert rows[0]["period_to_date_spend"] == "500"
