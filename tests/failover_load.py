"""A shop's traffic against `ledger serve` while the database fails over, shared by the failover
tests and `bench/failover.py`: Stripe delivering webhooks, customers checking out through the
HTTP API, storefronts polling their order's status; every answer recorded with its kind.

- webhooks: `senders` threads deliver the sessions' `checkout.session.completed` round and
  round (each session again and again, as Stripe retries), backing off a little after a non-200.
- checkouts: `checkouts` threads each open a cart of one `checkout_sku`, check it out, pay at
  the stand-in, and hand the session to the webhook senders; a step answered otherwise than it
  should is tried again after a pause, as a storefront would (a retried cart or checkout may
  leave one more cart or unpaid session behind: allowed, and never paid).
- carts: `carts` threads open a cart and set its line, again and again, never checking out.
- status polls: `pollers` threads ask for each session's order status in turn.
- catalog: `catalog` threads, the merchant's, list `catalog_sku` again and again at one of two
  prices (PUT) and receive one unit of it each time (POST .../stock): each may run again
  (web.routes.catalog), so a switchover answers none of them with an error either.

Also the moment writes are accepted again (`WritesWatch`), polled from outside the ledger.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import psycopg

from ledger.storage import Database
from stripe_standin import StripeStandIn
from tests.test_faults import ADMIN_HEADERS, WEBHOOK_ANSWER_BOUND_SECONDS, Answer
from tests.waiting import wait_until

WEBHOOK, CART, LINE, CHECKOUT, POLL = "webhook", "cart", "line", "checkout", "poll"
PRODUCT, STOCK = "product", "stock"
# Pause after an answer that was not a success, as Stripe and storefronts back off; it also
# leaves the CPU to the rest while the store is away.
BACKOFF_SECONDS = 0.05


@dataclass(frozen=True)
class Sent:
    """One request and its answer: what kind, about what (a session, a cart), when."""

    kind: str
    about: str
    answer: Answer

    @property
    def ok(self) -> bool:
        return self.answer.status is not None and 200 <= self.answer.status < 300

    @property
    def latency(self) -> float:
        return self.answer.ended - self.answer.started


def add_checkout_product(api: httpx.Client, sku: str, units: int) -> None:
    """A product with `units` in stock, for the checkouts in flight."""
    product = {"name": "Poster", "unit_amount": 1500, "currency": "usd"}
    r = api.put(f"/api/products/{sku}", json=product, headers=ADMIN_HEADERS)
    assert r.status_code in (200, 201), r.text
    r = api.post(f"/api/products/{sku}/stock", json={"quantity": units}, headers=ADMIN_HEADERS)
    assert r.status_code == 200, r.text


def orders_placed(database: Database) -> set[str]:
    """The ids of the orders the event log holds."""
    with database.connect() as conn:
        rows = conn.execute(
            "SELECT DISTINCT originator_id FROM ledger_events WHERE topic LIKE %s",
            ("%Order.OrderPlaced",),
        ).fetchall()
    return {str(row[0]) for row in rows}


def accepts_writes(url: str) -> bool:
    """Whether some node takes a write now: a transaction with an id, committed (with a
    synchronous standby configured, the commit waits for it, as the ledger's would)."""
    try:
        with psycopg.connect(url, connect_timeout=1, autocommit=True) as conn:
            conn.execute("SELECT txid_current()")
    except psycopg.Error:
        return False
    return True


class WritesWatch:
    """Polls, every `interval` seconds from a thread, whether the cluster takes a write: when
    writes were first refused, and first taken again after that."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url, self.interval = url, interval
        self.refused_at: float | None = None
        self.accepted_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            if not accepts_writes(self.url):
                if self.refused_at is None:
                    self.refused_at = asked
            elif self.refused_at is not None and self.accepted_at is None:
                self.accepted_at = asked
            self._stop.wait(self.interval)

    def wait_for_writes(self, timeout: float, what: Callable[[], object]) -> float:
        """The moment writes were taken again after being refused (waits for it)."""
        wait_until(lambda: self.accepted_at is not None, timeout, what, interval=0.02)
        assert self.accepted_at is not None
        return self.accepted_at

    def __enter__(self) -> WritesWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class ShopLoad:
    """The traffic described in the module's docstring, from threads, until the `with` ends."""

    def __init__(
        self,
        stand_in: StripeStandIn,
        base: str,
        sessions: list[str],
        *,
        senders: int,
        checkouts: int = 0,
        carts: int = 0,
        pollers: int = 0,
        checkout_sku: str = "",
        catalog: int = 0,
        catalog_sku: str = "",
    ) -> None:
        assert not (checkouts or carts) or checkout_sku, "carts need a product to buy"
        assert not catalog or catalog_sku, "the merchant needs a product to change"
        self.stand_in, self.base, self.checkout_sku = stand_in, base, checkout_sku
        self.catalog_sku = catalog_sku
        self.sent: list[Sent] = []
        # Every session delivered round and round: those given, then those checked out here.
        self.sessions = list(sessions)
        self.checked_out: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._turn = 0
        self._poll_turn = 0
        self._threads = [
            threading.Thread(target=target, daemon=True)
            for target, count in (
                (self._webhooks, senders),
                (self._checkouts, checkouts),
                (self._carts, carts),
                (self._catalog, catalog),
            )
            for _ in range(count)
        ] + [threading.Thread(target=self._polls, daemon=True) for _ in range(pollers)]

    # ---- the traffic ----------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        # Longer than any answer may take: a request that gets none is recorded as such.
        return httpx.Client(base_url=self.base, timeout=WEBHOOK_ANSWER_BOUND_SECONDS + 10)

    def _send(self, kind: str, about: str, request: Callable[[], httpx.Response]) -> Any:
        """Sends, records the answer; its JSON body on success, else None (after a pause)."""
        started = time.monotonic()
        body: Any = None
        try:
            response = request()
            status: int | None = response.status_code
            error = "" if response.is_success else response.text[:200]
            if response.is_success:
                body = response.json()
        except Exception as e:  # no answer: recorded, and the test fails
            status, error = None, f"{type(e).__name__}: {e}"
        sent = Sent(kind, about, Answer(started, time.monotonic(), status, error))
        self.sent.append(sent)
        if not sent.ok:
            time.sleep(BACKOFF_SECONDS)
            return None
        return body if body is not None else {}

    def _next(self, poll: bool = False) -> str:
        with self._lock:
            if poll:
                self._poll_turn += 1
                return self.sessions[self._poll_turn % len(self.sessions)]
            self._turn += 1
            return self.sessions[self._turn % len(self.sessions)]

    def _webhooks(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                session_id = self._next()
                self._send(
                    WEBHOOK, session_id, partial(_delivery, client, self.stand_in, session_id)
                )

    def _polls(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                session_id = self._next(poll=True)
                poll = partial(client.get, f"/api/checkout-sessions/{session_id}/order")
                self._send(POLL, session_id, poll)

    def _until_done(self, kind: str, about: str, request: Callable[[], httpx.Response]) -> Any:
        """A storefront's step, tried again until it succeeds (None once the load stops)."""
        while not self._stop.is_set():
            body = self._send(kind, about, request)
            if body is not None:
                return body
        return None

    def _filled_cart(self, client: httpx.Client) -> str | None:
        """A new cart holding one unit (its id; None once the load stops)."""
        cart = self._until_done(CART, "", partial(client.post, "/api/carts", json={}))
        if cart is None:
            return None
        cart_id: str = cart["cart_id"]
        line = partial(
            client.put, f"/api/carts/{cart_id}/items/{self.checkout_sku}", json={"quantity": 1}
        )
        return None if self._until_done(LINE, cart_id, line) is None else cart_id

    def _carts(self) -> None:
        """Carts opened and filled, never checked out: each step may run again (see
        `web.store_calls`), so a switchover answers none of them with an error."""
        with self._client() as client:
            while not self._stop.is_set() and self._filled_cart(client) is not None:
                pass

    def _checkouts(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                cart_id = self._filled_cart(client)
                if cart_id is None:
                    return
                checkout = partial(client.post, f"/api/carts/{cart_id}/checkout")
                created = self._until_done(CHECKOUT, cart_id, checkout)
                if created is None:
                    return
                session_id = created["checkout_session_id"]
                self.stand_in.complete(session_id, "pay")
                with self._lock:
                    self.sessions.append(session_id)
                    self.checked_out.append(session_id)

    def _catalog(self) -> None:
        path = f"/api/products/{self.catalog_sku}"
        with self._client() as client:
            for turn in itertools.count():
                if self._stop.is_set():
                    return
                product = {"name": "Frame", "unit_amount": 900 + turn % 2, "currency": "usd"}
                put = partial(client.put, path, json=product, headers=ADMIN_HEADERS)
                self._send(PRODUCT, self.catalog_sku, put)
                receive = partial(
                    client.post, f"{path}/stock", json={"quantity": 1}, headers=ADMIN_HEADERS
                )
                self._send(STOCK, self.catalog_sku, receive)

    # ---- what happened --------------------------------------------------------------------

    def of(self, kind: str | None = None) -> list[Sent]:
        return [s for s in list(self.sent) if kind is None or s.kind == kind]

    def succeeded_since(self, since: float, kind: str = WEBHOOK) -> int:
        return sum(1 for s in self.of(kind) if s.ok and s.answer.started > since)

    def wait_for_successes(self, since: float, count: int, timeout: float = 30) -> None:
        """Until `count` webhooks sent after `since` were answered 200."""
        wait_until(
            lambda: self.succeeded_since(since) >= count,
            timeout,
            lambda: Counter(
                (s.kind, s.answer.status) for s in self.sent if s.answer.started > since
            ),
        )

    def first_successes_after(self, moment: float) -> dict[str, float]:
        """Per kind, seconds from `moment` to the end of the first success sent after it."""
        found: dict[str, float] = {}
        for s in self.of():
            if s.ok and s.answer.started > moment:
                after = round(s.answer.ended - moment, 2)
                found[s.kind] = min(found.get(s.kind, after), after)
        return dict(sorted(found.items()))

    def failures(self) -> list[Sent]:
        return [s for s in self.of() if not s.ok]

    def in_flight_at(self, moment: float) -> int:
        """How many requests were waiting for their answer at `moment`."""
        return sum(1 for s in self.of() if s.answer.started <= moment <= s.answer.ended)

    def overlapping(self, start: float, end: float) -> list[Sent]:
        """The requests under way at some point between `start` and `end`."""
        return [s for s in self.of() if s.answer.started <= end and s.answer.ended >= start]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per kind, how many answers of each status ("none": no answer)."""
        counts: dict[str, Counter[str]] = {}
        for s in self.of():
            counts.setdefault(s.kind, Counter())[str(s.answer.status or "none")] += 1
        return {kind: dict(c) for kind, c in sorted(counts.items())}

    def __enter__(self) -> ShopLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WEBHOOK_ANSWER_BOUND_SECONDS + 15)
        assert not any(thread.is_alive() for thread in self._threads)


def _delivery(client: httpx.Client, stand_in: StripeStandIn, session_id: str) -> httpx.Response:
    """One signed `checkout.session.completed`, posted as Stripe posts it."""
    payload, signature = stand_in.build_event("checkout.session.completed", session_id)
    return client.post(
        "/webhooks/stripe",
        content=payload,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
