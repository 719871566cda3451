"""The JSON snapshot the price book loads from is exactly ``prices.toml``."""

from __future__ import annotations

import json
import tomllib

import ccledger.core.pricing as pricing
from ccledger.core.price_snapshot import SOURCE, render


def test_snapshot_is_the_toml_book() -> None:
    toml_data = tomllib.loads(SOURCE.read_text(encoding="utf-8"))
    snapshot = pricing.SNAPSHOT.read_text(encoding="utf-8")
    assert json.loads(snapshot) == toml_data, "stale: run python -m ccledger.core.price_snapshot"
    assert snapshot == render(toml_data), "regenerate: python -m ccledger.core.price_snapshot"


def test_the_loaded_book_is_the_one_the_toml_builds() -> None:
    from_toml = pricing.PriceBook.from_toml(tomllib.loads(SOURCE.read_text(encoding="utf-8")))
    loaded = pricing.PriceBook.load()
    assert loaded.models == from_toml.models
    assert loaded.aliases == from_toml.aliases
    assert loaded.fallback == from_toml.fallback
    assert loaded.version == from_toml.version

