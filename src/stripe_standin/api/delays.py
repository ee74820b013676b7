"""Calls a test makes slow on purpose: all of them (`delay_seconds`), or only those about one
PaymentIntent or under one path, as when Stripe hangs on one payment and answers the rest."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

# How often a sleeping call checks whether its delay was lifted meanwhile.
_CHECK_SECONDS = 0.05


@dataclass(frozen=True)
class Delay:
    seconds: float
    path: str | None  # only calls whose path starts with it; None: any path
    payment_intent: str | None  # only calls about that PaymentIntent; None: any

    def matches(self, path: str, payment_intent: str | None) -> bool:
        if self.path is not None and not path.startswith(self.path):
            return False
        return self.payment_intent is None or self.payment_intent == payment_intent


class Delays:
    """The delays in force; a call sleeps for the first that matches it, and wakes early when
    that delay is lifted (`lift`), so a test ends a hang when it wants."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delays: list[Delay] = []

    def add(self, delay: Delay) -> None:
        with self._lock:
            self._delays.append(delay)

    def lift(self, path: str | None, payment_intent: str | None) -> None:
        """Ends the delays given with that path and PaymentIntent; calls sleeping in them go
        on at once."""
        with self._lock:
            self._delays = [
                d for d in self._delays if (d.path, d.payment_intent) != (path, payment_intent)
            ]

    def _in_force(self, delay: Delay) -> bool:
        with self._lock:
            return delay in self._delays

    async def sleep(
        self, path: str, path_params: dict[str, str], body: bytes | None, query: str
    ) -> None:
        """Sleeps as long as the first delay matching the call says (or until it is lifted).
        The PaymentIntent is in the path (`/v1/payment_intents/{id}/...`) or a parameter
        (`payment_intent`, as a refund names it)."""
        with self._lock:
            if not self._delays:
                return
        intent = path_params.get("intent_id") or _param(query, body, "payment_intent")
        with self._lock:
            delay = next((d for d in self._delays if d.matches(path, intent)), None)
        if delay is None:
            return
        deadline = time.monotonic() + delay.seconds
        while self._in_force(delay) and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(_CHECK_SECONDS, left))


def _param(query: str, body: bytes | None, name: str) -> str | None:
    pairs = parse_qsl(query, keep_blank_values=True)
    if body:
        pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return next((value for key, value in pairs if key == name), None)
