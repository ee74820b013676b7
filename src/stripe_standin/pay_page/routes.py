"""The pay page's routes: the page of a checkout session, and its buttons' actions, which
move the session on (as a customer would) or its payment (as Stripe or the bank would).
A session whose `expires_at` has passed is expired before it is shown or acted on."""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from stripe_standin.bodies import BodyTooLarge, read_body
from stripe_standin.pay_page import snapshot
from stripe_standin.pay_page.render import CheckoutPage, message_page
from stripe_standin.state.records import Session
from stripe_standin.state.world import World
from stripe_standin.vocabulary import OUTCOMES

# After the payment: these come back to the page instead of going to the shop.
MERCHANT_ACTIONS = (
    "lapse",
    "dashboard_refund",
    "hold_refunds",
    "refund_succeed",
    "refund_fail",
    "dispute",
    "dispute_won",
    "dispute_lost",
)


class PayPage:
    def __init__(
        self,
        *,
        cv: threading.Condition,
        world: World,
        max_request_bytes: int,
    ) -> None:
        self._cv = cv
        self._world = world
        self._max_request_bytes = max_request_bytes
        self.routes = [
            Route("/pay/{session_id}", self._page, methods=["GET"], name="pay_page"),
            Route("/pay/{session_id}/{action}", self._action, methods=["POST"], name="pay_action"),
        ]

    async def _page(self, request: Request) -> Response:
        with self._cv:
            session = self._world.session(request.path_params["session_id"])
            if session is None:
                return _not_found()
            snap = snapshot.take(self._world.store, session)
        return HTMLResponse(CheckoutPage(request, snap).html())

    async def _action(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        action = request.path_params["action"]
        try:
            await read_body(request, self._max_request_bytes)
        except BodyTooLarge as too_large:
            return _page("Request too large", f"{too_large}.", 413)
        if action not in OUTCOMES and action not in MERCHANT_ACTIONS:
            return _page("Unknown action", f"{action} is not an action.", 404)
        back = request.url_for("pay_page", session_id=session_id).path
        with self._cv:
            session = self._world.session(session_id)
            if session is None:
                return _not_found()
            try:
                if action in OUTCOMES:
                    self._world.checkout.apply_outcome(session_id, action, None)
                else:
                    self._merchant_action(session, action)
            except ValueError as exc:
                message = f"{str(exc).rstrip('.')}."
                return _page("That is no longer possible", message, 409, back=back)
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
        refunds, disputes = self._world.refunds, self._world.disputes
        if action == "lapse":
            self._world.authorizations.lapse(session.id)
        elif action == "dashboard_refund":
            refunds.dashboard_refund(session.id)
        elif action == "hold_refunds":
            refunds.hold(session.id, not session.hold_refunds)
        elif action in ("refund_succeed", "refund_fail"):
            pending = self._world.store.pending_refunds(session)
            if not pending:
                raise ValueError("this payment has no pending refund")
            outcome = "succeeded" if action == "refund_succeed" else "failed"
            for refund_id in pending:
                refunds.settle(refund_id, outcome, "expired_or_canceled_card")
        elif action == "dispute":
            disputes.open(session.id, "fraudulent")
        else:
            if session.dispute is None:
                raise ValueError("this payment has no dispute")
            disputes.close(session.dispute, "won" if action == "dispute_won" else "lost")


def _page(title: str, message: str, status: int, *, back: str | None = None) -> HTMLResponse:
    return HTMLResponse(message_page(title, message, back=back), status_code=status)


def _not_found() -> HTMLResponse:
    return _page("Checkout not found", "There is no checkout session with this reference.", 404)
