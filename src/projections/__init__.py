"""The read side: read models kept from the event log, the workers that follow it, rebuilds.

To add a read model: a module here with a `Projection` subclass (its tables, one `@handles`
method per event that changes them) and a query class over a `ReadStore`; then list the
projection in `default_projections()`. The runner creates its tables and replays the log into
them on its next start; `ledger projections rebuild` and `verify_all` include it.
"""

from __future__ import annotations

from projections.audit.history import OrderHistories, OrderHistoryProjection
from projections.base import (
    DomainEvent,
    PeriodicTask,
    Processor,
    Projection,
    SideEffect,
    Writer,
    handles,
    topic_of,
    topics_of,
)
from projections.order_status import OrderStatuses, OrderStatusProjection
from projections.payments import Payments
from projections.products import ProductCatalog, ProductsProjection
from projections.rebuild import prepare, rebuild, rebuild_all, verify, verify_all
from projections.runner import Workers
from projections.store import ReadStore, wait_for_position


def default_projections() -> list[Projection]:
    """Every read model the service keeps (fresh instances)."""
    from projections.audit.chain import HashChainProjection

    return [
        OrderStatusProjection(),
        ProductsProjection(),
        OrderHistoryProjection(),
        HashChainProjection(),
    ]


__all__ = [
    "DomainEvent",
    "OrderHistories",
    "OrderHistoryProjection",
    "OrderStatusProjection",
    "OrderStatuses",
    "Payments",
    "PeriodicTask",
    "Processor",
    "ProductCatalog",
    "ProductsProjection",
    "Projection",
    "ReadStore",
    "SideEffect",
    "Workers",
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
