"""Wiring, in one place: settings in, ready services out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ledger.application import Ledger
from ledger.catalog import LogCatalog
from ledger.settings import Settings
from ledger.storage import Database, resolve_database


class Catalog(Protocol):
    def product(self, sku: str) -> dict[str, Any]: ...
    def products(self) -> list[dict[str, Any]]: ...


@dataclass
class Services:
    settings: Settings
    database: Database
    ledger: Ledger
    catalog: Catalog

    def close(self) -> None:
        self.ledger.close()


def bootstrap(settings: Settings, database: Database | None = None) -> Services:
    """Connects to the store (starting the embedded one when none is configured)."""
    database = database or resolve_database(settings.database_url, settings.data_dir)
    database.check()
    ledger = Ledger(env=database.eventsourcing_env())
    return Services(settings=settings, database=database, ledger=ledger, catalog=LogCatalog(ledger))
