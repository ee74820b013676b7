"""The storefront's status poll as a second path to fulfilment: when Stripe's webhook is late,
the poll has Stripe asked about the session (Stripe's fulfillment guide recommends both paths).

The poll itself answers from the read model at once; the look at Stripe runs in the
background, in a small pool of its own, so that a slow or hung Stripe delays no answer and
holds no thread the store's reads need. A later poll shows what Stripe said.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog

from ledger.application import ConcurrentModification
from ledger.checkout import Checkout
from ledger.payments import PaymentProviderRefused, PaymentProviderUnavailable

log = structlog.get_logger("web.order_status_poll")

# Looks at Stripe under way at once. Each takes one Stripe round trip (two while a delayed
# payment is pending) and a commit: at 250 ms per call, 16 carry about 60 a second, enough for
# several hundred customers on the success page, each asking every few seconds at most.
REFRESH_CONCURRENCY = 16
# Looks waiting for one of those. Past this (Stripe hung, a crowd polling), a poll schedules
# nothing: its session is asked about on a later poll, and the webhook path goes on meanwhile.
MAX_PENDING_REFRESHES = 1024


class OrderStatusReader(Protocol):
    def get(self, session_id: str) -> dict[str, Any] | None: ...
    def wait_for(self, session_id: str) -> None: ...


class PollFulfillment:
    """Asks Stripe about a session for the status poll, in the background: at most every few
    seconds per session, one look per session at a time, a bounded number at once."""

    def __init__(
        self,
        checkout: Checkout,
        min_interval: float = 3.0,
        remember: int = 10_000,
        *,
        concurrency: int = REFRESH_CONCURRENCY,
        max_pending: int = MAX_PENDING_REFRESHES,
    ) -> None:
        self.checkout = checkout
        self.min_interval = min_interval
        self.remember = remember
        self.max_pending = max_pending
        self._last: OrderedDict[str, float] = OrderedDict()
        # Sessions with a look queued or running: a poll meanwhile schedules no second one.
        self._pending: set[str] = set()
        self._closed = False
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="poll-refresh")

    @property
    def in_flight(self) -> int:
        """Looks at Stripe queued or running."""
        with self._lock:
            return len(self._pending)

    def _due(self, session_id: str) -> bool:
        """Whether the session was not asked about recently; if so, it counts as asked now.
        Call with the lock held."""
        now = time.monotonic()
        last = self._last.get(session_id)
        if last is not None and now - last < self.min_interval:
            return False
        self._last[session_id] = now
        self._last.move_to_end(session_id)
        while len(self._last) > self.remember:
            self._last.popitem(last=False)
        return True

    def request_refresh(self, session_id: str, cause: str) -> bool:
        """Schedules a look at Stripe about the session, unless one is under way, it was asked
        about recently, or too many are waiting. True when it scheduled one. Never blocks on
        Stripe or the store: the event loop may call it."""
        with self._lock:
            if (
                self._closed
                or session_id in self._pending
                or len(self._pending) >= self.max_pending
                or not self._due(session_id)
            ):
                return False
            self._pending.add(session_id)
            # Under the lock, so that `close` cannot shut the pool between the check and this.
            # The request's context (its log fields) goes along to the thread.
            context = contextvars.copy_context()
            self._executor.submit(context.run, self._refresh, session_id, cause)
        return True

    def _refresh(self, session_id: str, cause: str) -> None:
        try:
            self.checkout.fulfill_checkout(session_id, cause)
        except (PaymentProviderUnavailable, PaymentProviderRefused, ConcurrentModification):
            # Stripe did not say, or a webhook was deciding the same session at that moment:
            # the webhook path (or a later poll) records what Stripe says.
            pass
        except Exception as error:
            # A store outage, say: nobody waits for this look, and the next one (or the
            # webhook) decides the session.
            log.warning("poll_refresh_failed", session_id=session_id, error=repr(error))
        finally:
            with self._lock:
                self._pending.discard(session_id)

    def close(self) -> None:
        """Lets the looks under way end (the SDK's timeouts bound them), drops those queued."""
        with self._lock:
            self._closed = True
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor.shutdown(wait=True)
