"""What a pay page says about the two things that are held for a while: the checkout itself
(open until its `expires_at`, while the shop keeps the items for the customer) and, when the
payment is captured later, the card's authorization (until captured, released or lapsed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from stripe_standin.pay_page.markup import Html, fill
from stripe_standin.vocabulary import LAPSED

Money = Callable[[Any], str]
Button = Callable[[str, str, str], Html]


def deadline(obj: dict[str, Any]) -> Html:
    """When an open checkout expires, in UTC: the one time zone every reader can convert."""
    if obj["status"] != "open":
        return Html()
    return fill("deadline.html", when=when(int(obj["expires_at"])))


def authorization(
    intent: dict[str, Any] | None, capture_before: int | None, money: Money, button: Button
) -> Html:
    """The state of a card payment held for capture, and the control that lets it lapse."""
    if intent is None or intent["capture_method"] != "manual" or capture_before is None:
        return Html()
    status, amount = intent["status"], money(intent["amount"])
    actions = Html()
    if status == "requires_capture":
        state = "authorized"
        text = fill(
            "authorized.html",
            amount=money(intent["amount_capturable"]),
            until=when(capture_before),
        )
        actions = button(
            "lapse",
            "Let the authorization lapse",
            "Stripe gives the hold up, as it does after seven days uncaptured; nothing is charged.",
        )
    elif status == "succeeded":
        state = "captured"
        received = money(intent["amount_received"])
        text = fill(
            "message.html",
            text=f"Captured: {received}."
            if received == amount
            else f"Captured {received} of {amount}; the rest was released.",
        )
    elif status == "canceled" and intent["cancellation_reason"] == LAPSED:
        state = "lapsed"
        text = fill(
            "message.html", text="Lapsed: the hold ran out uncaptured. Nothing was charged."
        )
    elif status == "canceled":
        reason = intent["cancellation_reason"]
        state = "released"
        text = fill(
            "message.html",
            text="Released by the shop"
            + (f" ({reason})" if reason else "")
            + ". Nothing was charged.",
        )
    else:
        return Html()
    return fill("authorization.html", state=state, text=text, actions=actions)


def when(timestamp: int) -> Html:
    at = datetime.fromtimestamp(timestamp, UTC)
    return fill(
        "when.html",
        iso=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        time=at.strftime("%H:%M UTC"),
        date=f"{at.day} {at.strftime('%B %Y')}",
    )
