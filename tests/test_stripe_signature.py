"""The webhook's signature check (web.stripe_signature), on its own and as the webhook applies it:
the same answers as the official SDK's `WebhookSignature.verify_header` for every header."""

from __future__ import annotations

import json
import time

import pytest
import stripe

from web.errors import ApiError
from web.routes.stripe_webhooks import SIGNATURE_TOLERANCE_SECONDS, verify
from web.stripe_signature import InvalidSignature, verify_signature

SECRET = "whsec_current"
OLD_SECRET = "whsec_rotated_out"
BODY = json.dumps(
    {
        "id": "evt_1",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_1", "object": "checkout.session", "amount_total": 1025}},
    }
).encode()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The v1 signature Stripe sends for `body` at `timestamp` (the SDK computes it)."""
    header: str = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp
    )
    return header.split("v1=", 1)[1]


def sdk_accepts(body: bytes, header: str, secrets: list[str]) -> bool:
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                body.decode(), header, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
            return True
        except stripe.SignatureVerificationError:
            continue
    return False


def ours_accepts(body: bytes, header: str, secrets: list[str]) -> bool:
    try:
        verify_signature(body, header, secrets, SIGNATURE_TOLERANCE_SECONDS)
        return True
    except InvalidSignature:
        return False


def refusal(body: bytes, header: str | None, secrets: list[str]) -> str:
    with pytest.raises(ApiError) as refused:
        verify(body, header, secrets)
    assert refused.value.status == 400
    return refused.value.code


def test_a_fresh_signature_by_the_current_secret_gives_the_event() -> None:
    now = int(time.time())
    event = verify(BODY, f"t={now},v1={sign(BODY, SECRET, now)}", [SECRET])
    assert (event["type"], event["data"]["object"]["id"]) == ("checkout.session.completed", "cs_1")


def test_a_missing_or_empty_header_is_a_missing_signature() -> None:
    assert refusal(BODY, None, [SECRET]) == "missing_signature"
    assert refusal(BODY, "", [SECRET]) == "missing_signature"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=notanumber,v1=00",
        "v1=00",  # no timestamp
        "t=1700000000",  # no v1 signature
        "t={now},v0={good}",  # only another scheme
        "t={now},v1=" + "0" * 64,  # a well-formed signature of something else
        "t={now},v1={good}x",
        "t={now},v1={good},t",  # a bare `t` item after the timestamp: the SDK refuses it
        "t={now},v1",  # a bare `v1` item
        "t={later},v1={good}",  # the signature was made for another timestamp
        "t={now},v1={good_by_another}",
        "t={now},v1=é" + "0" * 63,  # not ASCII
    ],
)
def test_a_bad_signature_is_refused_as_the_sdk_refuses_it(header: str) -> None:
    now = int(time.time())
    header = header.format(
        now=now,
        later=now + 1,
        good=sign(BODY, SECRET, now),
        good_by_another=sign(BODY, "whsec_someone_else", now),
    )
    assert refusal(BODY, header, [SECRET]) == "invalid_signature"
    if header.isascii():
        assert not sdk_accepts(BODY, header, [SECRET])


def test_a_signature_over_another_body_is_refused() -> None:
    now = int(time.time())
    header = f"t={now},v1={sign(BODY, SECRET, now)}"
    assert refusal(BODY.replace(b"1025", b"1026"), header, [SECRET]) == "invalid_signature"


def test_an_old_timestamp_is_refused_and_one_within_tolerance_is_not() -> None:
    now = int(time.time())
    stale = now - SIGNATURE_TOLERANCE_SECONDS - 5
    header = f"t={stale},v1={sign(BODY, SECRET, stale)}"
    assert refusal(BODY, header, [SECRET]) == "invalid_signature"
    assert not sdk_accepts(BODY, header, [SECRET])
    recent = now - SIGNATURE_TOLERANCE_SECONDS + 30
    assert verify(BODY, f"t={recent},v1={sign(BODY, SECRET, recent)}", [SECRET])


def test_the_tolerance_is_measured_from_now() -> None:
    signed_at = 1_700_000_000
    header = f"t={signed_at},v1={sign(BODY, SECRET, signed_at)}"
    verify_signature(BODY, header, [SECRET], 300, now=signed_at + 300)
    with pytest.raises(InvalidSignature):
        verify_signature(BODY, header, [SECRET], 300, now=signed_at + 301)


def test_any_of_several_v1_signatures_may_match() -> None:
    # Stripe sends one v1 per active secret while a secret is being rolled.
    now = int(time.time())
    header = (
        f"t={now},v1={sign(BODY, 'whsec_other', now)},v1={sign(BODY, SECRET, now)},v0={'0' * 64}"
    )
    assert verify(BODY, header, [SECRET])["id"] == "evt_1"
    assert sdk_accepts(BODY, header, [SECRET])


def test_rotated_secrets_each_verify_and_a_blank_one_matches_nothing() -> None:
    now = int(time.time())
    by_old = f"t={now},v1={sign(BODY, OLD_SECRET, now)}"
    by_new = f"t={now},v1={sign(BODY, SECRET, now)}"
    for header in (by_old, by_new):
        assert verify(BODY, header, [SECRET, OLD_SECRET])["id"] == "evt_1"
        assert verify(BODY, header, [OLD_SECRET, SECRET])["id"] == "evt_1"
    # Once the old secret is retired, what it signed is refused.
    assert refusal(BODY, by_old, [SECRET]) == "invalid_signature"
    # A blank secret signs nothing, even a body "signed" with the empty key.
    by_blank = f"t={now},v1={sign(BODY, ' ', now)}"
    assert refusal(BODY, by_blank, [" ", SECRET]) == "invalid_signature"


def test_the_first_timestamp_counts_as_in_the_sdk() -> None:
    now = int(time.time())
    good = sign(BODY, SECRET, now)
    first = f"t={now},t={now + 1},v1={good}"
    second = f"t={now + 1},t={now},v1={good}"
    assert ours_accepts(BODY, first, [SECRET]) and sdk_accepts(BODY, first, [SECRET])
    assert not ours_accepts(BODY, second, [SECRET]) and not sdk_accepts(BODY, second, [SECRET])


def test_a_signed_body_that_is_not_a_sane_event_is_an_invalid_payload() -> None:
    now = int(time.time())
    for body in (
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": {"n": NaN}}}',
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": {"s": "\\ud800"}}}',
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": {"n": 1e999}}}',
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {}}',
        b"[" * 100_000 + b"]" * 100_000,
    ):
        header = f"t={now},v1={sign(body, SECRET, now)}"
        assert refusal(body, header, [SECRET]) == "invalid_payload", body[:80]
    # A paired surrogate escape is a character like any other.
    paired = b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": '
    paired += b'{"s": "\\ud83d\\ude00"}}}'
    event = verify(paired, f"t={now},v1={sign(paired, SECRET, now)}", [SECRET])
    assert event["data"]["object"]["s"] == "\U0001f600"
    not_utf8 = b'{"s": "\xff"}'
    assert refusal(not_utf8, f"t={now},v1={'0' * 64}", [SECRET]) == "invalid_payload"
