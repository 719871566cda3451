"""The spend-limit admin API, wire-compatible with Anthropic's Admin API and the Claude apps gateway.

Shapes follow spend-limits.md §A1/§A2 so an existing client of Anthropic's API works by changing its base
URL: ``spend_limit`` objects with USD-cent string amounts, ``spl_`` ids, ``after_id``/``before_id`` list
cursors, ``/effective`` rows shaped like Anthropic's ``SpendSummary`` and a newest-first ``/audit`` trail.
Our one extension is the ``api_key`` scope (``{type:"api_key", api_key_id}``).

Why it is built this way:

* Store calls are synchronous SQLAlchemy; they run in Starlette's thread pool so an admin request never
  stalls the event loop that relays everyone's streams.
* Admin keys are checked by the gateway's ``AdminKeyring`` (``ctx.admin_keyring``): SHA-256 digests made
  once at start-up, compared with ``hmac.compare_digest`` against *every* entry (no early exit), so
  neither timing nor the number of configured keys leaks which bytes matched.
* Every response, success or error, carries a ``request-id`` header; errors use Anthropic's envelope so
  SDKs and scripts parse them as they parse Anthropic's own.
* After a mutation the gateway's caches are told at once (``ctx.on_limits_changed``); other workers
  notice through ``IdentityStore.limits_version`` on their next poll.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccledger.control.spend import Principal as SpendPrincipal
from ccledger.control.spend import resolve_caps
from ccledger.core.money import from_nanos, usd_to_cents_str
from ccledger.core.periods import PERIODS, utc_period
from ccledger.gateway.errors import new_request_id
from ccledger.store.identity import Conflict, Invalid, NotFound

log = logging.getLogger("ccledger.gateway.admin")

BASE = "/v1/organizations/spend_limits"
# Scope type -> the field carrying its id in the wire ``scope`` object.
_SCOPE_ID_FIELD: dict[str, str | None] = {
    "organization": None,
    "rbac_group": "rbac_group_id",
    "user": "user_id",
    "api_key": "api_key_id",
}
_MAX_LIMIT = 1000
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class ApiError(Exception):
    """An error answered in Anthropic's envelope."""

    def __init__(self, status: int, err_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.err_type = err_type
        self.message = message


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


# -- rendering ---------------------------------------------------------------------------------------


def rfc3339(ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with millisecond precision and a ``Z`` suffix (Anthropic's style)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scope_object(scope_type: str, scope_id: str | None) -> dict[str, Any]:
    field = _SCOPE_ID_FIELD.get(scope_type)
    return {"type": scope_type} if field is None else {"type": scope_type, field: scope_id}


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """Anthropic's list shape: the items, whether more follow, and the ids at both ends."""
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def spend_limit_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """A store row (``IdentityStore`` dict) in the wire shape of §A1."""
    return {
        "type": "spend_limit",
        "id": row["id"],
        "scope": scope_object(row["scope_type"], row["scope_id"]),
        "amount": row["amount_cents"],
        "currency": row.get("currency") or "USD",
        "period": row["period"],
        "created_at": rfc3339(row["created_ms"]),
        "updated_at": rfc3339(row["updated_ms"]),
    }


def _cents_text(cents: Decimal) -> str:
    """Cents as a plain decimal string: whole when whole, else only the digits that exist."""
    return usd_to_cents_str(cents / 100)


def _json(payload: Any, request_id: str, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers={"request-id": request_id})


def _error(status: int, err_type: str, message: str, request_id: str) -> JSONResponse:
    body = {"type": "error", "error": {"type": err_type, "message": message}, "request_id": request_id}
    return _json(body, request_id, status)


# -- auth --------------------------------------------------------------------------------------------


def authorise(ctx: Any, presented: str | None, *, write: bool) -> str:
    """The audit actor (``admin-key:<id>``) for a presented admin key, or an ``ApiError``.

    ``ctx.admin_keyring`` (``config.AdminKeyring``, built once at start-up) holds only digests and
    compares in constant time; nothing is hashed or copied per request beyond the presented key.
    """
    ring = ctx.admin_keyring
    if not ring.enabled:
        raise ApiError(404, "not_found_error", "the admin API is not enabled: configure admin_write_keys")
    if not presented:
        raise ApiError(401, "authentication_error", "missing x-api-key header (an admin key)")
    found = ring.identify(presented)
    if found is None:
        raise ApiError(401, "authentication_error", "invalid admin API key")
    kid, can_write = found
    if write and not can_write:
        raise ApiError(
            403, "permission_error", f"admin key {kid!r} is read-only; this request needs a write key"
        )
    return f"admin-key:{kid}"


# -- query helpers -----------------------------------------------------------------------------------


def _int_param(q: QueryParams, name: str, default: int, lo: int = 1, hi: int = _MAX_LIMIT) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise _bad(f"{name} must be between {lo} and {hi}")
    return value


def _list_param(q: QueryParams, name: str) -> list[str]:
    """``name[]=a&name[]=b`` (Anthropic's form), also tolerating ``name=a`` and comma lists."""
    values = q.getlist(f"{name}[]") + q.getlist(name)
    return [v for raw in values for v in raw.split(",") if v]


def parse_scope(scope: Any) -> tuple[str, str | None]:
    if not isinstance(scope, Mapping):
        raise _bad('scope must be an object such as {"type": "user", "user_id": "..."}')
    stype = scope.get("type")
    if stype not in _SCOPE_ID_FIELD:
        raise _bad(f"scope.type must be one of {', '.join(_SCOPE_ID_FIELD)}")
    field = _SCOPE_ID_FIELD[stype]
    if field is None:
        return stype, None
    sid = scope.get(field)
    if not isinstance(sid, str) or not sid:
        raise _bad(f"a {stype} scope needs a non-empty string {field}")
    return stype, sid


# -- handlers (synchronous: run in the thread pool) --------------------------------------------------

Result = tuple[int, Any, bool]  # status, payload, whether limits changed


def _list(ctx: Any, request: Request, actor: str, body: Any) -> Result:
    q = request.query_params
    limit = _int_param(q, "limit", 20)
    after_id, before_id = q.get("after_id") or None, q.get("before_id") or None
    if after_id and before_id:
        raise _bad("after_id and before_id are mutually exclusive")
    scope_type = q.get("scope_type") or None
    if scope_type is not None and scope_type not in _SCOPE_ID_FIELD:
        raise _bad(f"scope_type must be one of {', '.join(_SCOPE_ID_FIELD)}")
    rows, has_more = ctx.identity.list_spend_limits_page(limit, after_id, before_id, scope_type)
    data = [spend_limit_object(r) for r in rows]
    return 200, _page(data, has_more), False


def _create(ctx: Any, request: Request, actor: str, body: Any) -> Result:
    if not isinstance(body, Mapping):
        raise _bad("request body must be a JSON object with scope, amount and period")
    currency = body.get("currency", "USD")
    if currency != "USD":
        raise _bad(f'currency must be "USD", got {currency!r}')
    scope_type, scope_id = parse_scope(body.get("scope"))
    period = body.get("period")
    if period not in PERIODS:
        raise _bad(f"period must be one of {', '.join(PERIODS)}")
    if "amount" not in body:
        raise _bad("amount is required: a string of whole US cents, or null for unlimited")
    amount = body["amount"]
    if amount is not None and not isinstance(amount, str):
        raise _bad('amount must be a string of whole US cents (e.g. "2500") or null')
    row = ctx.identity.upsert_spend_limit(scope_type, scope_id, period, amount, actor, ctx.clock())
    return 200, spend_limit_object(row), True


def _get(ctx: Any, request: Request, actor: str, body: Any) -> Result:
    limit_id = request.path_params["limit_id"]
    row = ctx.identity.get_spend_limit(limit_id)
    if row is None:
        raise ApiError(404, "not_found_error", f"spend limit {limit_id!r} not found")
    return 200, spend_limit_object(row), False


def _delete(ctx: Any, request: Request, actor: str, body: Any) -> Result:
    limit_id = request.path_params["limit_id"]
    ctx.identity.delete_spend_limit(limit_id, actor, ctx.clock())
    return 200, {"type": "spend_limit_deleted", "id": limit_id}, True


def _audit(ctx: Any, request: Request, actor: str, body: Any) -> Result:
    q = request.query_params
    limit = _int_param(q, "limit", 100)
    raw_after = q.get("after_id") or None
    if raw_after is not None and not (raw_after.isascii() and raw_after.isdigit()):
        raise _bad("after_id must be a numeric audit entry id")
    rows, has_more = ctx.identity.audit_page(
        limit, None if raw_after is None else int(raw_after), action_prefix="spend_limit."
    )
    data = [
        {
            "type": "spend_limit_audit_entry",
            "id": r["id"],
            "created_at": rfc3339(r["ts_ms"]),
            "actor": r["actor"],
            "action": r["action"].removeprefix("spend_limit."),
            "spend_limit_id": r["target_id"],
            "before": None if r["before"] is None else spend_limit_object(r["before"]),
            "after": None if r["after"] is None else spend_limit_object(r["after"]),
        }
        for r in rows
    ]
    return 200, _page(data, has_more), False


# -- /effective --------------------------------------------------------------------------------------


def _cursor_binding(user_ids: list[str], periods: list[str], sort: str | None, q: str | None) -> str:
    """A short digest of the filters: a page token only works with the query that produced it."""
    text = json.dumps([sorted(user_ids), periods, sort, q], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_page(position: Any, binding: str) -> str:
    raw = json.dumps({"p": position, "f": binding}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page(token: str, binding: str) -> Any:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, bound = data["p"], data["f"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _bad("page is not a valid page token") from None
    if bound != binding:
        raise _bad("cursor does not match current query parameters")
    return position


def _ledger_spend(ctx: Any, periods: list[str], now: datetime) -> dict[str, dict[str, int]]:
    """period -> user_id -> nano-dollars spent since the period's UTC start, from the ledger."""
    out: dict[str, dict[str, int]] = {}
    for period in periods:
        start = utc_period(period, now)[0]
        out[period] = ctx.ledger.spend_since("user_id", int(start.timestamp() * 1000))
    return out


def _effective_rows(ctx: Any, request: Request, now: datetime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Everything /effective needs from the store, read in the thread pool: candidate rows (one per
    principal and period) without spend, and the parsed query."""
    q = request.query_params
    user_ids = _list_param(q, "user_ids")
    periods = _list_param(q, "period") or list(PERIODS)
    for p in periods:
        if p not in PERIODS:
            raise _bad(f"period must be one of {', '.join(PERIODS)}")
    periods = [p for p in PERIODS if p in periods]  # canonical order, no duplicates
    sort = q.get("sort") or None
    if sort not in (None, "spend_desc"):
        raise _bad("sort must be spend_desc")
    if sort == "spend_desc" and len(periods) != 1:
        raise _bad("sort=spend_desc needs exactly one period[]")
    needle = (q.get("q") or "").strip().lower() or None
    limit = _int_param(q, "limit", 20)
    binding = _cursor_binding(user_ids, periods, sort, needle)
    page = q.get("page") or None
    position = _decode_page(page, binding) if page else None

    known = {u["id"]: u for u in ctx.identity.list_users()}
    ledger_spend = _ledger_spend(ctx, periods, now) if getattr(ctx, "ledger", None) is not None else {}
    if user_ids:
        principals = sorted(set(user_ids))
    else:
        seen = set(known)
        for per_user in ledger_spend.values():
            seen.update(uid for uid, nanos in per_user.items() if nanos)
        principals = sorted(seen)
    if needle:
        principals = [
            uid
            for uid in principals
            if needle in uid.lower()
            or needle in (known.get(uid, {}).get("name") or "").lower()
            or needle in (known.get(uid, {}).get("email") or "").lower()
        ]
    limits = ctx.identity.list_spend_limits()
    mode = getattr(getattr(ctx, "settings", None), "group_limit_mode", None) or "min"
    rows = []
    for uid in principals:
        user = known.get(uid)
        group_ids = tuple(user["group_ids"]) if user else ()
        caps = resolve_caps(limits, uid, group_ids, None, group_limit_mode=mode)
        for period in periods:
            start, end = utc_period(period, now)
            cap = caps[period]
            rows.append(
                {
                    "type": "spend_summary",
                    "scope": {"type": "user", "user_id": uid},
                    "actor": {
                        "type": "user_actor",
                        "user_id": uid,
                        "name": (user or {}).get("name") or None,
                        "email_address": (user or {}).get("email") or None,
                        "deleted": False,
                    },
                    "groups": list(group_ids),
                    "amount": _amount_text(cap.amount_cents),
                    "currency": "USD",
                    "period": period,
                    "source": None if cap.source_type is None else {"type": cap.source_type},
                    "spend_limit_id": cap.limit_id,
                    "period_to_date_spend": "0",
                    "period_start": start.isoformat().replace("+00:00", "Z"),
                    "resets_at": end.isoformat().replace("+00:00", "Z"),
                    "_nanos": ledger_spend.get(period, {}).get(uid),
                }
            )
    query = {"periods": periods, "sort": sort, "limit": limit, "binding": binding, "position": position}
    return rows, query


def _amount_text(amount: Decimal | None) -> str | None:
    return None if amount is None else _cents_text(Decimal(amount))


async def _guard_spend(ctx: Any, user_id: str, group_ids: tuple[str, ...], now: datetime) -> dict[str, int]:
    """period -> period-to-date nano-dollars from the live counters, for the capped periods a running
    ``SpendGuard`` tracks; empty when there is no guard or its counters are unavailable."""
    guard = getattr(ctx, "guard", None)
    if guard is None:
        return {}
    try:
        usage = await guard.usage(SpendPrincipal(user_id, group_ids), now)
    except Exception:  # a counter outage must not break a read-only report; the ledger answers instead
        log.warning("spend counters unavailable for /effective; using the ledger", exc_info=True)
        return {}
    return {u.period: int(u.spent_nanos) for u in usage if u.scope == "user"}


async def _fill_spend(ctx: Any, rows: list[dict[str, Any]], now: datetime) -> None:
    """Set ``period_to_date_spend``: live counters where the guard tracks the period, else the ledger."""
    live: dict[str, dict[str, int]] = {}
    for row in rows:
        uid = row["scope"]["user_id"]
        if uid not in live:
            live[uid] = await _guard_spend(ctx, uid, tuple(row["groups"]), now)
        fallback = row.pop("_nanos", None)
        nanos = live[uid].get(row["period"], fallback)
        row["period_to_date_spend"] = "0" if not nanos else usd_to_cents_str(from_nanos(nanos))


async def _effective(ctx: Any, request: Request) -> dict[str, Any]:
    now = ctx.clock()
    rows, query = await run_in_threadpool(_effective_rows, ctx, request, now)
    limit, position = query["limit"], query["position"]
    period_index = {p: i for i, p in enumerate(PERIODS)}
    next_position: Any
    if query["sort"] == "spend_desc":
        # Ranking needs everyone's spend; the page token is an offset into the ranking.
        if position is not None and (
            not isinstance(position, int) or isinstance(position, bool) or position < 0
        ):
            raise _bad("page is not a valid page token")
        offset = position or 0
        await _fill_spend(ctx, rows, now)
        rows.sort(key=lambda r: (-Decimal(r["period_to_date_spend"]), r["scope"]["user_id"]))
        page = rows[offset : offset + limit]
        has_more = offset + limit < len(rows)
        next_position = offset + limit
    else:
        # Principals ascending, then periods: a page boundary stays put while spend accrues, and only
        # the page's principals need a counter read.
        if position is not None:
            try:
                after = (str(position[0]), int(position[1]))
            except (TypeError, ValueError, IndexError, KeyError):
                raise _bad("page is not a valid page token") from None
            rows = [r for r in rows if (r["scope"]["user_id"], period_index[r["period"]]) > after]
        page = rows[:limit]
        has_more = len(rows) > limit
        await _fill_spend(ctx, page, now)
        last = page[-1] if page else None
        next_position = None if last is None else [last["scope"]["user_id"], period_index[last["period"]]]
    next_page = _encode_page(next_position, query["binding"]) if has_more else None
    return {"data": page, "has_more": has_more, "next_page": next_page}


# -- plumbing ----------------------------------------------------------------------------------------


async def _notify(ctx: Any) -> None:
    hook = getattr(ctx, "on_limits_changed", None)
    if hook is None:
        return
    try:
        result = hook()
        if inspect.isawaitable(result):
            await result
    except Exception:  # the change is committed; other workers still see it through limits_version
        log.warning("on_limits_changed failed", exc_info=True)


Handler = Callable[[Any, Request, str, Any], Result]
Special = Callable[[Any, Request], Awaitable[Any]]


def _endpoint(
    ctx: Any, methods: dict[str, tuple[Handler | Special, bool]]
) -> Callable[[Request], Awaitable[Response]]:
    """One ASGI endpoint per path that dispatches on the method, so even a wrong method gets the JSON
    envelope and a ``request-id``. ``methods`` maps a method to (handler, needs a write key); a handler
    that is a coroutine function does its own threading (``/effective``)."""

    async def endpoint(request: Request) -> Response:
        rid = new_request_id()
        try:
            entry = methods.get("GET" if request.method == "HEAD" else request.method)
            if entry is None:
                allowed = ", ".join(sorted(methods))
                raise ApiError(
                    405, "invalid_request_error", f"method {request.method} not allowed; use {allowed}"
                )
            handler, write = entry
            actor = authorise(ctx, request.headers.get("x-api-key"), write=write)
            if inspect.iscoroutinefunction(handler):
                return _json(await handler(ctx, request), rid)
            body = None
            if request.method == "POST":
                raw = await request.body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    raise _bad("request body is not valid JSON") from None
            status, payload, changed = await run_in_threadpool(handler, ctx, request, actor, body)
            if changed:
                await _notify(ctx)
            return _json(payload, rid, status)
        except ApiError as exc:
            return _error(exc.status, exc.err_type, exc.message, rid)
        except NotFound as exc:
            return _error(404, "not_found_error", str(exc), rid)
        except Invalid as exc:
            return _error(400, "invalid_request_error", str(exc), rid)
        except Conflict as exc:
            return _error(409, "conflict_error", str(exc), rid)
        except Exception:
            log.exception("admin API request failed (request-id %s)", rid)
            return _error(500, "api_error", "internal error in the gateway admin API", rid)

    return endpoint


def admin_routes(ctx: Any) -> list[Route]:
    """The admin API's routes, bound to the gateway context ``ctx``.

    ``ctx`` provides ``identity``, ``ledger``, ``guard`` (or None), ``clock``, ``admin_keyring`` and
    optionally ``on_limits_changed``. Fixed sub-paths come before ``{limit_id}``.
    """
    # Every path accepts every common method so a wrong one still gets the JSON envelope (405).
    m = _ALL_METHODS
    return [
        Route(BASE, _endpoint(ctx, {"GET": (_list, False), "POST": (_create, True)}), methods=m),
        Route(f"{BASE}/effective", _endpoint(ctx, {"GET": (_effective, False)}), methods=m),
        Route(f"{BASE}/audit", _endpoint(ctx, {"GET": (_audit, False)}), methods=m),
        Route(
            f"{BASE}/{{limit_id}}",
            _endpoint(ctx, {"GET": (_get, False), "DELETE": (_delete, True)}),
            methods=m,
        ),
    ]
