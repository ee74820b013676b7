"""Amounts as people read them: Stripe's minor units, Stripe's decimals, Babel's writing."""

from __future__ import annotations

import pytest

from ledger.money import format_amount


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (2500, "usd", "$25.00"),
        (102500, "usd", "$1,025.00"),
        (-500, "usd", "-$5.00"),
        (0, "usd", "$0.00"),
        (2500, "eur", "25.00 EUR"),
        (2500, "EUR", "25.00 EUR"),
        (500, "jpy", "500 JPY"),  # Stripe counts yen in whole yen
        (1234, "kwd", "1.234 KWD"),  # and dinars in thousandths
        # Stripe counts these in hundredths where ISO 4217 (and Babel) counts none.
        (12300, "isk", "123.00 ISK"),
        (99, "huf", "0.99 HUF"),
    ],
)
def test_amounts_show_stripes_decimals(minor: int, currency: str, shown: str) -> None:
    assert format_amount(minor, currency) == shown
