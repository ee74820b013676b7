"""Wiring, in one place: settings in, ready services out."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.application import Ledger
from ledger.checkout import Checkout
from ledger.payments import PaymentGateway
from ledger.refunds import RefundWorker
from ledger.settings import Settings
from ledger.storage import Database, resolve_database
from ledger.stripe_gateway import StripeGateway
from projections import OrderStatuses, ProductCatalog, ReadStore, Workers, default_projections
from web.routes.checkout import OrderStatusReader, PollFulfillment
from web.store_calls import StoreBreaker
from web.stripe_standin import StripeStandIn

STAND_IN_PREFIX = "/_stripe"
STAND_IN_API_KEY = "sk_test_ledger_stand_in"


class Catalog(Protocol):
    def product(self, sku: str) -> dict[str, Any]: ...
    def products(self) -> list[dict[str, Any]]: ...


@dataclass
class Services:
    settings: Settings
    database: Database
    ledger: Ledger
    catalog: Catalog
    gateway: PaymentGateway
    checkout: Checkout
    poll_fulfillment: PollFulfillment
    order_status: OrderStatusReader
    webhook_secrets: list[str]
    store_breaker: StoreBreaker
    read_store: ReadStore
    stand_in: StripeStandIn | None = None

    def close(self) -> None:
        if self.stand_in is not None:
            self.stand_in.close()
        self.read_store.close()
        self.ledger.close()


def bootstrap(
    settings: Settings,
    database: Database | None = None,
    *,
    listen_url: str = "http://127.0.0.1:8000",
) -> Services:
    """Connects to the store (starting the embedded one when none is configured) and wires
    the payment gateway: Stripe itself, or the built-in stand-in served at /_stripe.

    `listen_url` is where this process's HTTP server answers locally; the stand-in calls
    the webhook there, and the gateway calls the stand-in there.
    """
    database = database or resolve_database(settings.database_url, settings.data_dir)
    database.check()
    ledger = Ledger(env=database.eventsourcing_env())
    public_url = (settings.public_url or listen_url).rstrip("/")
    stand_in: StripeStandIn | None = None
    if settings.stripe_api_key is None:
        webhook_secret = f"whsec_standin_{secrets.token_hex(16)}"
        stand_in = StripeStandIn(
            webhook_url=f"{listen_url}/webhooks/stripe",
            webhook_secret=webhook_secret,
            public_base_url=f"{public_url}{STAND_IN_PREFIX}",
        )
        gateway = StripeGateway(STAND_IN_API_KEY, api_base=f"{listen_url}{STAND_IN_PREFIX}")
        webhook_secrets = [webhook_secret]
    else:
        gateway = StripeGateway(
            settings.stripe_api_key.get_secret_value(), api_base=settings.stripe_api_base
        )
        webhook_secrets = settings.webhook_secrets
    checkout = Checkout(ledger, gateway, public_url)
    read_store = ReadStore(database)
    return Services(
        settings=settings,
        database=database,
        ledger=ledger,
        catalog=ProductCatalog(read_store),
        gateway=gateway,
        checkout=checkout,
        poll_fulfillment=PollFulfillment(checkout),
        order_status=OrderStatuses(read_store),
        webhook_secrets=webhook_secrets,
        store_breaker=StoreBreaker(database),
        read_store=read_store,
        stand_in=stand_in,
    )


def background_workers(services: Services) -> Workers:
    """The read models and the side-effect workers, for `ledger serve` and `ledger work`."""
    return Workers(
        services.database,
        [*default_projections(), RefundWorker(services.ledger, services.gateway)],
    )
