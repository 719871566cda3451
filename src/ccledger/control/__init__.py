"""Policy for the gateway: spend caps, cost estimates, rate limits and team sizing.

Decisions here are pure functions of configuration, a clock value passed in, and the state behind a
``Counters`` object (``control.counters``). Nothing in this package does I/O except a counter backend, so
the same policy runs against the in-process counters in tests and against shared counters (Redis) when
several gateway processes must agree (spend-limits.md §C5). Only ``ccledger.core`` may be imported here.
"""
