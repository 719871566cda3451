"""The metering gateway: an Anthropic-compatible proxy with virtual keys, spend caps and rate limits.

Layering: gateway imports control, store, sources and core; nothing below imports the gateway.
Entry points: ``gateway.app.create_app`` (tests, embedding) and ``gateway.app.app_factory`` (uvicorn).
"""
