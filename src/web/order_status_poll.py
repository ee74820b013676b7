"""The storefront's status poll as a second path to fulfilment: when Stripe's webhook is late,
the poll asks Stripe itself (Stripe's fulfillment guide recommends both paths)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from ledger.checkout import Checkout
from ledger.payments import PaymentProviderRefused, PaymentProviderUnavailable


class OrderStatusReader(Protocol):
    def get(self, session_id: str) -> dict[str, Any] | None: ...
    def wait_for(self, session_id: str) -> None: ...


class PollFulfillment:
    """Asks Stripe about a session for the status poll, at most every few seconds per session."""

    def __init__(self, checkout: Checkout, min_interval: float = 3.0, remember: int = 10_000):
        self.checkout = checkout
        self.min_interval = min_interval
        self.remember = remember
        self._last: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def due(self, session_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(session_id)
            if last is not None and now - last < self.min_interval:
                return False
            self._last[session_id] = now
            self._last.move_to_end(session_id)
            while len(self._last) > self.remember:
                self._last.popitem(last=False)
            return True

    def maybe_fulfill(self, session_id: str, cause: str) -> bool:
        """Asks Stripe about the session unless it was asked recently; True when it asked."""
        if not self.due(session_id):
            return False
        # On failure the webhook path records it; the poll only answers what is known.
        with contextlib.suppress(PaymentProviderUnavailable, PaymentProviderRefused):
            self.checkout.fulfill_checkout(session_id, cause)
        return True
