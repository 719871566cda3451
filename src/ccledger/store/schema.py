"""SQLAlchemy Core tables. Alembic migrations in ``migrations/`` create exactly these.

Timestamps are integer epoch milliseconds (UTC) and money is integer nano-dollars: both sort, index and
sum identically on SQLite and PostgreSQL, which keeps one set of queries for both engines.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from ccledger.store.layout import ROLLUP_BUCKET_MS, ROLLUP_DIMS  # noqa: F401 - re-exported

metadata = MetaData()

usage = Table(
    "usage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("dedupe_key", String(300), nullable=False, unique=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("source", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("model_key", String(100)),
    Column("session_id", String(200), nullable=False, default=""),
    Column("project", Text, nullable=False, default=""),
    Column("git_branch", Text, nullable=False, default=""),
    Column("client_version", String(64), nullable=False, default=""),
    Column("is_sidechain", Boolean, nullable=False, default=False),
    Column("agent_id", String(200), nullable=False, default=""),
    Column("parent_agent_id", String(200), nullable=False, default="", server_default=""),
    Column("user_id", String(200), nullable=False, default=""),
    Column("group_id", String(200), nullable=False, default=""),
    Column("key_id", String(200), nullable=False, default=""),
    Column("workspace", String(200), nullable=False, default=""),
    Column("request_id", String(200), nullable=False, default=""),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cache_write_5m", BigInteger, nullable=False, default=0),
    Column("cache_write_1h", BigInteger, nullable=False, default=0),
    Column("cache_read", BigInteger, nullable=False, default=0),
    Column("web_search_requests", BigInteger, nullable=False, default=0),
    Column("service_tier", String(32)),
    Column("inference_geo", String(32)),
    Column("speed", String(32)),
    Column("duration_ms", BigInteger),
    Column("cost_nanos", BigInteger, nullable=False, default=0),
    Column("unknown_model", Boolean, nullable=False, default=False),
    Column("long_context", Boolean, nullable=False, default=False),
    Column("completeness", BigInteger, nullable=False, default=0),
    Column("extra", Text),  # JSON object of facts without a column of their own (e.g. all group ids)
)
Index("ix_usage_ts", usage.c.ts_ms)

# Quarter-hour sums per (source, session, project, model, user), kept current by database triggers on
# ``usage`` (migration 0002): reports read a few thousand cells instead of every request, and the sums stay
# right whatever writes the ledger (transcripts, gateway, reprice), because the engine does the arithmetic.
usage_rollup = Table(
    "usage_rollup",
    metadata,
    Column("bucket_ms", BigInteger, nullable=False),
    Column("source", String(32), nullable=False),
    Column("session_id", String(200), nullable=False),
    Column("project", Text, nullable=False),
    Column("model_key", String(100), nullable=False),  # "" when the book does not know the model
    Column("model", String(200), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_write_5m", BigInteger, nullable=False),
    Column("cache_write_1h", BigInteger, nullable=False),
    Column("cache_read", BigInteger, nullable=False),
    Column("web_search_requests", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("unknown_requests", BigInteger, nullable=False),
    Column("first_ms", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("bucket_ms", *ROLLUP_DIMS, name="pk_usage_rollup"),
)

# Lines added/removed by edit tools, keyed by the transcript line's uuid so re-reading never doubles them.
code_changes = Table(
    "code_changes",
    metadata,
    Column("line_key", String(300), primary_key=True),
    Column("session_id", String(200), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("lines_added", BigInteger, nullable=False, default=0),
    Column("lines_removed", BigInteger, nullable=False, default=0),
)
Index("ix_code_changes_session", code_changes.c.session_id)

# Per-file read positions for incremental transcript reading.
source_files = Table(
    "source_files",
    metadata,
    Column("path", Text, primary_key=True),
    Column("identity", String(200), nullable=False),  # device:inode
    Column("head_hash", String(64), nullable=False),  # hash of the first bytes: detects replacement
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("offset", BigInteger, nullable=False),  # byte offset just past the last complete line read
    Column("line_no", BigInteger, nullable=False, default=0),
    Column("bad_lines", BigInteger, nullable=False, default=0),
)

# --- identity and policy (gateway) ---------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("name", Text, nullable=False, default=""),
    Column("email", Text, nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

groups = Table(
    "groups",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("name", Text, nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("user_id", String(200), nullable=False),
    Column("group_id", String(200), nullable=False),
    PrimaryKeyConstraint("user_id", "group_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("hint", String(32), nullable=False),  # a short, non-secret fragment for display
    Column("key_hash", String(128), nullable=False, unique=True),  # sha256 hex of the full key
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger),
    Column("revoked_ms", BigInteger),
)
Index("ix_api_keys_user", api_keys.c.user_id)

spend_limits = Table(
    "spend_limits",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # creation order, for after_id/before_id pagination
    Column("scope_type", String(32), nullable=False),
    Column("scope_id", String(200), nullable=False, default=""),  # "" for organization
    Column("period", String(16), nullable=False),
    Column("amount_cents", String(40)),  # NULL = unlimited
    Column("currency", String(8), nullable=False, default="USD"),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    UniqueConstraint("scope_type", "scope_id", "period", name="uq_spend_limits_scope_period"),
)

admin_audit = Table(
    "admin_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target_id", String(200), nullable=False),
    Column("before", Text),
    Column("after", Text),
)

# Small operator settings written by commands (e.g. `limits plan --apply`), read by the gateway.
settings_kv = Table(
    "settings_kv",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
