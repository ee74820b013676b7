"""Demo products for `ledger serve --demo`, so a person can walk the flow at once."""

from __future__ import annotations

from ledger.application import Ledger

DEMO_PRODUCTS = [
    # sku, name, unit amount (cents), stock
    ("espresso-cup", "Espresso cup", 1200, 12),
    ("pour-over-kettle", "Pour-over kettle", 4500, 3),
    ("single-origin-beans", "Single-origin beans, 250 g", 1650, 25),
    ("last-one", "Hand-thrown mug (the last one)", 3800, 1),
]


def seed_demo_products(ledger: Ledger) -> list[str]:
    """Lists the demo products that are not there yet, with their stock; returns their SKUs."""
    added = []
    for sku, name, unit_amount, stock in DEMO_PRODUCTS:
        _, created = ledger.put_product(sku, name, unit_amount, "usd", "demo:seed")
        if created:
            ledger.adjust_stock(sku, stock, "demo stock", "demo:seed")
            added.append(sku)
    return added
