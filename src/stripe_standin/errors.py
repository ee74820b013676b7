"""Errors in Stripe's wire shape: ``{"error": {"type", "message", "code"?, "param"?}}``."""

from __future__ import annotations

import copy
from typing import Any


class StripeError(Exception):
    """An error answer in Stripe's shape.

    `saved`: kept as the result for its Idempotency-Key (Stripe saves results once an endpoint
    began executing, not for parameter validation).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        saved: bool = False,
        payment_intent: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.saved = saved
        # Stripe shows the PaymentIntent as it is when a call finds it in the wrong state.
        self.payment_intent = copy.deepcopy(payment_intent)

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            err["param"] = self.param
        if self.payment_intent is not None:
            err["payment_intent"] = self.payment_intent
        return {"error": err}


def no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    """Stripe's 404 for an unknown object: the one answer a client may treat as permanent."""
    return StripeError(404, f"No such {kind}: '{object_id}'", param=param, code="resource_missing")
