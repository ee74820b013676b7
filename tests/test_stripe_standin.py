"""The local Stripe stand-in, driven through the real stripe SDK against a real uvicorn server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from stripe_standin import StripeStandIn, parse_stripe_params
from web.serving import RunningServer, run_in_thread

SECRET = "whsec_test_standin"
KEY = "sk_test_standin"
# Stripe's public sample objects; provenance in tests/fixtures/stripe/README.md.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stripe"


class Receiver:
    """A tiny webhook endpoint: records every request, answers from a queue (default 200)."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()

        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.received.append((body, dict(request.headers)))
                status = self.answers.pop(0) if self.answers else 200
            return JSONResponse({"received": status == 200}, status_code=status)

        async def page(request: Request) -> Response:
            return PlainTextResponse(f"{request.url.path}?{request.url.query}")

        self.app = Starlette(
            routes=[
                Route("/hook", hook, methods=["POST"]),
                Route("/success", page),
                Route("/cancel", page),
            ]
        )

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.answers.clear()


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, RunningServer]]:
    rec = Receiver()
    server = run_in_thread(rec.app)
    yield rec, server
    server.stop()


@pytest.fixture
def hook(receiver: tuple[Receiver, RunningServer]) -> Receiver:
    receiver[0].reset()
    return receiver[0]


@pytest.fixture
def shop_url(receiver: tuple[Receiver, RunningServer]) -> str:
    return receiver[1].url


@pytest.fixture
def standin(shop_url: str, hook: Receiver) -> Iterator[StripeStandIn]:
    stand_in = StripeStandIn(
        api_key=KEY,
        webhook_url=f"{shop_url}/hook",
        webhook_secret=SECRET,
        public_base_url="http://placeholder",
        retry_delays=(0.05, 0.05, 0.05, 0.05),
    )
    yield stand_in
    stand_in.close()


@pytest.fixture
def server(standin: StripeStandIn) -> Iterator[RunningServer]:
    running = run_in_thread(standin.app)
    standin.public_base_url = running.url
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": server.url}, max_network_retries=2)


def session_params(shop_url: str, lines: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 2500 + i,
                    "product_data": {"name": f"Mug #{i}"},
                },
                "quantity": i + 1,
            }
            for i in range(lines)
        ],
        "metadata": {"cart_id": "7b0c3f3e-0000-4000-8000-000000000001", "user_id": "u1"},
        "client_reference_id": "7b0c3f3e-0000-4000-8000-000000000001",
        "success_url": f"{shop_url}/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{shop_url}/cancel",
        **extra,
    }


def create(client: stripe.StripeClient, shop_url: str, key: str | None = None, **kw: Any) -> Any:
    options: Any = {"idempotency_key": key} if key else {}
    return client.v1.checkout.sessions.create(
        params=cast(Any, session_params(shop_url, **kw)), options=options
    )


def paid_session(client: stripe.StripeClient, standin: StripeStandIn, shop_url: str) -> Any:
    session = create(client, shop_url)
    standin.complete(session.id, "pay")
    return client.v1.checkout.sessions.retrieve(session.id)


def signed_events(hook: Receiver) -> list[Any]:
    """Every event the receiver got, each checked against its signature."""
    return [
        stripe.Webhook.construct_event(body, headers["stripe-signature"], SECRET)
        for body, headers in hook.received
    ]


def fixture_fields(name: str) -> set[str]:
    return set(json.loads((FIXTURES / f"fixture_{name}.json").read_text()))


@contextmanager
def serving(stand_in: StripeStandIn) -> Iterator[stripe.StripeClient]:
    """A client of `stand_in` served on its own port; the stand-in is closed afterwards."""
    running = run_in_thread(stand_in.app)
    stand_in.public_base_url = running.url
    try:
        yield stripe.StripeClient(KEY, base_addresses={"api": running.url})
    finally:
        running.stop()
        stand_in.close()


# ------------------------------------------------------------------------------ sessions


def test_create_session_is_shaped_like_stripe_and_idempotent(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    session = create(client, shop_url, key="cart-1-attempt-1")
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert (session.status, session.payment_status, session.payment_intent) == (
        "open",
        "unpaid",
        None,
    )
    assert session.amount_total == session.amount_subtotal == 2500 * 1 + 2501 * 2
    assert session.currency == "usd" and session.mode == "payment" and not session.livemode
    assert session.metadata["cart_id"] == session.client_reference_id
    assert session.success_url.endswith("session_id={CHECKOUT_SESSION_ID}")
    assert session.url == f"{server.url}/pay/{session.id}"
    assert session.expires_at - session.created == 24 * 3600
    fixture = json.loads((FIXTURES / "fixture_checkout_session.json").read_text())
    assert set(fixture) <= set(session.to_dict())

    again = create(client, shop_url, key="cart-1-attempt-1")
    assert again.id == session.id
    assert len(standin.sessions()) == 1
    assert [r["replayed"] for r in standin.requests()] == [False, True]
    assert standin.requests()[0]["params"]["line_items"][1]["quantity"] == "2"

    with pytest.raises((stripe.IdempotencyError, stripe.InvalidRequestError)):
        create(client, shop_url, key="cart-1-attempt-1", lines=1)
    assert len(standin.sessions()) == 1


def test_invalid_session_params_are_refused(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        create(client, shop_url, lines=0)
    assert missing.value.http_status == 400 and missing.value.param == "line_items"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        create(client, shop_url, metdata={"x": "y"})
    assert "metdata" in str(unknown.value)
    with pytest.raises(stripe.InvalidRequestError):
        create(client, shop_url, mode="subscription")
    assert standin.sessions() == []


def test_retrieve_with_expanded_line_items_and_list_them(
    client: stripe.StripeClient, shop_url: str
) -> None:
    session = create(client, shop_url, lines=12)
    got: Any = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert got.line_items.object == "list"
    assert len(got.line_items.data) == 10 and got.line_items.has_more  # Stripe's page of 10
    first = got.line_items.data[0]
    assert first.id.startswith("li_") and first.object == "item"
    assert (first.description, first.quantity, first.currency) == ("Mug #0", 1, "usd")
    assert first.price.unit_amount == 2500 and first.amount_total == 2500
    assert "line_items" not in client.v1.checkout.sessions.retrieve(session.id)

    listed = client.v1.checkout.sessions.line_items.list(session.id)
    assert [i.id for i in listed.data] == [i.id for i in got.line_items.data]
    every = list(listed.auto_paging_iter())
    assert len(every) == 12
    assert sum(i.amount_total for i in every) == got.amount_total
    big_page = client.v1.checkout.sessions.line_items.list(session.id, params={"limit": 100})
    assert len(big_page.data) == 12 and not big_page.has_more


def test_line_items_page_forwards_and_backwards(client: stripe.StripeClient, shop_url: str) -> None:
    session = create(client, shop_url, lines=12)
    items = client.v1.checkout.sessions.line_items
    ids = [it.id for it in items.list(session.id, params={"limit": 100}).data]
    assert len(ids) == 12

    first = items.list(session.id, params={"limit": 5})
    assert [it.id for it in first.data] == ids[:5] and first.has_more
    after = items.list(session.id, params={"limit": 5, "starting_after": ids[9]})
    assert [it.id for it in after.data] == ids[10:] and not after.has_more
    before = items.list(session.id, params={"limit": 5, "ending_before": ids[7]})
    assert [it.id for it in before.data] == ids[2:7] and before.has_more
    with pytest.raises(stripe.InvalidRequestError) as refused:
        items.list(session.id, params={"starting_after": "li_nope"})
    assert refused.value.code == "resource_missing"


def test_auth_and_unknown_session(client: stripe.StripeClient, server: RunningServer) -> None:
    answer = httpx.get(f"{server.url}/v1/checkout/sessions/cs_test_nope")
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"
    bad_key = stripe.StripeClient("pk_test_x", base_addresses={"api": server.url})
    with pytest.raises(stripe.AuthenticationError):
        bad_key.v1.checkout.sessions.retrieve("cs_test_nope")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"


def test_only_the_configured_api_key_is_accepted(server: RunningServer) -> None:
    someone_else = stripe.StripeClient(
        "sk_test_someone_else_abcd", base_addresses={"api": server.url}
    )
    with pytest.raises(stripe.AuthenticationError) as refused:
        someone_else.v1.checkout.sessions.retrieve("cs_test_nope")
    assert refused.value.http_status == 401
    assert "Invalid API Key provided: sk_test_****abcd" in str(refused.value)
    assert refused.value.error is not None and refused.value.error.type == "invalid_request_error"
    as_basic = httpx.get(f"{server.url}/v1/checkout/sessions/cs_test_nope", auth=(KEY, ""))
    assert as_basic.status_code == 404  # the right key as Basic auth's user: past the key check


def test_a_body_over_1_mib_is_refused_and_the_server_still_answers(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    big = b"metadata[x]=" + b"a" * (2 * 1024 * 1024)
    declared = httpx.post(f"{server.url}/v1/checkout/sessions", content=big, headers=auth)
    assert declared.status_code == 413
    assert declared.json()["error"]["type"] == "invalid_request_error"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(32):
            yield b"a" * 65536

    streamed = httpx.post(f"{server.url}/v1/refunds", content=chunks(), headers=auth)
    assert streamed.status_code == 413 and "error" in streamed.json()

    session = create(client, shop_url)
    assert httpx.post(f"{server.url}/pay/{session.id}/pay", content=big).status_code == 413
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    too_large = [r["params"] for r in standin.requests() if r["status"] == 413]
    assert too_large == [{"_omitted": "more than 1048576 bytes"}] * 2


def test_logs_caches_and_sessions_are_bounded(shop_url: str, hook: Receiver) -> None:
    stand_in = StripeStandIn(
        api_key=KEY,
        webhook_url=f"{shop_url}/hook",
        webhook_secret=SECRET,
        public_base_url="http://placeholder",
        max_logged_requests=3,
        max_logged_params_bytes=2048,
        max_idempotency_keys=2,
        max_idempotent_request_bytes=4096,
        max_events=2,
        max_deliveries=2,
        max_sessions=2,
    )
    with serving(stand_in) as client:
        first = create(client, shop_url, key="k1")
        stand_in.complete(first.id, "pay")  # settled: the first to be forgotten
        first_pi = stand_in.payment_intent_of(first.id)
        second = create(client, shop_url, key="k2")
        third = create(client, shop_url, key="k3")
        assert [s["id"] for s in stand_in.sessions()] == [second.id, third.id]
        assert stand_in.payment_intents() == [] and stand_in.charges() == []
        with pytest.raises(stripe.InvalidRequestError) as gone:
            client.v1.checkout.sessions.retrieve(first.id)
        assert gone.value.code == "resource_missing"
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.payment_intents.retrieve(str(first_pi))

        # Two keys are kept: k1's answer was forgotten, so its retry is a new request.
        assert create(client, shop_url, key="k1").id != first.id
        assert not stand_in.requests()[-1]["replayed"]
        assert create(client, shop_url, key="k3").id == third.id
        assert stand_in.requests()[-1]["replayed"]

        # A large request is neither logged with its parameters nor saved for its key.
        metadata = {f"k{i}": "x" * 500 for i in range(10)}
        big = create(client, shop_url, key="big", metadata=metadata)
        assert create(client, shop_url, key="big", metadata=metadata).id != big.id
        [omitted] = stand_in.requests()[-1]["params"].values()
        assert omitted.endswith(" bytes")
        assert len(stand_in.requests()) == 3

        for session in stand_in.sessions():
            stand_in.complete(session["id"], "pay")
        stand_in.wait_for_deliveries(3, timeout=5)  # counted, though only 2 are kept
        assert len(stand_in.events()) == 2 and len(stand_in.deliveries()) == 2


# ------------------------------------------------------------------------------ paying, webhooks


def test_pay_delivers_a_signed_completed_event(
    client: stripe.StripeClient, standin: StripeStandIn, hook: Receiver, shop_url: str
) -> None:
    session = create(client, shop_url)
    standin.complete(session.id, "pay")
    standin.wait_for_deliveries(1, timeout=5)
    [(body, headers)] = hook.received
    event = stripe.Webhook.construct_event(body, headers["stripe-signature"], SECRET)
    assert event.type == "checkout.session.completed"
    assert event.api_version == "2026-07-29.dahlia" and event.id.startswith("evt_")
    obj = event.data.object
    assert (obj.id, obj.status, obj.payment_status) == (session.id, "complete", "paid")
    assert obj.payment_intent.startswith("pi_")
    sample = json.loads((FIXTURES / "sample_checkout_session_completed_event.json").read_text())
    assert set(sample) <= set(json.loads(body))
    [delivery] = standin.deliveries()
    assert delivery["event_id"] == event.id and delivery["status"] == 200
    assert (delivery["attempt"], delivery["outcome"]) == (1, "delivered")
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"
    with pytest.raises(ValueError):
        standin.complete(session.id, "pay")


def test_pay_page_buttons_and_redirects(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    session = create(client, shop_url)
    page = httpx.get(session.url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for action in ("pay", "pay_later", "async_fail", "expire"):
        assert f'data-action="{action}"' in page.text
    assert "Mug #1" in page.text and "75.02 USD" in page.text  # 2500 + 2 * 2501

    answer = httpx.post(f"{server.url}/pay/{session.id}/pay")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{shop_url}/success?session_id={session.id}"
    followed = httpx.post(f"{server.url}/pay/{session.id}/pay_later", follow_redirects=True)
    assert followed.status_code == 409  # already paid: not possible twice

    other = create(client, shop_url)
    followed = httpx.post(f"{server.url}/pay/{other.id}/pay", follow_redirects=True)
    assert followed.status_code == 200 and followed.text == f"/success?session_id={other.id}"
    standin.wait_for_deliveries(2, timeout=5)
    assert [d["type"] for d in standin.deliveries()] == ["checkout.session.completed"] * 2


def test_pay_page_refunds_and_disputes_a_paid_session(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    session = paid_session(client, standin, shop_url)
    page_url = f"{server.url}/pay/{session.id}"

    def act(action: str) -> str:
        answer = httpx.post(f"{page_url}/{action}")
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == f"/pay/{session.id}"  # back to the page
        return httpx.get(page_url).text

    page = httpx.get(page_url).text
    assert 'data-payment-intent-status="succeeded"' in page
    for action in ("dashboard_refund", "hold_refunds", "dispute"):
        assert f'data-action="{action}"' in page
    assert 'data-action="refund_succeed"' not in page and 'data-action="dispute_won"' not in page

    page = act("hold_refunds")
    assert 'data-action="hold_refunds" aria-pressed="true"' in page
    page = act("dashboard_refund")
    [refund] = standin.refunds()
    assert (refund["status"], refund["idempotency_key"]) == ("pending", None)
    assert f'data-refund="{refund["id"]}" data-refund-status="pending"' in page
    assert 'data-action="refund_succeed"' in page and 'data-action="dashboard_refund"' not in page
    page = act("refund_fail")
    assert 'data-refund-status="failed"' in page
    assert 'data-action="dashboard_refund"' in page  # the money came back: refundable again

    page = act("dispute")
    [dispute] = standin.disputes()
    assert f'data-dispute="{dispute["id"]}" data-dispute-status="needs_response"' in page
    assert 'data-action="dispute_won"' in page and 'data-action="dispute_lost"' in page
    assert 'data-action="dashboard_refund"' not in page
    refused = httpx.post(f"{page_url}/dashboard_refund")
    assert refused.status_code == 409 and "charged back" in refused.text
    page = act("dispute_lost")
    assert 'data-dispute-status="lost"' in page and 'data-action="dispute_won"' not in page

    standin.wait_for_deliveries(7, timeout=5)
    assert [e["type"] for e in standin.events()] == [
        "checkout.session.completed",
        "refund.created",
        "charge.refunded",
        "refund.failed",
        "refund.updated",
        "charge.dispute.created",
        "charge.dispute.closed",
    ]


def test_delayed_payment_outcomes_and_expiry(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    later = create(client, shop_url)
    assert httpx.post(f"{server.url}/pay/{later.id}/pay_later").status_code == 303
    got: Any = client.v1.checkout.sessions.retrieve(later.id)
    assert (got.status, got.payment_status) == ("complete", "unpaid")
    assert got.payment_intent.startswith("pi_")
    page = httpx.get(f"{server.url}/pay/{later.id}").text
    assert 'data-action="async_succeed"' in page and 'data-action="async_fail"' in page
    assert 'data-action="pay"' not in page
    answer = httpx.post(f"{server.url}/pay/{later.id}/async_succeed")
    assert answer.headers["location"].endswith(f"session_id={later.id}")

    failing = create(client, shop_url)
    standin.complete(failing.id, "async_fail")  # "Fail payment" on an open session

    abandoned = create(client, shop_url)
    answer = httpx.post(f"{server.url}/pay/{abandoned.id}/expire")
    assert answer.status_code == 303 and answer.headers["location"] == f"{shop_url}/cancel"

    by_api = create(client, shop_url)
    expired = client.v1.checkout.sessions.expire(by_api.id, options={"idempotency_key": "exp-1"})
    assert expired.status == "expired" and expired.url is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(by_api.id)

    standin.wait_for_deliveries(6, timeout=5)
    seen = [(e["data"]["object"]["id"], e["type"].rsplit(".", 1)[1]) for e in standin.events()]
    assert seen == [
        (later.id, "completed"),
        (later.id, "async_payment_succeeded"),
        (failing.id, "completed"),
        (failing.id, "async_payment_failed"),
        (abandoned.id, "expired"),
        (by_api.id, "expired"),
    ]
    assert [e["data"]["object"]["payment_status"] for e in standin.events()[:4]] == [
        "unpaid",
        "paid",
        "unpaid",
        "unpaid",
    ]
    assert standin.events()[-1]["request"]["idempotency_key"] == "exp-1"
    assert all(d["outcome"] == "delivered" for d in standin.deliveries())


def test_webhook_retries_failures_and_missing_url(
    client: stripe.StripeClient, standin: StripeStandIn, hook: Receiver, shop_url: str
) -> None:
    hook.answers[:] = [500, 503]
    session = create(client, shop_url)
    standin.complete(session.id, "pay")
    standin.wait_for_deliveries(1, timeout=5)
    attempts = [(d["attempt"], d["status"], d["outcome"]) for d in standin.deliveries()]
    assert attempts == [(1, 500, "retrying"), (2, 503, "retrying"), (3, 200, "delivered")]
    signatures = {headers["stripe-signature"] for _, headers in hook.received}
    assert len(hook.received) == 3 and len(signatures) >= 1
    assert len({json.loads(body)["id"] for body, _ in hook.received}) == 1

    standin.webhook_url = "http://127.0.0.1:9/unreachable"
    second = create(client, shop_url)
    standin.complete(second.id, "expire")
    standin.wait_for_deliveries(2, timeout=5)
    tries = [d for d in standin.deliveries() if d["session_id"] == second.id]
    assert [d["attempt"] for d in tries] == [1, 2, 3, 4, 5]
    assert tries[-1]["outcome"] == "failed" and tries[-1]["status"] is None

    standin.webhook_url = None
    third = create(client, shop_url)
    standin.complete(third.id, "pay")
    standin.wait_for_deliveries(3, timeout=1)
    assert standin.deliveries()[-1]["outcome"] == "undelivered"


def test_build_event_is_signed_for_the_ledger(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    session = create(client, shop_url)
    standin.complete(session.id, "pay_later")
    payload, header = standin.build_event("checkout.session.async_payment_succeeded", session.id)
    event = stripe.Webhook.construct_event(payload, header, SECRET)
    assert event.type == "checkout.session.async_payment_succeeded"
    assert event.data.object.id == session.id
    stale_payload, stale = standin.build_event(
        "checkout.session.completed", session.id, timestamp=int(time.time()) - 600
    )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(stale_payload, stale, SECRET)
    with pytest.raises(ValueError):
        standin.build_event("charge.refunded", session.id)

    paid = paid_session(client, standin, shop_url)
    refund: Any = client.v1.refunds.create(params={"payment_intent": paid.payment_intent})
    for type_, object_id in (("refund.updated", refund.id), ("charge.refunded", refund.charge)):
        payload, header = standin.build_event(type_, object_id)
        about = stripe.Webhook.construct_event(payload, header, SECRET).data.object
        assert about.id == object_id
    with pytest.raises(KeyError):
        standin.build_event("refund.created", "re_nope")
    with pytest.raises(ValueError):
        standin.build_event("payment_intent.succeeded", str(paid.payment_intent))


def test_retrieve_expands_the_payment_intent_of_every_outcome(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    cart = {"cart_id": "7b0c3f3e-0000-4000-8000-000000000001"}

    def checkout(*outcomes: str) -> Any:
        session = create(client, shop_url, payment_intent_data={"metadata": cart})
        for outcome in outcomes:
            standin.complete(session.id, outcome)
        return client.v1.checkout.sessions.retrieve(
            session.id, params={"expand": ["payment_intent", "line_items"]}
        )

    paid = checkout("pay")
    pi = paid.payment_intent
    assert pi.object == "payment_intent" and pi.id == standin.payment_intent_of(paid.id)
    assert (pi.status, pi.amount, pi.amount_received, pi.currency) == (
        "succeeded",
        7502,
        7502,
        "usd",
    )
    assert pi.latest_charge == standin.charge_of(paid.id) and pi.latest_charge.startswith("ch_")
    assert pi.metadata.to_dict() == cart and len(paid.line_items.data) == 2
    assert fixture_fields("payment_intent") <= set(pi.to_dict())

    later = checkout("pay_later").payment_intent
    assert (later.status, later.latest_charge, later.amount_received) == ("processing", None, 0)
    failed = checkout("pay_later", "async_fail").payment_intent
    assert failed.status == "requires_payment_method" and failed.latest_charge is None
    assert failed.last_payment_error.code == "payment_intent_payment_attempt_failed"
    cleared = checkout("pay_later", "async_succeed").payment_intent
    assert cleared.status == "succeeded" and cleared.latest_charge.startswith("ch_")
    assert checkout("async_fail").payment_intent.status == "requires_payment_method"
    open_session = create(client, shop_url)
    unpaid: Any = client.v1.checkout.sessions.retrieve(
        open_session.id, params={"expand": ["payment_intent"]}
    )
    assert unpaid.payment_intent is None and standin.payment_intent_of(open_session.id) is None

    assert client.v1.payment_intents.retrieve(pi.id).to_dict() == pi.to_dict()
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.retrieve("pi_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    charge: Any = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.object, charge.amount, charge.currency, charge.status) == (
        "charge",
        7502,
        "usd",
        "succeeded",
    )
    assert (charge.amount_refunded, charge.refunded, charge.disputed) == (0, False, False)
    assert charge.payment_intent == pi.id and charge.metadata.to_dict() == cart
    assert fixture_fields("charge") <= set(charge.to_dict())
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.charges.retrieve("ch_nope")


# ------------------------------------------------------------------------------ refunds


def test_refunds_are_idempotent_and_bounded(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    session = paid_session(client, standin, shop_url)
    params: Any = {
        "payment_intent": session.payment_intent,
        "metadata": {"order_id": "o-1"},
        "reason": "requested_by_customer",
    }
    refund: Any = client.v1.refunds.create(params=params, options={"idempotency_key": "refund-o-1"})
    assert refund.id.startswith("re_") and refund.object == "refund"
    assert (refund.status, refund.amount, refund.currency) == ("succeeded", 7502, "usd")
    assert refund.payment_intent == session.payment_intent and refund.metadata["order_id"] == "o-1"
    fixture = json.loads((FIXTURES / "fixture_refund.json").read_text())
    assert set(fixture) <= set(refund.to_dict())

    again = client.v1.refunds.create(params=params, options={"idempotency_key": "refund-o-1"})
    assert again.id == refund.id
    [recorded] = standin.refunds()
    assert recorded["idempotency_key"] == "refund-o-1" and recorded["id"] == refund.id
    assert client.v1.refunds.retrieve(refund.id).amount == 7502

    with pytest.raises(stripe.InvalidRequestError) as over:
        client.v1.refunds.create(params=params, options={"idempotency_key": "refund-o-1-b"})
    assert over.value.http_status == 400 and over.value.code == "charge_already_refunded"

    partial = paid_session(client, standin, shop_url)
    client.v1.refunds.create(params={"payment_intent": partial.payment_intent, "amount": 7000})
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create(params={"payment_intent": partial.payment_intent, "amount": 503})
    assert too_much.value.code == "charge_already_refunded"
    last = client.v1.refunds.create(params={"payment_intent": partial.payment_intent})
    assert last.amount == 502

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.refunds.create(params={"payment_intent": "pi_nope"})
    assert unknown.value.code == "resource_missing"
    unpaid = create(client, shop_url)
    standin.complete(unpaid.id, "pay_later")
    pending: Any = client.v1.checkout.sessions.retrieve(unpaid.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(params={"payment_intent": pending.payment_intent})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.refunds.retrieve("re_nope")
    assert missing.value.http_status == 404


def test_pending_refunds_settle_and_every_change_is_a_signed_event(
    client: stripe.StripeClient, standin: StripeStandIn, hook: Receiver, shop_url: str
) -> None:
    standin.refund_status = "pending"
    session = paid_session(client, standin, shop_url)
    refund: Any = client.v1.refunds.create(
        params={
            "payment_intent": session.payment_intent,
            "reason": "requested_by_customer",
            "metadata": {"order_id": "o-1"},
        },
        options={"idempotency_key": "refund-o-1"},
    )
    assert (refund.status, refund.amount) == ("pending", 7502)
    charge: Any = client.v1.charges.retrieve(refund.charge)
    assert (charge.amount_refunded, charge.refunded) == (7502, True)  # pending counts
    assert standin.settle_refund(refund.id, "succeeded")["status"] == "succeeded"
    assert client.v1.refunds.retrieve(refund.id).status == "succeeded"
    with pytest.raises(ValueError):
        standin.settle_refund(refund.id, "succeeded")

    standin.refund_status = "succeeded"
    held = paid_session(client, standin, shop_url)
    standin.hold_refunds(held.id)  # this payment's refunds stay pending all the same
    failing: Any = client.v1.refunds.create(params={"payment_intent": held.payment_intent})
    assert failing.status == "pending"
    failed = standin.settle_refund(failing.id, "failed", "lost_or_stolen_card")
    assert (failed["status"], failed["failure_reason"]) == ("failed", "lost_or_stolen_card")
    charge = client.v1.charges.retrieve(failing.charge)
    assert (charge.amount_refunded, charge.refunded) == (0, False)  # the money came back
    again: Any = client.v1.refunds.create(params={"payment_intent": held.payment_intent})
    assert (again.status, again.amount) == ("pending", 7502)
    late = standin.settle_refund(refund.id, "failed")  # Stripe may fail one that succeeded
    assert (late["status"], late["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert client.v1.charges.retrieve(refund.charge).amount_refunded == 0

    standin.wait_for_deliveries(13, timeout=10)
    events = signed_events(hook)
    assert [(e.type, e.data.object.id, e.data.object.status) for e in events] == [
        ("checkout.session.completed", session.id, "complete"),
        ("refund.created", refund.id, "pending"),
        ("charge.refunded", refund.charge, "succeeded"),
        ("refund.updated", refund.id, "succeeded"),
        ("checkout.session.completed", held.id, "complete"),
        ("refund.created", failing.id, "pending"),
        ("charge.refunded", failing.charge, "succeeded"),
        ("refund.failed", failing.id, "failed"),
        ("refund.updated", failing.id, "failed"),
        ("refund.created", again.id, "pending"),
        ("charge.refunded", again.charge, "succeeded"),
        ("refund.failed", refund.id, "failed"),
        ("refund.updated", refund.id, "failed"),
    ]
    assert events[1].request.idempotency_key == "refund-o-1"
    assert events[2].data.object.amount_refunded == 7502
    assert events[7].data.object.failure_reason == "lost_or_stolen_card"
    failed_deliveries = [d for d in standin.deliveries() if d["type"] == "refund.failed"]
    assert [(d["object_id"], d["session_id"]) for d in failed_deliveries] == [
        (failing.id, held.id),
        (refund.id, session.id),
    ]


def test_list_refunds_of_a_payment_newest_first(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    session = paid_session(client, standin, shop_url)
    pi = session.payment_intent
    first = client.v1.refunds.create(params={"payment_intent": pi, "amount": 1000})
    second = client.v1.refunds.create(params={"payment_intent": pi, "amount": 2000})
    other = paid_session(client, standin, shop_url)
    client.v1.refunds.create(params={"payment_intent": other.payment_intent})

    listed = client.v1.refunds.list(params={"payment_intent": pi})
    assert [r.id for r in listed.data] == [second.id, first.id]
    # `object` is no typed attribute of the SDK's ListObject: read as the SDK reads it.
    assert (listed["object"], listed.has_more, listed.url) == ("list", False, "/v1/refunds")
    page = client.v1.refunds.list(params={"payment_intent": pi, "limit": 1})
    assert [r.id for r in page.data] == [second.id] and page.has_more
    assert [r.id for r in page.auto_paging_iter()] == [second.id, first.id]
    by_charge = client.v1.refunds.list(params={"charge": str(first.charge)})
    assert [r.id for r in by_charge.data] == [second.id, first.id]
    assert len(client.v1.refunds.list().data) == 3
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.refunds.list(params={"payment_intent": "pi_nope"})
    assert unknown.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.list(params={"payment_intent": pi, "limit": 101})


def test_a_disputed_charge_cannot_be_refunded(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    session = paid_session(client, standin, shop_url)
    dispute = standin.open_dispute(session.id)
    params: Any = {
        "payment_intent": session.payment_intent,
        "metadata": {"order_id": "o-9"},
        "reason": "requested_by_customer",
    }
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params=params, options={"idempotency_key": "refund-o-9"})
    assert refused.value.http_status == 400 and refused.value.code == "charge_disputed"
    charge = standin.charge_of(session.id)
    assert f"Charge {charge} has been charged back; cannot issue a refund." in str(refused.value)

    standin.close_dispute(dispute["id"], "won")
    with pytest.raises(stripe.InvalidRequestError) as saved:  # the answer kept for that key
        client.v1.refunds.create(params=params, options={"idempotency_key": "refund-o-9"})
    assert saved.value.code == "charge_disputed" and standin.requests()[-1]["replayed"]
    won: Any = client.v1.refunds.create(params=params, options={"idempotency_key": "refund-o-9b"})
    assert won.status == "succeeded" and won.amount == 7502


def test_a_dashboard_refund_leaves_nothing_to_refund(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    session = paid_session(client, standin, shop_url)
    made = standin.dashboard_refund(session.id)
    assert (made["amount"], made["metadata"], made["reason"], made["status"]) == (
        7502,
        {},
        None,
        "succeeded",
    )
    [recorded] = standin.refunds()
    assert recorded["id"] == made["id"] and recorded["idempotency_key"] is None
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(
            params={
                "payment_intent": session.payment_intent,
                "metadata": {"order_id": "o-2"},
                "reason": "requested_by_customer",
            },
            options={"idempotency_key": "refund-o-2"},
        )
    assert refused.value.code == "charge_already_refunded"
    charge: Any = client.v1.charges.retrieve(made["charge"])
    assert charge.refunded and charge.amount_refunded == 7502
    listed = client.v1.refunds.list(params={"payment_intent": session.payment_intent})
    assert [r.id for r in listed.data] == [made["id"]]
    with pytest.raises(ValueError):
        standin.dashboard_refund(session.id)
    with pytest.raises(KeyError):
        standin.dashboard_refund("cs_test_nope")


def test_disputes_open_and_close_with_events(
    client: stripe.StripeClient, standin: StripeStandIn, hook: Receiver, shop_url: str
) -> None:
    session = paid_session(client, standin, shop_url)
    opened = standin.open_dispute(session.id, reason="product_not_received")
    got: Any = client.v1.disputes.retrieve(opened["id"])
    assert (got.object, got.amount, got.currency, got.reason, got.status) == (
        "dispute",
        7502,
        "usd",
        "product_not_received",
        "needs_response",
    )
    assert (got.charge, got.payment_intent) == (
        standin.charge_of(session.id),
        session.payment_intent,
    )
    assert fixture_fields("dispute") <= set(got.to_dict())
    assert client.v1.charges.retrieve(got.charge).disputed
    assert [d["id"] for d in standin.disputes()] == [opened["id"]]
    with pytest.raises(ValueError):
        standin.open_dispute(session.id)  # one dispute per charge

    assert standin.close_dispute(opened["id"], "lost")["status"] == "lost"
    with pytest.raises(ValueError):
        standin.close_dispute(opened["id"], "won")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": session.payment_intent})
    assert refused.value.code == "charge_disputed"

    standin.wait_for_deliveries(3, timeout=5)
    assert [(e.type, e.data.object.id, e.data.object.status) for e in signed_events(hook)] == [
        ("checkout.session.completed", session.id, "complete"),
        ("charge.dispute.created", opened["id"], "needs_response"),
        ("charge.dispute.closed", opened["id"], "lost"),
    ]
    payload, header = standin.build_event("charge.dispute.created", opened["id"])
    assert stripe.Webhook.construct_event(payload, header, SECRET).data.object.status == "lost"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.disputes.retrieve("dp_nope")
    assert missing.value.http_status == 404
    with pytest.raises(ValueError):
        standin.open_dispute(create(client, shop_url).id)  # nothing paid: nothing to dispute


# ------------------------------------------------------------------------------ failures, delay


def test_fail_next_makes_the_sdk_raise_or_retry(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    no_retries = stripe.StripeClient(KEY, base_addresses={"api": server.url})
    standin.fail_next(1)
    with pytest.raises(stripe.APIError) as failed:
        create(no_retries, shop_url)
    assert failed.value.http_status == 500
    assert standin.sessions() == []

    standin.fail_next(1, status=503)
    session = create(client, shop_url, key="retry-me")
    calls = [(r["status"], r["idempotency_key"]) for r in standin.requests()[1:]]
    assert calls == [(503, "retry-me"), (200, "retry-me")]
    assert [s["id"] for s in standin.sessions()] == [session.id]

    # a lost response: Stripe did the work, the SDK retries with the same key, gets a replay
    standin.complete(session.id, "pay")
    pi: Any = client.v1.checkout.sessions.retrieve(session.id).payment_intent
    standin.fail_next(1, after_processing=True)
    refund = client.v1.refunds.create(params={"payment_intent": pi})
    assert [r["id"] for r in standin.refunds()] == [refund.id]
    assert [(r["status"], r["replayed"]) for r in standin.requests()[-2:]] == [
        (500, False),
        (200, True),
    ]


def test_fail_next_with_a_path_fails_only_those_calls(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    once = stripe.StripeClient(KEY, base_addresses={"api": server.url})
    session = paid_session(client, standin, shop_url)
    pi = session.payment_intent
    standin.fail_next(1, 401, path="/v1/refunds")
    assert once.v1.checkout.sessions.retrieve(session.id).id == session.id  # passes untouched
    with pytest.raises(stripe.AuthenticationError) as rejected:
        once.v1.refunds.create(params={"payment_intent": pi})
    assert rejected.value.error is not None
    assert rejected.value.error.type == "invalid_request_error"
    standin.fail_next(1, 403, path="/v1/refunds")
    with pytest.raises(stripe.PermissionError):
        once.v1.refunds.list(params={"payment_intent": pi})  # any method
    standin.fail_next(1, 400, path="/v1/refunds", code="resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        once.v1.refunds.retrieve("re_whatever")
    assert missing.value.code == "resource_missing"
    standin.fail_next(1, 429, path="/v1/refunds", error_type="rate_limit_error")
    with pytest.raises(stripe.RateLimitError) as limited:
        once.v1.refunds.create(params={"payment_intent": pi})
    assert limited.value.error is not None and limited.value.error.type == "rate_limit_error"
    assert standin.refunds() == []

    refund = once.v1.refunds.create(params={"payment_intent": pi})  # the failures are used up
    assert refund.status == "succeeded"
    injected = [(r["path"], r["status"]) for r in standin.requests() if r["failure_injected"]]
    assert injected == [
        ("/v1/refunds", 401),
        ("/v1/refunds", 403),
        ("/v1/refunds/re_whatever", 400),
        ("/v1/refunds", 429),
    ]


def test_delay_seconds_slows_every_api_call(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    standin.delay_seconds = 0.3
    started = time.monotonic()
    create(client, shop_url)
    # The delay is the feature under test, so a duration is the fact to check; a lower bound
    # only, which no load on the machine can make fail.
    assert time.monotonic() - started >= 0.3


# ------------------------------------------------------------------------------ expiry


def test_expire_an_open_session_but_not_a_completed_one(
    client: stripe.StripeClient, standin: StripeStandIn, hook: Receiver, shop_url: str
) -> None:
    session = create(client, shop_url)
    expired = client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "ex-1"})
    assert (expired.status, expired.payment_status, expired.url) == ("expired", "unpaid", None)
    again = client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "ex-1"})
    assert again.to_dict() == expired.to_dict() and standin.requests()[-1]["replayed"]
    with pytest.raises(stripe.InvalidRequestError) as twice:
        client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "ex-2"})
    assert twice.value.http_status == 400

    paid = paid_session(client, standin, shop_url)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.expire(paid.id)
    assert refused.value.http_status == 400
    assert refused.value.user_message == (
        'Only Checkout Sessions with a status in ["open"] can be expired.'
    )
    assert refused.value.error is not None and refused.value.error.type == "invalid_request_error"
    assert client.v1.checkout.sessions.retrieve(paid.id).payment_status == "paid"

    standin.wait_for_deliveries(2, timeout=5)
    events = signed_events(hook)
    assert [(e.type, e.data.object.id) for e in events] == [
        ("checkout.session.expired", session.id),
        ("checkout.session.completed", paid.id),
    ]
    assert events[0].request.idempotency_key == "ex-1"


def test_a_session_past_its_expires_at_is_expired_and_cannot_be_paid(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    standin.advance_clock(3600)  # expires_at is checked against the stand-in's clock
    deadline = standin.now() + 30 * 60
    session = create(client, shop_url, expires_at=deadline)
    assert session.expires_at == deadline and session.created <= standin.now()
    untouched = create(client, shop_url)  # nobody looks at it again

    at = datetime.fromtimestamp(deadline, UTC)
    page = httpx.get(session.url).text
    assert f'This checkout expires at <time datetime="{at:%Y-%m-%dT%H:%M:%SZ}">' in page
    assert f"{at:%H:%M} UTC</time>" in page

    standin.advance_clock(deadline - standin.now() - 1)
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert standin.events() == []

    standin.advance_clock(1)
    got = client.v1.checkout.sessions.retrieve(session.id)
    assert (got.status, got.payment_status, got.url) == ("expired", "unpaid", None)
    refused = httpx.post(f"{server.url}/pay/{session.id}/pay", follow_redirects=True)
    assert refused.status_code == 409 and "expired" in refused.text
    with pytest.raises(ValueError):
        standin.complete(session.id, "pay")
    page = httpx.get(f"{server.url}/pay/{session.id}").text
    assert 'data-status="expired"' in page and "data-expires-at" not in page
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)

    standin.advance_clock(24 * 3600)  # the untouched one's default 24 hours
    standin.wait_for_deliveries(2, timeout=5)
    assert [(e["type"], e["data"]["object"]["id"]) for e in standin.events()] == [
        ("checkout.session.expired", session.id),
        ("checkout.session.expired", untouched.id),
    ]
    assert [d["outcome"] for d in standin.deliveries()] == ["delivered", "delivered"]
    assert standin.events()[0]["created"] >= deadline
    with pytest.raises(ValueError):
        standin.advance_clock(-1)  # time only moves forward


# ------------------------------------------------------------------------------ held payments


def held_session(client: stripe.StripeClient, shop_url: str, key: str | None = None) -> Any:
    return create(client, shop_url, key=key, payment_intent_data={"capture_method": "manual"})


def held_and_paid(client: stripe.StripeClient, standin: StripeStandIn, shop_url: str) -> Any:
    session = held_session(client, shop_url)
    standin.complete(session.id, "pay")
    return client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})


def test_a_held_card_is_captured_once_then_refunded(
    client: stripe.StripeClient,
    standin: StripeStandIn,
    server: RunningServer,
    hook: Receiver,
    shop_url: str,
) -> None:
    session = held_session(client, shop_url)
    page = httpx.get(session.url).text
    assert 'data-action="pay"' in page and 'data-action="expire"' in page
    assert 'data-action="pay_later"' not in page and 'data-action="async_fail"' not in page
    answer = httpx.post(f"{server.url}/pay/{session.id}/pay")
    assert answer.headers["location"] == f"{shop_url}/success?session_id={session.id}"

    got: Any = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent"]}
    )
    assert (got.status, got.payment_status) == ("complete", "unpaid")
    pi = got.payment_intent
    assert (pi.status, pi.capture_method) == ("requires_capture", "manual")
    assert (pi.amount, pi.amount_capturable, pi.amount_received) == (7502, 7502, 0)
    assert client.v1.payment_intents.retrieve(pi.id).to_dict() == pi.to_dict()
    held: Any = client.v1.charges.retrieve(pi.latest_charge)
    assert (held.status, held.paid, held.captured, held.amount_captured) == (
        "succeeded",
        True,
        False,
        0,
    )
    seven_days = held.payment_method_details.card.capture_before - held.created
    assert seven_days == 7 * 24 * 3600
    assert standin.charge_of(session.id) is None  # nothing charged yet
    page = httpx.get(session.url).text
    assert 'data-authorization="authorized"' in page and 'data-action="lapse"' in page
    with pytest.raises(stripe.InvalidRequestError) as unpaid:
        client.v1.refunds.create(params={"payment_intent": pi.id})
    assert unpaid.value.code == "payment_intent_unexpected_state"

    captured = client.v1.payment_intents.capture(pi.id, options={"idempotency_key": "cap-1"})
    assert (captured.status, captured.amount_received, captured.amount_capturable) == (
        "succeeded",
        7502,
        0,
    )
    again = client.v1.payment_intents.capture(pi.id, options={"idempotency_key": "cap-1"})
    assert again.to_dict() == captured.to_dict() and standin.requests()[-1]["replayed"]
    with pytest.raises(stripe.InvalidRequestError) as twice:
        client.v1.payment_intents.capture(pi.id, options={"idempotency_key": "cap-2"})
    assert (twice.value.http_status, twice.value.code) == (400, "payment_intent_unexpected_state")
    assert "status of succeeded" in str(twice.value.user_message)
    assert twice.value.error is not None and twice.value.error.payment_intent is not None
    assert twice.value.error.payment_intent.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as cancel:
        client.v1.payment_intents.cancel(pi.id)
    assert (cancel.value.http_status, cancel.value.code) == (400, "payment_intent_unexpected_state")

    charge: Any = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.captured, charge.amount_captured, charge.amount_refunded) == (True, 7502, 0)
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"
    assert 'data-authorization="captured"' in httpx.get(session.url).text
    refund: Any = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert (refund.amount, refund.status, refund.charge) == (7502, "succeeded", charge.id)

    standin.wait_for_deliveries(6, timeout=5)
    events = signed_events(hook)
    assert [(e.type, e.data.object.id) for e in events] == [
        ("payment_intent.amount_capturable_updated", pi.id),
        ("checkout.session.completed", session.id),
        ("charge.captured", charge.id),
        ("payment_intent.succeeded", pi.id),
        ("refund.created", refund.id),
        ("charge.refunded", charge.id),
    ]
    assert events[1].data.object.payment_status == "unpaid"
    assert events[2].data.object.captured and events[3].request.idempotency_key == "cap-1"


def test_a_partial_capture_releases_the_rest(
    client: stripe.StripeClient, standin: StripeStandIn, shop_url: str
) -> None:
    pi = held_and_paid(client, standin, shop_url).payment_intent
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 7503})
    assert (too_much.value.code, too_much.value.param) == ("amount_too_large", "amount_to_capture")
    captured = client.v1.payment_intents.capture(
        pi.id, params={"amount_to_capture": 5000, "expand": ["latest_charge"]}
    )
    assert (captured.status, captured.amount_received) == ("succeeded", 5000)
    charge: Any = captured.latest_charge
    assert (charge.amount_captured, charge.amount_refunded, charge.refunded) == (5000, 2502, False)
    refund: Any = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert refund.amount == 5000
    assert client.v1.charges.retrieve(charge.id).refunded

    with pytest.raises(stripe.InvalidRequestError) as automatic:
        client.v1.payment_intents.capture(
            str(paid_session(client, standin, shop_url).payment_intent)
        )
    assert automatic.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        create(client, shop_url, payment_intent_data={"capture_method": "later"})
    assert unknown.value.param == "payment_intent_data[capture_method]"


def test_a_held_card_is_released_by_cancel(
    client: stripe.StripeClient,
    standin: StripeStandIn,
    server: RunningServer,
    hook: Receiver,
    shop_url: str,
) -> None:
    session = held_and_paid(client, standin, shop_url)
    pi = session.payment_intent
    before = standin.now()
    canceled = client.v1.payment_intents.cancel(
        pi.id,
        params={"cancellation_reason": "requested_by_customer"},
        options={"idempotency_key": "cancel-1"},
    )
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "requested_by_customer")
    assert canceled.canceled_at is not None and before <= canceled.canceled_at <= standin.now()
    assert canceled.amount_capturable == 0 and canceled.amount_received == 0
    again = client.v1.payment_intents.cancel(
        pi.id,
        params={"cancellation_reason": "requested_by_customer"},
        options={"idempotency_key": "cancel-1"},
    )
    assert again.to_dict() == canceled.to_dict()
    with pytest.raises(stripe.InvalidRequestError) as capture:
        client.v1.payment_intents.capture(pi.id)
    assert (capture.value.http_status, capture.value.code) == (
        400,
        "payment_intent_unexpected_state",
    )
    assert "status of canceled" in str(capture.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.cancel(pi.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "bored"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(params={"payment_intent": pi.id})

    charge: Any = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.captured, charge.amount_refunded, charge.refunded) == (False, 7502, True)
    got = client.v1.checkout.sessions.retrieve(session.id)
    assert (got.status, got.payment_status) == ("complete", "unpaid")
    assert 'data-authorization="released"' in httpx.get(f"{server.url}/pay/{session.id}").text
    standin.wait_for_deliveries(3, timeout=5)
    events = signed_events(hook)
    assert [e.type for e in events] == [
        "payment_intent.amount_capturable_updated",
        "checkout.session.completed",
        "payment_intent.canceled",
    ]
    assert events[2].data.object.cancellation_reason == "requested_by_customer"
    assert events[2].request.idempotency_key == "cancel-1"


def test_an_uncaptured_hold_lapses(
    client: stripe.StripeClient, standin: StripeStandIn, server: RunningServer, shop_url: str
) -> None:
    by_control = held_and_paid(client, standin, shop_url)
    standin.lapse_authorization(by_control.id)
    lapsed = client.v1.payment_intents.retrieve(by_control.payment_intent.id)
    assert (lapsed.status, lapsed.cancellation_reason) == ("canceled", "automatic")
    with pytest.raises(stripe.InvalidRequestError) as capture:
        client.v1.payment_intents.capture(lapsed.id)
    assert (capture.value.http_status, capture.value.code) == (
        400,
        "payment_intent_unexpected_state",
    )
    with pytest.raises(ValueError):
        standin.lapse_authorization(by_control.id)
    with pytest.raises(ValueError):
        standin.lapse_authorization(paid_session(client, standin, shop_url).id)

    on_the_page = held_and_paid(client, standin, shop_url)
    page_url = f"{server.url}/pay/{on_the_page.id}"
    answer = httpx.post(f"{page_url}/lapse")
    assert answer.status_code == 303 and answer.headers["location"] == f"/pay/{on_the_page.id}"
    page = httpx.get(page_url).text
    assert 'data-authorization="lapsed"' in page and 'data-action="lapse"' not in page
    assert httpx.post(f"{page_url}/lapse").status_code == 409

    in_seven_days = held_and_paid(client, standin, shop_url)
    standin.advance_clock(7 * 24 * 3600 - 60)
    assert client.v1.payment_intents.retrieve(in_seven_days.payment_intent.id).status == (
        "requires_capture"
    )
    standin.advance_clock(60)
    late = client.v1.payment_intents.retrieve(in_seven_days.payment_intent.id)
    assert (late.status, late.cancellation_reason) == ("canceled", "automatic")

    standin.wait_for_deliveries(13, timeout=5)
    lapses = [
        (e["type"], e["data"]["object"]["id"])
        for e in standin.events()
        if e["type"] in ("payment_intent.canceled", "charge.expired")
    ]
    assert lapses == [
        (kind, pi[prefix])
        for pi in (by_control.payment_intent, on_the_page.payment_intent, late)
        for kind, prefix in (("payment_intent.canceled", "id"), ("charge.expired", "latest_charge"))
    ]


# ------------------------------------------------------------------------------ mounted


def test_mounted_under_a_path_prefix_in_another_app(shop_url: str) -> None:
    """As `ledger serve` uses it: inside the ledger's own app under /_stripe, with the ledger's
    webhook handler calling back into the stand-in while the delivery is in flight."""
    stand_in = StripeStandIn(
        api_key=KEY, webhook_url=None, webhook_secret=SECRET, public_base_url="http://placeholder"
    )
    seen: list[str] = []
    holder: dict[str, stripe.StripeClient] = {}

    def handle(body: bytes, signature: str) -> None:  # blocking SDK calls, in a worker thread
        event = stripe.Webhook.construct_event(body, signature, SECRET)
        again: Any = holder["client"].v1.checkout.sessions.retrieve(
            event.data.object.id, params={"expand": ["line_items"]}
        )
        seen.append(f"{event.type}:{again.payment_status}:{len(again.line_items.data)}")

    async def webhook(request: Request) -> Response:
        body = await request.body()
        await run_in_threadpool(handle, body, request.headers["stripe-signature"])
        return JSONResponse({"received": True})

    host = Starlette(
        routes=[
            Route("/webhooks/stripe", webhook, methods=["POST"]),
            Mount("/_stripe", app=stand_in.app),
        ]
    )
    running = run_in_thread(host)
    try:
        stand_in.public_base_url = f"{running.url}/_stripe"
        stand_in.webhook_url = f"{running.url}/webhooks/stripe"
        client = stripe.StripeClient(
            KEY, base_addresses={"api": f"{running.url}/_stripe"}, max_network_retries=2
        )
        holder["client"] = client
        session = create(client, shop_url, key="mounted", lines=11)
        assert session.url == f"{running.url}/_stripe/pay/{session.id}"
        assert len(list(client.v1.checkout.sessions.line_items.list(session.id).auto_paging_iter()))
        assert client.v1.checkout.sessions.retrieve(session.id).id == session.id
        assert stand_in.requests()[0]["path"] == "/v1/checkout/sessions"

        page = httpx.get(session.url).text
        assert f'action="/_stripe/pay/{session.id}/pay"' in page
        answer = httpx.post(f"{running.url}/_stripe/pay/{session.id}/pay")
        assert answer.status_code == 303
        stand_in.wait_for_deliveries(1, timeout=5)
        assert stand_in.deliveries()[0]["status"] == 200
        assert seen == ["checkout.session.completed:paid:10"]
    finally:
        running.stop()
        stand_in.close()


# ------------------------------------------------------------------------------ units


def test_parse_stripe_params_nests_brackets() -> None:
    parsed = parse_stripe_params(
        [
            ("line_items[0][price_data][unit_amount]", "2500"),
            ("line_items[0][quantity]", "1"),
            ("line_items[1][quantity]", "3"),
            ("metadata[cart_id]", "c"),
            ("metadata[0]", "zero"),
            ("expand[]", "line_items"),
            ("expand[]", "payment_intent"),
            ("mode", "payment"),
        ]
    )
    assert parsed == {
        "line_items": [{"price_data": {"unit_amount": "2500"}, "quantity": "1"}, {"quantity": "3"}],
        "metadata": {"cart_id": "c", "0": "zero"},
        "expand": ["line_items", "payment_intent"],
        "mode": "payment",
    }
