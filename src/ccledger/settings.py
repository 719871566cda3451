"""Configuration for the local ledger: one place, from CCLEDGER_* environment variables and flags.

A plain struct rather than pydantic-settings: every report starts by building this, and importing
pydantic costs ~0.2 s, a quarter of a warm ``ccledger daily``. The gateway, a long-running server, uses
pydantic-settings for its richer TOML configuration (``gateway.config``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgspec


def _xdg_dir(var: str, default: str) -> Path | None:
    """``$var/ccledger``, else ``$HOME/<default>/ccledger``: platformdirs' answer on Linux, without
    importing it (~7 ms, a twentieth of a warm report), for the cases every platformdirs release we allow
    answers alike: the variable absolute, or unset or blank, with an absolute ``HOME``. None otherwise
    (a relative value, which platformdirs 4.2 uses as given and recent releases ignore; off Linux):
    ask platformdirs."""
    if sys.platform != "linux":
        return None
    base = os.environ.get(var, "")
    if not base.startswith("/"):
        home = os.environ.get("HOME", "")
        if base.strip() or not home.startswith("/"):
            return None
        base = home.rstrip("/") + "/" + default  # as os.path.expanduser("~/...") builds it
    return Path(base) / "ccledger"


def default_data_dir() -> Path:
    found = _xdg_dir("XDG_DATA_HOME", ".local/share")
    if found is not None:
        return found
    from platformdirs import user_data_dir

    return Path(user_data_dir("ccledger", appauthor=False))


def default_db_url() -> str:
    return f"sqlite:///{default_data_dir() / 'ledger.db'}"


def default_config_dir() -> Path:
    found = _xdg_dir("XDG_CONFIG_HOME", ".config")
    if found is not None:
        return found
    from platformdirs import user_config_dir

    return Path(user_config_dir("ccledger", appauthor=False))


def default_price_files() -> list[Path]:
    return [default_config_dir() / "prices.toml"]


def claude_config_dirs() -> list[Path]:
    """Where Claude Code keeps transcripts: both default config dirs and every dir in CLAUDE_CONFIG_DIR
    (comma-separated). Duplicates (the same folder twice) are removed by the reader."""
    home = Path.home()
    dirs = [home / ".config" / "claude", home / ".claude"]
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if env:
        dirs += [Path(p.strip()).expanduser() for p in env.split(",") if p.strip()]
    return dirs


class Settings(msgspec.Struct):
    db: str = msgspec.field(default_factory=lambda: os.environ.get("CCLEDGER_DB") or default_db_url())
    price_files: list[Path] = msgspec.field(default_factory=lambda: _env_paths("CCLEDGER_PRICE_FILES"))
    # USD/MTok for models the book does not know (never free; default $5/$25)
    fallback_input: str | None = msgspec.field(default_factory=lambda: _env("CCLEDGER_FALLBACK_INPUT"))
    fallback_output: str | None = msgspec.field(default_factory=lambda: _env("CCLEDGER_FALLBACK_OUTPUT"))
    extra_paths: list[Path] = msgspec.field(default_factory=list)  # more transcript roots (--path)


def _env(name: str) -> str | None:
    return os.environ.get(name)


def _env_paths(name: str) -> list[Path]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default_price_files()
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
