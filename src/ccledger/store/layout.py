"""Names the ledger's SQL is built from, shared by the schema (SQLAlchemy) and the hot path (DB-API).

Kept free of imports so a warm report never has to load SQLAlchemy to know them.
"""

ROLLUP_BUCKET_MS = 900_000
ROLLUP_DIMS = ("source", "session_id", "project", "model_key", "model", "user_id")
SUM_COLS = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read",
            "web_search_requests", "cost_nanos")  # fmt: skip

# Column order of the bulk upsert (the key first, completeness last).
USAGE_COLUMNS = (
    "dedupe_key", "ts_ms", "source", "model", "model_key", "session_id", "project", "git_branch",
    "client_version", "is_sidechain", "agent_id", "user_id", "group_id", "key_id", "workspace",
    "request_id", "input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read",
    "web_search_requests", "service_tier", "inference_geo", "speed", "duration_ms", "cost_nanos",
    "unknown_model", "long_context", "parent_agent_id", "extra", "completeness",
)  # fmt: skip
