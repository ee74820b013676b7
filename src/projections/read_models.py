"""The read models the service keeps: add a new one to `default_projections`."""

from __future__ import annotations

from projections.audit.chain import HashChainProjection
from projections.audit.history import OrderHistoryProjection
from projections.base import Projection
from projections.holds import HoldsProjection
from projections.order_status import OrderStatusProjection
from projections.orders import OrdersProjection
from projections.products import ProductsProjection


def default_projections() -> list[Projection]:
    """Every read model the service keeps (fresh instances)."""
    return [
        OrderStatusProjection(),
        ProductsProjection(),
        HoldsProjection(),
        OrderHistoryProjection(),
        OrdersProjection(),
        HashChainProjection(),
    ]
