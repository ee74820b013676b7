"""The demo merchant page of an order: its lines, figures and refunds as the orders read model
has them (the contract's `order`), each line's stock available now, and forms to refund a
line, refund an amount or cancel (`web.routes.demo_orders` acts on them).

Every form carries an idempotency key of its own, made at random when the page is rendered:
a double submit, or the same form sent again from the browser's history, is one request of
the merchant's (`ledger.merchant_requests`), as with the API's `Idempotency-Key`.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode

from ledger.money import format_amount, rules_for_scripts
from web.pages.layout import template

# A form's idempotency key: 128 random bits, well inside Stripe's 1 to 255 characters.
KEY_BYTES = 16


@dataclass(frozen=True)
class Notice:
    """What the page says above the order: what was just done, or why it was refused."""

    message: str
    refused: bool = False


def order_path(order_id: str) -> str:
    return f"/demo/orders/{quote(order_id, safe='')}"


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def minor_units(text: str, currency: str) -> int | None:
    """An amount typed in major units (`12.50`) in Stripe's minor units of `currency`
    (1250), or None when it is no positive amount with at most the currency's decimals."""
    rules = rules_for_scripts()
    exponent = int(rules["exponents"].get(currency.lower(), rules["defaultExponent"]))
    try:
        major = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    if not major.is_finite() or major <= 0:
        return None
    minor = major.scaleb(exponent)
    if minor != minor.to_integral_value():  # more decimals than the currency has
        return None
    return int(minor)


def _money(amount: Any, currency: str) -> str:
    return html.escape(format_amount(int(amount or 0), currency))


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'


def _restock_box(label: str, testid: str) -> str:
    # Checked: a refunded or cancelled item usually goes back on the shelf; unticked for one
    # that is damaged or never came back.
    return (
        f'<label class="check"><input type="checkbox" name="restock" value="on" checked '
        f'data-testid="{html.escape(testid)}"> {html.escape(label)}</label>'
    )


def _lines(order: Mapping[str, Any], available: Mapping[str, int | None], action: str) -> str:
    currency = str(order.get("currency") or "")
    rows = []
    for item in order.get("items") or []:
        sku = str(item.get("sku") or "")
        quantity = int(item.get("quantity") or 0)
        refunded = int(item.get("quantity_refunded") or 0)
        stock = available.get(sku)
        left = quantity - refunded
        form = (
            f'<form method="post" action="{html.escape(action)}" class="inline-form">'
            f"{_hidden('key', new_key())}{_hidden('sku', sku)}{_hidden('quantity', '1')}"
            f"{_restock_box('put back in stock', f'restock-{sku}')}"
            f'<button type="submit" class="button" data-testid="refund-{html.escape(sku)}"'
            f"{'' if left > 0 else ' disabled'}>Refund one {html.escape(sku)}</button>"
            "</form>"
        )
        name = item.get("name") or sku
        rows.append(
            f'<tr data-testid="line-{html.escape(sku)}">'
            f'<th scope="row">{html.escape(str(name))}'
            f'<span class="unit">{html.escape(sku)} · {_money(item.get("unit_amount"), currency)}'
            "</span></th>"
            f'<td class="num" data-testid="quantity-{html.escape(sku)}">{quantity}</td>'
            f'<td class="num" data-testid="refunded-{html.escape(sku)}">{refunded}</td>'
            f'<td class="num" data-testid="stock-{html.escape(sku)}">'
            f"{'unknown' if stock is None else stock}</td>"
            f"<td>{form}</td>"
            "</tr>"
        )
    return (
        '<table class="lines merchant-lines">'
        "<caption>Lines</caption>"
        '<thead><tr><th scope="col">Item</th><th scope="col" class="num">Ordered</th>'
        '<th scope="col" class="num">Refunded</th>'
        '<th scope="col" class="num">In stock now</th>'
        '<th scope="col">Refund</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody>"
        "</table>"
    )


def _amount_form(order: Mapping[str, Any], action: str) -> str:
    currency = str(order.get("currency") or "")
    return (
        '<section class="panel" aria-labelledby="amount-heading">'
        '<h2 id="amount-heading">Refund an amount</h2>'
        f'<form method="post" action="{html.escape(action)}" class="inline-form">'
        f"{_hidden('key', new_key())}"
        '<label for="refund-amount">Amount '
        f'<span class="muted">({html.escape(currency.upper())})</span></label> '
        '<input id="refund-amount" name="amount" class="amount" required inputmode="decimal" '
        'autocomplete="off" placeholder="5.00" data-testid="refund-amount"> '
        '<button type="submit" class="button" data-testid="refund-amount-submit">'
        "Refund this amount</button>"
        '<p class="note">Nothing goes back in stock: a refund by amount names no item.</p>'
        "</form></section>"
    )


def _cancel_form(action: str) -> str:
    return (
        '<section class="panel" aria-labelledby="cancel-heading">'
        '<h2 id="cancel-heading">Cancel the order</h2>'
        f'<form method="post" action="{html.escape(action)}" class="inline-form">'
        f"{_hidden('key', new_key())}"
        f"{_restock_box('put what is not refunded yet back in stock', 'restock-cancel')} "
        '<button type="submit" class="button" data-testid="cancel-order">Cancel order</button>'
        '<p class="note">What remains of the payment is refunded; an authorization not '
        "captured yet is released instead.</p>"
        "</form></section>"
    )


def _restocked(listed: Any) -> str:
    parts = [
        f"{int(line.get('quantity') or 0)} &times; {html.escape(str(line.get('sku')))}"
        for line in listed or []
    ]
    return ", ".join(parts) if parts else "nothing"


def _refunds(order: Mapping[str, Any]) -> str:
    currency = str(order.get("currency") or "")
    refunds = order.get("refunds") or []
    if not refunds:
        return '<p class="muted" data-testid="no-refunds">No refunds yet.</p>'
    rows = [
        f'<tr data-testid="refund-row">'
        f'<th scope="row"><code>{html.escape(str(refund.get("refund_id")))}</code></th>'
        f'<td class="num" data-testid="refund-row-amount">{_money(refund.get("amount"), currency)}'
        "</td>"
        f'<td data-testid="refund-row-status">{html.escape(str(refund.get("status")))}</td>'
        f'<td data-testid="refund-row-restocked">{_restocked(refund.get("restocked"))}</td>'
        f"<td>{html.escape(str(refund.get('reason') or '—'))}</td>"
        "</tr>"
        for refund in refunds
    ]
    return (
        '<table class="lines refunds">'
        "<caption>Refunds</caption>"
        '<thead><tr><th scope="col">Refund</th><th scope="col" class="num">Amount</th>'
        '<th scope="col">Status</th><th scope="col">Put back in stock</th>'
        '<th scope="col">Reason</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody>"
        "</table>"
    )


def _notice(notice: Notice | None) -> str:
    if notice is None:
        return ""
    if notice.refused:
        return (
            '<div class="notice notice-error" role="alert" data-testid="notice">'
            f"<p>{html.escape(notice.message)}</p></div>"
        )
    return (
        '<div class="notice notice-success" role="status" data-testid="notice">'
        f"<p>{html.escape(notice.message)}</p></div>"
    )


def order_page_body(
    order: Mapping[str, Any], available: Mapping[str, int | None], notice: Notice | None
) -> str:
    """The page's main content for `order` (the contract's shape; a field the read model does
    not give yet counts as none) and the stock `available` now by sku."""
    order_id = str(order["order_id"])
    path = order_path(order_id)
    currency = str(order.get("currency") or "")
    success_url = "/checkout/success?" + urlencode(
        {"session_id": str(order.get("checkout_session_id") or "")}, quote_via=quote
    )
    return template("demo_order.html").substitute(
        order_id=html.escape(order_id),
        notice=_notice(notice),
        status=html.escape(str(order.get("status") or "")),
        amount_total=_money(order.get("amount_total"), currency),
        amount_captured=_money(order.get("amount_captured"), currency),
        amount_refunded=_money(order.get("amount_refunded"), currency),
        lines=_lines(order, available, f"{path}/refunds"),
        amount_form=_amount_form(order, f"{path}/refunds"),
        cancel_form=_cancel_form(f"{path}/cancel"),
        refunds=_refunds(order),
        success_url=html.escape(success_url),
    )
