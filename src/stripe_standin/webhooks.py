"""Events as Stripe sends them: built, signed, and delivered from a background thread with
retries, with a bounded record of what was emitted and of every delivery attempt."""

from __future__ import annotations

import copy
import hashlib
import heapq
import hmac
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from stripe_standin.clock import Clock
from stripe_standin.ids import new_id
from stripe_standin.vocabulary import API_VERSION

# Every event type the stand-in emits, with the kind of object it is about (its `data.object`).
EVENT_TYPES: dict[str, str] = {
    "checkout.session.completed": "checkout.session",
    "checkout.session.async_payment_succeeded": "checkout.session",
    "checkout.session.async_payment_failed": "checkout.session",
    "checkout.session.expired": "checkout.session",
    "payment_intent.amount_capturable_updated": "payment_intent",
    "payment_intent.succeeded": "payment_intent",
    "payment_intent.canceled": "payment_intent",
    "charge.captured": "charge",
    "charge.expired": "charge",
    "refund.created": "refund",
    "refund.updated": "refund",
    "refund.failed": "refund",
    "charge.refunded": "charge",
    "charge.dispute.created": "dispute",
    "charge.dispute.closed": "dispute",
}


def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for `payload`: ``t=<unix>,v1=<hex>[,v1=...]``.

    `secret` may hold several comma-separated `whsec_...` secrets (as while a secret is being
    rolled); each one contributes a `v1` value.
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    t = int(time.time()) if timestamp is None else int(timestamp)
    signed = f"{t}.".encode() + raw
    parts = [f"t={t}"]
    for one in (s.strip() for s in secret.split(",")):
        if one:
            digest = hmac.new(one.encode(), signed, hashlib.sha256).hexdigest()
            parts.append(f"v1={digest}")
    return ",".join(parts)


@dataclass(frozen=True)
class RequestRef:
    """The API request that caused an event (the event's `request` field); None for changes
    made outside the API (the pay page, the Dashboard, a control method)."""

    request_id: str | None
    idempotency_key: str | None


def make_event(
    type_: str, obj: dict[str, Any], ref: RequestRef | None, created: int
) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": copy.deepcopy(obj)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {
            "id": ref.request_id if ref else None,
            "idempotency_key": ref.idempotency_key if ref else None,
        },
        "type": type_,
    }


def event_payload(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()


class DeliverySettings(Protocol):
    """Where and how events go; read at each delivery, so a test may change them any time."""

    webhook_url: str | None
    webhook_secret: str
    retry_delays: tuple[float, ...]
    delivery_timeout: float


@dataclass(order=True)
class _Attempt:
    due: float
    seq: int
    event: dict[str, Any] = field(compare=False)
    url: str = field(compare=False)
    session_id: str | None = field(compare=False)
    attempt: int = field(compare=False, default=1)


class Webhooks:
    """The delivery side. Every method but `close` and `wait_for` expects `cv` to be held.

    `on_tick` runs (with `cv` held) on the delivery thread about once a second: the stand-in
    expires overdue sessions and lapses overdue card holds there.
    """

    def __init__(
        self,
        cv: threading.Condition,
        settings: DeliverySettings,
        clock: Clock,
        *,
        max_events: int,
        max_deliveries: int,
        on_tick: Callable[[], None],
    ) -> None:
        self._cv = cv
        self._settings = settings
        self._clock = clock  # for the events' `created`; signatures carry the real time
        self._on_tick = on_tick
        self._max_pending = max_events
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=max_deliveries)
        # A count, not len(self.deliveries): the records are bounded, waiting must still work.
        self.settled = 0
        self._queue: list[_Attempt] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next_tick = 0.0

    def emit(
        self, type_: str, obj: dict[str, Any], session_id: str | None, ref: RequestRef | None
    ) -> None:
        """Record an event about `obj` as it is now and queue its delivery."""
        event = make_event(type_, obj, ref, self._clock.now())
        self.events.append(event)
        url = self._settings.webhook_url
        if url is None or len(self._queue) >= self._max_pending:
            error = "webhook_url is not set" if url is None else "the delivery queue is full"
            self._record(event, session_id, attempt=0, status=None, error=error, url=url)
            self._settle()
            return
        heapq.heappush(
            self._queue, _Attempt(time.monotonic(), next(self._seq), event, url, session_id)
        )
        self.start()
        self._cv.notify_all()

    def build(self, type_: str, obj: dict[str, Any], timestamp: int | None) -> tuple[bytes, str]:
        payload = event_payload(make_event(type_, obj, None, self._clock.now()))
        return payload, sign_payload(payload, self._settings.webhook_secret, timestamp)

    def start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._loop, name="stripe-standin-webhooks", daemon=True
            )
            self._thread.start()

    def wait_for(self, n: int, timeout: float) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: self.settled >= n, timeout):
                raise TimeoutError(
                    f"only {self.settled} of {n} webhook events settled within {timeout}s; "
                    f"deliveries: {list(self.deliveries)}"
                )

    def close(self) -> None:
        """Stop the delivery thread (pending deliveries are dropped)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _settle(self) -> None:
        self.settled += 1
        self._cv.notify_all()

    def _record(
        self,
        event: dict[str, Any],
        session_id: str | None,
        *,
        attempt: int,
        status: int | None,
        error: str | None,
        url: str | None,
        outcome: str = "undelivered",
    ) -> None:
        self.deliveries.append(
            {
                "event_id": event["id"],
                "type": event["type"],
                "object_id": event["data"]["object"]["id"],
                "session_id": session_id,
                "attempt": attempt,
                "status": status,
                "error": error,
                "outcome": outcome,
                "url": url,
                "at": time.time(),
            }
        )

    def _loop(self) -> None:
        with httpx.Client(timeout=self._settings.delivery_timeout, trust_env=False) as client:
            while True:
                with self._cv:
                    while True:
                        if self._closed:
                            return
                        now = time.monotonic()
                        # Not at every wake-up: each emit wakes the thread, and a tick scans
                        # every session.
                        if now >= self._next_tick:
                            self._on_tick()
                            self._next_tick = now + 1.0
                        if self._queue and self._queue[0].due <= now:
                            job = heapq.heappop(self._queue)
                            break
                        wait = min(self._queue[0].due - now, 1.0) if self._queue else 1.0
                        self._cv.wait(wait)
                status, error = self._post(client, job)
                with self._cv:
                    delays = self._settings.retry_delays
                    if status is not None and 200 <= status < 300:
                        outcome = "delivered"
                    elif job.attempt <= len(delays):
                        outcome = "retrying"
                    else:
                        outcome = "failed"
                    self._record(
                        job.event,
                        job.session_id,
                        attempt=job.attempt,
                        status=status,
                        error=error,
                        url=job.url,
                        outcome=outcome,
                    )
                    if outcome == "retrying":
                        job.due = time.monotonic() + delays[job.attempt - 1]
                        job.seq = next(self._seq)
                        job.attempt += 1
                        heapq.heappush(self._queue, job)
                        self._cv.notify_all()
                    else:
                        self._settle()

    def _post(self, client: httpx.Client, job: _Attempt) -> tuple[int | None, str | None]:
        payload = event_payload(job.event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Accept": "*/*; q=0.5, application/xml",
            "Cache-Control": "no-cache",
            "Stripe-Signature": sign_payload(payload, self._settings.webhook_secret),
        }
        try:
            answer = client.post(job.url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return answer.status_code, None
