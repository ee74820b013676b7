"""The demo merchant page in a real headless Chromium, against `ledger serve --demo` as a
person runs it (no STRIPE_API_KEY: the built-in Stripe stand-in): storefront, pay page,
success page, then the merchant's side of the order: refund one line with restock, a refusal,
a double submit that is one refund, and a cancel. With real Stripe configured the page does
not exist."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from ledger.storage import Database
from tests.browser import DESKTOP, PageWatch, chromium, screenshot
from tests.processes import serving
from tests.shop import running_shop

pytestmark = pytest.mark.browser

ADMIN = "demo-admin-secret"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def demo_url(tmp_path: Path, database: Database) -> Iterator[str]:
    """`ledger serve --demo` in stand-in mode, on the test's database."""
    with serving(
        tmp_path, "--demo", LEDGER_DATABASE_URL=database.conninfo_url(), LEDGER_ADMIN_TOKEN=ADMIN
    ) as url:
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, PageWatch]]:
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    watch = PageWatch()
    watch.attach(page)
    yield page, watch
    context.close()


def available(url: str, sku: str) -> int:
    found: int = httpx.get(f"{url}/api/products/{sku}").json()["available"]
    return found


def test_a_person_refunds_a_line_and_cancels_a_demo_order(
    demo_url: str, page: tuple[Page, PageWatch], request: pytest.FixtureRequest
) -> None:
    browser_page, watch = page
    cups, beans = available(demo_url, "espresso-cup"), available(demo_url, "single-origin-beans")

    # The customer: storefront, the stand-in's pay page, the success page.
    browser_page.goto(f"{demo_url}/")
    browser_page.get_by_test_id("add-espresso-cup").click()
    expect(browser_page.get_by_test_id("qty-espresso-cup")).to_have_value("1")
    browser_page.get_by_test_id("add-espresso-cup").click()
    expect(browser_page.get_by_test_id("qty-espresso-cup")).to_have_value("2")
    browser_page.get_by_test_id("add-single-origin-beans").click()
    expect(browser_page.get_by_test_id("qty-single-origin-beans")).to_have_value("1")
    browser_page.get_by_test_id("checkout").click()
    browser_page.wait_for_url(f"{demo_url}/_stripe/pay/**")
    browser_page.locator("[data-action=pay]").click()
    browser_page.wait_for_url(re.compile(re.escape(f"{demo_url}/checkout/success?")))
    expect(browser_page.locator("[data-status]")).to_have_attribute("data-status", "confirmed")

    # The merchant, from the link the demo puts on the success page.
    browser_page.get_by_test_id("merchant-page").click()
    browser_page.wait_for_url(re.compile(re.escape(f"{demo_url}/demo/orders/")))
    order_id = browser_page.url.rsplit("/", 1)[-1]
    status = browser_page.get_by_test_id("order-status")
    expect(status).to_have_text("confirmed")
    expect(browser_page.get_by_test_id("amount-captured")).to_have_text("$40.50")
    expect(browser_page.get_by_test_id("quantity-espresso-cup")).to_have_text("2")
    expect(browser_page.get_by_test_id("stock-espresso-cup")).to_have_text(str(cups - 2))
    expect(browser_page.get_by_test_id("stock-single-origin-beans")).to_have_text(str(beans - 1))

    # One cup refunded and put back in stock.
    expect(browser_page.get_by_test_id("restock-espresso-cup")).to_be_checked()
    browser_page.get_by_test_id("refund-espresso-cup").click()
    expect(browser_page.get_by_test_id("notice")).to_contain_text("Refund recorded")
    assert "?done=refund" in browser_page.url  # POST/redirect/GET: a reload sends nothing
    expect(status).to_have_text("partially_refunded")
    expect(browser_page.get_by_test_id("refunded-espresso-cup")).to_have_text("1")
    expect(browser_page.get_by_test_id("stock-espresso-cup")).to_have_text(str(cups - 1))
    expect(browser_page.get_by_test_id("amount-refunded")).to_have_text("$12.00")
    row = browser_page.get_by_test_id("refund-row")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("refund-row-amount")).to_have_text("$12.00")
    expect(row.get_by_test_id("refund-row-restocked")).to_have_text("1 \u00d7 espresso-cup")
    screenshot(browser_page, f"{request.node.name}-refunded")

    # More than remains: refused, its message on the page, nothing recorded.
    browser_page.get_by_test_id("refund-amount").fill("100.00")
    browser_page.get_by_test_id("refund-amount-submit").click()
    expect(browser_page.get_by_test_id("notice")).to_contain_text("remain unrefunded")
    expect(row).to_have_count(1)
    expect(status).to_have_text("partially_refunded")

    # The same form sent twice (a double click, or the back button): one refund.
    html = httpx.get(f"{demo_url}/demo/orders/{order_id}").text
    key = re.search(
        r'name="key" value="([^"]+)"><input type="hidden" name="sku" '
        r'value="single-origin-beans"',
        html,
    )
    assert key, html
    form = {"key": key.group(1), "sku": "single-origin-beans", "quantity": "1"}  # no restock
    for _ in range(2):
        sent = httpx.post(f"{demo_url}/demo/orders/{order_id}/refunds", data=form)
        assert sent.status_code == 303, sent.text
    browser_page.reload()
    expect(row).to_have_count(2)
    expect(browser_page.get_by_test_id("refunded-single-origin-beans")).to_have_text("1")
    expect(browser_page.get_by_test_id("stock-single-origin-beans")).to_have_text(str(beans - 1))

    # Cancelled: the rest refunded, the cup not refunded yet back in stock.
    browser_page.get_by_test_id("cancel-order").click()
    expect(browser_page.get_by_test_id("notice")).to_contain_text("Order cancelled")
    expect(status).to_have_text("cancelled")
    expect(browser_page.get_by_test_id("stock-espresso-cup")).to_have_text(str(cups))
    expect(browser_page.get_by_test_id("amount-refunded")).to_have_text("$40.50")
    expect(row).to_have_count(3)

    # The API agrees, and a second cancel is refused on the page.
    api = httpx.get(
        f"{demo_url}/api/orders/{order_id}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert api.json()["status"] == "cancelled"
    assert api.json()["amount_refunded"] == 4050
    browser_page.get_by_test_id("cancel-order").click()
    expect(browser_page.get_by_test_id("notice")).to_contain_text("cannot be cancelled")
    assert watch.errors == []
    assert watch.dialogs == []
    screenshot(browser_page, f"{request.node.name}-cancelled")


def test_no_merchant_page_with_real_stripe(database: Database) -> None:
    with running_shop(database) as shop:  # STRIPE_API_KEY configured: no stand-in
        assert shop.services.stand_in is None
        shop.product("mug", unit_amount=1250, stock=5)
        session_id = shop.checkout(shop.cart(mug=1))
        shop.stripe.complete(session_id, "pay")
        shop.stripe.wait_for_deliveries(1)
        order_id = str(shop.order(session_id).id)

        assert shop.api.get(f"/demo/orders/{order_id}").status_code == 404
        assert shop.api.get(f"/demo/orders/{uuid.uuid4()}").status_code == 404
        form = {"key": "k1", "sku": "mug", "quantity": "1", "restock": "on"}
        assert shop.api.post(f"/demo/orders/{order_id}/refunds", data=form).status_code == 404
        assert shop.api.post(f"/demo/orders/{order_id}/cancel", data=form).status_code == 404
        page = shop.api.get("/checkout/success", params={"session_id": session_id})
        assert page.status_code == 200
        assert 'data-status="confirmed"' in page.text
        assert "/demo/orders/" not in page.text
        assert shop.order(session_id).status == "confirmed"  # nothing was refunded
