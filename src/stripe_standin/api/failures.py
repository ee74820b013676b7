"""Failures a test injects: Stripe-shaped errors answered instead of (or after) a call."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from stripe_standin.errors import StripeError

_SIMULATED = "(simulated by the Stripe stand-in)"
# What an injected failure of each status says by default: (type, code, message).
_INJECTED: dict[int, tuple[str, str | None, str]] = {
    401: ("invalid_request_error", None, f"Invalid API Key provided: sk_test_**** {_SIMULATED}."),
    402: ("card_error", "card_declined", f"Your card was declined {_SIMULATED}."),
    403: (
        "invalid_request_error",
        None,
        "The provided key 'rk_test_****' does not have the required permissions for this "
        f"endpoint {_SIMULATED}.",
    ),
    429: (
        "invalid_request_error",
        "rate_limit",
        f"Too many requests hit the API too quickly {_SIMULATED}.",
    ),
}


@dataclass(frozen=True)
class InjectedFailure:
    status: int
    after_processing: bool
    path: str | None  # only calls whose path starts with it; None: any call
    code: str | None
    error_type: str | None

    def error(self) -> StripeError:
        if self.status in _INJECTED:
            type_, code, message = _INJECTED[self.status]
        elif self.status >= 500:
            type_, code, message = "api_error", None, f"An unknown error occurred {_SIMULATED}."
        else:
            type_, code, message = "invalid_request_error", None, f"Request refused {_SIMULATED}."
        return StripeError(
            self.status, message, type_=self.error_type or type_, code=self.code or code
        )


class FailureQueue:
    """Failures to answer instead of (or after) carrying out the next matching calls."""

    def __init__(self) -> None:
        self._queue: deque[InjectedFailure] = deque()

    def add(self, count: int, failure: InjectedFailure) -> None:
        self._queue.extend([failure] * count)

    def take(self, path: str) -> InjectedFailure | None:
        for failure in self._queue:
            if failure.path is None or path.startswith(failure.path):
                self._queue.remove(failure)
                return failure
        return None
