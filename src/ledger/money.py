"""Money as a person reads it: the success page and the customer e-mails show amounts alike."""

from __future__ import annotations

_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv"}
    | {"xaf", "xof", "xpf"}
)
_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
_SYMBOLS = {"usd": "$"}


def format_amount(minor: int, currency: str | None) -> str:
    """Minor units as a person reads them: `$25.00` for usd, `25.00 EUR` otherwise."""
    cur = (currency or "").lower()
    exponent = 0 if cur in _ZERO_DECIMAL else 3 if cur in _THREE_DECIMAL else 2
    sign = "-" if minor < 0 else ""
    digits = str(abs(int(minor))).rjust(exponent + 1, "0")
    major = f"{digits[:-exponent]}.{digits[-exponent:]}" if exponent else digits
    if cur in _SYMBOLS:
        return f"{sign}{_SYMBOLS[cur]}{major}"
    return f"{sign}{major} {cur.upper()}".strip()
