"""The customer-facing pages in a real headless Chromium: the checkout success page (every
status, giving up, unknown sessions, no JavaScript) and the demo storefront end to end, with
stock holds (`LEDGER_STOCK_HOLD`) too: "held for you until HH:MM" and "Sold out".

The whole shop runs in real servers (`running_shop`): the ledger, and the Stripe stand-in
whose pay page the storefront sends the customer to. Each test saves a screenshot under
artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, ViewportSize, expect

from ledger.domain import InventoryItem
from ledger.storage import Database
from tests.browser import DESKTOP, MOBILE, PageWatch, chromium, screenshot
from tests.shop import Shop, running_shop
from tests.waiting import wait_until

pytestmark = pytest.mark.browser

TIMEOUT = 3  # LEDGER_SUCCESS_PAGE_TIMEOUT for these tests, in seconds
HOLD = "30m"  # LEDGER_STOCK_HOLD for the tests of holds
# The browser's clock for the hold test: a zone whose offset is no whole hour (+05:45, no
# daylight saving), so that only the browser's own local time can give the expected HH:MM.
BROWSER_ZONE = "Asia/Kathmandu"

OpenPage = Callable[..., tuple[Page, PageWatch]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database, LEDGER_SUCCESS_PAGE_TIMEOUT=TIMEOUT) as s:
        yield s


@pytest.fixture
def held_shop(database: Database) -> Iterator[Shop]:
    """A shop whose checkouts hold the cart's stock for 30 minutes."""
    with running_shop(database, LEDGER_SUCCESS_PAGE_TIMEOUT=TIMEOUT, LEDGER_STOCK_HOLD=HOLD) as s:
        yield s


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """Opens a page in a fresh browser context (own cookies and storage)."""
    contexts: list[BrowserContext] = []

    def open_(
        *, javascript: bool = True, viewport: ViewportSize = DESKTOP, timezone: str | None = None
    ) -> tuple[Page, PageWatch]:
        context = browser.new_context(
            java_script_enabled=javascript, viewport=viewport, locale="en-US", timezone_id=timezone
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        watch = PageWatch()
        watch.attach(page)
        return page, watch

    yield open_
    for context in contexts:
        context.close()


def success_url(shop: Shop, session_id: str) -> str:
    return f"{shop.url}/checkout/success?session_id={quote(session_id, safe='')}"


def fits_width(page: Page, width: int) -> bool:
    """No sideways scrolling: nothing on the page is wider than the viewport."""
    scroll_width: int = page.evaluate("document.documentElement.scrollWidth")
    return scroll_width <= width


# ------------------------------------------------------------------------- success page


def test_success_page_turns_from_processing_to_the_confirmation(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    shop.product("tea", unit_amount=800, stock=5)
    session_id = shop.checkout(shop.cart(mug=2, tea=1))
    shop.stripe.webhook_url = None  # the webhook comes when the test says so

    page, watch = open_page()
    page.goto(success_url(shop, session_id))
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "processing")
    expect(status).to_have_attribute("role", "status")
    expect(status.get_by_role("heading", level=1)).to_contain_text("confirming your payment")
    expect(page.get_by_test_id("session-ref")).to_have_text(session_id)

    shop.stripe.complete(session_id, "pay")
    assert shop.deliver("checkout.session.completed", session_id).status_code == 200

    expect(status).to_have_attribute("data-status", "confirmed")
    expect(page).to_have_title(re.compile("order is confirmed"))
    expect(page.locator("[data-status]")).to_have_count(1)
    expect(page.get_by_test_id("order-total")).to_have_text("$33.00")
    rows = status.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("th, td")).to_have_text(["Product mug", "2", "$12.50", "$25.00"])
    expect(rows.nth(1).locator("th, td")).to_have_text(["Product tea", "1", "$8.00", "$8.00"])
    expect(status).to_contain_text("payment of $33.00")
    expect(page.get_by_test_id("order-id")).to_have_text(str(shop.order(session_id).id))

    polls = watch.status_polls()
    assert polls >= 1
    expect(page.locator("html")).to_have_attribute("data-polling", "stopped")
    assert watch.status_polls() == polls, "the page kept polling after a final status"
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_success_page_shows_a_delayed_payment_then_its_failure(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.complete(session_id, "pay_later")
    shop.stripe.wait_for_deliveries(1)

    page, watch = open_page()
    page.goto(success_url(shop, session_id))
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "awaiting_payment")
    expect(status).to_contain_text("Your payment is on its way")

    shop.stripe.complete(session_id, "async_fail")
    shop.stripe.wait_for_deliveries(2)

    expect(status).to_have_attribute("data-status", "payment_failed")
    expect(status).to_contain_text("didn't go through")
    expect(status).to_contain_text("nothing was charged")
    expect(status.get_by_role("link", name="Back to the shop")).to_have_attribute("href", "/")
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_success_page_shows_a_refund_when_the_stock_was_gone(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    # Stripe keeps the refund pending until a person settles it on the stand-in's pay page,
    # so that both statuses are seen for certain.
    shop.stripe.refund_status = "pending"
    shop.product("mug", unit_amount=1250, stock=1)
    session_id = shop.checkout(shop.cart(mug=1))
    r = shop.api.post("/api/products/mug/stock", json={"quantity": -1}, headers=shop.admin())
    assert r.status_code == 200, r.text  # sold elsewhere while the customer pays
    shop.stripe.complete(session_id, "pay")
    shop.stripe.wait_for_deliveries(1)

    page, watch = open_page()
    page.goto(success_url(shop, session_id))
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "refund_pending")
    expect(status).to_contain_text("can't fulfil this order")
    expect(status).to_contain_text("refunding the full $12.50")
    order_id = str(shop.order(session_id).id)
    expect(page.get_by_test_id("order-id")).to_have_text(order_id)

    stripe_page, _ = open_page()
    stripe_page.goto(f"{shop.stripe.public_base_url}/pay/{session_id}")
    expect(stripe_page.locator("[data-action=refund_succeed]")).to_be_visible()
    stripe_page.locator("[data-action=refund_succeed]").click()  # refund.updated: succeeded

    expect(status).to_have_attribute("data-status", "refunded")
    expect(status).to_contain_text("refunded the full $12.50")
    expect(page.get_by_test_id("order-id")).to_have_text(order_id)
    (refund,) = shop.stripe.refunds()
    assert refund["status"] == "succeeded"
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_success_page_shows_the_merchants_partial_refund_and_cancellation(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    session_id = shop.checkout(shop.cart(mug=2))
    shop.stripe.complete(session_id, "pay")
    wait_until(lambda: shop.status(session_id) == "confirmed", 20)
    ledger = shop.services.ledger

    def merchant(decision: Callable[[Any, dict[str, Any]], object]) -> None:
        """The merchant's decision on the order, saved with the stock it returns (as the
        merchant's commands do)."""
        order = shop.order(session_id)
        items: dict[str, Any] = {"mug": ledger.repository.get(InventoryItem.create_id("mug"))}
        decision(order, items)
        ledger.save(order, *items.values())

    merchant(
        lambda order, items: order.refund(
            "mr_1", lines={"mug": 1}, amount=None, restock=True, reason=None, items=items, cause="t"
        )
    )
    page, watch = open_page()
    page.goto(success_url(shop, session_id))
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "partially_refunded")
    expect(status.get_by_role("heading", level=1)).to_have_text(
        "Part of your payment has been refunded"
    )
    expect(status).to_contain_text("part of your payment of $25.00")
    expect(page.get_by_test_id("order-id")).to_have_text(str(shop.order(session_id).id))

    merchant(
        lambda order, items: order.cancel(
            "cancel_1", restock=True, reason=None, items=items, cause="t"
        )
    )
    page.reload()  # the page stopped asking: a partial refund is final for it
    expect(status).to_have_attribute("data-status", "cancelled")
    expect(status.get_by_role("heading", level=1)).to_have_text("Your order has been cancelled")
    expect(status).to_contain_text("is being refunded")
    expect(status.get_by_role("link", name="Continue shopping")).to_be_visible()
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_success_page_gives_up_after_the_configured_limit(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))  # never paid: stays processing

    page, watch = open_page(viewport=MOBILE)
    started = time.monotonic()
    page.goto(success_url(shop, session_id))
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "processing")

    # On time: the expectation's own deadline bounds it from above, generously (a loaded
    # machine renders late); never before the configured limit, which is the point.
    expect(status).to_have_attribute("data-status", "timeout", timeout=TIMEOUT * 1000 + 3000)
    waited = time.monotonic() - started
    assert waited >= TIMEOUT - 0.5, waited
    expect(status).to_contain_text(session_id)
    expect(status).to_contain_text("Reload this page")
    expect(status).to_contain_text("support")
    expect(status).to_contain_text(f"{TIMEOUT} seconds")
    expect(page.get_by_test_id("check-again")).to_be_visible()
    polls = watch.status_polls()
    assert 1 <= polls <= 3, polls  # 1 s, then 1.5 s later; the limit comes before the third
    expect(page.locator("html")).to_have_attribute("data-polling", "stopped")
    assert watch.status_polls() == polls
    assert fits_width(page, MOBILE["width"])
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_unknown_session_missing_reference_and_no_markup_echoed(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    page, watch = open_page()
    response = page.goto(f"{shop.url}/checkout/success")
    assert response is not None and response.status == 400
    assert "text/html" in response.headers["content-type"]
    expect(page.get_by_role("heading", level=1)).to_contain_text("missing its checkout reference")

    response = page.goto(f"{shop.url}/checkout/success?session_id=%20")
    assert response is not None and response.status == 400

    hostile = "cs_test_<img src=x onerror=alert(1)><script>alert(2)</script>"
    response = page.goto(success_url(shop, hostile))
    assert response is not None and response.status == 200
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "unknown")
    expect(status.get_by_role("heading", level=1)).to_have_text("We can't find this checkout")
    expect(status.locator("code")).to_have_text(hostile)
    expect(page.get_by_test_id("session-ref")).to_have_text(hostile)
    # It stays "unknown": no more polling after the second 404, and no giving up later (once
    # stopped, the page asks and changes nothing more).
    expect(page.locator("html")).to_have_attribute("data-polling", "stopped")
    expect(status).to_have_attribute("data-status", "unknown")
    assert watch.status_polls() == 1
    assert page.locator("main img, main script").count() == 0
    assert watch.dialogs == []
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_success_page_without_javascript_renders_the_status_on_the_server(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop.product("mug", unit_amount=2500, stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None

    page, watch = open_page(javascript=False)
    page.goto(success_url(shop, session_id))
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "processing")
    shop.stripe.complete(session_id, "pay")
    assert shop.deliver("checkout.session.completed", session_id).status_code == 200
    # (Playwright's text search skips <noscript>; a CSS locator finds it.)
    expect(page.locator("noscript [data-testid=refresh-note]")).to_contain_text(
        "checks again every 3 seconds"
    )

    # The <noscript> meta refresh loads the page again, rendered with the new status.
    expect(status).to_have_attribute("data-status", "confirmed", timeout=8000)
    assert "started=" in page.url
    expect(page.locator("noscript [data-testid=refresh-note]")).to_have_count(0)
    expect(page.get_by_test_id("order-total")).to_have_text("$25.00")
    expect(status.locator("tbody tr th, tbody tr td")).to_have_text(
        ["Product mug", "1", "$25.00", "$25.00"]
    )
    assert watch.status_polls() == 0
    assert watch.errors == []
    screenshot(page, request.node.name)


# ------------------------------------------------------------------------- storefront


def test_storefront_cart_checkout_pay_and_confirmation(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    shop.product("tea", unit_amount=800, stock=5)
    page, watch = open_page(viewport=MOBILE)

    page.goto(f"{shop.url}/")
    expect(page.get_by_test_id("product-mug")).to_contain_text("$12.50")
    expect(page.get_by_test_id("available-mug")).to_have_text("Only 5 left")
    page.get_by_test_id("add-mug").click()
    expect(page.get_by_test_id("qty-mug")).to_have_value("1")
    page.get_by_test_id("add-mug").click()
    expect(page.get_by_test_id("qty-mug")).to_have_value("2")
    page.get_by_test_id("add-tea").click()
    expect(page.get_by_test_id("cart-total")).to_have_text("$33.00")
    page.get_by_label("Quantity of Product tea").fill("3")
    page.get_by_label("Quantity of Product tea").blur()
    expect(page.get_by_test_id("cart-total")).to_have_text("$49.00")
    page.get_by_test_id("remove-tea").click()
    expect(page.get_by_test_id("qty-tea")).to_have_count(0)
    expect(page.get_by_test_id("cart-total")).to_have_text("$25.00")

    assert fits_width(page, MOBILE["width"])
    cart_id = page.evaluate("localStorage.getItem('ledger-demo-cart-id')")
    assert cart_id and f"cart_id={cart_id}" in page.url
    assert shop.get_cart(cart_id)["amount_total"] == 2500

    page.get_by_test_id("checkout").click()
    page.wait_for_url(f"{shop.stripe.public_base_url}/pay/**")
    page.locator("[data-action=pay]").click()

    page.wait_for_url(re.compile(re.escape(f"{shop.url}/checkout/success?session_id=")))
    status = page.locator("[data-status]")
    expect(status).to_have_attribute("data-status", "confirmed")
    expect(page.get_by_test_id("order-total")).to_have_text("$25.00")
    expect(status.locator("tbody tr th, tbody tr td")).to_have_text(
        ["Product mug", "2", "$12.50", "$25.00"]
    )
    assert shop.get_cart(cart_id)["status"] == "converted"
    assert shop.available("mug") == 3
    assert fits_width(page, MOBILE["width"])
    assert watch.errors == []
    screenshot(page, request.node.name)

    # Back in the shop, the paid cart is gone and a new one starts empty.
    status.get_by_role("link", name="Continue shopping").click()
    expect(page.get_by_test_id("cart-empty")).to_be_visible()
    expect(page.get_by_test_id("available-mug")).to_have_text("Only 3 left")
    assert page.evaluate("localStorage.getItem('ledger-demo-cart-id')") is None


def test_storefront_empty_catalog_out_of_stock_and_cancelled_checkout(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    page, watch = open_page()
    page.goto(f"{shop.url}/")
    hint = page.get_by_test_id("empty-catalog")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text(f"curl -X PUT {shop.url}/api/products/mug")
    expect(hint).to_contain_text("Authorization: Bearer $LEDGER_ADMIN_TOKEN")

    shop.product("mug", unit_amount=1250, stock=1)
    page.reload()
    expect(hint).to_be_hidden()
    page.get_by_test_id("add-mug").click()
    expect(page.get_by_test_id("qty-mug")).to_have_value("1")
    page.get_by_test_id("add-mug").click()
    expect(page.get_by_test_id("qty-mug")).to_have_value("2")

    page.get_by_test_id("checkout").click()
    notice = page.get_by_test_id("notice")
    expect(notice).to_contain_text("Product mug: you asked for 2, only 1 available.")
    page.get_by_test_id("fit-to-stock").click()
    expect(page.get_by_test_id("qty-mug")).to_have_value("1")

    page.get_by_test_id("checkout").click()
    page.wait_for_url(f"{shop.stripe.public_base_url}/pay/**")
    page.locator("[data-action=expire]").click()  # leaves Stripe through the cancel URL

    page.wait_for_url(re.compile(re.escape(f"{shop.url}/?cart_id=")))
    expect(notice).to_contain_text("Checkout cancelled")
    expect(page.get_by_test_id("qty-mug")).to_have_value("1")
    assert "checkout=cancelled" not in page.url  # a reload does not repeat the notice
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_a_person_walks_a_dispute_and_a_dashboard_refund_on_the_pay_page(
    shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    page, watch = open_page()
    page.goto(f"{shop.stripe.public_base_url}/pay/{session_id}")
    page.locator("[data-action=pay]").click()
    page.goto(f"{shop.stripe.public_base_url}/pay/{session_id}")  # back at Stripe, as merchant

    page.locator("[data-action=dispute]").click()
    page.locator("[data-action=dispute_won]").click()
    page.locator("[data-action=dashboard_refund]").click()
    expect(page.locator("body")).to_contain_text("won")

    def recorded() -> bool:
        order = shop.order(session_id)
        return order is not None and len(order.outside_refunds) == 1 and bool(order.disputes)

    wait_until(recorded, 10, lambda: "the dispute and the refund were not recorded")
    order = shop.order(session_id)
    assert list(order.disputes.values()) == ["won"]
    assert list(order.outside_refunds.values()) == ["succeeded"]
    # The Dashboard refund gave all of it back: refunded, though no stock came back by itself.
    assert order.status == "refunded"
    assert shop.available("mug") == 4
    assert watch.errors == []
    screenshot(page, request.node.name)


def local_clock(iso: str, zone: str) -> str:
    """HH:MM of an ISO-8601 time on a clock in `zone`, minutes cut (as the storefront shows it)."""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    return when.strftime("%H:%M")


def test_storefront_says_sold_out_and_offers_no_add_to_cart(
    held_shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop = held_shop
    shop.product("mug", unit_amount=1250, stock=1)
    shop.product("tea", unit_amount=800, stock=0)  # never stocked
    page, watch = open_page()
    page.goto(f"{shop.url}/")

    expect(page.get_by_test_id("available-tea")).to_have_text("Sold out")
    expect(page.get_by_test_id("product-tea")).to_have_attribute("data-sold-out", "")
    expect(page.get_by_test_id("add-tea")).to_have_count(0)
    expect(page.get_by_test_id("available-mug")).to_have_text("Only 1 left")
    page.get_by_test_id("add-mug").click()
    expect(page.get_by_test_id("qty-mug")).to_have_value("1")

    # Another customer checks out the last mug first: it is held for them, so nobody else can
    # take it now, though it is still on hand.
    other = shop.api.post(f"/api/carts/{shop.cart(mug=1)}/checkout")
    assert other.status_code == 201, other.text
    assert other.json()["held_until"] is not None
    assert shop.available("mug") == 0

    page.get_by_test_id("checkout").click()
    notice = page.get_by_test_id("notice")
    expect(notice).to_have_attribute("data-kind", "error")
    expect(page.get_by_test_id("out-of-stock-items")).to_have_text(
        "Product mug: you asked for 1, but it is sold out."
    )
    expect(page.get_by_test_id("available-mug")).to_have_text("Sold out")
    expect(page.get_by_test_id("add-mug")).to_have_count(0)
    expect(page.get_by_test_id("held-until")).to_be_hidden()  # this cart holds nothing
    assert len(shop.stripe.sessions()) == 1  # the other customer's: none was made for this one

    # Reducing the cart to what is in stock empties it.
    page.get_by_test_id("fit-to-stock").click()
    expect(page.get_by_test_id("cart-empty")).to_be_visible()
    expect(page.get_by_test_id("checkout")).to_be_disabled()
    assert watch.errors == []
    screenshot(page, request.node.name)


def test_storefront_shows_until_when_a_checkout_holds_the_stock(
    held_shop: Shop, open_page: OpenPage, request: pytest.FixtureRequest
) -> None:
    shop = held_shop
    shop.product("mug", unit_amount=1250, stock=5)
    page, watch = open_page(viewport=MOBILE, timezone=BROWSER_ZONE)
    page.goto(f"{shop.url}/")
    page.get_by_test_id("add-mug").click()
    expect(page.get_by_test_id("qty-mug")).to_have_value("1")
    expect(page.get_by_test_id("held-until")).to_be_hidden()  # no checkout yet, no hold
    cart_id = page.evaluate("localStorage.getItem('ledger-demo-cart-id')")

    # The checkout's answer, read on its way to the page (the page leaves for Stripe at once).
    answers: list[tuple[int, dict[str, Any]]] = []

    def keep_answer(route: Route) -> None:
        response = route.fetch()
        answers.append((response.status, response.json()))
        route.fulfill(response=response)

    page.route(re.compile(r"/api/carts/[^/]+/checkout$"), keep_answer)
    page.get_by_test_id("checkout").click()
    page.wait_for_url(f"{shop.stripe.public_base_url}/pay/**")
    ((status, answer),) = answers
    assert status == 201, answer
    held_until = answer["held_until"]
    assert isinstance(held_until, str)
    ends = datetime.fromisoformat(held_until.replace("Z", "+00:00"))
    assert ends.tzinfo is not None and ends.utcoffset() == timedelta(0)  # UTC, as the contract says
    ahead = ends - datetime.now(UTC)
    assert timedelta(minutes=25) < ahead <= timedelta(minutes=30, seconds=5), ahead
    (session,) = shop.stripe.sessions()
    # Stripe's session ends with the hold, or a minute later: the ledger keeps a minute's margin
    # over Stripe's 30-minute minimum, and expires the session itself when the hold ends.
    assert ends.timestamp() <= session["expires_at"] <= ends.timestamp() + 61

    # Back in the shop with the browser's Back button, the hold shows at once.
    hhmm = local_clock(held_until, BROWSER_ZONE)
    page.go_back()
    page.wait_for_url(re.compile(re.escape(f"{shop.url}/?cart_id={cart_id}")))
    expect(page.get_by_test_id("held-until")).to_contain_text(f"held for you until {hhmm}.")
    expect(page.get_by_test_id("checkout")).to_have_text("Checkout")
    expect(page.get_by_test_id("checkout")).to_be_enabled()

    # Or by Stripe's own back link, the cancel URL (the session still open).
    page.goto(session["cancel_url"])
    page.wait_for_url(re.compile(re.escape(f"{shop.url}/?cart_id={cart_id}")))
    notice = page.get_by_test_id("notice")
    expect(notice).to_contain_text("Checkout cancelled")
    assert shop.get_cart(cart_id)["held_until"] == held_until
    hold = page.get_by_test_id("held-until")
    expect(hold).to_be_visible()
    expect(hold).to_contain_text(f"held for you until {hhmm}.")
    expect(page.get_by_test_id("held-until-time")).to_have_attribute("datetime", held_until)
    # The hold took its unit from what others may buy, and the page says so.
    expect(page.get_by_test_id("available-mug")).to_have_text("Only 4 left")
    expect(page.get_by_test_id("qty-mug")).to_have_value("1")
    assert fits_width(page, MOBILE["width"])
    assert watch.errors == []
    screenshot(page, request.node.name)
