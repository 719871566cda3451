"""Gateway configuration: one TOML file plus ``CCLEDGER_GATEWAY_*`` environment variables.

Precedence (highest first): explicit init values (CLI flags), environment, the TOML file, defaults. The
upstream credential may be given directly or as the *name* of an environment variable holding it, so the
TOML file can be committed without a secret in it; admin keys likewise (``key_env``). Admin keys are
hashed as soon as the gateway starts (``AdminKeyring``), and the example file's placeholder is refused.

``store_url`` defaults to ``$CCLEDGER_DB`` (the variable every other ``ccledger`` command reads), then to
the local SQLite ledger, so a gateway started in the same environment as ``ccledger keys create`` uses
the same store; ``ccledger --db URL gateway`` passes the root option as ``store_url``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ccledger.settings import default_data_dir, default_db_url

CONFIG_ENV = "CCLEDGER_GATEWAY_CONFIG"
STORE_URL_ENV = "CCLEDGER_GATEWAY_STORE_URL"
ADMIN_KEY_MIN_LENGTH = 32
_PLACEHOLDER = "replace-me"


def default_store_url() -> str:
    """``$CCLEDGER_DB`` when set (the CLI's store), else the local SQLite ledger."""
    return os.environ.get("CCLEDGER_DB") or default_db_url()


class ModelEntry(BaseModel):
    """One entry served by ``GET /v1/models`` (Anthropic's list shape)."""

    id: str
    display_name: str = ""
    created_at: str = "2025-01-01T00:00:00Z"
    max_input_tokens: int = 200_000
    max_tokens: int = 64_000


class AdminKey(BaseModel):
    """An admin API credential: ``key`` itself, or ``key_env`` naming the environment variable holding it
    (so a committed TOML file carries no secret). At least 32 characters, and never the example's
    ``replace-me`` placeholder: a gateway listening on 0.0.0.0 with a published key is an open admin API.
    """

    id: str
    key: str | None = Field(default=None, repr=False)
    key_env: str | None = None

    @model_validator(mode="after")
    def _resolve(self) -> AdminKey:
        if not self.key and self.key_env:
            self.key = os.environ.get(self.key_env) or None
            if self.key is None:
                raise ValueError(f"admin key {self.id!r}: environment variable {self.key_env} is not set")
        if not self.key:
            raise ValueError(f"admin key {self.id!r} needs key or key_env")
        if len(self.key) < ADMIN_KEY_MIN_LENGTH:
            raise ValueError(f"admin key {self.id!r} must be at least {ADMIN_KEY_MIN_LENGTH} characters")
        if _PLACEHOLDER in self.key.lower():
            raise ValueError(
                f"admin key {self.id!r} is still the example placeholder ({_PLACEHOLDER}…); generate a "
                "secret, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return self


class RateLimitConfig(BaseModel):
    """Per-user and organisation token buckets; ``None`` disables a dimension.

    The ``settings_kv`` entry written by ``ccledger limits plan --apply`` (key ``rate_limits``) overrides
    these at start-up and on refresh, so an operator can resize limits without editing the file.
    """

    rpm_per_user: float | None = None
    tpm_per_user: float | None = None
    org_rpm: float | None = None
    org_tpm: float | None = None
    queue_ms: int = 0  # wait up to this long for a bucket to refill instead of an immediate 429


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CCLEDGER_GATEWAY_", extra="ignore", env_nested_delimiter="__"
    )

    upstream_url: str = "https://api.anthropic.com"
    upstream_api_key: SecretStr | None = None  # the operator's credential; SecretStr keeps it out of reprs
    upstream_api_key_env: str | None = "ANTHROPIC_API_KEY"  # or the env var holding it
    upstream_auth: Literal["x-api-key", "bearer"] = "x-api-key"
    upstream_sock_read_timeout: float = 600.0  # > Claude Code's 300 s silence window: never cut a live stream
    upstream_connect_timeout: float = 10.0

    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 1

    store_url: str = Field(default_factory=default_store_url)
    price_files: list[Path] = Field(default_factory=list)
    fallback_input: str | None = None
    fallback_output: str | None = None

    fail_mode: Literal["open", "closed"] = "open"
    estimator: Literal["strict", "expected"] = "expected"
    spend_check_timeout: float = 2.0
    group_limit_mode: Literal["min", "max"] = "min"  # most (min) or least (max) restrictive group cap
    blocked_message: str = ""  # appended to the spend-cap 429 message (e.g. who to ask for more)

    models: list[ModelEntry] = Field(default_factory=list)
    admin_read_keys: list[AdminKey] = Field(default_factory=list)
    admin_write_keys: list[AdminKey] = Field(default_factory=list)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)

    spool_path: Path = Field(default_factory=lambda: default_data_dir() / "gateway-spool.jsonl")
    spool_replay_seconds: float = 15.0
    writer_batch: int = 500
    writer_flush_ms: int = 200

    key_cache_ttl: float = 30.0  # seconds a key lookup is trusted; revocations in-process are immediate
    limits_refresh_seconds: float = 10.0  # how often caps / rate limits are re-read from the store
    store_prompts: bool = False  # never true: the gateway does not keep prompts; present to be explicit
    log_level: str = "INFO"

    @field_validator("store_prompts")
    @classmethod
    def _no_prompts(cls, v: bool) -> bool:
        if v:
            raise ValueError("store_prompts=true is not supported: the gateway never stores prompts")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    def upstream_credential(self) -> str | None:
        if self.upstream_api_key is not None and self.upstream_api_key.get_secret_value():
            return self.upstream_api_key.get_secret_value()
        if self.upstream_api_key_env:
            return os.environ.get(self.upstream_api_key_env) or None
        return None


_explicit_config: Path | None = None  # set only while load_settings(config=...) builds its settings


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the file given to ``load_settings``, else the one named by ``CCLEDGER_GATEWAY_CONFIG`` (how
    the CLI hands the file to uvicorn worker processes)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = _explicit_config or os.environ.get(CONFIG_ENV)
        self._data: dict[str, Any] = {}
        if path:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
            # Allow a [gateway] table or top-level keys.
            self._data = dict(raw.get("gateway", raw))

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


def load_settings(config: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Settings from ``config`` (or ``$CCLEDGER_GATEWAY_CONFIG``), env vars, then explicit overrides."""
    global _explicit_config
    _explicit_config = Path(config) if config is not None else None
    try:
        return GatewaySettings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _explicit_config = None


class AdminKeyring:
    """Admin keys held only as SHA-256 digests, built once at start-up.

    ``identify`` compares the presented key's digest with *every* entry using ``hmac.compare_digest``
    (no early exit), so neither timing nor the number of configured keys leaks which entry matched.
    Entries are anything with ``id`` and ``key`` attributes (``AdminKey`` in practice).
    """

    def __init__(self, read: Iterable[Any], write: Iterable[Any]) -> None:
        self._entries = [(str(k.id), _digest(k.key), True) for k in write if k.key]
        self._entries += [(str(k.id), _digest(k.key), False) for k in read if k.key]

    @property
    def enabled(self) -> bool:
        """Whether any admin key is configured (the admin API answers 404 otherwise)."""
        return bool(self._entries)

    def identify(self, presented: str | None) -> tuple[str, bool] | None:
        """(key id, may write) for ``presented``, else None."""
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for key_id, want, can_write in self._entries:
            if hmac.compare_digest(digest, want) and found is None:
                found = (key_id, can_write)
        return found

    def check(self, presented: str | None, *, write: bool) -> str | None:
        """The admin key id for ``presented`` if it grants the access asked for (write keys also read)."""
        found = self.identify(presented)
        if found is None or (write and not found[1]):
            return None
        return found[0]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
