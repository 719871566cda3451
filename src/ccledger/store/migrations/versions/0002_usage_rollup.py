"""usage_rollup: quarter-hour sums maintained by triggers on usage; drop indexes they replace

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SUMS = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read",
         "web_search_requests", "cost_nanos")  # fmt: skip
_DIMS = ("source", "session_id", "project", "model_key", "model", "user_id")
_KEY = "bucket_ms, " + ", ".join(_DIMS)


def _values(row: str, unknown: str) -> str:
    """The VALUES list for one usage row (NEW or OLD) in column order of _columns()."""
    dims = ", ".join(f"COALESCE({row}.model_key, '')" if d == "model_key" else f"{row}.{d}" for d in _DIMS)
    sums = ", ".join(f"{row}.{c}" for c in _SUMS)
    return (f"{row}.ts_ms - ({row}.ts_ms % 900000), {dims}, 1, {sums}, {unknown.format(row=row)}, "
            f"{row}.ts_ms, {row}.ts_ms")


def _columns() -> str:
    return f"{_KEY}, requests, {', '.join(_SUMS)}, unknown_requests, first_ms, last_ms"


def _upsert(row: str, unknown: str, least: str, greatest: str) -> str:
    added = ("requests", *_SUMS, "unknown_requests")
    adds = ", ".join(f"{c} = usage_rollup.{c} + excluded.{c}" for c in added)
    return (
        f"INSERT INTO usage_rollup ({_columns()}) VALUES ({_values(row, unknown)}) "
        f"ON CONFLICT ({_KEY}) DO UPDATE SET {adds}, "
        f"first_ms = {least}(usage_rollup.first_ms, excluded.first_ms), "
        f"last_ms = {greatest}(usage_rollup.last_ms, excluded.last_ms)"
    )


def _subtract(row: str, unknown: str) -> str:
    subs = ", ".join(f"{c} = {c} - {row}.{c}" for c in _SUMS)
    match = " AND ".join(
        [f"bucket_ms = {row}.ts_ms - ({row}.ts_ms % 900000)"]
        + [f"model_key = COALESCE({row}.model_key, '')" if d == "model_key" else f"{d} = {row}.{d}"
           for d in _DIMS]
    )
    return (f"UPDATE usage_rollup SET requests = requests - 1, {subs}, "
            f"unknown_requests = unknown_requests - {unknown.format(row=row)} WHERE {match}")


def upgrade() -> None:
    # The cells answer per-session and per-user questions now; these two indexes cost half of every
    # bulk write and are no longer read.
    op.drop_index("ix_usage_session", table_name="usage")
    op.drop_index("ix_usage_user_ts", table_name="usage")
    op.create_table(
        "usage_rollup",
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=200), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("model_key", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        *[sa.Column(c, sa.BigInteger(), nullable=False) for c in ("requests", *_SUMS, "unknown_requests",
                                                                  "first_ms", "last_ms")],
        sa.PrimaryKeyConstraint("bucket_ms", *_DIMS, name="pk_usage_rollup"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        unknown = "CASE WHEN {row}.unknown_model THEN 1 ELSE 0 END"
        op.execute(f"CREATE TRIGGER usage_rollup_ins AFTER INSERT ON usage BEGIN "
                   f"{_upsert('NEW', unknown, 'min', 'max')}; END")
        op.execute(f"CREATE TRIGGER usage_rollup_upd AFTER UPDATE ON usage BEGIN "
                   f"{_subtract('OLD', unknown)}; {_upsert('NEW', unknown, 'min', 'max')}; END")
        op.execute(
            f"CREATE TRIGGER usage_rollup_del AFTER DELETE ON usage BEGIN {_subtract('OLD', unknown)}; END"
        )
    else:
        unknown = "(CASE WHEN {row}.unknown_model THEN 1 ELSE 0 END)"
        op.execute(
            "CREATE OR REPLACE FUNCTION usage_rollup_apply() RETURNS trigger AS $$ BEGIN "
            f"IF TG_OP IN ('UPDATE', 'DELETE') THEN {_subtract('OLD', unknown)}; END IF; "
            f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {_upsert('NEW', unknown, 'LEAST', 'GREATEST')}; END IF; "
            "RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        op.execute("CREATE TRIGGER usage_rollup_trg AFTER INSERT OR UPDATE OR DELETE ON usage "
                   "FOR EACH ROW EXECUTE FUNCTION usage_rollup_apply()")
    # Existing ledgers: sum what is already there.
    dims = ", ".join("COALESCE(model_key, '')" if d == "model_key" else d for d in _DIMS)
    sums = ", ".join(f"SUM({c})" for c in _SUMS)
    op.execute(
        f"INSERT INTO usage_rollup ({_columns()}) SELECT ts_ms - (ts_ms % 900000), {dims}, COUNT(*), {sums}, "
        f"SUM(CASE WHEN unknown_model THEN 1 ELSE 0 END), MIN(ts_ms), MAX(ts_ms) FROM usage "
        f"GROUP BY ts_ms - (ts_ms % 900000), {dims}"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("usage_rollup_ins", "usage_rollup_upd", "usage_rollup_del"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS usage_rollup_trg ON usage")
        op.execute("DROP FUNCTION IF EXISTS usage_rollup_apply()")
    op.drop_table("usage_rollup")
    op.create_index("ix_usage_session", "usage", ["session_id", "ts_ms"])
    op.create_index("ix_usage_user_ts", "usage", ["user_id", "ts_ms"])
