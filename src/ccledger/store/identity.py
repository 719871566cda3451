"""Who may use the gateway, and what they may spend: users, groups, virtual keys, spend caps, audit.

Everything here is plain SQLAlchemy Core over the tables in ``store.schema`` so the same statements run on
SQLite (one developer, embedded) and PostgreSQL (a team behind several gateway workers).

Why these choices:

* Virtual keys are stored only as a SHA-256 hex digest plus a short display hint. A leaked database (or
  backup) therefore yields no usable credential; the raw key is shown exactly once, when created. The
  keys carry 240+ bits of randomness, so a fast unsalted hash is enough (no password stretching needed).
* Every mutation writes an ``admin_audit`` row with before/after JSON *in the same transaction*, so the
  trail can never disagree with the data (spend-limits.md §A2 "Audit").
* Every change that can alter an admission decision bumps a version counter stored in ``settings_kv`` in
  that same transaction. Gateway workers poll ``limits_version()`` (a primary-key read) and reload their
  caches only when it moved, which works across processes without any pub/sub.
* Spend-limit ``POST`` is an upsert keyed on (scope, period): a scope holds at most one cap per period.
  The row keeps its ``spl_`` id and creation order (``seq``) when replaced so list cursors stay valid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Engine, Text, and_, cast, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from ccledger.core.limits import SpendLimit
from ccledger.core.periods import PERIODS
from ccledger.store.engine import migrate
from ccledger.store.ledger import to_ms
from ccledger.store.schema import admin_audit, api_keys, groups, settings_kv, spend_limits, user_groups, users

SCOPE_TYPES = ("organization", "rbac_group", "user", "api_key")
KEY_PREFIX = "ccl_"
# Reserved settings key holding the cache-invalidation counter; never a user-visible setting.
LIMITS_VERSION_KEY = "__limits_version__"
# A raw key is KEY_PREFIX + token_urlsafe(32) (43 chars). Anything far longer is not ours: reject it before
# hashing so a client cannot make us hash megabytes per request.
_MAX_RAW_KEY_LEN = 256


class IdentityError(Exception):
    """Base of the errors this store raises; the admin API maps them to HTTP statuses."""


class NotFound(IdentityError, LookupError):
    """The named user, group, key or spend limit does not exist (404)."""


class Conflict(IdentityError):
    """The object already exists (409)."""


class Invalid(IdentityError, ValueError):
    """A malformed argument: unknown scope or period, bad amount, unknown cursor (400)."""


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller of the gateway: what every usage record is attributed to."""

    user_id: str
    group_ids: tuple[str, ...]
    key_id: str
    user_name: str
    user_email: str
    # When the key stops working (epoch ms), so a cache of principals can honour expiry without a query.
    key_expires_ms: int | None = None


def hash_key(raw_key: str) -> str:
    """SHA-256 hex of a raw key: the only form in which a key is ever stored or compared."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def key_hint(raw_key: str) -> str:
    """A short, non-secret fragment so people can tell their keys apart in listings."""
    return f"{raw_key[:8]}...{raw_key[-4:]}"


def normalise_cents(amount_cents: str | int | Decimal | None) -> str | None:
    """Validate an admin-API cap amount: a whole, non-negative number of US cents, or None (unlimited).

    Returned canonical (no sign, no leading zeros, no exponent) so equal caps compare equal as strings.
    """
    if amount_cents is None:
        return None
    if isinstance(amount_cents, bool):
        raise Invalid("amount must be a string of whole US cents or null")
    text = str(amount_cents).strip()
    if isinstance(amount_cents, str) and not (text.isascii() and text.isdigit()):
        raise Invalid(
            f'amount must be a string of whole US cents (e.g. "2500") or null, got {amount_cents!r}'
        )
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Invalid(f"amount is not a number: {amount_cents!r}") from None
    if not value.is_finite() or value < 0 or value != value.to_integral_value():
        raise Invalid(f"amount must be a whole, non-negative number of US cents, got {amount_cents!r}")
    return str(int(value))


def _now(now: datetime | None) -> datetime:
    # A default only for interactive callers (CLI); the gateway always passes its injectable clock.
    return now if now is not None else datetime.now(UTC)


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_hex(nbytes)


def _insert_for(conn: Connection) -> Callable[..., Any]:
    """The dialect's INSERT construct: both SQLite and PostgreSQL offer the same ON CONFLICT API."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _limit_dict(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "seq": int(m["seq"]),
        "scope_type": m["scope_type"],
        "scope_id": m["scope_id"] or None,
        "period": m["period"],
        "amount_cents": m["amount_cents"],
        "currency": m["currency"],
        "created_ms": int(m["created_ms"]),
        "updated_ms": int(m["updated_ms"]),
    }


def _key_dict(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "user_id": m["user_id"],
        "name": m["name"],
        "hint": m["hint"],
        "created_ms": int(m["created_ms"]),
        "expires_ms": None if m["expires_ms"] is None else int(m["expires_ms"]),
        "revoked_ms": None if m["revoked_ms"] is None else int(m["revoked_ms"]),
    }


def _audit_dict(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": int(m["id"]),
        "ts_ms": int(m["ts_ms"]),
        "actor": m["actor"],
        "action": m["action"],
        "target_id": m["target_id"],
        "before": None if m["before"] is None else json.loads(m["before"]),
        "after": None if m["after"] is None else json.loads(m["after"]),
    }


class IdentityStore:
    """Users, groups, virtual keys, spend limits, admin audit and small settings over one engine.

    Thread-safe as SQLAlchemy engines are. Methods that change state take ``now`` (the caller's clock) and
    an ``actor`` for the audit trail (``admin-key:<id>`` from the admin API, ``cli:<user>`` from the CLI).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Cheap when already migrated (cached per URL); makes a bare engine usable without Ledger.open.
        migrate(engine)

    # -- shared helpers ----------------------------------------------------------------------------

    def _audit(
        self, conn: Connection, now_ms: int, actor: str, action: str, target: str, before: Any, after: Any
    ) -> None:
        conn.execute(
            admin_audit.insert().values(
                ts_ms=now_ms,
                actor=actor,
                action=action,
                target_id=target,
                before=None if before is None else _dump(before),
                after=None if after is None else _dump(after),
            )
        )

    def _bump(self, conn: Connection, now_ms: int) -> None:
        """Advance the invalidation counter atomically (one statement, no read-modify-write race)."""
        ins = _insert_for(conn)(settings_kv).values(key=LIMITS_VERSION_KEY, value="1", updated_ms=now_ms)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[settings_kv.c.key],
                set_={
                    "value": cast(cast(settings_kv.c.value, BigInteger) + 1, Text),
                    "updated_ms": ins.excluded.updated_ms,
                },
            )
        )

    def limits_version(self) -> int:
        """A counter bumped by every change to limits, keys, users, groups or settings.

        The gateway caches resolved caps and key lookups and reloads them when this number moves.
        """
        with self.engine.connect() as conn:
            value = conn.execute(
                select(settings_kv.c.value).where(settings_kv.c.key == LIMITS_VERSION_KEY)
            ).scalar()
        return int(value) if value is not None else 0

    # -- users ---------------------------------------------------------------------------------------

    def create_user(
        self,
        user_id: str,
        name: str = "",
        email: str = "",
        *,
        actor: str = "system",
        now: datetime | None = None,
    ) -> dict[str, Any]:
        if not user_id:
            raise Invalid("user id must not be empty")
        now_ms = to_ms(_now(now))
        after = {"id": user_id, "name": name, "email": email, "disabled": False}
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        id=user_id, name=name, email=email, created_ms=now_ms, disabled=False
                    )
                )
                self._audit(conn, now_ms, actor, "user.create", user_id, None, after)
                self._bump(conn, now_ms)
        except IntegrityError:
            raise Conflict(f"user {user_id!r} already exists") from None
        return {**after, "created_ms": now_ms, "group_ids": []}

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
            if row is None:
                return None
            gids = conn.execute(
                select(user_groups.c.group_id)
                .where(user_groups.c.user_id == user_id)
                .order_by(user_groups.c.group_id)
            ).scalars()
            return self._user_dict(row, list(gids))

    @staticmethod
    def _user_dict(row: Row[Any], group_ids: list[str]) -> dict[str, Any]:
        m = row._mapping
        return {
            "id": m["id"],
            "name": m["name"],
            "email": m["email"],
            "created_ms": int(m["created_ms"]),
            "disabled": bool(m["disabled"]),
            "group_ids": group_ids,
        }

    def list_users(self) -> list[dict[str, Any]]:
        """All users in id order, each with its ``group_ids`` (what /effective and the CLI display)."""
        with self.engine.connect() as conn:
            memberships: dict[str, list[str]] = {}
            for uid, gid in conn.execute(
                select(user_groups.c.user_id, user_groups.c.group_id).order_by(user_groups.c.group_id)
            ):
                memberships.setdefault(uid, []).append(gid)
            rows = conn.execute(select(users).order_by(users.c.id)).all()
        return [self._user_dict(r, memberships.get(r.id, [])) for r in rows]

    def _set_disabled(self, user_id: str, disabled: bool, actor: str, now: datetime | None) -> None:
        now_ms = to_ms(_now(now))
        with self.engine.begin() as conn:
            row = conn.execute(select(users.c.disabled).where(users.c.id == user_id)).first()
            if row is None:
                raise NotFound(f"no user {user_id!r}")
            conn.execute(update(users).where(users.c.id == user_id).values(disabled=disabled))
            action = "user.disable" if disabled else "user.enable"
            self._audit(
                conn, now_ms, actor, action, user_id, {"disabled": bool(row[0])}, {"disabled": disabled}
            )
            self._bump(conn, now_ms)

    def disable_user(self, user_id: str, *, actor: str = "system", now: datetime | None = None) -> None:
        """Block every key of the user at once (keys are kept so the user can be re-enabled)."""
        self._set_disabled(user_id, True, actor, now)

    def enable_user(self, user_id: str, *, actor: str = "system", now: datetime | None = None) -> None:
        self._set_disabled(user_id, False, actor, now)

    # -- groups --------------------------------------------------------------------------------------

    def create_group(
        self, group_id: str, name: str = "", *, actor: str = "system", now: datetime | None = None
    ) -> dict[str, Any]:
        if not group_id:
            raise Invalid("group id must not be empty")
        now_ms = to_ms(_now(now))
        after = {"id": group_id, "name": name}
        try:
            with self.engine.begin() as conn:
                conn.execute(groups.insert().values(id=group_id, name=name, created_ms=now_ms))
                self._audit(conn, now_ms, actor, "group.create", group_id, None, after)
                self._bump(conn, now_ms)
        except IntegrityError:
            raise Conflict(f"group {group_id!r} already exists") from None
        return {**after, "created_ms": now_ms, "member_ids": []}

    def add_member(
        self, user_id: str, group_id: str, *, actor: str = "system", now: datetime | None = None
    ) -> bool:
        """Put a user in a group; returns False if already a member.

        The user must exist; a missing group is created on the fly, because groups mirror IdP group
        names and requiring a separate ``groups add`` first only adds a step that can be forgotten.
        """
        now_ms = to_ms(_now(now))
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is None:
                raise NotFound(f"no user {user_id!r}")
            if conn.execute(select(groups.c.id).where(groups.c.id == group_id)).first() is None:
                conn.execute(groups.insert().values(id=group_id, name="", created_ms=now_ms))
                self._audit(conn, now_ms, actor, "group.create", group_id, None, {"id": group_id, "name": ""})
            exists = conn.execute(
                select(user_groups.c.user_id).where(
                    user_groups.c.user_id == user_id, user_groups.c.group_id == group_id
                )
            ).first()
            if exists is not None:
                return False
            conn.execute(user_groups.insert().values(user_id=user_id, group_id=group_id))
            self._audit(
                conn,
                now_ms,
                actor,
                "group.add_member",
                group_id,
                None,
                {"user_id": user_id, "group_id": group_id},
            )
            self._bump(conn, now_ms)
        return True

    def remove_member(
        self, user_id: str, group_id: str, *, actor: str = "system", now: datetime | None = None
    ) -> bool:
        """Take a user out of a group; returns False if they were not a member."""
        now_ms = to_ms(_now(now))
        with self.engine.begin() as conn:
            done = conn.execute(
                delete(user_groups).where(
                    user_groups.c.user_id == user_id, user_groups.c.group_id == group_id
                )
            )
            if not done.rowcount:
                return False
            self._audit(
                conn,
                now_ms,
                actor,
                "group.remove_member",
                group_id,
                {"user_id": user_id, "group_id": group_id},
                None,
            )
            self._bump(conn, now_ms)
        return True

    def list_groups(self) -> list[dict[str, Any]]:
        """All groups in id order, each with its ``member_ids``."""
        with self.engine.connect() as conn:
            members: dict[str, list[str]] = {}
            for uid, gid in conn.execute(
                select(user_groups.c.user_id, user_groups.c.group_id).order_by(user_groups.c.user_id)
            ):
                members.setdefault(gid, []).append(uid)
            rows = conn.execute(select(groups).order_by(groups.c.id)).all()
        return [
            {"id": r.id, "name": r.name, "created_ms": int(r.created_ms), "member_ids": members.get(r.id, [])}
            for r in rows
        ]

    # -- virtual keys --------------------------------------------------------------------------------

    def create_key(
        self,
        user_id: str,
        name: str = "",
        expires: datetime | None = None,
        *,
        actor: str = "system",
        now: datetime | None = None,
    ) -> tuple[str, str]:
        """Mint a key for a user. Returns ``(key_id, raw_key)``; the raw key is never retrievable again."""
        now_ms = to_ms(_now(now))
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = _new_id("key_", 8)  # short: people type it into `keys revoke`
        expires_ms = None if expires is None else to_ms(expires)
        after = {
            "id": key_id,
            "user_id": user_id,
            "name": name,
            "hint": key_hint(raw),
            "expires_ms": expires_ms,
        }
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is None:
                raise NotFound(f"no user {user_id!r}")
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    user_id=user_id,
                    name=name,
                    hint=key_hint(raw),
                    key_hash=hash_key(raw),
                    created_ms=now_ms,
                    expires_ms=expires_ms,
                    revoked_ms=None,
                )
            )
            self._audit(conn, now_ms, actor, "key.create", key_id, None, after)
            self._bump(conn, now_ms)
        return key_id, raw

    def revoke_key(self, key_id: str, now: datetime | None = None, *, actor: str = "system") -> bool:
        """Revoke with immediate effect; returns False if it was already revoked."""
        now_ms = to_ms(_now(now))
        with self.engine.begin() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise NotFound(f"no key {key_id!r}")
            if row.revoked_ms is not None:
                return False
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_ms=now_ms))
            before = _key_dict(row)
            self._audit(conn, now_ms, actor, "key.revoke", key_id, before, {**before, "revoked_ms": now_ms})
            self._bump(conn, now_ms)
        return True

    def list_keys(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Key metadata (never the hash), oldest first."""
        stmt = select(api_keys).order_by(api_keys.c.created_ms, api_keys.c.id)
        if user_id is not None:
            stmt = stmt.where(api_keys.c.user_id == user_id)
        with self.engine.connect() as conn:
            return [_key_dict(r) for r in conn.execute(stmt)]

    def authenticate(self, raw_key: str, now: datetime) -> Principal | None:
        """The principal a raw key belongs to, or None if unknown, revoked, expired or the user disabled.

        The row is found by its hash (an index lookup on a value the caller cannot steer bit by bit), and
        the stored digest is then compared with ``hmac.compare_digest`` so the final check takes the same
        time however many leading characters happen to match.
        """
        if not raw_key or len(raw_key) > _MAX_RAW_KEY_LEN or not raw_key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(raw_key)
        now_ms = to_ms(now)
        stmt = (
            select(
                api_keys.c.id,
                api_keys.c.key_hash,
                api_keys.c.expires_ms,
                api_keys.c.revoked_ms,
                users.c.id.label("user_id"),
                users.c.name,
                users.c.email,
                users.c.disabled,
            )
            .select_from(api_keys.join(users, users.c.id == api_keys.c.user_id))
            .where(api_keys.c.key_hash == digest)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
            if row is None or not hmac.compare_digest(row.key_hash.encode(), digest.encode()):
                return None
            if row.revoked_ms is not None or row.disabled:
                return None
            if row.expires_ms is not None and now_ms >= row.expires_ms:
                return None
            gids = conn.execute(
                select(user_groups.c.group_id)
                .where(user_groups.c.user_id == row.user_id)
                .order_by(user_groups.c.group_id)
            ).scalars()
            return Principal(
                user_id=row.user_id,
                group_ids=tuple(gids),
                key_id=row.id,
                user_name=row.name,
                user_email=row.email,
                key_expires_ms=None if row.expires_ms is None else int(row.expires_ms),
            )

    # -- spend limits --------------------------------------------------------------------------------

    @staticmethod
    def _check_scope(scope_type: str, scope_id: str | None) -> str:
        if scope_type not in SCOPE_TYPES:
            raise Invalid(f"unknown scope type {scope_type!r}; expected one of {', '.join(SCOPE_TYPES)}")
        if scope_type == "organization":
            if scope_id:
                raise Invalid("an organization scope takes no id")
            return ""
        if not scope_id:
            raise Invalid(f"a {scope_type} scope needs an id")
        return scope_id

    def upsert_spend_limit(
        self,
        scope_type: str,
        scope_id: str | None,
        period: str,
        amount_cents: str | None,
        actor: str,
        now: datetime,
    ) -> dict[str, Any]:
        """Create or replace the cap of (scope, period). Returns the stored row (see ``get_spend_limit``).

        A replaced cap keeps its id, ``seq`` and ``created_ms``. Two writers racing to create the same
        cap collide on the unique constraint; the loser retries and becomes an update, so the audit
        trail still shows a correct ``before``.
        """
        sid = self._check_scope(scope_type, scope_id)
        if period not in PERIODS:
            raise Invalid(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
        amount = normalise_cents(amount_cents)
        now_ms = to_ms(now)
        key = and_(
            spend_limits.c.scope_type == scope_type,
            spend_limits.c.scope_id == sid,
            spend_limits.c.period == period,
        )
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    row = conn.execute(select(spend_limits).where(key).with_for_update()).first()
                    if row is not None:
                        before = _limit_dict(row)
                        conn.execute(
                            update(spend_limits)
                            .where(spend_limits.c.id == row.id)
                            .values(amount_cents=amount, updated_ms=now_ms)
                        )
                        after = {**before, "amount_cents": amount, "updated_ms": now_ms}
                        action = "spend_limit.update"
                    else:
                        before = None
                        # Creation order for cursors. Racing creators may share a seq; ties order by id.
                        seq = (
                            int(
                                conn.execute(select(func.coalesce(func.max(spend_limits.c.seq), 0))).scalar()
                                or 0
                            )
                            + 1
                        )
                        limit_id = _new_id("spl_")
                        conn.execute(
                            spend_limits.insert().values(
                                id=limit_id,
                                seq=seq,
                                scope_type=scope_type,
                                scope_id=sid,
                                period=period,
                                amount_cents=amount,
                                currency="USD",
                                created_ms=now_ms,
                                updated_ms=now_ms,
                            )
                        )
                        after = {
                            "id": limit_id,
                            "seq": seq,
                            "scope_type": scope_type,
                            "scope_id": sid or None,
                            "period": period,
                            "amount_cents": amount,
                            "currency": "USD",
                            "created_ms": now_ms,
                            "updated_ms": now_ms,
                        }
                        action = "spend_limit.create"
                    self._audit(conn, now_ms, actor, action, after["id"], before, after)
                    self._bump(conn, now_ms)
                return after
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_spend_limit(self, limit_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(spend_limits).where(spend_limits.c.id == limit_id)).first()
        return None if row is None else _limit_dict(row)

    def delete_spend_limit(self, limit_id: str, actor: str, now: datetime) -> dict[str, Any]:
        """Delete a cap (audited) and return what it was. Raises NotFound for an unknown id."""
        now_ms = to_ms(now)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(spend_limits).where(spend_limits.c.id == limit_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no spend limit {limit_id!r}")
            before = _limit_dict(row)
            conn.execute(delete(spend_limits).where(spend_limits.c.id == limit_id))
            self._audit(conn, now_ms, actor, "spend_limit.delete", limit_id, before, None)
            self._bump(conn, now_ms)
        return before

    def list_spend_limits_page(
        self,
        limit: int = 20,
        after_id: str | None = None,
        before_id: str | None = None,
        scope_type: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of caps in creation order, and whether more exist in the direction of travel.

        ``after_id`` pages forward, ``before_id`` backward (rows still come back ascending); they are
        mutually exclusive. Cursors are ids of existing caps; an unknown one is ``Invalid``.
        """
        if after_id is not None and before_id is not None:
            raise Invalid("after_id and before_id are mutually exclusive")
        if limit < 1:
            raise Invalid("limit must be at least 1")
        if scope_type is not None and scope_type not in SCOPE_TYPES:
            raise Invalid(f"unknown scope_type {scope_type!r}")
        order = (spend_limits.c.seq, spend_limits.c.id)
        stmt = select(spend_limits)
        if scope_type is not None:
            stmt = stmt.where(spend_limits.c.scope_type == scope_type)
        with self.engine.connect() as conn:
            cursor_id = after_id if after_id is not None else before_id
            if cursor_id is not None:
                cur = conn.execute(select(spend_limits.c.seq).where(spend_limits.c.id == cursor_id)).scalar()
                if cur is None:
                    raise Invalid(f"unknown cursor {cursor_id!r}")
                s, i = spend_limits.c.seq, spend_limits.c.id
                if after_id is not None:
                    stmt = stmt.where(or_(s > cur, and_(s == cur, i > cursor_id)))
                else:
                    stmt = stmt.where(or_(s < cur, and_(s == cur, i < cursor_id)))
            if before_id is not None:
                rows = conn.execute(stmt.order_by(*(c.desc() for c in order)).limit(limit + 1)).all()
                has_more = len(rows) > limit
                rows = list(reversed(rows[:limit]))
            else:
                rows = conn.execute(stmt.order_by(*order).limit(limit + 1)).all()
                has_more = len(rows) > limit
                rows = rows[:limit]
        return [_limit_dict(r) for r in rows], has_more

    def list_spend_limit_rows(self) -> list[dict[str, Any]]:
        """Every cap as a store dict, in creation order (for the CLI and the admin API)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(spend_limits).order_by(spend_limits.c.seq, spend_limits.c.id)).all()
        return [_limit_dict(r) for r in rows]

    def list_spend_limits(self) -> list[SpendLimit]:
        """Every cap as the control layer's value type, ready for ``control.spend.resolve_caps``."""
        # Imported here, not at module top: store sits below control in the layering, and only this
        # convenience needs the control type.

        return [
            SpendLimit(
                id=d["id"],
                scope_type=d["scope_type"],
                scope_id=d["scope_id"],
                period=d["period"],
                amount_cents=None if d["amount_cents"] is None else Decimal(d["amount_cents"]),
            )
            for d in self.list_spend_limit_rows()
        ]

    # -- audit ---------------------------------------------------------------------------------------

    def audit_page(
        self, limit: int = 100, after_id: int | None = None, action_prefix: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Audit rows newest first; ``after_id`` continues below that id. Returns (rows, has_more).

        ``action_prefix`` (e.g. ``"spend_limit."``) narrows the trail to one kind of object.
        """
        if limit < 1:
            raise Invalid("limit must be at least 1")
        stmt = select(admin_audit)
        if after_id is not None:
            stmt = stmt.where(admin_audit.c.id < int(after_id))
        if action_prefix:
            stmt = stmt.where(admin_audit.c.action.startswith(action_prefix, autoescape=True))
        stmt = stmt.order_by(admin_audit.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_audit_dict(r) for r in rows[:limit]], len(rows) > limit

    # -- settings ------------------------------------------------------------------------------------

    def get_setting(self, key: str) -> Any | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(settings_kv.c.value).where(settings_kv.c.key == key)).scalar()
        return None if value is None else json.loads(value)

    def set_setting(self, key: str, value: Any, now: datetime, *, actor: str = "system") -> None:
        """Store a JSON value (audited). Bumps ``limits_version`` since settings such as
        ``rate_limits`` change what the gateway admits."""
        if key == LIMITS_VERSION_KEY:
            raise Invalid(f"{key!r} is reserved")
        now_ms = to_ms(now)
        text = _dump(value)
        with self.engine.begin() as conn:
            before = conn.execute(select(settings_kv.c.value).where(settings_kv.c.key == key)).scalar()
            ins = _insert_for(conn)(settings_kv).values(key=key, value=text, updated_ms=now_ms)
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[settings_kv.c.key],
                    set_={"value": ins.excluded.value, "updated_ms": ins.excluded.updated_ms},
                )
            )
            self._audit(
                conn, now_ms, actor, "setting.set", key, None if before is None else json.loads(before), value
            )
            self._bump(conn, now_ms)
