"""``ccledger gateway``: run the metering proxy under uvicorn (uvloop + httptools when installed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer


def gateway(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Gateway TOML file; env CCLEDGER_GATEWAY_CONFIG.")] = None,  # noqa: E501, UP045
    host: Annotated[Optional[str], typer.Option("--host", help="Listen address (default from config: 127.0.0.1).")] = None,  # noqa: E501, UP045
    port: Annotated[Optional[int], typer.Option("--port", help="Listen port (default from config: 8787).")] = None,  # noqa: E501, UP045
    workers: Annotated[Optional[int], typer.Option("--workers", help="Worker processes (default from config: 1).")] = None,  # noqa: E501, UP045
) -> None:
    """Run the gateway: point Claude Code at it with ANTHROPIC_BASE_URL and a per-developer key."""
    import uvicorn

    from ccledger.cli.main import state
    from ccledger.gateway.config import CONFIG_ENV, STORE_URL_ENV, load_settings

    if config is not None:
        if not config.is_file():
            raise typer.BadParameter(f"no such file: {config}", param_hint="--config")
        os.environ[CONFIG_ENV] = str(config.resolve())
    if state.db:
        # ``ccledger --db URL gateway``: the root option names the store, as for every other command. Set
        # in the environment (which beats the TOML file) so uvicorn's worker processes see it too.
        os.environ[STORE_URL_ENV] = state.db
    # Validate once here so a bad file fails before any worker starts.
    settings = load_settings()
    if settings.upstream_credential() is None:
        typer.echo("warning: no upstream credential (set upstream_api_key or upstream_api_key_env)", err=True)
    loop = "auto"
    http = "auto"
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        pass
    uvicorn.run(
        "ccledger.gateway.app:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        loop=loop,
        http=http,
        lifespan="on",
        access_log=False,  # the gateway logs its own structured lines, never keys or prompts
        log_level=settings.log_level.lower(),
        timeout_keep_alive=75,
        # The upstream's own Date and Server headers are relayed; uvicorn's would duplicate them.
        server_header=False,
        date_header=False,
        # Nothing reads the client address (identity is the virtual key), so uvicorn's X-Forwarded-*
        # rewriting would be a header scan on every request for nothing.
        proxy_headers=False,
    )
