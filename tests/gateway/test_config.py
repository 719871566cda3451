"""Configuration: TOML file, environment overrides, admin key handling."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ccledger.gateway.config import AdminKey, AdminKeyring, GatewaySettings, load_settings

TOML = """
[gateway]
upstream_url = "https://example.invalid"
upstream_api_key_env = "MY_UPSTREAM_KEY"
port = 9999
estimator = "strict"
fail_mode = "closed"
admin_write_keys = [{id = "ops", key = "%s"}]

[gateway.rate_limits]
rpm_per_user = 5
tpm_per_user = 200000

[[gateway.models]]
id = "claude-sonnet-4-5"
display_name = "Sonnet"
""" % ("k" * 32)


def test_toml_then_env_then_overrides(tmp_path, monkeypatch):
    path = tmp_path / "gw.toml"
    path.write_text(TOML)
    monkeypatch.setenv("MY_UPSTREAM_KEY", "sk-from-env")
    monkeypatch.setenv("CCLEDGER_GATEWAY_PORT", "7000")
    monkeypatch.delenv("CCLEDGER_GATEWAY_CONFIG", raising=False)
    s = load_settings(path, host="0.0.0.0")
    assert s.upstream_url == "https://example.invalid"
    assert s.upstream_credential() == "sk-from-env"
    assert s.port == 7000  # env beats the file
    assert s.host == "0.0.0.0"  # explicit (CLI) beats env
    assert s.estimator == "strict" and s.fail_mode == "closed"
    assert s.rate_limits.rpm_per_user == 5
    assert s.models[0].display_name == "Sonnet"
    assert s.store_prompts is False


def test_invalid_values_rejected(monkeypatch):
    monkeypatch.delenv("CCLEDGER_GATEWAY_CONFIG", raising=False)
    with pytest.raises(ValidationError):
        GatewaySettings(admin_write_keys=[{"id": "x", "key": "short"}])
    with pytest.raises(ValidationError):
        GatewaySettings(store_prompts=True)
    with pytest.raises(ValidationError):
        GatewaySettings(fail_mode="maybe")


def test_admin_keyring_hashes_and_scopes():
    ring = AdminKeyring([AdminKey(id="r", key="r" * 32)], [AdminKey(id="w", key="w" * 32)])
    assert ring.check("w" * 32, write=True) == "w"
    assert ring.check("w" * 32, write=False) == "w"  # write keys can read
    assert ring.check("r" * 32, write=False) == "r"
    assert ring.check("r" * 32, write=True) is None
    assert ring.check("nope", write=False) is None
    assert all("r" * 32 not in repr(v) for v in vars(ring).values())


def test_the_example_config_in_the_readme_loads(monkeypatch):
    """README points teams at examples/gateway.toml: it must stay a valid configuration, its admin key
    coming from the environment rather than from a secret (or placeholder) committed in the file."""
    from pathlib import Path

    from ccledger.gateway.config import load_settings

    monkeypatch.delenv("CCLEDGER_GATEWAY_CONFIG", raising=False)
    monkeypatch.delenv("CCLEDGER_DB", raising=False)
    example = Path(__file__).resolve().parents[2] / "examples" / "gateway.toml"
    assert "replace-me" not in example.read_text()
    secret = "s" * 43
    monkeypatch.setenv("CCLEDGER_ADMIN_KEY_OPS", secret)
    s = load_settings(example)
    assert s.port == 8787 and s.upstream_url == "https://api.anthropic.com"
    assert [m.id for m in s.models] == ["claude-sonnet-4-5", "claude-opus-4-8"]
    assert s.rate_limits.rpm_per_user == 5 and s.rate_limits.queue_ms == 2000
    assert s.admin_write_keys[0].id == "ops" and s.admin_write_keys[0].key == secret
    assert secret not in repr(s)
    # Without the variable the file does not load: no admin API on 0.0.0.0 with a missing key.
    monkeypatch.delenv("CCLEDGER_ADMIN_KEY_OPS")
    with pytest.raises(ValidationError, match="CCLEDGER_ADMIN_KEY_OPS"):
        load_settings(example)


def test_placeholder_admin_keys_are_refused(monkeypatch):
    monkeypatch.delenv("CCLEDGER_GATEWAY_CONFIG", raising=False)
    placeholder = "replace-me-with-a-long-random-secret-0000"  # what the example used to ship
    with pytest.raises(ValidationError, match="placeholder"):
        GatewaySettings(admin_write_keys=[{"id": "ops", "key": placeholder}])
    with pytest.raises(ValidationError, match="placeholder"):
        GatewaySettings(admin_read_keys=[{"id": "viewer", "key": "x" * 30 + "REPLACE-ME"}])
    monkeypatch.setenv("OPS_KEY", placeholder)
    with pytest.raises(ValidationError, match="placeholder"):
        GatewaySettings(admin_write_keys=[{"id": "ops", "key_env": "OPS_KEY"}])
    with pytest.raises(ValidationError, match="needs key or key_env"):
        GatewaySettings(admin_write_keys=[{"id": "ops"}])
    monkeypatch.setenv("OPS_KEY", "short")
    with pytest.raises(ValidationError, match="at least 32"):
        GatewaySettings(admin_write_keys=[{"id": "ops", "key_env": "OPS_KEY"}])


def test_store_url_defaults_to_ccledger_db(tmp_path, monkeypatch):
    """The gateway and ``CCLEDGER_DB=… ccledger keys create`` must meet in the same store."""
    from ccledger.settings import default_db_url

    monkeypatch.delenv("CCLEDGER_GATEWAY_CONFIG", raising=False)
    monkeypatch.delenv("CCLEDGER_GATEWAY_STORE_URL", raising=False)
    monkeypatch.delenv("CCLEDGER_DB", raising=False)
    assert GatewaySettings().store_url == default_db_url()
    monkeypatch.setenv("CCLEDGER_DB", "postgresql://team@db.internal/ccledger")
    assert GatewaySettings().store_url == "postgresql://team@db.internal/ccledger"
    path = tmp_path / "gw.toml"
    path.write_text('store_url = "sqlite:///from-file.db"\n')
    assert load_settings(path).store_url == "sqlite:///from-file.db"  # an explicit setting still wins
    monkeypatch.setenv("CCLEDGER_GATEWAY_STORE_URL", "sqlite:///from-env.db")
    assert load_settings(path).store_url == "sqlite:///from-env.db"
