"""What the success page says for each thing it can show: an order status of the vocabulary,
or one of the page's own states (still checking, no such checkout, given up).

A new `OrderStatus` gets its words here: `words()` matches every member, so the type checker
names the status that has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from ledger.domain.vocabulary import OrderStatus


class PageState(StrEnum):
    """What the page shows when it has no order status to show."""

    CHECKING = "checking"  # the shop could not be asked yet
    UNKNOWN = "unknown"  # the shop never created this checkout
    TIMEOUT = "timeout"  # the page stopped asking without a final answer


Shown = OrderStatus | PageState


class NextStep(StrEnum):
    """The link under the message."""

    NONE = "none"
    CONTINUE_SHOPPING = "continue_shopping"  # the order is settled either way
    BACK_TO_SHOP = "back_to_shop"  # nothing was bought: the cart waits in the shop
    CHECK_AGAIN = "check_again"  # this page, started afresh


class Tone(StrEnum):
    """How the status panel looks (web/static/style.css `.tone-*`): how good the news is."""

    WAIT = "wait"
    GOOD = "good"
    CAUTION = "caution"
    BAD = "bad"


@dataclass(frozen=True)
class Words:
    headline: str
    # Escaped when rendered; {amount}, {reference}, {seconds} and {last} are filled in.
    message: str
    next_step: NextStep = NextStep.NONE
    tone: Tone = Tone.WAIT
    shows_lines: bool = False
    # The give-up message's first sentence when this was the last thing the page knew.
    when_given_up: str = ""


def words(shown: Shown) -> Words:
    match shown:
        case PageState.CHECKING:
            return Words(
                "Checking your payment",
                "We're looking up your checkout. This page updates by itself.",
                when_given_up="We couldn't reach the shop to look up your payment.",
            )
        case OrderStatus.PROCESSING:
            return Words(
                "Thank you! We're confirming your payment",
                "This usually takes a few seconds. You can keep this page open: it updates by "
                "itself.",
                when_given_up="Your payment hasn't been confirmed yet.",
            )
        case OrderStatus.AWAITING_PAYMENT:
            return Words(
                "Thank you! Your payment is on its way",
                "Your payment method takes a little longer to clear, sometimes a few business "
                "days. There is nothing more you need to do: the order is confirmed as soon as "
                "the payment arrives. Keep this page's address to come back and check.",
                NextStep.CONTINUE_SHOPPING,
                Tone.CAUTION,
                shows_lines=True,
                when_given_up="Your payment was still clearing.",
            )
        case OrderStatus.CONFIRMED:
            return Words(
                "Thank you! Your order is confirmed",
                "We've received your payment of {amount} and set your items aside. "
                "Keep this page's address as your record of the order.",
                NextStep.CONTINUE_SHOPPING,
                Tone.GOOD,
                shows_lines=True,
            )
        case OrderStatus.PAYMENT_FAILED:
            return Words(
                "Your payment didn't go through",
                "The payment was declined, so nothing was charged and no order was placed. "
                "Your cart is still saved: you can go back and try again, perhaps with another "
                "payment method.",
                NextStep.BACK_TO_SHOP,
                Tone.BAD,
            )
        case OrderStatus.REFUND_PENDING:
            return Words(
                "We're sorry: we can't fulfil this order",
                "Something you ordered sold out while you were paying. We're refunding the full "
                "{amount} to your payment method; you don't need to do anything. Refunds "
                "usually show up within 5 to 10 business days.",
                NextStep.CONTINUE_SHOPPING,
                Tone.CAUTION,
                when_given_up="Your refund is under way.",
            )
        # Refunded and refund_failed say nothing of why: an order the shop could not fulfil
        # and one the merchant refunded (or whose refund failed) later come to the same word.
        case OrderStatus.REFUNDED:
            return Words(
                "Your payment has been refunded",
                "We refunded the full {amount} to your payment method. Depending on your "
                "bank, it shows up within 5 to 10 business days.",
                NextStep.CONTINUE_SHOPPING,
                Tone.GOOD,
            )
        case OrderStatus.REFUND_FAILED:
            # No amount: a merchant refund that failed may be of part of the payment.
            return Words(
                "We're sorry: your refund needs a person",
                "The payment provider could not complete a refund of this order automatically. "
                "The shop has been alerted and will return your money by hand. If you want to "
                "follow up, contact its support and quote: {reference}",
                NextStep.CONTINUE_SHOPPING,
            )
        case OrderStatus.PARTIALLY_REFUNDED:
            # No amount either: the status body says what was charged, not what was refunded.
            return Words(
                "Part of your payment has been refunded",
                "The shop refunded part of your payment of {amount} to your payment method; "
                "the rest of your order stands. Depending on your bank, the refund shows up "
                "within 5 to 10 business days.",
                NextStep.CONTINUE_SHOPPING,
                Tone.GOOD,
            )
        case OrderStatus.CANCELLED:
            return Words(
                "Your order has been cancelled",
                "The shop cancelled this order. Any part of your payment of {amount} not "
                "refunded yet is being refunded to your payment method, usually within 5 to 10 "
                "business days; if your card was only authorized, the authorization has been "
                "cancelled and you will not be charged.",
                NextStep.CONTINUE_SHOPPING,
                Tone.CAUTION,
            )
        case OrderStatus.RELEASED:
            return Words(
                "We're sorry: we can't fulfil this order",
                "Something you ordered sold out while you were paying. Your card was only "
                "authorized, and that authorization has been cancelled: you will not be "
                "charged, and there is nothing to refund. Depending on your bank, the pending "
                "{amount} disappears from your statement within a few days.",
                NextStep.CONTINUE_SHOPPING,
                Tone.CAUTION,
            )
        case OrderStatus.EXPIRED:
            return Words(
                "This checkout has expired",
                "The payment wasn't completed in time, so nothing was charged. Your cart is "
                "still saved: you can go back to the shop and check out again.",
                NextStep.BACK_TO_SHOP,
                Tone.CAUTION,
            )
        case PageState.UNKNOWN:
            return Words(
                "We can't find this checkout",
                "This shop has no checkout with this reference. Please check that the link is "
                "complete, or go back to the shop. If you have paid, contact the shop's support "
                "and quote the reference: {reference}",
                NextStep.BACK_TO_SHOP,
                Tone.BAD,
            )
        case PageState.TIMEOUT:
            return Words(
                "We've stopped checking for now",
                "{last} We checked for {seconds} seconds without a final answer. Reload this "
                "page in a little while to check again. If it still has no answer, contact the "
                "shop's support and quote your payment reference, which you may want to note "
                "down now: {reference}",
                NextStep.CHECK_AGAIN,
                Tone.CAUTION,
            )
        case _:
            assert_never(shown)
