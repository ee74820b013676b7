"""Pages for people: the checkout success page and a small demo storefront.

Both are plain server-rendered HTML from string templates (`web/templates/`), with a little
JavaScript and CSS served by the app itself (`web/static/`, under `/static`). No build step and
no external assets. The success page renders the order's current status on every load, so it
works without JavaScript too (a `<noscript>` meta refresh re-renders it until the status is
final or the page gives up); with JavaScript it polls the JSON status endpoint instead.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import string
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ledger.domain.vocabulary import FINAL as FINAL_STATUSES
from ledger.money import format_amount
from web.context import services
from web.routes.checkout import current_order_status

log = structlog.get_logger("web.pages")

WEB_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

# Longer than any id Stripe issues; anything longer is not worth a look-up.
MAX_SESSION_ID_LENGTH = 255
# Seconds between server-side re-renders when JavaScript is off.
NO_JS_REFRESH_SECONDS = 3

# What the page says for each status: (headline, message). Placeholders in braces are filled
# in by both renderers (Python here, JavaScript in static/success.js): {amount}, {reference},
# {seconds}, {last}.
STATUS_TEXTS: dict[str, tuple[str, str]] = {
    "checking": (
        "Checking your payment",
        "We're looking up your checkout. This page updates by itself.",
    ),
    "processing": (
        "Thank you! We're confirming your payment",
        "This usually takes a few seconds. You can keep this page open: it updates by itself.",
    ),
    "awaiting_payment": (
        "Thank you! Your payment is on its way",
        "Your payment method takes a little longer to clear, sometimes a few business days. "
        "There is nothing more you need to do: the order is confirmed as soon as the payment "
        "arrives. Keep this page's address to come back and check.",
    ),
    "confirmed": (
        "Thank you! Your order is confirmed",
        "We've received your payment of {amount} and set your items aside. "
        "Keep this page's address as your record of the order.",
    ),
    "payment_failed": (
        "Your payment didn't go through",
        "The payment was declined, so nothing was charged and no order was placed. "
        "Your cart is still saved: you can go back and try again, perhaps with another "
        "payment method.",
    ),
    "refund_pending": (
        "We're sorry: we can't fulfil this order",
        "Something you ordered sold out while you were paying. We're refunding the full "
        "{amount} to your payment method; you don't need to do anything. Refunds usually "
        "show up within 5 to 10 business days.",
    ),
    "refunded": (
        "Your payment has been refunded",
        "We couldn't fulfil this order, so we refunded the full {amount} to your payment "
        "method. Depending on your bank, it shows up within 5 to 10 business days.",
    ),
    "refund_failed": (
        "We're sorry: your refund needs a person",
        "We couldn't fulfil this order, and the payment provider could not refund the "
        "{amount} automatically. The shop has been alerted and will return your money by "
        "hand. If you want to follow up, contact its support and quote: {reference}",
    ),
    "expired": (
        "This checkout has expired",
        "The payment wasn't completed in time, so nothing was charged. Your cart is still "
        "saved: you can go back to the shop and check out again.",
    ),
    "unknown": (
        "We can't find this checkout",
        "This shop has no checkout with this reference. Please check that the link is "
        "complete, or go back to the shop. If you have paid, contact the shop's support and "
        "quote the reference: {reference}",
    ),
    "timeout": (
        "We've stopped checking for now",
        "{last} We checked for {seconds} seconds without a final answer. Reload this page in "
        "a little while to check again. If it still has no answer, contact the shop's support "
        "and quote your payment reference, which you may want to note down now: {reference}",
    ),
}

# For the timeout message: the last thing the page knew.
LAST_KNOWN: dict[str, str] = {
    "checking": "We couldn't reach the shop to look up your payment.",
    "processing": "Your payment hasn't been confirmed yet.",
    "awaiting_payment": "Your payment was still clearing.",
    "refund_pending": "Your refund is under way.",
}

# The order's lines are shown for these statuses.
WITH_LINES = {"confirmed", "awaiting_payment"}
# "Continue shopping" for these; "Back to the shop" (where the cart waits) for the others.
DONE_STATUSES = {"confirmed", "awaiting_payment", "refund_pending", "refunded", "refund_failed"}

# ---------------------------------------------------------------------------- templates


@functools.cache
def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


@functools.cache
def asset(name: str) -> str:
    """The URL of a static file, versioned by its content so browsers never run stale code."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def _script_json(value: Any) -> str:
    """JSON safe to place inside a <script type="application/json"> element."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(
    *,
    title: str,
    body: str,
    status_code: int = 200,
    head: str = "",
    scripts: tuple[str, ...] = (),
    config_id: str | None = None,
    config: Any = None,
) -> HTMLResponse:
    tags = "".join(f'<script src="{html.escape(asset(s))}" defer></script>' for s in scripts)
    if config_id is not None:
        tags = (
            f'<script type="application/json" id="{config_id}">{_script_json(config)}</script>'
            + tags
        )
    page = _template("layout.html").substitute(
        title=html.escape(title),
        css=html.escape(asset("style.css")),
        icon=html.escape(asset("favicon.svg")),
        head=head,
        body=body,
        scripts=tags,
    )
    return HTMLResponse(page, status_code=status_code, headers=PAGE_HEADERS)


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # The session id in the address is what unlocks the order status: never pass it on.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'"
    ),
}


# ---------------------------------------------------------------------------- success page


def _fill(text: str, values: dict[str, str]) -> str:
    """`text` with {placeholders} replaced by already-escaped HTML; the rest escaped."""
    out: list[str] = []
    rest = text
    while "{" in rest:
        before, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        out.append(html.escape(before))
        out.append(values.get(name, html.escape("{" + name + "}")))
    out.append(html.escape(rest))
    return "".join(out)


def _amount_of(body: dict[str, Any] | None) -> str | None:
    if not body or not isinstance(body.get("amount_total"), int) or not body.get("currency"):
        return None
    return format_amount(body["amount_total"], body["currency"])


def _lines_table(body: dict[str, Any]) -> str:
    currency = body.get("currency")
    rows = []
    for item in body.get("items") or []:
        quantity = int(item.get("quantity") or 0)
        unit = int(item.get("unit_amount") or 0)
        line_total = item.get("amount_total")
        if not isinstance(line_total, int):
            line_total = unit * quantity
        name = item.get("name") or item.get("sku") or "Item"
        rows.append(
            "<tr>"
            f'<th scope="row">{html.escape(str(name))}</th>'
            f'<td class="num">{quantity}</td>'
            f'<td class="num">{html.escape(format_amount(unit, currency))}</td>'
            f'<td class="num">{html.escape(format_amount(line_total, currency))}</td>'
            "</tr>"
        )
    total = html.escape(format_amount(int(body.get("amount_total") or 0), currency))
    return (
        '<table class="lines">'
        "<caption>Your order</caption>"
        '<thead><tr><th scope="col">Item</th><th scope="col" class="num">Quantity</th>'
        '<th scope="col" class="num">Unit price</th>'
        '<th scope="col" class="num">Amount</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody>"
        '<tfoot><tr><th scope="row" colspan="3">Total</th>'
        f'<td class="num" data-testid="order-total">{total}</td></tr></tfoot>'
        "</table>"
    )


def render_status(
    status: str,
    body: dict[str, Any] | None,
    *,
    session_id: str,
    timeout: float,
    last: str = "processing",
    check_again_url: str = "",
) -> str:
    """The inner HTML of the status region. static/success.js builds the same structure."""
    headline, message = STATUS_TEXTS[status]
    amount = _amount_of(body)
    values = {
        "amount": html.escape(amount) if amount else "amount",
        "reference": f"<code>{html.escape(session_id)}</code>",
        "seconds": html.escape(f"{timeout:g}"),
        "last": html.escape(LAST_KNOWN.get(last, "")),
    }
    parts = [
        f'<h1 id="status-heading">{html.escape(headline)}</h1>',
        f'<p class="lead">{_fill(message, values)}</p>',
    ]
    if body and status in WITH_LINES and body.get("items"):
        parts.append(_lines_table(body))
    if body and body.get("order_id") and status not in ("unknown", "timeout"):
        parts.append(
            '<p class="order-id">Order number: '
            f'<code data-testid="order-id">{html.escape(str(body["order_id"]))}</code></p>'
        )
    if status == "timeout" and check_again_url:
        parts.append(
            f'<p class="actions"><a class="button" href="{html.escape(check_again_url)}" '
            'data-testid="check-again">Check again</a></p>'
        )
    elif status in DONE_STATUSES:
        parts.append('<p class="actions"><a href="/">Continue shopping</a></p>')
    elif status in ("payment_failed", "expired", "unknown"):
        parts.append('<p class="actions"><a class="button" href="/">Back to the shop</a></p>')
    return "".join(parts)


def _success_url(session_id: str, **extra: str) -> str:
    return "/checkout/success?" + urlencode({"session_id": session_id, **extra}, quote_via=quote)


async def success_page(request: Request) -> HTMLResponse:
    session_id = (request.query_params.get("session_id") or "").strip()
    if not session_id:
        return missing_session_page()
    timeout = float(services(request).settings.success_page_timeout)

    body: dict[str, Any] | None = None
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        status = "unknown"
    else:
        try:
            body = await current_order_status(request, session_id)
            status = "unknown" if body is None else str(body["status"])
        except Exception:  # the page still renders; the poll (or the next refresh) retries
            log.warning("success_page_status_unavailable", exc_info=True)
            status = "checking"
    if status not in STATUS_TEXTS:
        status = "processing"

    # Without JavaScript the page re-renders itself; `started` carries when it began, so
    # that it gives up after the same limit as the script does.
    now = int(time.time())
    try:
        started = int(request.query_params.get("started", ""))
    except ValueError:
        started = now
    if not 0 <= now - started <= 86_400:
        started = now
    shown = status
    final = status in FINAL_STATUSES or status == "unknown"
    if not final and now - started >= timeout:
        shown = "timeout"

    head = nojs_note = ""
    if not final and shown != "timeout":
        refresh = _success_url(session_id, started=str(started))
        head = (
            '<noscript><meta http-equiv="refresh" '
            f'content="{NO_JS_REFRESH_SECONDS};url={html.escape(refresh)}"></noscript>'
        )
        nojs_note = (
            '<noscript><p class="note" data-testid="refresh-note">This page checks again '
            f"every {NO_JS_REFRESH_SECONDS} seconds by itself.</p></noscript>"
        )
    region = render_status(
        shown,
        body,
        session_id=session_id,
        timeout=timeout,
        last=status,
        check_again_url=_success_url(session_id),
    )
    page_body = _template("success.html").substitute(
        status=html.escape(shown),
        status_html=region,
        session_ref=html.escape(session_id),
        nojs_note=nojs_note,
    )
    config = {
        "sessionId": session_id,
        "statusUrl": f"/api/checkout-sessions/{quote(session_id, safe='')}/order",
        "checkAgainUrl": _success_url(session_id),
        "timeoutSeconds": timeout,
        "status": status,
        "shown": shown,
        "order": body,
        "finalStatuses": sorted(FINAL_STATUSES),
        "texts": STATUS_TEXTS,
        "lastKnown": LAST_KNOWN,
        "withLines": sorted(WITH_LINES),
        "doneStatuses": sorted(DONE_STATUSES),
    }
    return render_page(
        title=STATUS_TEXTS[shown][0],
        head=head,
        body=page_body,
        scripts=("format.js", "success.js"),
        config_id="success-config",
        config=config,
    )


def missing_session_page() -> HTMLResponse:
    return render_page(
        title="This link is missing its checkout reference",
        status_code=400,
        body=_template("missing_session.html").substitute(),
    )


# ---------------------------------------------------------------------------- storefront


async def storefront(request: Request) -> HTMLResponse:
    settings = services(request).settings
    base_url = (settings.public_url or str(request.base_url)).rstrip("/")
    token_hint = (
        "The server has an admin token (LEDGER_ADMIN_TOKEN); use it below."
        if settings.admin_token is not None
        else "First set an admin token and restart the server: "
        "<code>export LEDGER_ADMIN_TOKEN=secret</code>, then <code>ledger serve</code>."
    )
    body = _template("storefront.html").substitute(
        base_url=html.escape(base_url),
        token_hint=token_hint,
    )
    return render_page(
        title="Demo shop",
        body=body,
        scripts=("format.js", "storefront.js"),
    )


routes: list[BaseRoute] = [
    Route("/", storefront, methods=["GET"]),
    Route("/checkout/success", success_page, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
