"""Wiring, in one place: settings in, ready services out."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ledger.application import Ledger
from ledger.captures import Captures
from ledger.checkout import Checkout
from ledger.customer_keys import PostgresCustomerKeys
from ledger.disputes import Disputes
from ledger.merchant_desk import MerchantDesk
from ledger.merchant_requests import MerchantRequests
from ledger.payments import PaymentGateway
from ledger.personal_data import PersonalData
from ledger.refunds import Refunds
from ledger.settings import Settings
from ledger.storage import Database, create_table, resolve_database
from ledger.stripe_events import StripeEvents
from ledger.stripe_gateway import StripeGateway
from projections import (
    Orders,
    OrderStatuses,
    Payments,
    ProductCatalog,
    ReadStore,
    default_projections,
)
from projections.holds import Holds
from side_effects.captures import CaptureWorker
from side_effects.hold_timer import HoldTimer
from side_effects.mailers import mailer_for
from side_effects.notifications import Notifications, NotificationWorker
from side_effects.refunds import RefundWorker
from side_effects.resync import Resync
from side_effects.sent_messages import SentMessages
from stripe_standin import StripeStandIn
from web.order_status_poll import OrderStatusReader, PollFulfillment
from web.store_calls import STRIPE_BOUND_CALLS, StoreBreaker, stripe_bound_threads
from workers import Processor, Workers
from workers.leadership import Share

if TYPE_CHECKING:
    from web.tracing import Tracing

STAND_IN_PREFIX = "/_stripe"


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
    customer_keys: PostgresCustomerKeys
    personal_data: PersonalData
    checkout: Checkout
    refunds: Refunds
    stripe_events: StripeEvents
    resync: Resync
    poll_fulfillment: PollFulfillment
    order_status: OrderStatusReader
    orders: Orders
    webhook_secrets: list[str]
    store_breaker: StoreBreaker
    read_store: ReadStore
    merchant_requests: MerchantRequests
    merchant_desk: MerchantDesk
    stand_in: StripeStandIn | None = None
    # The threads of requests' calls that wait on Stripe, apart from the store's reads.
    stripe_bound_calls: ThreadPoolExecutor = field(default_factory=stripe_bound_threads)
    # Set when OTEL_EXPORTER_OTLP_ENDPOINT asks for traces (web.tracing): the app, the commits
    # and the workers are then traced. The process that started it shuts it down.
    tracing: Tracing | None = None

    def close(self) -> None:
        # First: a look at Stripe still under way commits through the ledger closed below.
        self.poll_fulfillment.close()
        if self.stand_in is not None:
            self.stand_in.close()
        self.read_store.close()
        self.merchant_requests.close()
        self.customer_keys.close()
        self.ledger.close()
        # Idle threads go; a call still waiting on Stripe ends when the SDK gives up.
        self.stripe_bound_calls.shutdown(wait=False, cancel_futures=True)


def bootstrap(
    settings: Settings,
    database: Database | None = None,
    *,
    listen_url: str = "http://127.0.0.1:8000",
    tracing: Tracing | None = None,
) -> Services:
    """Connects to the store (starting the embedded one when none is configured) and wires
    the payment gateway: Stripe itself, or the built-in stand-in served at /_stripe.

    `listen_url` is where this process's HTTP server answers locally; the stand-in calls
    the webhook there, and the gateway calls the stand-in there.
    """
    database = database or resolve_database(settings.database_url, settings.data_dir)
    database.check()
    ledger = Ledger(env=database.eventsourcing_env())
    if tracing is not None:
        tracing.instrument_ledger(ledger)
    public_url = (settings.public_url or listen_url).rstrip("/")
    stand_in: StripeStandIn | None = None
    if settings.stripe_api_key is None:
        webhook_secret = f"whsec_standin_{secrets.token_hex(16)}"
        api_key = stand_in_api_key(database)
        stand_in = StripeStandIn(
            api_key=api_key,
            webhook_url=f"{listen_url}/webhooks/stripe",
            webhook_secret=webhook_secret,
            public_base_url=f"{public_url}{STAND_IN_PREFIX}",
        )
        gateway = StripeGateway(
            api_key, api_base=f"{listen_url}{STAND_IN_PREFIX}", connections=STRIPE_BOUND_CALLS
        )
        webhook_secrets = [webhook_secret]
    else:
        gateway = StripeGateway(
            settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            connections=STRIPE_BOUND_CALLS,
        )
        webhook_secrets = settings.webhook_secrets
    if tracing is not None:
        tracing.instrument_stripe(gateway.transport)
    customer_keys = PostgresCustomerKeys(database)
    personal_data = PersonalData(customer_keys)
    checkout = Checkout(
        ledger,
        gateway,
        personal_data,
        public_url,
        stock_hold=settings.stock_hold,
        capture=settings.capture,
    )
    read_store = ReadStore(database)
    payments = Payments(read_store)
    refunds = Refunds(ledger, gateway, payments)
    disputes = Disputes(ledger, gateway, payments)
    return Services(
        settings=settings,
        database=database,
        ledger=ledger,
        catalog=ProductCatalog(read_store),
        gateway=gateway,
        customer_keys=customer_keys,
        personal_data=personal_data,
        checkout=checkout,
        refunds=refunds,
        stripe_events=StripeEvents(checkout, refunds, disputes),
        resync=Resync(
            checkout,
            refunds,
            disputes,
            payments,
            older_than=settings.resync_after,
            interval=settings.resync_interval,
        ),
        poll_fulfillment=PollFulfillment(checkout),
        order_status=OrderStatuses(read_store),
        orders=Orders(read_store),
        webhook_secrets=webhook_secrets,
        store_breaker=StoreBreaker(database),
        read_store=read_store,
        merchant_requests=MerchantRequests(database, ledger.locks),
        merchant_desk=MerchantDesk(ledger, refunds),
        stand_in=stand_in,
        tracing=tracing,
    )


def stand_in_api_key(database: Database) -> str:
    """The stand-in's secret key: made at random once per database and kept there, so that
    only this ledger's processes can call it, `ledger work` in another process included."""
    with database.connect(autocommit=True) as conn:
        create_table(
            conn,
            "CREATE TABLE IF NOT EXISTS stripe_standin_secrets"
            " (name text PRIMARY KEY, value text NOT NULL)",
        )
        conn.execute(
            "INSERT INTO stripe_standin_secrets VALUES ('api_key', %s) ON CONFLICT DO NOTHING",
            (f"sk_test_standin_{secrets.token_hex(16)}",),
        )
        row = conn.execute(
            "SELECT value FROM stripe_standin_secrets WHERE name = 'api_key'"
        ).fetchone()
    assert row is not None
    return str(row[0])


def processors(services: Services) -> list[Processor]:
    """The read models, the side-effect workers and the resync: what the workers run, and what
    /metrics reports the lag and backlog of."""
    return [
        *default_projections(),
        RefundWorker(services.refunds),
        CaptureWorker(Captures(services.ledger, services.gateway)),
        notification_worker(services),
        services.resync,
        # Also with holds off: holds placed before they were turned off still end on time.
        HoldTimer(services.checkout, Holds(services.read_store)),
    ]


def notification_worker(services: Services) -> NotificationWorker:
    """Customer e-mail: through LEDGER_SMTP_URL, or to the log when it is unset."""
    settings = services.settings
    notifications = Notifications(
        services.ledger,
        services.personal_data,
        mailer_for(settings),
        SentMessages(services.read_store),
        settings.mail_from,
    )
    return NotificationWorker(notifications)


def background_workers(services: Services, share: Share | None = None) -> Workers:
    """The workers of `ledger serve` and `ledger work` (`share`: of a process of `ledger serve
    --workers N`). The read store waits on them for the read models they run here, woken by
    their commits instead of polling."""
    running = processors(services)
    if services.tracing is not None:
        services.tracing.instrument_side_effects(running)
    workers = Workers(services.database, running, share=share)
    services.read_store.wait_on(workers)
    return workers
