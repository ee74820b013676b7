"""Stripe's webhook: verify the signature on the raw bytes, then fulfill the session.

200 once the event is durably recorded or deliberately ignored; 400 when it is not a genuine,
fresh Stripe event (nothing recorded); 5xx only for transient failures, so Stripe retries.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import stripe
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.application import ConcurrentModification
from ledger.checkout import IGNORED, Outcome
from ledger.domain.errors import DomainError
from ledger.payments import PaymentProviderRefused, PaymentProviderUnavailable
from ledger.storage import StoreUnavailable
from web.context import in_store, services
from web.errors import ApiError, error_response
from web.metrics import ANOMALIES, WEBHOOK_LATENCY, WEBHOOK_OUTCOMES
from web.requests import read_limited

if TYPE_CHECKING:
    from web.bootstrap import Services

log = structlog.get_logger("ledger.webhooks")

SIGNATURE_TOLERANCE_SECONDS = 300
# Stripe waits about ten seconds; the Stripe call inside gives up after about 3.5.
WEBHOOK_BUDGET_SECONDS = 4.5
HANDLED = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
}


def verify(payload: bytes, header: str | None, secrets: list[str]) -> dict[str, Any]:
    """The event, if `header` signs `payload` with any of `secrets`; else ApiError(400)."""
    if not header:
        raise ApiError(400, "missing_signature", "The Stripe-Signature header is missing.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_payload", "The body is not UTF-8 text.") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                text, header, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise ApiError(
            400, "invalid_signature", "The Stripe-Signature does not match this body or is stale."
        )
    try:
        event = json.loads(text)
    except ValueError:
        raise ApiError(400, "invalid_payload", "The body is not JSON.") from None
    if not (
        isinstance(event, dict)
        and event.get("object") == "event"
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        raise ApiError(400, "invalid_payload", "The body is not a Stripe event.")
    return event


async def stripe_webhook(request: Request) -> JSONResponse:
    started = time.perf_counter()
    outcome = "error"
    try:
        response, outcome = await _handle(request)
        return response
    finally:
        WEBHOOK_OUTCOMES.labels(outcome=outcome).inc()
        WEBHOOK_LATENCY.observe(time.perf_counter() - started)


async def _handle(request: Request) -> tuple[JSONResponse, str]:
    svc = services(request)
    try:
        payload = await read_limited(request)
        event = verify(payload, request.headers.get("stripe-signature"), svc.webhook_secrets)
    except ApiError as error:
        log.info("webhook_refused", code=error.code)
        return error_response(error.status, error.code, error.message), error.code
    event_type = event["type"]
    session_id = event["data"]["object"].get("id")
    structlog.contextvars.bind_contextvars(stripe_event_id=event["id"], event_type=event_type)
    if event_type not in HANDLED:
        log.info("webhook_ignored", reason="unhandled_type")
        return _received(), "ignored"
    if not isinstance(session_id, str) or not session_id:
        log.warning("anomaly", kind="event_without_session")
        return _received(), "ignored"
    structlog.contextvars.bind_contextvars(session_id=session_id)
    try:
        result: Outcome = await in_store(
            request,
            _fulfill_and_wait,
            svc,
            session_id,
            f"stripe:{event['id']}",
            event_type,
            budget=WEBHOOK_BUDGET_SECONDS,
        )
    except (PaymentProviderUnavailable, StoreUnavailable, ConcurrentModification) as error:
        log.warning("webhook_retry_later", error=str(error))
        return _unavailable(), "retry_later"
    except DomainError as error:
        # The session's state does not allow what this event asks; retrying will not help.
        log.error("anomaly", kind=error.code, error=str(error))
        ANOMALIES.labels(kind=error.code).inc()
        return _received(), "anomaly"
    except PaymentProviderRefused as error:
        # Stripe will not answer differently next time: acknowledge, so it stops retrying.
        log.error("anomaly", kind="stripe_refused_retrieve", error=str(error))
        return _received(), "refused"
    if result.anomaly:
        ANOMALIES.labels(kind=result.anomaly).inc()
    log.info("webhook_handled", outcome=result.status, order_id=str(result.order_id or ""))
    return _received(), result.status


def _fulfill_and_wait(svc: Services, session_id: str, cause: str, event_type: str) -> Outcome:
    result = svc.checkout.fulfill(session_id, cause, event_type)
    if result.status != IGNORED:
        # Reading your own write: the status query waits until the read model has applied
        # this session's own events (not everyone else's), so the storefront's next poll
        # shows them.
        svc.order_status.wait_for(session_id)
    return result


def _received() -> JSONResponse:
    return JSONResponse({"received": True})


def _unavailable() -> JSONResponse:
    return error_response(
        503, "temporarily_unavailable", "Could not record the event yet; Stripe will retry."
    )


routes = [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
