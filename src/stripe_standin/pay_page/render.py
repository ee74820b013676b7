"""The pages the pay page answers with: a checkout session's page, and the short pages that
say why something could not be done."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from stripe_standin.money import format_amount
from stripe_standin.pay_page import holds
from stripe_standin.pay_page.markup import Html, fill, join
from stripe_standin.pay_page.snapshot import Snapshot
from stripe_standin.vocabulary import DISPUTE_BLOCKS_REFUNDS, DISPUTE_OPEN


def page_html(title: str, body: Html) -> str:
    return fill("layout.html", title=title, body=body)


def message_page(title: str, message: str, *, back: str | None = None) -> str:
    """A page saying `message`, with a link back to the checkout page when `back` is given."""
    body = fill("message.html", text=message)
    if back is not None:
        body = join([body, fill("link.html", href=back, text="Back to the checkout page")])
    return page_html(title, body)


class CheckoutPage:
    """The page of one snapshot: a summary, and a button for everything that can happen next."""

    def __init__(self, request: Request, snap: Snapshot) -> None:
        self.request = request
        self.snap = snap
        self.sid = str(snap.obj["id"])
        self.currency = str(snap.obj["currency"])

    def html(self) -> str:
        obj = self.snap.obj
        rows = join(
            [
                fill(
                    "item_row.html",
                    name=str(it["description"]),
                    quantity=str(int(it["quantity"])),
                    unit_price=self.money(it["price"]["unit_amount"]),
                    amount=self.money(it["amount_total"]),
                )
                for it in self.snap.items
            ]
        )
        total = self.money(obj["amount_total"])
        message, actions = self.checkout()
        body = fill(
            "checkout.html",
            rows=rows,
            total=total,
            status=str(obj["status"]),
            payment_status=str(obj["payment_status"]),
            message=message,
            deadline=holds.deadline(obj),
            actions=actions,
            authorization=holds.authorization(
                self.snap.intent, self.snap.capture_before, self.money, self.button
            ),
            payment=self.payment(),
            afterwards=self.afterwards(),
            reference=self.sid,
        )
        return page_html(f"Pay {total}", body)

    def money(self, minor: Any) -> str:
        return format_amount(int(minor), self.currency)

    def button(self, action: str, label: str, hint: str, pressed: bool | None = None) -> Html:
        url = self.request.url_for("pay_action", session_id=self.sid, action=action).path
        if pressed is None:
            return fill("button.html", url=url, action=action, label=label, hint=hint)
        return fill(
            "toggle_button.html",
            url=url,
            action=action,
            pressed=str(pressed).lower(),
            label=label,
            hint=hint,
        )

    def checkout(self) -> tuple[str, Html]:
        """The status message and the buttons (or link) for the checkout itself."""
        obj, button = self.snap.obj, self.button
        status, pay_status = obj["status"], obj["payment_status"]
        intent_status = self.snap.intent["status"] if self.snap.intent else None
        if status == "open" and self.snap.capture_method == "manual":
            return "Choose how this test payment should go.", join(
                [
                    button(
                        "pay",
                        "Pay",
                        "The card is authorized; the shop captures the payment later.",
                    ),
                    self.expire_button(),
                ]
            )
        if status == "open":
            return "Choose how this test payment should go.", join(
                [
                    button("pay", "Pay", "The card payment succeeds at once."),
                    button(
                        "pay_later",
                        "Pay later",
                        "A delayed payment method: checkout completes, payment clears later.",
                    ),
                    button(
                        "async_fail",
                        "Fail payment",
                        "A delayed payment method whose payment then fails.",
                    ),
                    self.expire_button(),
                ]
            )
        if intent_status == "processing":
            return "Checkout is complete; the payment has not cleared yet.", join(
                [
                    button("async_succeed", "Payment clears", "The delayed payment succeeds."),
                    button("async_fail", "Payment fails", "The delayed payment fails."),
                ]
            )
        if status == "expired":
            message = "This checkout session has expired. Nothing was charged."
        elif intent_status == "requires_payment_method":
            message = "The payment failed. Nothing was charged."
        elif intent_status == "requires_capture":
            message = "Checkout is complete; the card is charged once the shop captures it."
        elif intent_status == "canceled":
            message = "The payment was canceled. Nothing was charged."
        elif pay_status == "paid":
            message = "Paid. Thank you."
        else:
            message = f"This checkout session is {status}."
        link = obj["cancel_url"] if status == "expired" else obj["success_url"]
        if not link:
            return message, Html()
        href = link.replace("{CHECKOUT_SESSION_ID}", self.sid)
        return message, fill("link.html", href=href, text="Return to the shop")

    def expire_button(self) -> Html:
        return self.button(
            "expire", "Let it expire", "Abandon the checkout; the session expires unpaid."
        )

    def payment(self) -> Html:
        """The PaymentIntent's status, and the payment's refunds and dispute."""
        intent, dispute = self.snap.intent, self.snap.dispute
        if intent is None:
            return Html()
        refunds = [
            fill(
                "refund_row.html",
                id=str(r["id"]),
                status=str(r["status"]),
                amount=self.money(r["amount"]),
            )
            for r in self.snap.refunds
        ]
        disputes = []
        if dispute is not None:
            disputes.append(
                fill(
                    "dispute_row.html",
                    id=str(dispute["id"]),
                    status=str(dispute["status"]),
                    reason=str(dispute["reason"]),
                )
            )
        return fill(
            "payment.html",
            intent=str(intent["id"]),
            status=str(intent["status"]),
            refunds=_table("Refunds", ("Refund", "Amount", "Status"), refunds, "No refunds."),
            disputes=_table("Disputes", ("Dispute", "Reason", "Status"), disputes, "No disputes."),
        )

    def afterwards(self) -> Html:
        """Buttons for what happens to a paid payment in Stripe: refunds made in the
        Dashboard, refunds that stay pending then settle, a dispute and its outcome."""
        charge, dispute, button = self.snap.charge, self.snap.dispute, self.button
        if charge is None:
            return Html()
        actions = []
        blocked = dispute is not None and dispute["status"] in DISPUTE_BLOCKS_REFUNDS
        if int(charge["amount_refunded"]) < int(charge["amount"]) and not blocked:
            actions.append(
                button(
                    "dashboard_refund",
                    "Refund in Dashboard",
                    "Refund the whole payment as a person would in Stripe's Dashboard.",
                )
            )
        actions.append(
            button(
                "hold_refunds",
                "Keep this payment's refunds pending",
                "While pressed, new refunds of this payment stay pending until settled here.",
                pressed=self.snap.hold_refunds,
            )
        )
        if any(r["status"] == "pending" for r in self.snap.refunds):
            actions += [
                button("refund_succeed", "Pending refunds succeed", "The bank returns the money."),
                button(
                    "refund_fail", "Pending refunds fail", "The card was closed; the refund fails."
                ),
            ]
        if dispute is None:
            actions.append(
                button(
                    "dispute",
                    "Open a dispute",
                    "The customer disputes the payment with their bank.",
                )
            )
        elif dispute["status"] in DISPUTE_OPEN:
            actions += [
                button("dispute_won", "Dispute won", "The bank decides for the merchant."),
                button("dispute_lost", "Dispute lost", "The bank decides for the customer."),
            ]
        return fill("afterwards.html", actions=join(actions))


def _table(caption: str, headings: tuple[str, str, str], rows: list[Html], empty: str) -> Html:
    if not rows:
        return fill("message.html", text=empty)
    return fill(
        "table.html",
        caption=caption,
        headings=join([fill("heading.html", text=h) for h in headings]),
        rows=join(rows),
    )
