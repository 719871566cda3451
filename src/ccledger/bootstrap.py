"""The one place that wires settings into a ledger, a price book and the transcript roots."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec

from ccledger.core.pricing import PriceBook
from ccledger.settings import Settings, claude_config_dirs
from ccledger.store.ledger import Ledger


def build_price_book(settings: Settings) -> PriceBook:
    return PriceBook.load(
        settings.price_files,
        fallback_input=Decimal(settings.fallback_input) if settings.fallback_input else None,
        fallback_output=Decimal(settings.fallback_output) if settings.fallback_output else None,
    )


class App(msgspec.Struct):
    settings: Settings
    book: PriceBook
    _ledger: Ledger | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.open(self.settings.db)
        return self._ledger

    def ledger_for_refresh(self) -> Ledger:
        """The ledger, without creating a new store's schema first: ``services.history.refresh`` does that
        while its worker processes read, so a first run does not wait for it."""
        if self._ledger is None:
            self._ledger = Ledger(self.settings.db)
        return self._ledger

    def config_dirs(self) -> list[Path]:
        """Claude config dirs: their ``projects`` folder is read."""
        return claude_config_dirs()

    def transcript_roots(self) -> list[Path]:
        """Where transcripts are looked for, for messages: config dirs plus any ``--path`` given."""
        return [*(d / "projects" for d in claude_config_dirs()), *self.settings.extra_paths]


def bootstrap(settings: Settings | None = None) -> App:
    settings = settings or Settings()
    return App(settings=settings, book=build_price_book(settings))
