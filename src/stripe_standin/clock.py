"""The stand-in's clock: the time it stamps on objects and events and that its deadlines
(a session's `expires_at`, an authorization's seven days) are measured by.

It is the real time until a test moves it on, so that what happens after half an hour or a
week can be tested at once instead of waited for. It only moves forward, as time does: an
object never sees its own past come back.
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> int:
        """Seconds since the epoch, as Stripe's timestamps count them."""
        return int(time.time() + self._offset)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"the clock only moves forward, not by {seconds} seconds")
        self._offset += seconds
