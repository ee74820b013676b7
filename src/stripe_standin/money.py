"""Amounts in Stripe's minor units as a person reads them: ``7502, "usd"`` → ``75.02 USD``."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency

# How many minor units make a major one is Stripe's rule, not the locale's: Stripe counts
# HUF, ISK, COP, IDR and others in hundredths where CLDR (Babel's data) counts none.
_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv"}
    | {"xaf", "xof", "xpf"}
)
_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def minor_unit_digits(currency: str) -> int:
    """The number of decimals of `currency` in Stripe's amounts."""
    cur = currency.lower()
    return 0 if cur in _ZERO_DECIMAL else 3 if cur in _THREE_DECIMAL else 2


def format_amount(minor: int, currency: str) -> str:
    """`minor` units of `currency`, with its own number of decimals and its ISO code after."""
    digits = minor_unit_digits(currency)
    # The code, not a symbol: the stand-in's pages and messages name the currency outright.
    pattern = ("0." + "0" * digits if digits else "0") + " ¤¤"
    return format_currency(
        Decimal(minor).scaleb(-digits),
        currency.upper(),
        format=pattern,
        locale="en",
        currency_digits=False,
    )
