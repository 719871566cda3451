"""Store URLs as people write them, turned into what the drivers expect (no SQLAlchemy import here)."""

from __future__ import annotations

from pathlib import Path


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and file paths; use psycopg 3 as the PostgreSQL driver."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    return url
