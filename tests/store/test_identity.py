"""IdentityStore on SQLite and PostgreSQL: keys, principals, spend-limit upserts, audit, pagination."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from ccledger.store import identity as identity_mod
from ccledger.store.identity import Conflict, IdentityStore, Invalid, NotFound, Principal
from ccledger.store.schema import admin_audit, api_keys, metadata, spend_limits

NOW = datetime(2026, 8, 7, 12, 0, tzinfo=UTC)


def _all_text(store: IdentityStore) -> str:
    """Every value of every table, as one string: to prove a secret is stored nowhere."""
    parts = []
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


# -- users and groups --------------------------------------------------------------------------------


def test_users_and_groups(identity: IdentityStore) -> None:
    identity.create_user("alice", "Alice", "alice@example.com", now=NOW)
    identity.create_user("bob", now=NOW)
    with pytest.raises(Conflict):
        identity.create_user("alice")
    with pytest.raises(Invalid):
        identity.create_user("")

    identity.create_group("eng", "Engineering", now=NOW)
    with pytest.raises(Conflict):
        identity.create_group("eng")
    assert identity.add_member("alice", "eng") is True
    assert identity.add_member("alice", "eng") is False  # idempotent
    assert identity.add_member("alice", "ops") is True  # group created on the fly
    with pytest.raises(NotFound):
        identity.add_member("nobody", "eng")

    users = {u["id"]: u for u in identity.list_users()}
    assert users["alice"]["group_ids"] == ["eng", "ops"]
    assert users["alice"]["email"] == "alice@example.com"
    assert users["bob"]["group_ids"] == []
    groups = {g["id"]: g for g in identity.list_groups()}
    assert groups["eng"]["member_ids"] == ["alice"]
    assert groups["eng"]["name"] == "Engineering"
    assert "ops" in groups

    assert identity.remove_member("alice", "ops") is True
    assert identity.remove_member("alice", "ops") is False
    assert identity.get_user("alice")["group_ids"] == ["eng"]
    assert identity.get_user("nobody") is None


# -- keys --------------------------------------------------------------------------------------------


def test_key_is_stored_hashed_only(identity: IdentityStore) -> None:
    identity.create_user("alice", now=NOW)
    key_id, raw = identity.create_key("alice", "laptop", now=NOW)
    assert raw.startswith("ccl_") and len(raw) >= 44
    random_part = raw[4:]
    assert len(random_part) >= 40

    dump = _all_text(identity)
    assert raw not in dump
    assert random_part not in dump
    with identity.engine.connect() as conn:
        stored = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
    assert stored.key_hash == identity_mod.hash_key(raw)
    assert len(stored.key_hash) == 64
    assert len(stored.hint) <= 32 and stored.hint.startswith("ccl_")

    listed = identity.list_keys("alice")
    assert [k["id"] for k in listed] == [key_id]
    assert "key_hash" not in listed[0]
    assert listed[0]["name"] == "laptop"
    assert identity.list_keys("bob") == []

    with pytest.raises(NotFound):
        identity.create_key("nobody")


def test_authenticate(identity: IdentityStore) -> None:
    identity.create_user("alice", "Alice", "a@example.com", now=NOW)
    identity.add_member("alice", "eng")
    identity.add_member("alice", "data")
    key_id, raw = identity.create_key("alice", now=NOW)

    p = identity.authenticate(raw, NOW)
    assert p == Principal("alice", ("data", "eng"), key_id, "Alice", "a@example.com")
    assert identity.authenticate(raw + "x", NOW) is None
    assert identity.authenticate("ccl_" + "A" * 43, NOW) is None
    assert identity.authenticate("sk-ant-api03-whatever", NOW) is None
    assert identity.authenticate("", NOW) is None
    assert identity.authenticate("ccl_" + "x" * 10_000, NOW) is None


def test_authenticate_uses_constant_time_compare(identity: IdentityStore, monkeypatch) -> None:
    identity.create_user("alice", now=NOW)
    _, raw = identity.create_key("alice", now=NOW)
    calls: list[tuple[bytes, bytes]] = []
    real = identity_mod.hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(identity_mod.hmac, "compare_digest", spy)
    assert identity.authenticate(raw, NOW) is not None
    assert calls and calls[0][0] == calls[0][1] == identity_mod.hash_key(raw).encode()


def test_revoked_expired_and_disabled_are_rejected(identity: IdentityStore) -> None:
    identity.create_user("alice", now=NOW)
    identity.create_user("bob", now=NOW)
    k1, raw1 = identity.create_key("alice", now=NOW)
    _, raw2 = identity.create_key("alice", expires=NOW + timedelta(days=1), now=NOW)
    _, raw3 = identity.create_key("bob", now=NOW)

    assert identity.authenticate(raw1, NOW) is not None
    assert identity.revoke_key(k1, NOW) is True
    assert identity.revoke_key(k1, NOW) is False
    assert identity.authenticate(raw1, NOW) is None
    with pytest.raises(NotFound):
        identity.revoke_key("key_missing", NOW)

    p2 = identity.authenticate(raw2, NOW + timedelta(hours=23))
    assert p2 is not None and p2.key_expires_ms == int((NOW + timedelta(days=1)).timestamp() * 1000)
    assert identity.authenticate(raw2, NOW + timedelta(days=1)) is None

    assert identity.authenticate(raw3, NOW) is not None
    identity.disable_user("bob", now=NOW)
    assert identity.authenticate(raw3, NOW) is None
    identity.enable_user("bob", now=NOW)
    assert identity.authenticate(raw3, NOW) is not None
    with pytest.raises(NotFound):
        identity.disable_user("nobody")

    revoked = {k["id"]: k for k in identity.list_keys()}[k1]
    assert revoked["revoked_ms"] is not None


# -- spend limits ------------------------------------------------------------------------------------


def test_upsert_replaces_same_scope_and_period(identity: IdentityStore) -> None:
    a = identity.upsert_spend_limit("user", "alice", "daily", "2500", "admin-key:ops", NOW)
    assert a["id"].startswith("spl_")
    assert a["scope_type"] == "user" and a["scope_id"] == "alice"
    assert a["amount_cents"] == "2500" and a["currency"] == "USD"
    later = NOW + timedelta(minutes=5)
    b = identity.upsert_spend_limit("user", "alice", "daily", "3000", "admin-key:ops", later)
    assert b["id"] == a["id"] and b["seq"] == a["seq"]
    assert b["amount_cents"] == "3000"
    assert b["created_ms"] == a["created_ms"] and b["updated_ms"] > a["updated_ms"]
    assert identity.get_spend_limit(a["id"]) == b

    c = identity.upsert_spend_limit("user", "alice", "monthly", None, "admin-key:ops", NOW)
    assert c["id"] != a["id"] and c["amount_cents"] is None
    org = identity.upsert_spend_limit("organization", None, "daily", "0", "admin-key:ops", NOW)
    assert org["scope_id"] is None and org["amount_cents"] == "0"
    with identity.engine.connect() as conn:
        assert conn.execute(select(spend_limits)).all().__len__() == 3


def test_upsert_audits_before_and_after(identity: IdentityStore) -> None:
    a = identity.upsert_spend_limit("rbac_group", "eng", "weekly", "10000", "admin-key:a", NOW)
    identity.upsert_spend_limit("rbac_group", "eng", "weekly", "20000", "admin-key:b", NOW)
    identity.delete_spend_limit(a["id"], "admin-key:c", NOW)
    rows, has_more = identity.audit_page(10, action_prefix="spend_limit.")
    assert not has_more
    assert [r["action"] for r in rows] == ["spend_limit.delete", "spend_limit.update", "spend_limit.create"]
    delete, upd, create = rows
    assert create["before"] is None and create["after"]["amount_cents"] == "10000"
    assert create["actor"] == "admin-key:a" and create["target_id"] == a["id"]
    assert upd["before"]["amount_cents"] == "10000" and upd["after"]["amount_cents"] == "20000"
    assert upd["actor"] == "admin-key:b"
    assert delete["before"]["amount_cents"] == "20000" and delete["after"] is None
    assert identity.get_spend_limit(a["id"]) is None
    with pytest.raises(NotFound):
        identity.delete_spend_limit(a["id"], "admin-key:c", NOW)


def test_audit_is_in_the_same_transaction(identity: IdentityStore, monkeypatch) -> None:
    """A failing audit write must leave no cap behind."""

    def boom(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("audit down")

    monkeypatch.setattr(identity, "_audit", boom)
    with pytest.raises(RuntimeError):
        identity.upsert_spend_limit("user", "alice", "daily", "100", "x", NOW)
    monkeypatch.undo()
    assert identity.list_spend_limit_rows() == []


@pytest.mark.parametrize("amount", ["-1", "1.5", "abc", "1e3", " ", "", "１２"])
def test_bad_amounts(identity: IdentityStore, amount: str) -> None:
    with pytest.raises(Invalid):
        identity.upsert_spend_limit("user", "alice", "daily", amount, "x", NOW)


def test_amount_normalised_and_scope_validated(identity: IdentityStore) -> None:
    assert identity.upsert_spend_limit("user", "u", "daily", "007", "x", NOW)["amount_cents"] == "7"
    with pytest.raises(Invalid):
        identity.upsert_spend_limit("organization", "acme", "daily", "1", "x", NOW)
    with pytest.raises(Invalid):
        identity.upsert_spend_limit("user", None, "daily", "1", "x", NOW)
    with pytest.raises(Invalid):
        identity.upsert_spend_limit("team", "t", "daily", "1", "x", NOW)
    with pytest.raises(Invalid):
        identity.upsert_spend_limit("user", "u", "hourly", "1", "x", NOW)
    key = identity.upsert_spend_limit("api_key", "key_1", "monthly", "5", "x", NOW)
    assert key["scope_type"] == "api_key" and key["scope_id"] == "key_1"


def test_pagination(identity: IdentityStore) -> None:
    ids = []
    for i in range(5):
        scope = "user" if i % 2 == 0 else "rbac_group"
        ids.append(identity.upsert_spend_limit(scope, f"s{i}", "daily", str(i), "x", NOW)["id"])

    page, more = identity.list_spend_limits_page(limit=2)
    assert [r["id"] for r in page] == ids[:2] and more
    page, more = identity.list_spend_limits_page(limit=2, after_id=ids[1])
    assert [r["id"] for r in page] == ids[2:4] and more
    page, more = identity.list_spend_limits_page(limit=2, after_id=ids[3])
    assert [r["id"] for r in page] == ids[4:] and not more

    page, more = identity.list_spend_limits_page(limit=2, before_id=ids[4])
    assert [r["id"] for r in page] == ids[2:4] and more
    page, more = identity.list_spend_limits_page(limit=2, before_id=ids[2])
    assert [r["id"] for r in page] == ids[:2] and not more

    page, more = identity.list_spend_limits_page(limit=10, scope_type="user")
    assert [r["id"] for r in page] == [ids[0], ids[2], ids[4]] and not more
    page, _ = identity.list_spend_limits_page(limit=10, scope_type="user", after_id=ids[1])
    assert [r["id"] for r in page] == [ids[2], ids[4]]

    # A replaced cap keeps its place in creation order.
    identity.upsert_spend_limit("user", "s0", "daily", "999", "x", NOW)
    page, _ = identity.list_spend_limits_page(limit=1)
    assert page[0]["id"] == ids[0] and page[0]["amount_cents"] == "999"

    with pytest.raises(Invalid):
        identity.list_spend_limits_page(after_id=ids[0], before_id=ids[1])
    with pytest.raises(Invalid):
        identity.list_spend_limits_page(after_id="spl_unknown")
    with pytest.raises(Invalid):
        identity.list_spend_limits_page(scope_type="team")


def test_audit_pagination(identity: IdentityStore) -> None:
    for i in range(5):
        identity.upsert_spend_limit("user", f"u{i}", "daily", str(i), "x", NOW)
    identity.create_user("alice", now=NOW)  # not a spend-limit action
    rows, more = identity.audit_page(2, action_prefix="spend_limit.")
    assert [r["target_id"] for r in rows] == [
        identity.list_spend_limit_rows()[4]["id"],
        identity.list_spend_limit_rows()[3]["id"],
    ]
    assert more
    rest, more = identity.audit_page(10, after_id=rows[-1]["id"], action_prefix="spend_limit.")
    assert len(rest) == 3 and not more
    assert all(r["id"] < rows[-1]["id"] for r in rest)
    everything, _ = identity.audit_page(100)
    assert everything[0]["action"] == "user.create"
    with pytest.raises(Invalid):
        identity.audit_page(0)


def test_limits_version_moves_on_every_change(identity: IdentityStore) -> None:
    v0 = identity.limits_version()
    spl = identity.upsert_spend_limit("user", "alice", "daily", "100", "x", NOW)
    v1 = identity.limits_version()
    assert v1 > v0
    assert identity.limits_version() == v1  # reads do not move it
    identity.list_spend_limits_page()
    assert identity.limits_version() == v1
    identity.create_user("alice", now=NOW)
    key_id, _ = identity.create_key("alice", now=NOW)
    v2 = identity.limits_version()
    assert v2 > v1
    identity.revoke_key(key_id, NOW)
    v3 = identity.limits_version()
    assert v3 > v2
    identity.delete_spend_limit(spl["id"], "x", NOW)
    assert identity.limits_version() > v3


def test_settings_roundtrip(identity: IdentityStore) -> None:
    assert identity.get_setting("rate_limits") is None
    v = identity.limits_version()
    value = {"rpm_per_user": 10, "tpm_per_user": 20000, "org_tpm": 4_000_000, "org_rpm": 2000}
    identity.set_setting("rate_limits", value, NOW)
    assert identity.get_setting("rate_limits") == value
    identity.set_setting("rate_limits", {"rpm_per_user": 5}, NOW)
    assert identity.get_setting("rate_limits") == {"rpm_per_user": 5}
    assert identity.limits_version() > v
    with pytest.raises(Invalid):
        identity.set_setting(identity_mod.LIMITS_VERSION_KEY, 1, NOW)
    rows, _ = identity.audit_page(1)
    assert rows[0]["action"] == "setting.set" and rows[0]["before"] == value


def test_list_spend_limits_as_control_type(identity: IdentityStore) -> None:
    spend = pytest.importorskip("ccledger.control.spend")
    identity.upsert_spend_limit("organization", None, "monthly", "50000", "x", NOW)
    identity.upsert_spend_limit("user", "alice", "daily", None, "x", NOW)
    limits = identity.list_spend_limits()
    assert all(isinstance(x, spend.SpendLimit) for x in limits)
    org, user = limits
    assert org.scope_type == "organization" and org.scope_id is None
    assert org.amount_cents == Decimal("50000") and org.period == "monthly"
    assert user.scope_id == "alice" and user.amount_cents is None


def test_concurrent_upserts_keep_one_row(identity: IdentityStore) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            identity.upsert_spend_limit("user", "alice", "daily", str(100 + i), f"w{i}", NOW)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = identity.list_spend_limit_rows()
    assert len(rows) == 1
    with identity.engine.connect() as conn:
        n = conn.execute(select(admin_audit.c.id).where(admin_audit.c.action.like("spend_limit.%"))).all()
    assert len(n) == 8
    # Exactly one creation; the rest updated it.
    audit, _ = identity.audit_page(100, action_prefix="spend_limit.create")
    assert len(audit) == 1


def test_timestamps_are_epoch_ms(identity: IdentityStore) -> None:
    row = identity.upsert_spend_limit("user", "alice", "daily", "1", "x", NOW)
    assert row["created_ms"] == int(NOW.timestamp() * 1000)
    with identity.engine.connect() as conn:
        assert conn.execute(text("SELECT created_ms FROM spend_limits")).scalar() == row["created_ms"]
