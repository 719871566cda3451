"""``ccledger users|groups|keys|limits``: administer the gateway's identities and limits from a shell.

These commands talk to the store directly (the same ``IdentityStore`` the admin API uses), so they work
before any gateway runs and on a machine that only has the database URL. Every change is audited with the
actor ``cli:<os user>``; the gateway notices it through ``limits_version`` on its next poll.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ccledger.store.identity import IdentityStore

users_app = typer.Typer(help="Developers who use the gateway.", no_args_is_help=True)
groups_app = typer.Typer(
    help="Groups of developers (group spend caps apply to each member).", no_args_is_help=True
)
keys_app = typer.Typer(help="Virtual API keys for the gateway (stored hashed).", no_args_is_help=True)
limits_app = typer.Typer(help="Spend caps and rate-limit planning.", no_args_is_help=True)

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", envvar="CCLEDGER_DB", help="Store URL (sqlite:///… or postgresql://…); env CCLEDGER_DB."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# -- plumbing ----------------------------------------------------------------------------------------


def _db_url(db: str | None) -> str:
    """``--db``/``CCLEDGER_DB``, else the root command's ``--db``, else the configured default."""
    if db:
        return db
    try:
        from ccledger.cli.main import state

        if state.db:
            return state.db
    except ImportError:  # pragma: no cover - only when this module is used without the root app
        pass
    from ccledger.settings import Settings

    return Settings().db


@contextmanager
def _store(db: str | None) -> Iterator[IdentityStore]:
    from ccledger.store.identity import IdentityError, IdentityStore
    from ccledger.store.ledger import Ledger

    ledger = Ledger.open(_db_url(db))
    try:
        yield IdentityStore(ledger.engine)
    except IdentityError as exc:
        _err().print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        ledger.close()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (some containers): still say where the change came from
        return f"cli:uid{os.getuid()}" if hasattr(os, "getuid") else "cli"


def _now() -> datetime:
    return datetime.now(UTC)


def _out() -> Console:
    from rich.console import Console

    return Console()


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    _err().print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    # Ids and hints are what people copy into the next command: never truncate them.
    for i, col in enumerate(columns):
        if col in ("id", "hint", "target", "action", "#"):
            width = max((len(r[i]) for r in rows), default=len(col))
            table.add_column(col, no_wrap=True, min_width=width)
        else:
            table.add_column(col)
    for row in rows:
        table.add_row(*row)
    from ccledger.reports.tables import print_table

    print_table(_out(), table)


# -- users -------------------------------------------------------------------------------------------


@users_app.command("add")
def users_add(
    user_id: Annotated[str, typer.Argument(help="User id (e.g. the IdP subject or login).")],
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    email: Annotated[str, typer.Option("--email", help="Email address.")] = "",
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Add to this group (repeatable).")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Create a user."""
    with _store(db) as store:
        store.create_user(user_id, name, email, actor=_actor(), now=_now())
        for g in group or []:
            store.add_member(user_id, g, actor=_actor(), now=_now())
    _err().print(f"created user [bold]{user_id}[/bold]; next: ccledger keys create {user_id}")


@users_app.command("list")
def users_list(as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """List users with their groups."""
    with _store(db) as store:
        users = store.list_users()
    if as_json:
        _print_json(users)
        return
    _table(
        "Users",
        ["id", "name", "email", "groups", "status", "created (UTC)"],
        [
            [u["id"], u["name"], u["email"], ", ".join(u["group_ids"]),
             "disabled" if u["disabled"] else "active", _when(u["created_ms"])]
            for u in users
        ],
    )  # fmt: skip


@users_app.command("disable")
def users_disable(user_id: str, db: DbOpt = None) -> None:
    """Block all of a user's keys at once (reversible with ``enable``)."""
    with _store(db) as store:
        store.disable_user(user_id, actor=_actor(), now=_now())
    _err().print(f"disabled user [bold]{user_id}[/bold]")


@users_app.command("enable")
def users_enable(user_id: str, db: DbOpt = None) -> None:
    """Re-enable a disabled user."""
    with _store(db) as store:
        store.enable_user(user_id, actor=_actor(), now=_now())
    _err().print(f"enabled user [bold]{user_id}[/bold]")


# -- groups ------------------------------------------------------------------------------------------


@groups_app.command("add")
def groups_add(
    group_id: str,
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    db: DbOpt = None,
) -> None:
    """Create a group."""
    with _store(db) as store:
        store.create_group(group_id, name, actor=_actor(), now=_now())
    _err().print(f"created group [bold]{group_id}[/bold]")


@groups_app.command("list")
def groups_list(as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """List groups with their members."""
    with _store(db) as store:
        groups = store.list_groups()
    if as_json:
        _print_json(groups)
        return
    _table(
        "Groups",
        ["id", "name", "members"],
        [[g["id"], g["name"], ", ".join(g["member_ids"])] for g in groups],
    )


@groups_app.command("add-member")
def groups_add_member(user_id: str, group_id: str, db: DbOpt = None) -> None:
    """Put USER in GROUP (the group is created if missing)."""
    with _store(db) as store:
        added = store.add_member(user_id, group_id, actor=_actor(), now=_now())
    _err().print(f"{user_id} {'added to' if added else 'is already in'} {group_id}")


@groups_app.command("remove-member")
def groups_remove_member(user_id: str, group_id: str, db: DbOpt = None) -> None:
    """Take USER out of GROUP."""
    with _store(db) as store:
        removed = store.remove_member(user_id, group_id, actor=_actor(), now=_now())
    if not removed:
        raise _fail(f"{user_id} is not in {group_id}")
    _err().print(f"{user_id} removed from {group_id}")


# -- keys --------------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    user_id: str,
    name: Annotated[str, typer.Option("--name", help="A label, e.g. the machine it is for.")] = "",
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Expire after N days.")
    ] = None,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Create a key for USER and print it. It is shown only this once: the store keeps only its hash."""
    now = _now()
    expires = None if expires_days is None else now + timedelta(days=expires_days)
    with _store(db) as store:
        key_id, raw = store.create_key(user_id, name, expires, actor=_actor(), now=now)
    if as_json:
        _print_json({"key_id": key_id, "key": raw, "user_id": user_id, "expires_at": expires})
    else:
        typer.echo(raw)
    err = _err()
    err.print(
        f"[yellow]Store this key now: it will not be shown again.[/yellow] key id {key_id} for {user_id}"
        + (f", expires {expires:%Y-%m-%d %H:%M} UTC" if expires else "")
    )
    err.print(
        "Claude Code: set ANTHROPIC_BASE_URL to the gateway and ANTHROPIC_AUTH_TOKEN (or apiKeyHelper) to it."
    )


def _key_status(key: dict[str, Any], now_ms: int) -> str:
    if key["revoked_ms"] is not None:
        return "revoked"
    if key["expires_ms"] is not None and now_ms >= key["expires_ms"]:
        return "expired"
    return "active"


@keys_app.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """List keys (id, owner, hint, status); never the keys themselves."""
    with _store(db) as store:
        keys = store.list_keys(user)
    now_ms = int(_now().timestamp() * 1000)
    if as_json:
        _print_json([{**k, "status": _key_status(k, now_ms)} for k in keys])
        return
    _table(
        "API keys",
        ["id", "user", "name", "hint", "status", "created (UTC)", "expires (UTC)"],
        [
            [k["id"], k["user_id"], k["name"], k["hint"], _key_status(k, now_ms), _when(k["created_ms"]),
             _when(k["expires_ms"])]
            for k in keys
        ],
    )  # fmt: skip


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: DbOpt = None) -> None:
    """Revoke a key with immediate effect (a running gateway drops it on its next limits poll)."""
    with _store(db) as store:
        done = store.revoke_key(key_id, _now(), actor=_actor())
    _err().print(f"revoked {key_id}" if done else f"{key_id} was already revoked")


# -- limits ------------------------------------------------------------------------------------------


def parse_scope(text: str) -> tuple[str, str | None]:
    """``org`` | ``user:ID`` | ``group:ID`` | ``key:KEYID`` → (scope_type, scope_id)."""
    if text in ("org", "organization"):
        return "organization", None
    kind, sep, ident = text.partition(":")
    types = {
        "user": "user",
        "group": "rbac_group",
        "rbac_group": "rbac_group",
        "key": "api_key",
        "api_key": "api_key",
    }
    if not sep or kind not in types or not ident:
        raise typer.BadParameter("use org, user:ID, group:ID or key:KEYID", param_hint="--scope")
    return types[kind], ident


def _usd_to_cents(usd: str) -> str:
    try:
        cents = Decimal(usd) * 100
    except InvalidOperation:
        raise typer.BadParameter(f"not a number: {usd!r}", param_hint="--usd") from None
    if not cents.is_finite() or cents < 0 or cents != cents.to_integral_value():
        raise typer.BadParameter("a non-negative amount in whole cents, e.g. 25 or 12.50", param_hint="--usd")
    return str(int(cents))


def _scope_text(row: dict[str, Any]) -> str:
    prefix = {"organization": "org", "rbac_group": "group", "user": "user", "api_key": "key"}[
        row["scope_type"]
    ]
    return prefix if row["scope_id"] is None else f"{prefix}:{row['scope_id']}"


def _amount_text(cents: str | None) -> str:
    if cents is None:
        return "unlimited"
    return f"${Decimal(cents) / 100:,.2f}"


@limits_app.command("set")
def limits_set(
    scope: Annotated[str, typer.Option("--scope", help="org | user:ID | group:ID | key:KEYID")],
    period: Annotated[str, typer.Option("--period", help="daily | weekly | monthly")],
    usd: Annotated[str | None, typer.Option("--usd", help="Cap in US dollars, e.g. 25 or 12.50.")] = None,
    unlimited: Annotated[
        bool, typer.Option("--unlimited", help="No cap (overrides a group/org cap).")
    ] = False,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Create or replace the cap of a scope for one period (a scope holds one cap per period)."""
    if (usd is None) == (not unlimited):
        raise typer.BadParameter("give exactly one of --usd AMOUNT or --unlimited")
    scope_type, scope_id = parse_scope(scope)
    cents = None if unlimited else _usd_to_cents(usd or "")
    with _store(db) as store:
        row = store.upsert_spend_limit(scope_type, scope_id, period, cents, _actor(), _now())
    if as_json:
        _print_json(row)
        return
    _err().print(f"{row['id']}: {_scope_text(row)} {row['period']} cap = {_amount_text(row['amount_cents'])}")


@limits_app.command("list")
def limits_list(as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """List spend caps in creation order."""
    with _store(db) as store:
        rows = store.list_spend_limit_rows()
    if as_json:
        _print_json(rows)
        return
    _table(
        "Spend limits",
        ["id", "scope", "period", "cap", "updated (UTC)"],
        [
            [r["id"], _scope_text(r), r["period"], _amount_text(r["amount_cents"]), _when(r["updated_ms"])]
            for r in rows
        ],
    )


@limits_app.command("delete")
def limits_delete(limit_id: str, db: DbOpt = None) -> None:
    """Delete a cap (the scope falls back to the next level: group, then org, then unlimited)."""
    with _store(db) as store:
        row = store.delete_spend_limit(limit_id, _actor(), _now())
    _err().print(f"deleted {limit_id} ({_scope_text(row)} {row['period']})")


@limits_app.command("audit")
def limits_audit(
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many entries, newest first.")] = 50,
    all_changes: Annotated[
        bool, typer.Option("--all", help="Include user, group, key and setting changes.")
    ] = False,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Who changed which cap, when, from what to what."""
    with _store(db) as store:
        rows, has_more = store.audit_page(limit, action_prefix=None if all_changes else "spend_limit.")
    if as_json:
        _print_json(rows)
        return

    def summary(obj: Any) -> str:
        if obj is None:
            return "-"
        if isinstance(obj, dict) and "scope_type" in obj:
            return f"{_scope_text(obj)} {obj['period']} {_amount_text(obj['amount_cents'])}"
        return json.dumps(obj, sort_keys=True)

    def action(name: str) -> str:
        return name if all_changes else name.removeprefix("spend_limit.")

    _table(
        "Audit (newest first)" + (" — more with --limit" if has_more else ""),
        ["#", "when (UTC)", "actor", "action", "target", "change"],
        [
            [str(r["id"]), _when(r["ts_ms"]), r["actor"], action(r["action"]), r["target_id"],
             f"{summary(r['before'])} → {summary(r['after'])}"]
            for r in rows
        ],
    )  # fmt: skip


def _plan_setting(plan: Any) -> dict[str, Any]:
    """The ``rate_limits`` setting the gateway reads (floats: RPM figures can be fractional per user)."""
    return {
        "rpm_per_user": float(plan.rpm_per_user),
        "tpm_per_user": int(plan.tpm_per_user),
        "org_tpm": int(plan.org_tpm),
        "org_rpm": float(plan.org_rpm),
    }


@limits_app.command("plan")
def limits_plan(
    users: Annotated[
        int | None, typer.Option("--users", min=1, help="Team size (default: active users in the store).")
    ] = None,
    peak_event: Annotated[
        bool, typer.Option("--peak-event", help="Size for a live training/hackathon peak.")
    ] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the suggestion as the gateway's rate limits.")
    ] = False,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Recommend per-user and org TPM/RPM for a team size (Anthropic's Claude Code team-size table)."""
    from ccledger.control.plan import recommend

    if users is None:
        with _store(db) as store:
            users = sum(1 for u in store.list_users() if not u["disabled"])
        if users < 1:
            raise _fail("no users in the store; pass --users N")
    plan = recommend(users, peak_event)
    setting = _plan_setting(plan)
    if apply:
        with _store(db) as store:
            merged = {**(store.get_setting("rate_limits") or {}), **setting}
            store.set_setting("rate_limits", merged, _now(), actor=_actor())
    if as_json:
        _print_json(
            {
                "users": plan.users, "peak_event": plan.peak_event, "band": plan.band.label,
                "tpm_per_user_range": [plan.tpm_per_user_low, plan.tpm_per_user_high],
                "rpm_per_user_range": [float(plan.rpm_per_user_low), float(plan.rpm_per_user_high)],
                **setting, "applied": apply,
            }
        )  # fmt: skip
        return
    _table(
        f"Rate-limit plan for {plan.users} user(s)" + (" (peak event)" if peak_event else ""),
        ["", "per user (range)", "per user (suggested)", "organisation total"],
        [
            ["TPM", f"{plan.tpm_per_user_low:,}–{plan.tpm_per_user_high:,}", f"{plan.tpm_per_user:,}",
             f"{plan.org_tpm:,}"],
            ["RPM", f"{plan.rpm_per_user_low}–{plan.rpm_per_user_high}", f"{plan.rpm_per_user}",
             f"{plan.org_rpm:,}"],
        ],
    )  # fmt: skip
    err = _err()
    err.print(
        f"team-size band {plan.band.label}; users may burst past their share while the org pool has room"
    )
    if apply:
        err.print("[green]applied[/green] as the gateway's rate limits (setting 'rate_limits')")
    else:
        err.print("re-run with --apply to make these the gateway's rate limits")
