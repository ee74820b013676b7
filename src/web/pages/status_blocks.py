"""The success page's status block, rendered here only: the block the server shows, and one
`<template>` per thing the page's script may swap in (every order status, no such checkout,
giving up after each unsettled state). The script formats nothing and spells no status: it
picks a template by the status the poll answers.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, assert_never

from ledger.domain.vocabulary import FINAL, OrderStatus
from ledger.money import format_amount
from web.pages.demo_order import order_path
from web.pages.status_words import NextStep, PageState, Shown, words

# What the page may show while it still asks, so may give up after.
UNSETTLED: tuple[Shown, ...] = (
    PageState.CHECKING,
    PageState.UNKNOWN,
    *(status for status in OrderStatus if status not in FINAL),
)


@dataclass(frozen=True)
class Checkout:
    """What every block of one page may quote."""

    session_id: str
    timeout: float  # seconds the page asks before it gives up
    check_again_url: str  # this page afresh, its give-up clock reset
    # The Stripe stand-in runs (the demo): a placed order links to its merchant page.
    demo_merchant: bool = False


# The statuses of a placed order whose block links to the demo merchant page: the order a
# person can refund or cancel there, and what it comes to afterwards.
MERCHANT_LINKED: frozenset[Shown] = frozenset(
    {OrderStatus.CONFIRMED, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.CANCELLED}
)


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


def _next_step(step: NextStep, checkout: Checkout) -> str:
    match step:
        case NextStep.NONE:
            return ""
        case NextStep.CONTINUE_SHOPPING:
            return '<p class="actions"><a href="/">Continue shopping</a></p>'
        case NextStep.BACK_TO_SHOP:
            return '<p class="actions"><a class="button" href="/">Back to the shop</a></p>'
        case NextStep.CHECK_AGAIN:
            return (
                '<p class="actions"><a class="button" '
                f'href="{html.escape(checkout.check_again_url)}" '
                'data-testid="check-again">Check again</a></p>'
            )
        case _:
            assert_never(step)


def status_block(
    shown: Shown,
    body: dict[str, Any] | None,
    checkout: Checkout,
    *,
    last: Shown = OrderStatus.PROCESSING,
) -> str:
    """The inner HTML of the status region. `body` is the order status as the JSON endpoint
    answers it (None when there is none); `last` is what the page knew before giving up."""
    said = words(shown)
    amount = _amount_of(body)
    values = {
        "amount": html.escape(amount) if amount else "amount",
        "reference": f"<code>{html.escape(checkout.session_id)}</code>",
        "seconds": html.escape(f"{checkout.timeout:g}"),
        "last": html.escape(words(last).when_given_up),
    }
    parts = [
        f'<h1 id="status-heading">{html.escape(said.headline)}</h1>',
        # Escaping leaves the braces, so the placeholders are filled with escaped HTML.
        f'<p class="lead">{html.escape(said.message).format_map(values)}</p>',
    ]
    if body and said.shows_lines and body.get("items"):
        parts.append(_lines_table(body))
    if body and body.get("order_id") and shown not in (PageState.UNKNOWN, PageState.TIMEOUT):
        parts.append(
            '<p class="order-id">Order number: '
            f'<code data-testid="order-id">{html.escape(str(body["order_id"]))}</code></p>'
        )
    if checkout.demo_merchant and body and body.get("order_id") and shown in MERCHANT_LINKED:
        parts.append(
            '<p class="note demo-note">Demo: <a data-testid="merchant-page" '
            f'href="{html.escape(order_path(str(body["order_id"])))}">refund or cancel this '
            "order as the merchant</a>, and see the stock come back.</p>"
        )
    parts.append(_next_step(said.next_step, checkout))
    return "".join(parts)


def panel_class(shown: Shown) -> str:
    """The status region's classes: its tone for the page's style; its status for the
    stylesheets of storefronts that embed the page."""
    return f"status status-{shown} tone-{words(shown).tone}"


def _template(shown: Shown, key: str, inner: str) -> str:
    return (
        f'<template data-shows="{html.escape(shown)}" '
        f'data-panel-class="{html.escape(panel_class(shown))}" {key}>{inner}</template>'
    )


def blocks_for_script(body: dict[str, Any] | None, checkout: Checkout) -> str:
    """Every block the script may show, rendered for the order as it is now. (When the order
    itself changes, the script fetches the page again for blocks rendered anew.)"""
    templates = [
        _template(status, f'data-for-status="{status}"', status_block(status, body, checkout))
        for status in OrderStatus
    ]
    templates.append(
        _template(
            PageState.UNKNOWN,
            "data-for-not-found",
            status_block(PageState.UNKNOWN, None, checkout),
        )
    )
    templates.extend(
        _template(
            PageState.TIMEOUT,
            f'data-for-give-up-after="{last}"',
            status_block(PageState.TIMEOUT, None, checkout, last=last),
        )
        for last in UNSETTLED
    )
    return "".join(templates)
