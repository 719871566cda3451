"""Prometheus metrics, on a private registry so tests and several apps in one process never collide.

Label sets are deliberately small (model, status class, token kind, limit kind): per-user labels would
grow without bound and per-user spend is what the ledger is for.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ccledger.core.records import UsageRecord

_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ccledger_gateway_requests", "Requests handled", ["route", "status"], registry=r
        )
        self.tokens = Counter(
            "ccledger_gateway_tokens", "Billed tokens by kind", ["model", "kind"], registry=r
        )
        self.cost = Counter("ccledger_gateway_cost_usd", "Metered cost in USD", ["model"], registry=r)
        self.rejections = Counter(
            "ccledger_gateway_limit_rejections", "Requests refused by a limit", ["limit"], registry=r
        )
        self.latency = Histogram(
            "ccledger_gateway_request_seconds", "Time to the end of the response", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.spool_records = Counter(
            "ccledger_gateway_spooled_records", "Records written to the local spool", registry=r
        )
        self.write_errors = Counter("ccledger_gateway_store_errors", "Failed ledger writes", registry=r)
        self._status_children: dict[tuple[str, int], object] = {}
        self._usage_children: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        child = self._status_children.get(key)
        if child is None:
            child = self._status_children[key] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        child[0].inc()  # type: ignore[index]
        child[1].observe(seconds)  # type: ignore[index]

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def record_usage(self, record: UsageRecord) -> None:
        """Tokens by kind and cost for one metered request (label children cached per model)."""
        children = self._usage_children.get(record.model)
        if children is None:
            if len(self._usage_children) > 1000:  # model ids come from responses: bound the cache
                self._usage_children.clear()
            children = self._usage_children[record.model] = (
                tuple(self.tokens.labels(record.model, kind) for kind in _KINDS),
                self.cost.labels(record.model),
            )
        t = record.tokens
        counts = (t.input, t.output, t.cache_write_5m, t.cache_write_1h, t.cache_read)
        for child, n in zip(children[0], counts, strict=True):
            if n:
                child.inc(n)
        if record.cost_nanos:
            children[1].inc(record.cost_nanos / 1e9)
