"""The gateway's ASGI application: a raw dispatcher in front of a small Starlette app.

``/v1/messages`` and ``/v1/messages/count_tokens`` go straight to ``proxy.Proxy`` (no routing, no
middleware, no request object); everything else (models, probes, metrics, the admin API, lifespan) goes
to Starlette, where convenience matters more than microseconds.

Run with uvicorn: ``uvicorn --factory ccledger.gateway.app:app_factory`` (what ``ccledger gateway``
does); the factory reads settings from ``$CCLEDGER_GATEWAY_CONFIG`` and ``CCLEDGER_GATEWAY_*``, so each
worker process builds its own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccledger.control.counters import Counters, MemoryCounters
from ccledger.core.pricing import PriceBook
from ccledger.gateway.auth import KeyCache
from ccledger.gateway.config import AdminKeyring, GatewaySettings, load_settings
from ccledger.gateway.errors import envelope, new_request_id
from ccledger.gateway.headers import client_key, credential_line
from ccledger.gateway.limits import Limits
from ccledger.gateway.metrics import Metrics
from ccledger.gateway.proxy import COUNT_TOKENS, MESSAGES, Proxy
from ccledger.gateway.state import GatewayState, utc_now
from ccledger.gateway.upstream import UpstreamError, UpstreamPool
from ccledger.gateway.writer import BatchWriter, Spool
from ccledger.store.identity import IdentityStore
from ccledger.store.ledger import Ledger

log = logging.getLogger("ccledger.gateway")

RATE_LIMITS_KEY = "rate_limits"
# A gateway writes its newest rows and reads a few rollup cells: a small page cache is enough, and the
# store's default (sized for bulk refreshes) would grow with the ledger (``Ledger.limit_page_cache``).
PAGE_CACHE_KIB = 4096
# Finished request ids the in-process counters remember. Each admitted request settles or releases
# exactly once (``limits.Ticket``) and every settle names its counters, so the memory is a safety net
# only; at the counters' default (50,000 ids, ~270 bytes each) it was 13 MB of a busy gateway's RSS.
FINISHED_IDS = 8192


def build_state(
    settings: GatewaySettings,
    *,
    clock: Callable[[], datetime] | None = None,
    counters: Counters | None = None,
) -> GatewayState:
    """Open the store and wire every component; nothing here touches the network."""
    clock = clock or utc_now
    book = PriceBook.load(
        settings.price_files,
        fallback_input=Decimal(settings.fallback_input) if settings.fallback_input else None,
        fallback_output=Decimal(settings.fallback_output) if settings.fallback_output else None,
    )
    ledger = Ledger.open(settings.store_url)
    ledger.limit_page_cache(PAGE_CACHE_KIB)
    identity = IdentityStore(ledger.engine)
    counters = counters if counters is not None else MemoryCounters(max_finished=FINISHED_IDS)
    metrics = Metrics()
    limits = Limits(
        counters, book, clock, estimator=settings.estimator, fail_open=settings.fail_mode == "open",
        timeout_s=settings.spend_check_timeout, group_limit_mode=settings.group_limit_mode,
        blocked_message=settings.blocked_message,
    )  # fmt: skip
    writer = BatchWriter(
        ledger, Spool(settings.spool_path), batch=settings.writer_batch, flush_ms=settings.writer_flush_ms,
        replay_seconds=settings.spool_replay_seconds, on_spool=metrics.spool_records.inc,
        on_error=metrics.write_errors.inc,
    )  # fmt: skip
    credential = settings.upstream_credential()
    cred: tuple[str, str] | None = None
    if credential:
        cred = (
            ("x-api-key", credential)
            if settings.upstream_auth == "x-api-key"
            else ("authorization", f"Bearer {credential}")
        )
    state = GatewayState(
        settings=settings, book=book, ledger=ledger, identity=identity, counters=counters, limits=limits,
        keys=KeyCache(identity, clock, settings.key_cache_ttl), writer=writer, metrics=metrics,
        admin_keyring=AdminKeyring(settings.admin_read_keys, settings.admin_write_keys), clock=clock,
        upstream_base=settings.upstream_url.rstrip("/"), upstream_credential=cred,
    )  # fmt: skip
    state.on_limits_changed = lambda: refresh_limits(state, force=True)
    return state


async def refresh_limits(state: GatewayState, *, force: bool = False) -> bool:
    """Reload caps and rate limits if the store's ``limits_version`` moved. Returns True if reloaded.

    One reload at a time: the periodic check could otherwise read the caps before an admin change,
    finish after the admin API's own reload, and put the old caps back until its next tick.
    """
    lock = state.extra.get("limits_lock")
    if lock is None:
        lock = state.extra["limits_lock"] = asyncio.Lock()
    async with lock:
        return await _reload_limits(state, force=force)


async def _reload_limits(state: GatewayState, *, force: bool) -> bool:
    version = await asyncio.to_thread(state.identity.limits_version)
    if not force and version == state.limits_version:
        return False
    caps = await asyncio.to_thread(state.identity.list_spend_limits)
    stored = await asyncio.to_thread(state.identity.get_setting, RATE_LIMITS_KEY)
    state.limits.guard.set_limits(caps)
    rl = state.settings.rate_limits.model_dump()
    if isinstance(stored, dict):
        rl.update({k: v for k, v in stored.items() if k in rl})
    users = len(await asyncio.to_thread(state.identity.list_users))
    state.limits.rate.configure(rl, users=users)
    state.keys.invalidate()
    state.limits_version = version
    return True


async def _refresh_loop(state: GatewayState) -> None:
    interval = max(0.05, state.settings.limits_refresh_seconds)
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh_limits(state)
        except Exception as exc:  # store down: keep enforcing the caps we have
            log.warning("limits refresh failed: %s", type(exc).__name__)


async def startup(state: GatewayState) -> None:
    state.extra["loop"] = asyncio.get_running_loop()  # lets tests and tools run coroutines on it
    state.upstream = UpstreamPool(
        state.upstream_base, connect_timeout=state.settings.upstream_connect_timeout,
        read_timeout=state.settings.upstream_sock_read_timeout,
    )  # fmt: skip
    await refresh_limits(state, force=True)
    await state.writer.start()  # replays the spool first, so seeding below includes those records
    await state.limits.seed_from_ledger(state.ledger)
    state.extra["refresh_task"] = asyncio.create_task(_refresh_loop(state))
    # Everything alive now (modules, the price book, settings, the store's engine) lives as long as the
    # process: moved out of the collector's generations, the full collections that request garbage
    # triggers no longer traverse it (shorter pauses in the latency tail).
    gc.collect()
    gc.freeze()
    log.info("gateway ready upstream=%s store=%s", state.upstream_base, state.ledger.dialect)


async def shutdown(state: GatewayState) -> None:
    task = state.extra.pop("refresh_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await state.writer.close()
    if state.upstream is not None:
        await state.upstream.close()


# -- non-hot routes -----------------------------------------------------------------------------------


def _error(status: int, err_type: str, message: str) -> Response:
    rid = new_request_id()
    return Response(
        envelope(err_type, message, rid), status, media_type="application/json", headers={"request-id": rid}
    )


def _models_page(state: GatewayState, request: Request) -> Response:
    q = request.query_params
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        return _error(400, "invalid_request_error", "limit must be an integer")
    if not 1 <= limit <= 1000:
        return _error(400, "invalid_request_error", "limit must be between 1 and 1000")
    models = [
        {"type": "model", "id": m.id, "display_name": m.display_name or m.id, "created_at": m.created_at,
         "max_input_tokens": m.max_input_tokens, "max_tokens": m.max_tokens}
        for m in state.settings.models
    ]  # fmt: skip
    ids = [m["id"] for m in models]
    after, before = q.get("after_id"), q.get("before_id")
    if after and before:
        return _error(400, "invalid_request_error", "after_id and before_id are mutually exclusive")
    if after in ids:
        models = models[ids.index(after) + 1 :]
        page, more = models[:limit], len(models) > limit
    elif before in ids:
        models = models[: ids.index(before)]
        page, more = models[-limit:], len(models) > limit
    else:
        page, more = models[:limit], len(models) > limit
    body = {
        "data": page, "has_more": more,
        "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
    }  # fmt: skip
    return Response(json.dumps(body), media_type="application/json", headers={"request-id": new_request_id()})


def _starlette(state: GatewayState) -> Starlette:
    async def models(request: Request) -> Response:
        raw = client_key(request.headers.raw)
        if raw is None or await state.keys.lookup(raw) is None:
            return _error(401, "authentication_error", "invalid, expired or revoked gateway key")
        if state.settings.models:
            return _models_page(state, request)
        # No models configured: ask the upstream (the operator's credential, the client's query).
        qs = request.scope.get("query_string", b"")
        target = b"/v1/models" + (b"?" + qs if qs else b"")
        version = request.headers.get("anthropic-version", "2023-06-01")
        headers = [f"anthropic-version: {version}\r\n".encode("latin-1")]
        if state.upstream_credential:
            headers.append(credential_line(state.upstream_credential))
        try:
            r = await state.upstream.request(b"GET", target, headers)
            try:
                payload = await r.read()
            finally:
                r.release()
        except (UpstreamError, TimeoutError):
            return _error(502, "api_error", "upstream unavailable")
        rid = r.header(b"request-id") or new_request_id()
        return Response(payload, r.status, media_type="application/json", headers={"request-id": rid})

    async def hello(request: Request) -> Response:
        return Response(b"", 200)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "spooled": state.writer.spool.pending()})

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    routes: list[Any] = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/api/hello", hello, methods=["HEAD", "GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    try:
        from ccledger.gateway.admin import admin_routes
    except ImportError:  # pragma: no cover - the admin API ships separately
        log.warning("admin API not available")
    else:
        routes.extend(admin_routes(state))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await startup(state)
        try:
            yield
        finally:
            await shutdown(state)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not_found_error", f"Not found: {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, "invalid_request_error", f"Method {request.method} not allowed")

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})


class GatewayApp:
    """The ASGI callable: hot paths to the proxy, the rest to Starlette."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.proxy = Proxy(state)
        self.web = _starlette(state)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path in (MESSAGES, COUNT_TOKENS):
                await self.proxy(scope, receive, send)
                return
        await self.web(scope, receive, send)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    counters: Counters | None = None,
) -> GatewayApp:
    return GatewayApp(build_state(settings or load_settings(), clock=clock, counters=counters))


def app_factory() -> GatewayApp:
    """Entry point for ``uvicorn --factory``: one state per worker process."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format=_LOG_FORMAT)
    return create_app(settings)


_LOG_FORMAT = '{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
