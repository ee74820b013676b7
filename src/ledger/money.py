"""Money as a person reads it: the pages and the customer e-mails show amounts alike.

Babel writes the number (digits, separators, the currency's symbol or code). What no library
knows is how Stripe counts: in the currency's smallest unit by Stripe's own list, which is not
ISO 4217's (Stripe keeps two decimals for ISK, HUF and others), and the amount shows exactly
those decimals. That list is Stripe's data, kept here; the storefront's script gets it
through `rules_for_scripts()`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel import Locale
from babel.numbers import format_currency

# The shop speaks American English (the pages say `lang="en"`).
LOCALE = "en_US"
# Parsed once: given its name, babel builds a new Locale and looks its data up on every call
# (half of what formatting an amount costs; an e-mail formats several).
_LOCALE = Locale.parse(LOCALE)
# Stripe's currencies whose amounts are not counted in hundredths.
_ZERO_DECIMAL = "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf"
_THREE_DECIMAL = "bhd jod kwd omr tnd"
_STRIPE_EXPONENTS = {
    **dict.fromkeys(_ZERO_DECIMAL.split(), 0),
    **dict.fromkeys(_THREE_DECIMAL.split(), 3),
}
_DEFAULT_EXPONENT = 2
# Only the shop's own currency goes by its symbol; any other by its code after the number, so
# that no customer takes another dollar for theirs.
_BY_SYMBOL = frozenset({"usd"})


# A shop's prices and totals repeat (every order of a product formats its price): babel takes
# some 100 µs per amount, a lookup here a fraction of one.
@lru_cache(maxsize=4096)
def format_amount(minor: int, currency: str | None) -> str:
    """Stripe's minor units as a person reads them: `$1,025.00` for usd, `25.00 EUR`,
    `500 JPY` otherwise, with as many decimals as Stripe counts in the currency."""
    cur = (currency or "").lower()
    exponent = _STRIPE_EXPONENTS.get(cur, _DEFAULT_EXPONENT)
    number = "#,##0" + ("." + "0" * exponent if exponent else "")
    pattern = f"¤{number}" if cur in _BY_SYMBOL else f"{number} ¤¤"
    major = Decimal(int(minor)).scaleb(-exponent)
    return format_currency(
        major, cur.upper(), format=pattern, locale=_LOCALE, currency_digits=False
    ).strip()


def rules_for_scripts() -> dict[str, Any]:
    """What a page's script needs to write amounts as `format_amount` does, with the
    browser's `Intl.NumberFormat`."""
    return {
        "locale": LOCALE.replace("_", "-"),
        "exponents": _STRIPE_EXPONENTS,
        "defaultExponent": _DEFAULT_EXPONENT,
        "bySymbol": sorted(_BY_SYMBOL),
    }
