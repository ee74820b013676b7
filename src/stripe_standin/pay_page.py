"""The hosted pay page: a plain HTML page per checkout session with a button for every
outcome of Checkout, and, once paid, for what can happen to the payment afterwards in Stripe
(a refund made in the Dashboard, refunds that stay pending then succeed or fail, a dispute)."""

from __future__ import annotations

import copy
import html
import threading
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from stripe_standin.bodies import BodyTooLarge, read_body
from stripe_standin.money import format_amount
from stripe_standin.state.checkout import Checkout
from stripe_standin.state.disputes import Disputes
from stripe_standin.state.records import Session
from stripe_standin.state.refunds import Refunds
from stripe_standin.state.store import Store
from stripe_standin.vocabulary import DISPUTE_BLOCKS_REFUNDS, DISPUTE_OPEN, OUTCOMES

# After the payment: these come back to the page instead of going to the shop.
MERCHANT_ACTIONS = (
    "dashboard_refund",
    "hold_refunds",
    "refund_succeed",
    "refund_fail",
    "dispute",
    "dispute_won",
    "dispute_lost",
)


@dataclass
class _Snapshot:
    """Copies of what the page shows, taken under the lock and rendered outside it."""

    obj: dict[str, Any]
    items: list[dict[str, Any]]
    intent: dict[str, Any] | None
    charge: dict[str, Any] | None
    refunds: list[dict[str, Any]]
    dispute: dict[str, Any] | None
    hold_refunds: bool


class PayPage:
    def __init__(
        self,
        *,
        cv: threading.Condition,
        store: Store,
        checkout: Checkout,
        refunds: Refunds,
        disputes: Disputes,
        max_request_bytes: int,
    ) -> None:
        self._cv = cv
        self._store = store
        self._checkout = checkout
        self._refunds = refunds
        self._disputes = disputes
        self._max_request_bytes = max_request_bytes
        self.routes = [
            Route("/pay/{session_id}", self._page, methods=["GET"], name="pay_page"),
            Route("/pay/{session_id}/{action}", self._action, methods=["POST"], name="pay_action"),
        ]

    async def _page(self, request: Request) -> Response:
        with self._cv:
            session = self._store.session(request.path_params["session_id"])
            if session is None:
                return _not_found()
            snapshot = self._snapshot(session)
        return HTMLResponse(_Render(request, snapshot).page())

    async def _action(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        action = request.path_params["action"]
        try:
            await read_body(request, self._max_request_bytes)
        except BodyTooLarge as too_large:
            return _page("Request too large", f"<p>{html.escape(str(too_large))}.</p>", 413)
        if action not in OUTCOMES and action not in MERCHANT_ACTIONS:
            return _page("Unknown action", f"<p>{html.escape(action)} is not an action.</p>", 404)
        back = request.url_for("pay_page", session_id=session_id).path
        with self._cv:
            session = self._store.session(session_id)
            if session is None:
                return _not_found()
            try:
                if action in OUTCOMES:
                    self._checkout.apply_outcome(session_id, action, None)
                else:
                    self._merchant_action(session, action)
            except ValueError as exc:
                return _page(
                    "That is no longer possible",
                    f"<p>{html.escape(str(exc).rstrip('.'))}.</p>"
                    f'<p><a href="{html.escape(back)}">Back to the checkout page</a></p>',
                    409,
                )
            obj = session.obj
            if action in MERCHANT_ACTIONS:
                target = back
            elif action == "expire":
                target = obj["cancel_url"]
            else:
                target = obj["success_url"]
                if target:
                    target = target.replace("{CHECKOUT_SESSION_ID}", session_id)
        return RedirectResponse(target or back, status_code=303)

    def _merchant_action(self, session: Session, action: str) -> None:
        store = self._store
        if action == "dashboard_refund":
            self._refunds.dashboard_refund(session.id)
        elif action == "hold_refunds":
            self._refunds.hold(session.id, not session.hold_refunds)
        elif action in ("refund_succeed", "refund_fail"):
            pending = store.pending_refunds(session)
            if not pending:
                raise ValueError("this payment has no pending refund")
            outcome = "succeeded" if action == "refund_succeed" else "failed"
            for refund_id in pending:
                self._refunds.settle(refund_id, outcome, "expired_or_canceled_card")
        elif action == "dispute":
            self._disputes.open(session.id, "fraudulent")
        else:
            if session.dispute is None:
                raise ValueError("this payment has no dispute")
            self._disputes.close(session.dispute, "won" if action == "dispute_won" else "lost")

    def _snapshot(self, session: Session) -> _Snapshot:
        store = self._store
        intent = store.intent(session.intent) if session.intent else None
        charge = store.charge(session.charge) if session.charge else None
        dispute = store.dispute(session.dispute) if session.dispute else None
        return _Snapshot(
            obj=copy.deepcopy(session.obj),
            items=copy.deepcopy(session.items),
            intent=copy.deepcopy(intent),
            charge=copy.deepcopy(charge),
            refunds=copy.deepcopy(list(reversed(store.refunds_newest_first(session)))),
            dispute=copy.deepcopy(dispute),
            hold_refunds=session.hold_refunds,
        )


class _Render:
    """The page of one snapshot: every text and attribute from the session is escaped."""

    def __init__(self, request: Request, snap: _Snapshot) -> None:
        self.request = request
        self.snap = snap
        self.sid = str(snap.obj["id"])
        self.currency = str(snap.obj["currency"])

    def money(self, minor: Any) -> str:
        return html.escape(format_amount(int(minor), self.currency))

    def button(self, action: str, label: str, hint: str, pressed: bool | None = None) -> str:
        url = self.request.url_for("pay_action", session_id=self.sid, action=action)
        toggle = "" if pressed is None else f' aria-pressed="{str(pressed).lower()}"'
        return (
            f'<form method="post" action="{html.escape(url.path)}">'
            f'<button type="submit" data-action="{action}"{toggle} '
            f'aria-describedby="hint-{action}">{html.escape(label)}</button>'
            f'<p class="hint" id="hint-{action}">{html.escape(hint)}</p></form>'
        )

    def page(self) -> str:
        obj = self.snap.obj
        rows = "".join(
            "<tr><th scope='row'>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(str(it["description"])),
                int(it["quantity"]),
                self.money(it["price"]["unit_amount"]),
                self.money(it["amount_total"]),
            )
            for it in self.snap.items
        )
        total = self.money(obj["amount_total"])
        status, pay_status = obj["status"], obj["payment_status"]
        message, actions = self.checkout()
        body = f"""
<p class="badge">Test mode: a local Stripe stand-in. No real payment is taken.</p>
<table>
<caption>Order summary</caption>
<thead><tr><th scope="col">Item</th><th scope="col">Quantity</th>
<th scope="col">Unit price</th><th scope="col">Amount</th></tr></thead>
<tbody>{rows}</tbody>
<tfoot><tr><th scope="row" colspan="3">Total</th><td data-total>{total}</td></tr></tfoot>
</table>
<p role="status" data-status="{html.escape(str(status))}"
 data-payment-status="{html.escape(str(pay_status))}">{html.escape(message)}</p>
<div class="actions">{actions}</div>
{self.payment()}
{self.afterwards()}
<p class="ref">Reference: <code>{html.escape(self.sid)}</code></p>"""
        return _page_html(f"Pay {total}", body)

    def checkout(self) -> tuple[str, str]:
        """The status message and the buttons (or link) for the checkout itself."""
        obj, button = self.snap.obj, self.button
        status, pay_status = obj["status"], obj["payment_status"]
        intent_status = self.snap.intent["status"] if self.snap.intent else None
        if status == "open":
            return "Choose how this test payment should go.", (
                button("pay", "Pay", "The card payment succeeds at once.")
                + button(
                    "pay_later",
                    "Pay later",
                    "A delayed payment method: checkout completes, payment clears later.",
                )
                + button(
                    "async_fail",
                    "Fail payment",
                    "A delayed payment method whose payment then fails.",
                )
                + button(
                    "expire", "Let it expire", "Abandon the checkout; the session expires unpaid."
                )
            )
        if intent_status == "processing":
            return "Checkout is complete; the payment has not cleared yet.", (
                button("async_succeed", "Payment clears", "The delayed payment succeeds.")
                + button("async_fail", "Payment fails", "The delayed payment fails.")
            )
        if status == "expired":
            message = "This checkout session has expired. Nothing was charged."
        elif intent_status == "requires_payment_method":
            message = "The payment failed. Nothing was charged."
        elif pay_status == "paid":
            message = "Paid. Thank you."
        else:
            message = f"This checkout session is {status}."
        link = obj["cancel_url"] if status == "expired" else obj["success_url"]
        if not link:
            return message, ""
        href = html.escape(link.replace("{CHECKOUT_SESSION_ID}", self.sid))
        return message, f'<p><a href="{href}">Return to the shop</a></p>'

    def payment(self) -> str:
        """The PaymentIntent's status, and the payment's refunds and dispute."""
        intent, dispute = self.snap.intent, self.snap.dispute
        if intent is None:
            return ""
        e = html.escape
        refunds = "".join(
            f'<tr data-refund="{e(r["id"])}" data-refund-status="{e(r["status"])}">'
            f"<th scope='row'><code>{e(r['id'])}</code></th><td>{self.money(r['amount'])}</td>"
            f"<td>{e(r['status'])}</td></tr>"
            for r in self.snap.refunds
        )
        disputes = ""
        if dispute is not None:
            disputes = (
                f'<tr data-dispute="{e(dispute["id"])}" '
                f'data-dispute-status="{e(dispute["status"])}">'
                f"<th scope='row'><code>{e(dispute['id'])}</code></th>"
                f"<td>{e(dispute['reason'])}</td><td>{e(dispute['status'])}</td></tr>"
            )
        status = e(intent["status"])
        return (
            '<section aria-labelledby="payment-heading">'
            '<h2 id="payment-heading">Payment</h2>'
            f"<p>PaymentIntent <code>{e(intent['id'])}</code>: "
            f'<strong data-payment-intent-status="{status}">{status}</strong></p>'
            + _table("Refunds", ("Refund", "Amount", "Status"), refunds, "No refunds.")
            + _table("Disputes", ("Dispute", "Reason", "Status"), disputes, "No disputes.")
            + "</section>"
        )

    def afterwards(self) -> str:
        """Buttons for what happens to a paid payment in Stripe: refunds made in the
        Dashboard, refunds that stay pending then settle, a dispute and its outcome."""
        charge, dispute, button = self.snap.charge, self.snap.dispute, self.button
        if charge is None:
            return ""
        actions = ""
        blocked = dispute is not None and dispute["status"] in DISPUTE_BLOCKS_REFUNDS
        if int(charge["amount_refunded"]) < int(charge["amount"]) and not blocked:
            actions += button(
                "dashboard_refund",
                "Refund in Dashboard",
                "Refund the whole payment as a person would in Stripe's Dashboard.",
            )
        actions += button(
            "hold_refunds",
            "Keep this payment's refunds pending",
            "While pressed, new refunds of this payment stay pending until settled here.",
            pressed=self.snap.hold_refunds,
        )
        if any(r["status"] == "pending" for r in self.snap.refunds):
            actions += button(
                "refund_succeed", "Pending refunds succeed", "The bank returns the money."
            )
            actions += button(
                "refund_fail", "Pending refunds fail", "The card was closed; the refund fails."
            )
        if dispute is None:
            actions += button(
                "dispute", "Open a dispute", "The customer disputes the payment with their bank."
            )
        elif dispute["status"] in DISPUTE_OPEN:
            actions += button("dispute_won", "Dispute won", "The bank decides for the merchant.")
            actions += button("dispute_lost", "Dispute lost", "The bank decides for the customer.")
        return (
            '<section aria-labelledby="merchant-heading">'
            '<h2 id="merchant-heading">Afterwards, in Stripe</h2>'
            f'<div class="actions">{actions}</div></section>'
        )


def _table(caption: str, headings: tuple[str, str, str], rows: str, empty: str) -> str:
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in headings)
    return (
        f"<table><caption>{html.escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


_CSS = """
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.5}
body{margin:0;padding:1rem}main{max-width:40rem;margin:0 auto}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
table{border-collapse:collapse;width:100%;margin:1rem 0}
caption{text-align:left;font-weight:600}
th,td{padding:.4rem .5rem;border-bottom:1px solid #8886;text-align:left}
td:not(:first-child),tfoot td{text-align:right}
.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;background:#fde68a;
color:#1f2937}
.actions{display:grid;gap:.5rem;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr))}
.actions form{margin:0}
button{font:inherit;width:100%;padding:.6rem 1rem;border-radius:.4rem;cursor:pointer;
border:2px solid #1d4ed8;background:#1d4ed8;color:#fff}
button[data-action=async_fail],button[data-action=expire],button[data-action=refund_fail],
button[data-action=dispute_lost],button[aria-pressed]{background:transparent;color:inherit}
button[aria-pressed=true]{background:#1d4ed8;color:#fff}
button:focus-visible,a:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.hint{margin:.25rem 0 0;font-size:.875rem}
.ref{font-size:.875rem}
"""


def _page_html(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


def _page(title: str, body: str, status: int) -> HTMLResponse:
    return HTMLResponse(_page_html(title, body), status_code=status)


def _not_found() -> HTMLResponse:
    return _page(
        "Checkout not found", "<p>There is no checkout session with this reference.</p>", 404
    )
