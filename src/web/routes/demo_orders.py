"""The demo merchant page (`/demo/orders/{order_id}`): a person walking the demo refunds a
line of their order, refunds an amount or cancels it, and sees the stock come back.

Mounted only while the ledger runs the built-in Stripe stand-in (`web.app`), with the same
trust as the stand-in's pay page: no token, because nothing real is paid. With real Stripe the
routes do not exist (404) and the merchant uses the API (`web.routes.order_actions`), whose
desk and idempotency these forms go through too: each form's hidden key is an idempotency
key, so a double submit is one refund.

Each action answers POST/redirect/GET: after it, a 303 back to the page, so that a reload
does not send it again. A refusal is shown at once on the page rendered anew (its status the
refusal's), since the message is the ledger's own and no address should carry text to show.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ledger.commands.after_sale import request_id_for
from ledger.domain.errors import UnknownProduct
from ledger.merchant_requests import Answer
from web.context import cause_of, in_store, services
from web.errors import ApiError
from web.pages.demo_order import Notice, minor_units, order_page_body, order_path
from web.pages.layout import render_page
from web.requests import read_limited
from web.routes.order_actions import IDEMPOTENCY_KEY, answer_once, make_refund
from web.schemas import CancelBody, RefundBody, RefundByLines, RefundLineBody
from web.store_calls import IDEMPOTENT

# The forms send a key, a sku, a quantity, a checkbox and an amount: a few hundred bytes.
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 16
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"

# What `?done=` says after an action went through (a fixed word, never text from the address).
DONE = {
    "refund": "Refund recorded. Its status below is Stripe's.",
    "cancel": "Order cancelled.",
}


def _order_id(request: Request) -> UUID | None:
    try:
        return UUID(request.path_params["order_id"])
    except ValueError:
        return None


def _not_found() -> HTMLResponse:
    return render_page(
        title="No such order",
        status_code=404,
        body=(
            '<h1>No such order</h1><p class="lead" data-testid="notice">This ledger has no order '
            "with that number, or its payment has no outcome yet. "
            '<a href="/">Back to the shop</a></p>'
        ),
    )


def _available(request: Request, skus: list[str]) -> dict[str, int | None]:
    """Each product's stock available now, from the catalog read model (None for one it no
    longer knows)."""
    catalog = services(request).catalog
    found: dict[str, int | None] = {}
    for sku in skus:
        try:
            found[sku] = int(catalog.product(sku)["available"])
        except UnknownProduct:
            found[sku] = None
    return found


async def _page(
    request: Request, order_id: UUID, notice: Notice | None = None, status_code: int = 200
) -> HTMLResponse:
    order = await in_store(request, services(request).orders.get, order_id, retry=IDEMPOTENT)
    if order is None:
        return _not_found()
    skus = [str(item["sku"]) for item in order.get("items") or []]
    available = await in_store(request, _available, request, skus, retry=IDEMPOTENT)  # reads
    return render_page(
        title=f"Order {order_id} (merchant, demo)",
        status_code=status_code,
        body=order_page_body(order, available, notice),
    )


async def order_page(request: Request) -> Response:
    order_id = _order_id(request)
    if order_id is None:
        return _not_found()
    done = DONE.get(request.query_params.get("done", ""))
    return await _page(request, order_id, Notice(done) if done else None)


async def _form(request: Request) -> dict[str, str]:
    """The form's fields (the first value of each); 400 for anything but a small form."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise ApiError(415, "unsupported_media_type", f"Send the form as {FORM_MEDIA_TYPE}.")
    raw = await read_limited(request, MAX_FORM_BYTES)
    try:
        fields = parse_qs(
            raw.decode("ascii"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "The form could not be read.") from None
    return {name: values[0] for name, values in fields.items()}


class _Refused(Exception):
    """The form asks for nothing the desk could do: shown on the page, nothing recorded."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _key_of(form: dict[str, str]) -> str:
    key = form.get("key")
    if key is None or not IDEMPOTENCY_KEY.fullmatch(key):
        raise _Refused(400, "This form has lost its key: reload the page and try again.")
    return key


def _refund_body(form: dict[str, str], currency: str) -> RefundBody:
    """The API's refund body for what the form asks: a line (sku, quantity) or an amount."""
    restock = form.get("restock") == "on"
    try:
        if "sku" in form:
            line = RefundLineBody(sku=form["sku"], quantity=int(form.get("quantity") or "1"))
            return RefundBody(RefundByLines(lines=[line], restock=restock))
        amount = minor_units(form.get("amount", ""), currency)
        if amount is None:
            raise _Refused(422, f"Type an amount above zero, such as 5.00, in {currency.upper()}.")
        return RefundBody.model_validate({"amount": amount})
    except (ValidationError, ValueError):
        raise _Refused(422, "That is no refund this order can have.") from None


async def _act(
    request: Request,
    order_id: UUID,
    body: BaseModel,
    key: str,
    done: str,
    act: Callable[[], Answer],
) -> Response:
    """Runs `act` once per key; back to the page when it went through, the page with the
    refusal's message when not."""
    answer: Answer = await answer_once(request, body, key, act)
    if answer.status < 300:
        return RedirectResponse(f"{order_path(str(order_id))}?done={done}", status_code=303)
    message = str(answer.body.get("error", {}).get("message") or "That was refused.")
    return await _page(request, order_id, Notice(message, refused=True), answer.status)


async def refund(request: Request) -> Response:
    order_id = _order_id(request)
    if order_id is None:
        return _not_found()
    form = await _form(request)
    try:
        key = _key_of(form)
        order = await in_store(
            request, services(request).orders.get, order_id, retry=IDEMPOTENT
        )  # a read
        if order is None:
            return _not_found()
        body = _refund_body(form, str(order.get("currency") or ""))
    except _Refused as refused:
        return await _page(request, order_id, Notice(str(refused), refused=True), refused.status)
    refund_id = request_id_for(order_id, key)

    def act() -> Answer:
        make_refund(request, order_id, refund_id, body)
        # What the page needs to go on: the read model shows the refund itself.
        return Answer(201, {"refund_id": refund_id})

    return await _act(request, order_id, body, key, "refund", act)


async def cancel(request: Request) -> Response:
    order_id = _order_id(request)
    if order_id is None:
        return _not_found()
    form = await _form(request)
    try:
        key = _key_of(form)
    except _Refused as refused:
        return await _page(request, order_id, Notice(str(refused), refused=True), refused.status)
    body = CancelBody(restock=form.get("restock") == "on")
    request_id = request_id_for(order_id, key)

    def act() -> Answer:
        services(request).merchant_desk.cancel(
            order_id, request_id, restock=body.restock, reason=body.reason, cause=cause_of(request)
        )
        return Answer(200, {"order_id": str(order_id)})

    return await _act(request, order_id, body, key, "cancel", act)


# A Mount, not app routes: they are no part of the API that /openapi.json documents, and
# exist only in stand-in mode (`web.app.create_app`).
mount: BaseRoute = Mount(
    "/demo",
    routes=[
        Route("/orders/{order_id}", order_page, methods=["GET"]),
        Route("/orders/{order_id}/refunds", refund, methods=["POST"]),
        Route("/orders/{order_id}/cancel", cancel, methods=["POST"]),
    ],
)
