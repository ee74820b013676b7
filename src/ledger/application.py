"""The application service: the ledger's commands, each one decision saved in one commit.

The commands live in `ledger.commands` (catalog, carts, orders, payment news), the commit,
lock and retry machinery they share in `ledger.decisions`, and the rules in `ledger.domain`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ledger.commands.after_sale import AfterSaleCommands
from ledger.commands.orders import OrderCommands
from ledger.commands.payment_news import PaymentNewsCommands, Recorded
from ledger.domain import InventoryItem
from ledger.locks import ConcurrentModification


class Ledger(OrderCommands, PaymentNewsCommands, AfterSaleCommands):
    """Commands over the cart, inventory and order aggregates.

    Every command is read -> decide -> one `save()` of every aggregate the decision touches,
    while holding the locks of those aggregates, so writers of one aggregate queue instead of
    racing. A decision costs the same on a product's 40,000th order as on its first: recently
    used aggregates stay in memory and are brought up to date from the log (only the events
    since), and an inventory item is snapshotted every SNAPSHOT_INTERVAL events, so even a
    cold read replays at most that many.
    """

    name = "Ledger"
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": "2000"}
    SNAPSHOT_INTERVAL = 100
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {InventoryItem: SNAPSHOT_INTERVAL}


__all__ = ["ConcurrentModification", "Ledger", "Recorded"]
