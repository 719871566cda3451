"""``ccledger gateway`` end to end: a TOML config, two uvicorn workers, a graceful stop that flushes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from ccledger.store.identity import IdentityStore
from ccledger.store.ledger import Ledger
from tests.gateway.conftest import PRICE_FILE, UPSTREAM_KEY, body


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_gateway_command_with_two_workers(tmp_path, fake_upstream, _sqlite_template):
    import shutil

    db = tmp_path / "ledger.db"
    shutil.copyfile(_sqlite_template, db)
    ledger = Ledger.open(f"sqlite:///{db}")
    ident = IdentityStore(ledger.engine)
    ident.create_user("alice")
    _, key = ident.create_key("alice")
    (tmp_path / "prices.toml").write_text(PRICE_FILE)
    port = _free_port()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'upstream_url = "{fake_upstream.url}"\nupstream_api_key_env = "TEST_UPSTREAM_KEY"\n'
        f'store_url = "sqlite:///{db}"\nprice_files = ["{tmp_path / "prices.toml"}"]\n'
        f'spool_path = "{tmp_path / "spool.jsonl"}"\nlog_level = "WARNING"\n'
    )
    env = {**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    env.pop("CCLEDGER_GATEWAY_CONFIG", None)
    code = (
        "from pathlib import Path; from ccledger.cli.gateway_cmd import gateway; "
        f"gateway(Path({str(cfg)!r}), '127.0.0.1', {port}, 2)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
            time.sleep(0.1)
        fake_upstream.clear()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": key}) as c:
            for _ in range(6):
                r = c.post("/v1/messages", content=body())
                assert r.status_code == 200
                # the upstream's Date/Server are relayed once, not doubled by the server's own
                assert len(r.headers.get_list("date")) == 1 and len(r.headers.get_list("server")) <= 1
        assert all(r.header("x-api-key") == UPSTREAM_KEY for r in fake_upstream.requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # Both workers flushed their writers on shutdown: nothing lost.
    assert ledger.count() == 6
    ledger.close()


def test_root_db_option_is_the_gateway_store(tmp_path, monkeypatch):
    """``ccledger --db URL gateway`` runs the gateway on URL, the store ``ccledger --db URL keys create``
    wrote to; it reaches uvicorn's workers through the environment (which beats the TOML file)."""
    import uvicorn
    from typer.testing import CliRunner

    from ccledger.cli import main
    from ccledger.gateway.config import CONFIG_ENV, STORE_URL_ENV, load_settings

    for name in (CONFIG_ENV, STORE_URL_ENV, "CCLEDGER_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(main.state, "db", None)
    ran: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: ran.append(kw))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('store_url = "sqlite:///from-file.db"\nupstream_api_key = "sk-test"\n')
    url = f"sqlite:///{tmp_path / 'team.db'}"
    result = CliRunner().invoke(main.app, ["--db", url, "gateway", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert len(ran) == 1
    assert load_settings().store_url == url  # what each worker's app_factory will read
