"""Stripe's webhook signature, checked on the raw bytes by the rules of the official SDK.

The SDK's `stripe.WebhookSignature.verify_header` decodes the body, re-encodes it for the HMAC
once per secret, re-parses the header once per secret and, reached as `stripe.WebhookSignature`,
goes through the package's lazy `__getattr__` (an `import_module` call) every time: a tenth of a
webhook's CPU in the profile. This does the same checks once per request, on the bytes as they
arrived, with each secret's HMAC key schedule computed once per process.

The rules are the SDK's (stripe-python 16, `stripe/_webhook.py`), kept identical so that no body
the SDK would refuse is accepted: the header is `,`-separated `key=value` items; the first `t`
item is the timestamp (`int()`), every `v1` item a candidate signature; the signature is the
hex HMAC-SHA256 of `"{t}.{body}"` under a secret; a blank secret matches nothing; a timestamp
more than `tolerance` seconds old is refused (one in the future is not: the SDK's rule too).
tests/test_stripe_signature.py checks the two agree.
"""

from __future__ import annotations

import functools
import hmac
import time
from hashlib import sha256

SCHEME = "v1"


class InvalidSignature(Exception):
    """The header does not sign the body with any of the secrets, or is stale or malformed."""


@functools.lru_cache(maxsize=16)
def _keyed(secret: str) -> hmac.HMAC:
    # The key's inner and outer pads, computed once: each request copies them.
    return hmac.new(secret.encode("utf-8"), digestmod=sha256)


def _timestamp_and_signatures(header: str) -> tuple[int, list[str]]:
    """As the SDK splits the header (`split("=", 2)`, the first `t`), or ValueError."""
    items = [item.split("=", 2) for item in header.split(",")]
    try:
        # Every `t` item is read, as the SDK does: a later bare `t` refuses the header.
        timestamp = int([item[1] for item in items if item[0] == "t"][0])  # noqa: RUF015
        signatures = [item[1] for item in items if item[0] == SCHEME]
    except (IndexError, ValueError) as malformed:
        raise ValueError("no timestamp or a malformed item") from malformed
    return timestamp, signatures


def verify_signature(
    payload: bytes, header: str, secrets: list[str], tolerance: int, now: float | None = None
) -> None:
    """Returns if `header` signs `payload` with one of `secrets` within `tolerance` seconds of
    `now` (default: the clock); else raises InvalidSignature. `header` must be ASCII (Stripe
    signs with hex digits; `hmac.compare_digest` refuses other strings with TypeError)."""
    try:
        timestamp, signatures = _timestamp_and_signatures(header)
    except ValueError:
        raise InvalidSignature("unable to extract timestamp and signatures") from None
    if not signatures:
        raise InvalidSignature(f"no {SCHEME} signature")
    # The SDK signs `"%d.%s" % (t, body)` as UTF-8; the raw bytes of a UTF-8 body are that.
    signed_prefix = b"%d." % timestamp
    for secret in secrets:
        if not secret.strip(" \t\r\n\f\v"):
            continue  # the SDK refuses a blank secret rather than sign with it
        mac = _keyed(secret).copy()
        mac.update(signed_prefix)
        mac.update(payload)
        expected = mac.hexdigest()
        if any(hmac.compare_digest(expected, signature) for signature in signatures):
            break
    else:
        raise InvalidSignature("no signature matches the body")
    if tolerance and timestamp < (time.time() if now is None else now) - tolerance:
        raise InvalidSignature(f"timestamp {timestamp} outside the tolerance")
