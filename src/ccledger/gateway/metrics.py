"""Prometheus metrics, on a private registry so tests and several apps in one process never collide.

Label sets are deliberately small (model, status class, token kind, limit kind): per-user labels would
grow without bound and per-user spend is what the ledger is for.

The per-request series (requests, latency, tokens, cost) are plain Python numbers that a collector turns
into metric families when ``/metrics`` is scraped: a ``prometheus_client`` child takes a lock and a few
method calls per update, and a request made nine of them (~30 µs of the gateway's CPU per request on the
bench VM, more than its whole rate-limit admission). Rare events (rejections, spool and store errors)
stay ordinary counters.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from ccledger.core.records import UsageRecord

_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_MAX_MODELS = 1000  # model ids come from responses: bound the label set


class _Latency:
    """One route's latency histogram: per-bucket counts (the last one is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.total = 0.0


class _RequestSeries:
    """The collector behind the per-request series; updated by ``Metrics`` with plain arithmetic."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.latency: dict[str, _Latency] = {}
        self.tokens: dict[str, list[int]] = {}  # model -> counts in ``_KINDS`` order
        self.cost_nanos: dict[str, int] = {}

    def describe(self) -> list[Metric]:
        return []  # families are only known at collection time

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily("ccledger_gateway_requests", "Requests handled", labels=["route", "status"])
        for (route, status), n in self.requests.items():
            req.add_metric([route, status], n)
        yield req
        tok = CounterMetricFamily(
            "ccledger_gateway_tokens", "Billed tokens by kind", labels=["model", "kind"]
        )
        for model, counts in self.tokens.items():
            for kind, n in zip(_KINDS, counts, strict=True):
                if n:
                    tok.add_metric([model, kind], n)
        yield tok
        cost = CounterMetricFamily("ccledger_gateway_cost_usd", "Metered cost in USD", labels=["model"])
        for model, nanos in self.cost_nanos.items():
            cost.add_metric([model], nanos / 1e9)
        yield cost
        hist = HistogramMetricFamily(
            "ccledger_gateway_request_seconds", "Time to the end of the response", labels=["route"]
        )
        bounds = [*(floatToGoString(b) for b in _LATENCY_BUCKETS), "+Inf"]
        for route, lat in self.latency.items():
            running, buckets = 0, []
            for bound, n in zip(bounds, lat.counts, strict=True):
                running += n
                buckets.append((bound, running))
            hist.add_metric([route], buckets, lat.total)
        yield hist


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._series = _RequestSeries()
        r.register(self._series)  # type: ignore[arg-type]
        self.rejections = Counter(
            "ccledger_gateway_limit_rejections", "Requests refused by a limit", ["limit"], registry=r
        )
        self.spool_records = Counter(
            "ccledger_gateway_spooled_records", "Records written to the local spool", registry=r
        )
        self.write_errors = Counter("ccledger_gateway_store_errors", "Failed ledger writes", registry=r)

    def observe(self, route: str, status: int, seconds: float) -> None:
        series = self._series
        key = (route, str(status))
        series.requests[key] = series.requests.get(key, 0) + 1
        lat = series.latency.get(route)
        if lat is None:
            lat = series.latency[route] = _Latency()
        lat.counts[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # le: a value on a bound counts in it
        lat.total += seconds

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def record_usage(self, record: UsageRecord) -> None:
        """Tokens by kind and cost for one metered request."""
        series = self._series
        counts = series.tokens.get(record.model)
        if counts is None:
            if len(series.tokens) >= _MAX_MODELS:
                series.tokens.clear()
                series.cost_nanos.clear()
            counts = series.tokens[record.model] = [0, 0, 0, 0, 0]
            series.cost_nanos[record.model] = 0
        t = record.tokens
        counts[0] += t.input
        counts[1] += t.output
        counts[2] += t.cache_write_5m
        counts[3] += t.cache_write_1h
        counts[4] += t.cache_read
        if record.cost_nanos:
            series.cost_nanos[record.model] += record.cost_nanos
