"""Pages for people: the checkout success page and a small demo storefront.

The success page renders the order's current status on every load, so it works without
JavaScript too (a `<noscript>` meta refresh re-renders it until the status is final or the page
gives up); with JavaScript it polls the JSON status endpoint and swaps in the block the server
rendered for the status it gets (`web.pages.status_blocks`).
"""

from __future__ import annotations

import html
import time
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import structlog
from pydantic import Field
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ledger.domain.vocabulary import FINAL, CartStatus, OrderStatus
from ledger.money import rules_for_scripts
from web.context import services
from web.pages.layout import STATIC_DIR, render_page, template
from web.pages.status_blocks import Checkout, blocks_for_script, panel_class, status_block
from web.pages.status_words import PageState, Shown, words
from web.route_docs import HTML, Answer, Query, documented
from web.routes.checkout import current_order_status

log = structlog.get_logger("web.pages")

# Longer than any id Stripe issues; anything longer is not worth a look-up.
MAX_SESSION_ID_LENGTH = 255
# Seconds between server-side re-renders when JavaScript is off.
NO_JS_REFRESH_SECONDS = 3


def _success_url(session_id: str, **extra: str) -> str:
    return "/checkout/success?" + urlencode({"session_id": session_id, **extra}, quote_via=quote)


async def _status_now(request: Request, session_id: str) -> tuple[Shown, dict[str, Any] | None]:
    """What the page shows first, and the order status it shows it from."""
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        return PageState.UNKNOWN, None
    try:
        body = await current_order_status(request, session_id)
    except Exception:  # the page still renders; the poll (or the next refresh) retries
        log.warning("success_page_status_unavailable", exc_info=True)
        return PageState.CHECKING, None
    if body is None:
        return PageState.UNKNOWN, None
    try:
        return OrderStatus(body["status"]), body
    except ValueError:
        return OrderStatus.PROCESSING, body


def _started(request: Request, now: int) -> int:
    """When this page first loaded: without JavaScript the page re-renders itself, carrying
    `started` along, so that it gives up after the same limit as the script does."""
    try:
        started = int(request.query_params.get("started", ""))
    except ValueError:
        return now
    return started if 0 <= now - started <= 86_400 else now


@documented(
    "GET",
    "The checkout success page: shows the order's status, polling until it is final",
    "pages",
    {
        200: Answer("An HTML page.", media_type=HTML),
        400: Answer("An HTML page: `session_id` is missing or blank.", media_type=HTML),
    },
    query=(
        Query(
            "session_id",
            # Blank (empty or only spaces) counts as missing: the 400 page.
            Annotated[str, Field(min_length=1, pattern=r"\S")],
            "The Stripe Checkout session id.",
            required=True,
        ),
    ),
)
async def success_page(request: Request) -> HTMLResponse:
    session_id = (request.query_params.get("session_id") or "").strip()
    if not session_id:
        return missing_session_page()
    timeout = float(services(request).settings.success_page_timeout)
    status, body = await _status_now(request, session_id)

    now = int(time.time())
    started = _started(request, now)
    final = status in FINAL or status == PageState.UNKNOWN
    shown: Shown = status
    if not final and now - started >= timeout:
        shown = PageState.TIMEOUT

    head = nojs_note = ""
    if not final and shown != PageState.TIMEOUT:
        refresh = _success_url(session_id, started=str(started))
        head = (
            '<noscript><meta http-equiv="refresh" '
            f'content="{NO_JS_REFRESH_SECONDS};url={html.escape(refresh)}"></noscript>'
        )
        nojs_note = (
            '<noscript><p class="note" data-testid="refresh-note">This page checks again '
            f"every {NO_JS_REFRESH_SECONDS} seconds by itself.</p></noscript>"
        )
    checkout = Checkout(
        session_id,
        timeout,
        check_again_url=_success_url(session_id),
        demo_merchant=services(request).stand_in is not None,
    )
    page_body = template("success.html").substitute(
        status=html.escape(shown),
        panel_class=html.escape(panel_class(shown)),
        status_html=status_block(shown, body, checkout, last=status),
        blocks=blocks_for_script(body, checkout),
        session_ref=html.escape(session_id),
        nojs_note=nojs_note,
    )
    config = {
        "statusUrl": f"/api/checkout-sessions/{quote(session_id, safe='')}/order",
        "pageUrl": checkout.check_again_url,
        "timeoutSeconds": timeout,
        "status": status if isinstance(status, OrderStatus) else None,
        "notFound": status == PageState.UNKNOWN,
        "givenUp": shown == PageState.TIMEOUT,
        "order": body,
        "finalStatuses": sorted(FINAL),
    }
    return render_page(
        title=words(shown).headline,
        head=head,
        body=page_body,
        scripts=("success.js",),
        data={"success-config": config},
    )


def missing_session_page() -> HTMLResponse:
    return render_page(
        title="This link is missing its checkout reference",
        status_code=400,
        body=template("missing_session.html").substitute(),
    )


@documented("GET", "A demo storefront", "pages", {200: Answer("An HTML page.", media_type=HTML)})
async def storefront(request: Request) -> HTMLResponse:
    settings = services(request).settings
    base_url = (settings.public_url or str(request.base_url)).rstrip("/")
    token_hint = (
        "The server has an admin token (LEDGER_ADMIN_TOKEN); use it below."
        if settings.admin_token is not None
        else "First set an admin token and restart the server: "
        "<code>export LEDGER_ADMIN_TOKEN=secret</code>, then <code>ledger serve</code>."
    )
    body = template("storefront.html").substitute(
        base_url=html.escape(base_url),
        token_hint=token_hint,
    )
    return render_page(
        title="Demo shop",
        body=body,
        scripts=("storefront.js",),
        data={
            "money-rules": rules_for_scripts(),
            "storefront-config": {"convertedCart": CartStatus.CONVERTED},
        },
    )


routes: list[BaseRoute] = [
    Route("/", storefront, methods=["GET"]),
    Route("/checkout/success", success_page, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
