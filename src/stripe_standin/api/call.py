"""One API call as an endpoint sees it, and the shape of an endpoint.

Every endpoint runs with the stand-in's lock held and either returns the answer's JSON object
or raises :class:`StripeError`. An answer may be the store's own object, not a copy: the API
serialises it before it lets go of the lock, and a copy per retrieve would cost CPU for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stripe_standin.webhooks import RequestRef


@dataclass(frozen=True)
class Call:
    """One API request, as far as a handler needs it."""

    request_id: str
    idempotency_key: str | None

    @property
    def ref(self) -> RequestRef:
        return RequestRef(self.request_id, self.idempotency_key)


# (call, parameters, path parameters) → the answer's JSON object.
Handler = Callable[[Call, dict[str, Any], dict[str, str]], dict[str, Any]]
