"""``ccledger users|groups|keys|limits`` driven through Typer against a real SQLite store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import typer
from typer.testing import CliRunner

from ccledger.cli import admin
from ccledger.store.identity import IdentityStore
from ccledger.store.ledger import Ledger

runner = CliRunner()


@pytest.fixture
def root() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(admin.users_app, name="users")
    app.add_typer(admin.groups_app, name="groups")
    app.add_typer(admin.keys_app, name="keys")
    app.add_typer(admin.limits_app, name="limits")
    return app


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def _run(root: typer.Typer, db: str, *args: str, ok: bool = True):  # type: ignore[no-untyped-def]
    result = runner.invoke(root, [*args, "--db", db])
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def _store(db: str) -> tuple[Ledger, IdentityStore]:
    ledger = Ledger.open(db)
    return ledger, IdentityStore(ledger.engine)


def test_users_groups_keys_flow(root: typer.Typer, db: str) -> None:
    _run(
        root, db, "users", "add", "alice", "--name", "Alice", "--email", "alice@example.com", "--group", "eng"
    )
    _run(root, db, "users", "add", "bob")
    dup = _run(root, db, "users", "add", "bob", ok=False)
    assert dup.exit_code == 1 and "already exists" in dup.stderr
    _run(root, db, "groups", "add", "ops", "--name", "Operations")
    _run(root, db, "groups", "add-member", "bob", "ops")

    users = json.loads(_run(root, db, "users", "list", "--json").stdout)
    assert [(u["id"], u["group_ids"]) for u in users] == [("alice", ["eng"]), ("bob", ["ops"])]
    assert "alice@example.com" in _run(root, db, "users", "list").stdout
    groups = json.loads(_run(root, db, "groups", "list", "--json").stdout)
    assert {g["id"]: g["member_ids"] for g in groups} == {"eng": ["alice"], "ops": ["bob"]}
    _run(root, db, "groups", "remove-member", "bob", "ops")
    assert _run(root, db, "groups", "remove-member", "bob", "ops", ok=False).exit_code == 1

    created = _run(root, db, "keys", "create", "alice", "--name", "laptop", "--expires-days", "30")
    raw = created.stdout.strip()
    assert raw.startswith("ccl_") and len(raw) >= 44
    assert "not be shown again" in created.stderr
    ledger, store = _store(db)
    try:
        principal = store.authenticate(raw, datetime.now(UTC))
        assert principal is not None and principal.user_id == "alice"
        assert principal.key_expires_ms is not None
    finally:
        ledger.close()

    keys = json.loads(_run(root, db, "keys", "list", "--json").stdout)
    assert len(keys) == 1 and keys[0]["status"] == "active" and keys[0]["name"] == "laptop"
    assert raw not in _run(root, db, "keys", "list").stdout
    _run(root, db, "keys", "revoke", keys[0]["id"])
    keys = json.loads(_run(root, db, "keys", "list", "--user", "alice", "--json").stdout)
    assert keys[0]["status"] == "revoked"
    ledger, store = _store(db)
    try:
        assert store.authenticate(raw, datetime.now(UTC)) is None
    finally:
        ledger.close()
    assert _run(root, db, "keys", "create", "nobody", ok=False).exit_code == 1

    _run(root, db, "users", "disable", "bob")
    assert json.loads(_run(root, db, "users", "list", "--json").stdout)[1]["disabled"] is True


def test_key_json_output(root: typer.Typer, db: str) -> None:
    _run(root, db, "users", "add", "alice")
    out = json.loads(_run(root, db, "keys", "create", "alice", "--json").stdout)
    assert out["key"].startswith("ccl_") and out["key_id"].startswith("key_")


def test_limits_set_list_delete_audit(root: typer.Typer, db: str) -> None:
    row = json.loads(
        _run(
            root, db, "limits", "set", "--scope", "user:alice", "--period", "daily", "--usd", "25", "--json"
        ).stdout
    )
    assert row["scope_type"] == "user" and row["amount_cents"] == "2500"
    again = json.loads(
        _run(
            root,
            db,
            "limits",
            "set",
            "--scope",
            "user:alice",
            "--period",
            "daily",
            "--usd",
            "12.50",
            "--json",
        ).stdout
    )
    assert again["id"] == row["id"] and again["amount_cents"] == "1250"
    _run(root, db, "limits", "set", "--scope", "group:eng", "--period", "weekly", "--usd", "100")
    _run(root, db, "limits", "set", "--scope", "org", "--period", "monthly", "--unlimited")
    _run(root, db, "limits", "set", "--scope", "key:key_abc", "--period", "monthly", "--usd", "0")

    rows = json.loads(_run(root, db, "limits", "list", "--json").stdout)
    assert [(r["scope_type"], r["scope_id"], r["period"], r["amount_cents"]) for r in rows] == [
        ("user", "alice", "daily", "1250"),
        ("rbac_group", "eng", "weekly", "10000"),
        ("organization", None, "monthly", None),
        ("api_key", "key_abc", "monthly", "0"),
    ]
    table = _run(root, db, "limits", "list").stdout
    assert "$12.50" in table and "unlimited" in table and row["id"] in table

    for bad in (
        ["--scope", "user:alice", "--period", "daily"],  # neither --usd nor --unlimited
        ["--scope", "user:alice", "--period", "daily", "--usd", "1", "--unlimited"],
        ["--scope", "team:x", "--period", "daily", "--usd", "1"],
        ["--scope", "user:alice", "--period", "daily", "--usd", "0.001"],
        ["--scope", "user:alice", "--period", "daily", "--usd", "-5"],
    ):
        assert _run(root, db, "limits", "set", *bad, ok=False).exit_code == 2
    assert (
        _run(
            root, db, "limits", "set", "--scope", "org", "--period", "hourly", "--usd", "1", ok=False
        ).exit_code
        == 1
    )

    _run(root, db, "limits", "delete", row["id"])
    assert _run(root, db, "limits", "delete", row["id"], ok=False).exit_code == 1

    audit = json.loads(_run(root, db, "limits", "audit", "--json").stdout)
    assert audit[0]["action"] == "spend_limit.delete" and audit[0]["actor"].startswith("cli:")
    assert audit[-1]["action"] == "spend_limit.create" and audit[-1]["after"]["amount_cents"] == "2500"
    table = _run(root, db, "limits", "audit").stdout
    assert "update" in table and "cli:" in table and row["id"] in table


def test_limits_plan(root: typer.Typer, db: str) -> None:
    plan = json.loads(_run(root, db, "limits", "plan", "--users", "200", "--json").stdout)
    assert plan["tpm_per_user"] == 20_000 and plan["org_tpm"] == 4_000_000
    assert plan["applied"] is False
    ledger, store = _store(db)
    try:
        assert store.get_setting("rate_limits") is None
    finally:
        ledger.close()

    text = _run(root, db, "limits", "plan", "--users", "200", "--apply").stdout
    assert "4,000,000" in text and "20,000" in text
    ledger, store = _store(db)
    try:
        setting = store.get_setting("rate_limits")
        assert setting["tpm_per_user"] == 20_000 and setting["org_tpm"] == 4_000_000
        assert setting["rpm_per_user"] > 0 and setting["org_rpm"] == pytest.approx(
            setting["rpm_per_user"] * 200
        )
        v = store.limits_version()
    finally:
        ledger.close()

    peak = json.loads(_run(root, db, "limits", "plan", "--users", "200", "--peak-event", "--json").stdout)
    assert peak["tpm_per_user"] > plan["tpm_per_user"]

    # Without --users the team size is the number of active users in the store.
    _run(root, db, "users", "add", "a")
    _run(root, db, "users", "add", "b")
    two = json.loads(_run(root, db, "limits", "plan", "--json", "--apply").stdout)
    assert two["users"] == 2 and two["applied"] is True
    ledger, store = _store(db)
    try:
        assert store.limits_version() > v
        assert store.get_setting("rate_limits")["tpm_per_user"] == two["tpm_per_user"]
    finally:
        ledger.close()


def test_plan_needs_users(root: typer.Typer, db: str) -> None:
    assert _run(root, db, "limits", "plan", ok=False).exit_code == 1
    assert _run(root, db, "limits", "plan", "--users", "0", ok=False).exit_code == 2


def test_db_from_environment(root: typer.Typer, db: str) -> None:
    result = runner.invoke(root, ["users", "add", "envuser"], env={"CCLEDGER_DB": db})
    assert result.exit_code == 0, result.stderr
    ledger, store = _store(db)
    try:
        assert store.get_user("envuser") is not None
    finally:
        ledger.close()


def test_registered_in_main_app(db: str) -> None:
    main = pytest.importorskip("ccledger.cli.main")
    result = runner.invoke(main.app, ["users", "list", "--json", "--db", db])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
