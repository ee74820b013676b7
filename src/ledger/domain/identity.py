"""Deterministic identities: the same business key always names the same aggregate.

A second fulfillment of one checkout session therefore collides with the first on the
event store's unique (id, version) key, so duplicates resolve in the database.
"""

from uuid import UUID, uuid5

LEDGER_NAMESPACE = UUID("6f1c2d2e-5b0a-4c55-9a57-0c3a1f0e7b21")


def inventory_item_id(sku: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"inventory:{sku}")


def order_id_for(checkout_session_id: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"order:{checkout_session_id}")
