"""Turn one proxied response into a priced ledger row, attributed to the developer who sent it.

The usage numbers come from ``sources.anthropic_usage`` (shared with the tests); this module adds who,
which session/agent, which client version, how long, and the price at the response time.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ccledger.core.pricing import PriceBook
from ccledger.core.records import MAX_TOKENS, MAX_WEB_SEARCHES, SOURCE_GATEWAY, TokenCounts, UsageRecord
from ccledger.sources.anthropic_usage import Usage
from ccledger.store.identity import Principal
from ccledger.store.ledger import PricedRow, price_record


class Attribution(msgspec.Struct):
    """Request facts read from headers before forwarding (never from the body)."""

    session_id: str = ""
    agent_id: str = ""
    parent_agent_id: str = ""
    client_version: str = ""
    user_agent: str = ""


def build_row(
    book: PriceBook,
    *,
    principal: Principal,
    attribution: Attribution,
    usage: Usage,
    model: str,
    ts: datetime,
    message_id: str | None,
    upstream_request_id: str | None,
    gateway_request_id: str,
    duration_ms: int,
    aborted: bool = False,
    speed: str | None = None,
) -> PricedRow:
    """A priced row. The dedupe key is the upstream message id (``msg_…``), else the upstream
    ``request-id``, else ours: a retried write or a spool replay then upserts the same row. Message ids
    are keyed exactly as the transcript reader keys them, so a request seen both by the gateway and in
    the developer's local history lands once in a shared ledger."""
    dedupe = "msg:" + message_id if message_id else "req:" + (upstream_request_id or gateway_request_id)
    extra: dict[str, str] = {}
    usage, clamped = _within_range(usage)
    if clamped:
        extra["usage_out_of_range"] = "1"
    if len(principal.group_ids) > 1:
        extra["group_ids"] = ",".join(principal.group_ids)
    if aborted:
        extra["aborted"] = "1"
    rec = UsageRecord(
        ts=ts,
        source=SOURCE_GATEWAY,
        dedupe_key=dedupe,
        model=model or "unknown",
        tokens=usage.tokens,
        web_search_requests=usage.web_search_requests,
        service_tier=usage.service_tier,
        inference_geo=usage.inference_geo,
        speed=usage.speed or speed,
        session_id=attribution.session_id,
        client_version=attribution.client_version,
        is_sidechain=bool(attribution.agent_id),
        agent_id=attribution.agent_id,
        parent_agent_id=attribution.parent_agent_id,
        user_id=principal.user_id,
        group_id=principal.group_ids[0] if principal.group_ids else "",
        key_id=principal.key_id,
        request_id=upstream_request_id or gateway_request_id,
        duration_ms=duration_ms,
        extra=extra,
    )
    return price_record(book, rec)


def _within_range(usage: Usage) -> tuple[Usage, bool]:
    """The usage with every count brought into range (``MAX_TOKENS``, ``MAX_WEB_SEARCHES``), and
    whether one had to be.

    Why: the request happened and must be recorded, but a count an upstream got wrong (negative, or
    beyond 2**63) would fail the whole batch in the store, and then every replay of the spool behind it.
    Clamped, the row is stored, flagged in ``extra``, and priced at the largest believable amount, which
    trips spend limits rather than slipping past them."""
    t = usage.tokens
    tokens = (t.input, t.output, t.cache_write_5m, t.cache_write_1h, t.cache_read)
    searches = usage.web_search_requests
    if all(0 <= c <= MAX_TOKENS for c in tokens) and 0 <= searches <= MAX_WEB_SEARCHES:
        return usage, False
    fixed = TokenCounts(*(min(max(c, 0), MAX_TOKENS) for c in tokens))
    searches = min(max(searches, 0), MAX_WEB_SEARCHES)
    return Usage(fixed, searches, usage.service_tier, usage.inference_geo, usage.speed), True
