"""Stripe's webhook: verify the signature on the raw bytes, then decide what the event's object
(a checkout session, a refund, a charge, a dispute) means now, as Stripe reports it.

200 once the event is durably recorded or deliberately ignored; 400 when it is not a genuine,
fresh Stripe event (nothing recorded); 5xx only for transient failures, so Stripe retries.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.application import ConcurrentModification
from ledger.checkout import IGNORED, Outcome
from ledger.domain.errors import DomainError
from ledger.metrics import STRIPE_FETCH_FAILURES
from ledger.payments import PaymentProviderRefused, PaymentProviderUnavailable
from ledger.storage import StoreUnavailable
from ledger.stripe_events import HANDLED
from web.context import calling_stripe, services
from web.errors import ApiError, error_response
from web.metrics import ANOMALIES, WEBHOOK_LATENCY, WEBHOOK_OUTCOMES
from web.middleware import log_once
from web.requests import read_limited
from web.responses import WebhookReceived, checked
from web.route_docs import TOO_LARGE, Answer, Header, documented, error
from web.store_calls import IDEMPOTENT
from web.stripe_signature import InvalidSignature, verify_signature

if TYPE_CHECKING:
    from web.bootstrap import Services

log = structlog.get_logger("ledger.webhooks")

SIGNATURE_TOLERANCE_SECONDS = 300
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Stripe waits about ten seconds; the Stripe call inside gives up after about 3.5.
WEBHOOK_BUDGET_SECONDS = 4.5


def _refuse(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON number")


def _finite(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal} is out of range")
    return number


# Made once: `json.loads` with hooks builds a decoder (and its scanner) on every call, which
# cost as much again as decoding the event.
_EVENT_JSON = json.JSONDecoder(parse_constant=_refuse, parse_float=_finite)


class StripeEvent(BaseModel):
    """A Stripe event as Stripe sends it (only what the ledger reads; the rest is kept)."""

    # For the document only: `verify` checks the body itself, on the signed raw bytes.
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["event"]
    type: str = Field(description="e.g. `checkout.session.completed`.")
    data: dict[str, Any] = Field(description='`{"object": {...}}`: the object it is about.')


def verify(payload: bytes, header: str | None, secrets: list[str]) -> dict[str, Any]:
    """The event, if `header` signs `payload` with any of `secrets`; else ApiError(400)."""
    if not header:
        raise ApiError(400, "missing_signature", "The Stripe-Signature header is missing.")
    if not header.isascii():
        # Stripe signs with hex digits; the SDK's constant-time comparison raises TypeError
        # (an answer of 500) on a string with any other character.
        raise ApiError(
            400, "invalid_signature", "The Stripe-Signature does not match this body or is stale."
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_payload", "The body is not UTF-8 text.") from None
    try:
        verify_signature(payload, header, secrets, SIGNATURE_TOLERANCE_SECONDS)
    except InvalidSignature:
        raise ApiError(
            400, "invalid_signature", "The Stripe-Signature does not match this body or is stale."
        ) from None

    # A signature proves who sent the body, not that it is sane: any JSON Stripe would never
    # send (nesting deep enough to exhaust the parser's stack, NaN, numbers out of range,
    # unpaired surrogate escapes, which no API call or log line could encode) is refused.
    try:
        event = _EVENT_JSON.decode(text)
        if _SURROGATE_ESCAPE.search(text):
            # Only a `\uD800`-`\uDFFF` escape can make a string no encoder takes (a raw
            # surrogate cannot survive the UTF-8 decoding above): the costly round trip is
            # paid only by a body that has one, paired or not (or a backslash that looks so).
            json.dumps(event, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        raise ApiError(
            400, "invalid_payload", "The body is not valid JSON for a Stripe event."
        ) from None
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


@documented(
    "POST",
    "Stripe's webhook: each handled event is a hint to re-fetch its object from Stripe",
    "stripe",
    {
        200: Answer("Recorded, or deliberately ignored.", WebhookReceived),
        400: error("`missing_signature`, `invalid_signature`, `invalid_payload`."),
        413: TOO_LARGE,
        503: error("`temporarily_unavailable`: a transient failure; Stripe retries."),
    },
    body=StripeEvent,
    headers=(Header("Stripe-Signature", "Stripe's signature of the raw body."),),
)
async def stripe_webhook(request: Request) -> Response:
    started = time.perf_counter()
    outcome = "error"
    try:
        response, outcome = await _handle(request)
        return response
    finally:
        WEBHOOK_OUTCOMES.labels(outcome=outcome).inc()
        WEBHOOK_LATENCY.observe(time.perf_counter() - started)


async def _handle(request: Request) -> tuple[Response, str]:
    svc = services(request)
    try:
        payload = await read_limited(request)
        event = verify(payload, request.headers.get("stripe-signature"), svc.webhook_secrets)
    except ApiError as error:
        log_once(request.scope, log, "webhook_refused", code=error.code)
        return error_response(error.status, error.code, error.message), error.code
    event_type = event["type"]
    object_id = event["data"]["object"].get("id")
    structlog.contextvars.bind_contextvars(stripe_event_id=event["id"], event_type=event_type)
    if event_type not in HANDLED:
        log_once(request.scope, log, "webhook_ignored", reason="unhandled_type")
        return _received(), "ignored"
    if not isinstance(object_id, str) or not object_id:
        log_once(request.scope, log, "anomaly", "warning", kind="event_without_object")
        return _received(), "ignored"
    about = "session_id" if event_type.startswith("checkout.session.") else "object_id"
    structlog.contextvars.bind_contextvars(**{about: object_id})
    try:
        # The decision re-fetches the object from Stripe: its thread is a Stripe-bound one.
        # IDEMPOTENT: the event is only a hint; the decision records what Stripe says of the
        # object now, keyed by it (one order per session, its id derived from the session's;
        # a refund followed by its Stripe id), so a repeat after a commit in doubt finds it
        # recorded and changes nothing. Stripe itself redelivers every event, so this must hold
        # anyway.
        result: Outcome = await calling_stripe(
            request,
            _decide_and_wait,
            svc,
            event_type,
            object_id,
            f"stripe:{event['id']}",
            retry=IDEMPOTENT,
            budget=WEBHOOK_BUDGET_SECONDS,
        )
    except (PaymentProviderUnavailable, PaymentProviderRefused) as error:
        # Only "no such object" is a permanent answer (the decision gets None for it). A
        # rejected or restricted key, rate limiting, a 5xx: Stripe must retry, or a paid
        # order could be lost.
        STRIPE_FETCH_FAILURES.labels(kind=type(error.__cause__ or error).__name__).inc()
        log_once(request.scope, log, "webhook_retry_later", "warning", error=str(error))
        return _unavailable(), "retry_later"
    except (StoreUnavailable, ConcurrentModification) as error:
        log_once(request.scope, log, "webhook_retry_later", "warning", error=str(error))
        return _unavailable(), "retry_later"
    except DomainError as error:
        # The session's state does not allow what this event asks; retrying will not help.
        log_once(request.scope, log, "anomaly", "error", kind=error.code, error=str(error))
        ANOMALIES.labels(kind=error.code).inc()
        return _received(), "anomaly"
    if result.anomaly:
        ANOMALIES.labels(kind=result.anomaly).inc()
    log_once(
        request.scope,
        log,
        "webhook_handled",
        outcome=result.status,
        order_id=str(result.order_id or ""),
    )
    return _received(), result.status


def _decide_and_wait(svc: Services, event_type: str, object_id: str, cause: str) -> Outcome:
    result = svc.stripe_events.handle(event_type, object_id, cause)
    if result.status != IGNORED and result.session_id:
        # Reading your own write: the status query waits until the read model has applied
        # this session's own events (not everyone else's), so the storefront's next poll
        # shows them.
        svc.order_status.wait_for(result.session_id)
    return result


# The same answer every time: rendered (and checked against its documented shape) once.
_RECEIVED_BODY = JSONResponse(checked(WebhookReceived, {"received": True})).body


def _received() -> Response:
    return Response(_RECEIVED_BODY, media_type="application/json")


def _unavailable() -> Response:
    return error_response(
        503, "temporarily_unavailable", "Could not record the event yet; Stripe will retry."
    )


routes = [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
