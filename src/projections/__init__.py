"""The read side: read models kept from the event log, how one is stepped through it
(`stepping`), rebuilds, and the read store their queries (and waits) go through. The threads
that step them are `workers`; side effects of the log (refunds, e-mail) are `side_effects`.

To add a read model: a module here with a `Projection` subclass (its tables, one `@handles`
method per event that changes them) and a query class over a `ReadStore`; then list the
projection in `default_projections()` (`projections.read_models`). The workers create its
tables and replay the log into them on their next start; `ledger projections rebuild` and
`verify_all` include it.
"""

from __future__ import annotations

from projections.audit.history import OrderHistories, OrderHistoryProjection
from projections.base import (
    DomainEvent,
    Projection,
    Writer,
    handles,
    topic_of,
    topics_of,
)
from projections.order_status import OrderStatuses, OrderStatusProjection
from projections.orders import Orders, OrdersProjection
from projections.payments import Payments
from projections.products import ProductCatalog, ProductsProjection
from projections.read_models import default_projections
from projections.rebuild import prepare, rebuild, rebuild_all
from projections.store import ReadStore, wait_for_position
from projections.verification import verify, verify_all

__all__ = [
    "DomainEvent",
    "OrderHistories",
    "OrderHistoryProjection",
    "OrderStatusProjection",
    "OrderStatuses",
    "Orders",
    "OrdersProjection",
    "Payments",
    "ProductCatalog",
    "ProductsProjection",
    "Projection",
    "ReadStore",
    "Writer",
    "default_projections",
    "handles",
    "prepare",
    "rebuild",
    "rebuild_all",
    "topic_of",
    "topics_of",
    "verify",
    "verify_all",
    "wait_for_position",
]
