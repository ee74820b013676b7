"""Object ids and secrets shaped like Stripe's: a prefix, then random letters and digits."""

from __future__ import annotations

import secrets
import string

_ALNUM = string.ascii_letters + string.digits


def rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def new_id(prefix: str) -> str:
    return f"{prefix}_{'test_a1' if prefix == 'cs' else '1'}{rand(24)}"
