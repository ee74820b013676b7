"""The stand-in as one object: its ASGI app, and the controls a test or a developer uses."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette

from stripe_standin.api.delays import Delay
from stripe_standin.api.failures import InjectedFailure
from stripe_standin.api.intents import IntentEndpoints
from stripe_standin.api.payments import PaymentEndpoints
from stripe_standin.api.routes import Api, ApiLimits
from stripe_standin.api.sessions import SessionEndpoints
from stripe_standin.clock import Clock
from stripe_standin.pay_page.routes import PayPage
from stripe_standin.state import views
from stripe_standin.state.world import World
from stripe_standin.vocabulary import CUSTOMER_EMAIL
from stripe_standin.webhooks import EVENT_TYPES, Webhooks

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)


class StripeStandIn:
    """In-memory Stripe Checkout, PaymentIntents, Charges, Refunds and Disputes.

    Clients talk to it through the real stripe SDK, exactly as they talk to Stripe:
    ``stripe.StripeClient(api_key, base_addresses={"api": BASE})`` where BASE is wherever
    :attr:`app` is served (its own port, or mounted under a path prefix such as ``/_stripe``
    inside another Starlette app; the SDK simply concatenates BASE and ``/v1/...``). Only
    `api_key` is accepted.

    Attributes a test may change at any time: `webhook_url` (None: events are recorded as
    undelivered), `webhook_secret`, `public_base_url` (where `app` is served, for the pay
    page links), `delay_seconds` (every /v1 call sleeps this long first; `delay_calls` slows
    down only some), `retry_delays`
    (pauses between webhook attempts; attempts = len + 1), `delivery_timeout` (seconds per
    webhook POST), `refund_status` ("succeeded", or "pending": new refunds wait for
    `settle_refund`).

    Time is the stand-in's own (`now`): the real time until a test moves it on with
    `advance_clock`, by which sessions expire at their `expires_at` and card holds
    (`payment_intent_data[capture_method]=manual`) lapse after seven days.

    Every collection is bounded by a `max_*` keyword, so that a long-running stand-in (as
    `ledger serve` mounts one) holds a bounded amount of memory: the oldest entries go first.
    """

    def __init__(
        self,
        *,
        api_key: str,
        webhook_url: str | None,
        webhook_secret: str,
        public_base_url: str,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        delivery_timeout: float = 10.0,
        max_request_bytes: int = 1_048_576,
        max_logged_params_bytes: int = 16_384,
        max_logged_requests: int = 1_000,
        max_idempotency_keys: int = 10_000,
        max_idempotent_request_bytes: int = 65_536,
        max_events: int = 5_000,
        max_deliveries: int = 10_000,
        max_sessions: int = 10_000,
        max_refunds: int = 20_000,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.public_base_url = public_base_url.rstrip("/")
        self.retry_delays: tuple[float, ...] = tuple(retry_delays)
        self.delivery_timeout = delivery_timeout
        self.delay_seconds: float = 0.0

        # One lock for everything: the API, the pay page, the delivery thread and the controls.
        self._cv = threading.Condition(threading.RLock())
        clock = Clock()
        self._webhooks = Webhooks(
            self._cv,
            self,
            clock,
            max_events=max_events,
            max_deliveries=max_deliveries,
            on_tick=lambda: self._world.meet_deadlines(),
        )
        self._world = world = World.make(
            clock, self._webhooks.emit, max_sessions=max_sessions, max_refunds=max_refunds
        )
        store = world.store
        self._api = Api(
            cv=self._cv,
            sessions=SessionEndpoints(
                store, world.checkout, self, clock, on_session=self._webhooks.start
            ),
            intents=IntentEndpoints(store, world.authorizations),
            payments=PaymentEndpoints(store, world.refunds),
            settings=self,
            api_key=api_key,
            limits=ApiLimits(
                max_request_bytes=max_request_bytes,
                max_logged_params_bytes=max_logged_params_bytes,
                max_logged_requests=max_logged_requests,
                max_idempotency_keys=max_idempotency_keys,
                max_idempotent_request_bytes=max_idempotent_request_bytes,
            ),
        )
        pay_page = PayPage(cv=self._cv, world=world, max_request_bytes=max_request_bytes)
        self.app = Starlette(routes=[*self._api.routes, *pay_page.routes])

    @property
    def refund_status(self) -> str:
        return self._world.refunds.status

    @refund_status.setter
    def refund_status(self, status: str) -> None:
        with self._cv:
            self._world.refunds.status = status

    # ---------------------------------------------------------------- inspection

    def sessions(self) -> list[dict[str, Any]]:
        """Copies of every checkout.session, in creation order, with all `line_items`."""
        with self._cv:
            self._world.meet_deadlines()
            return views.sessions(self._world.store)

    def payment_intents(self) -> list[dict[str, Any]]:
        """Copies of every PaymentIntent, in creation order."""
        with self._cv:
            self._world.meet_deadlines()
            return views.intents(self._world.store)

    def charges(self) -> list[dict[str, Any]]:
        """Copies of every charge, in creation order."""
        with self._cv:
            return views.charges(self._world.store)

    def refunds(self) -> list[dict[str, Any]]:
        """Copies of every refund object plus the `idempotency_key` it was created with
        (None for a refund made in the Dashboard)."""
        with self._cv:
            return views.refunds(self._world.store)

    def disputes(self) -> list[dict[str, Any]]:
        """Copies of every dispute, in creation order."""
        with self._cv:
            return views.disputes(self._world.store)

    def requests(self) -> list[dict[str, Any]]:
        """The latest /v1 calls: method, path, params (``{"_omitted": ...}`` for a large body),
        idempotency_key, status, replayed, request_id, failure_injected, at."""
        with self._cv:
            return copy.deepcopy(list(self._api.log))

    def events(self) -> list[dict[str, Any]]:
        """The latest events the stand-in emitted (delivered or not), in order."""
        with self._cv:
            return copy.deepcopy(list(self._webhooks.events))

    def deliveries(self) -> list[dict[str, Any]]:
        """One record per webhook attempt, the latest ones: event_id, type, object_id (the
        event's `data.object.id`), session_id (of the checkout the object belongs to),
        attempt, status (the HTTP status of the answer, None on a connection error), error,
        outcome ("delivered" | "retrying" | "failed" | "undelivered" when webhook_url was
        None), url, at."""
        with self._cv:
            return copy.deepcopy(list(self._webhooks.deliveries))

    def payment_intent_of(self, session_id: str) -> str | None:
        """The id of the session's PaymentIntent (None before checkout completes)."""
        with self._cv:
            return self._world.store.control_session(session_id).intent

    def charge_of(self, session_id: str) -> str | None:
        """The id of the session's successful charge (None while unpaid)."""
        with self._cv:
            return self._world.store.control_session(session_id).charge

    def wait_for_deliveries(self, n: int, timeout: float = 10) -> None:
        """Block until at least `n` events are settled: delivered (2xx answer), given up after
        the last attempt, or recorded undelivered. Raises TimeoutError (with the log) if not."""
        self._webhooks.wait_for(n, timeout)

    # ---------------------------------------------------------------- control
    # Each raises KeyError for an unknown id and ValueError for a change that the object's
    # state does not allow.

    def complete(self, session_id: str, outcome: str, email: str = CUSTOMER_EMAIL) -> None:
        """Do what a pay page button does: "pay" | "pay_later" | "async_succeed" |
        "async_fail" | "expire"; `email` is the customer's, for the first two."""
        with self._cv:
            self._world.checkout.apply_outcome(session_id, outcome, None, email)

    def now(self) -> int:
        """The stand-in's clock, in Unix seconds: what its objects and events are stamped with
        and its deadlines measured by. The real time, unless `advance_clock` moved it on."""
        return self._world.clock.now()

    def advance_clock(self, seconds: float) -> None:
        """Move the stand-in's clock on, to test what happens later without waiting: before
        this returns, every open session whose `expires_at` has passed expires (emits
        checkout.session.expired) and every card hold older than seven days lapses."""
        with self._cv:
            self._world.clock.advance(seconds)
            self._world.meet_deadlines()

    def lapse_authorization(self, session_id: str) -> None:
        """Stripe gives up the session's uncaptured card hold, as it does after seven days:
        the PaymentIntent is `canceled` with cancellation_reason "automatic", its amount
        released; emits payment_intent.canceled, charge.expired."""
        with self._cv:
            self._world.authorizations.lapse(session_id)

    def dashboard_refund(self, session_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund `amount` (all that is left when None) of the session's payment as a person
        does in Stripe's Dashboard (no metadata, no idempotency key); emits refund.created,
        charge.refunded."""
        with self._cv:
            return self._world.refunds.dashboard_refund(session_id, amount)

    def hold_refunds(self, session_id: str, hold: bool = True) -> None:
        """Whether new refunds of this session's payment stay pending, whatever
        `refund_status` says."""
        with self._cv:
            self._world.refunds.hold(session_id, hold)

    def settle_refund(
        self, refund_id: str, outcome: str, failure_reason: str = "expired_or_canceled_card"
    ) -> dict[str, Any]:
        """A pending refund "succeeded" (emits refund.updated), or a pending or succeeded one
        "failed" (as Stripe's may, even after succeeding: it gets `failure_reason` and no
        longer counts as refunded; emits refund.failed, refund.updated)."""
        with self._cv:
            return self._world.refunds.settle(refund_id, outcome, failure_reason)

    def open_dispute(self, session_id: str, reason: str = "fraudulent") -> dict[str, Any]:
        """The customer disputes the session's payment: a dispute in `needs_response`, the
        charge `disputed`, refunds refused; emits charge.dispute.created."""
        with self._cv:
            return self._world.disputes.open(session_id, reason)

    def close_dispute(self, dispute_id: str, outcome: str) -> dict[str, Any]:
        """The bank decides: "won" or "lost"; emits charge.dispute.closed."""
        with self._cv:
            return self._world.disputes.close(dispute_id, outcome)

    def fail_next(
        self,
        count: int,
        status: int = 500,
        *,
        after_processing: bool = False,
        path: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """The next `count` /v1 calls (with `path`: those whose path starts with it, e.g.
        "/v1/refunds"; other calls pass) answer `status` with a Stripe-shaped error body,
        whose `code` and `type` may be given (by default, what Stripe says with that status).

        With `after_processing=True` each call is carried out first (state changes, the result
        is saved for its Idempotency-Key) and only the answer is replaced: a lost response.
        """
        failure = InjectedFailure(status, after_processing, path, code, error_type)
        with self._cv:
            self._api.failures.add(count, failure)

    def delay_calls(
        self, seconds: float, *, path: str | None = None, payment_intent: str | None = None
    ) -> None:
        """The /v1 calls under `path` (e.g. "/v1/refunds") and about `payment_intent` (in
        the path, as a capture names it, or the `payment_intent` parameter, as a refund does)
        sleep `seconds` before they are carried out; other calls answer as usual. Stripe hung
        on one payment: the client times out, and the call still happens when it wakes.
        `seconds=0` lifts the delay given with the same `path` and `payment_intent`, and the
        calls sleeping in it go on at once."""
        delays = self._api.delays
        delays.lift(path, payment_intent)
        if seconds > 0:
            delays.add(Delay(seconds, path, payment_intent))

    def build_event(
        self, type: str, object_id: str, *, timestamp: int | None = None
    ) -> tuple[bytes, str]:
        """(payload, Stripe-Signature value) of an event of `type` about the object as it is
        now (a session for checkout.session.*, a refund for refund.*, a charge for
        charge.refunded, a dispute for charge.dispute.*), signed with `webhook_secret`.
        Not recorded and not delivered. Events about PaymentIntents are only ever emitted."""
        kind = EVENT_TYPES.get(type)
        if kind is None:
            raise ValueError(f"not an event type the stand-in emits: {type}")
        if kind not in views.BUILDABLE:
            raise ValueError(f"build_event does not build {type} events")
        if views.kind_of(object_id) != kind:
            raise ValueError(f"a {type} event is about a {kind}, not {object_id}")
        with self._cv:
            obj = views.object_of(self._world.store, kind, object_id)
            return self._webhooks.build(type, obj, timestamp)

    def close(self) -> None:
        """Stop the webhook delivery thread (pending deliveries are dropped)."""
        self._webhooks.close()
