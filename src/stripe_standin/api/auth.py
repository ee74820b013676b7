"""The API key check: Stripe's 401 answers for a missing or wrong key."""

from __future__ import annotations

import base64
import hmac

from stripe_standin.errors import StripeError


def check_auth(header: str | None, expected: str) -> None:
    """Stripe's 401 unless the `Authorization` header (Bearer, or Basic with the key as user
    name) carries the `expected` key."""
    if not header:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
        )
    scheme, _, value = header.strip().partition(" ")
    key = value.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key).decode().partition(":")[0]
        except ValueError:
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not hmac.compare_digest(key.encode(), expected.encode()):
        shown = f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"
        raise StripeError(401, f"Invalid API Key provided: {shown}")
