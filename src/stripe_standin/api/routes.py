"""The /v1 routes and what every Stripe API call goes through: the API key, the body limit,
form parameters, Idempotency-Key semantics, injected failures, and a bounded request log."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stripe_standin.api.auth import check_auth
from stripe_standin.api.call import Call, Handler
from stripe_standin.api.delays import Delays
from stripe_standin.api.failures import FailureQueue
from stripe_standin.api.idempotency import IdempotencyCache
from stripe_standin.api.intents import IntentEndpoints
from stripe_standin.api.payments import PaymentEndpoints
from stripe_standin.api.sessions import SessionEndpoints
from stripe_standin.bodies import BodyTooLarge, read_body
from stripe_standin.errors import StripeError
from stripe_standin.ids import rand
from stripe_standin.params import parse_stripe_params
from stripe_standin.vocabulary import API_VERSION


class ApiSettings(Protocol):
    delay_seconds: float  # every /v1 call sleeps this long first


@dataclass(frozen=True)
class ApiLimits:
    max_request_bytes: int
    max_logged_params_bytes: int  # bigger bodies are logged without their parameters
    max_logged_requests: int
    max_idempotency_keys: int
    max_idempotent_request_bytes: int  # answers to bigger requests are not saved


class Api:
    def __init__(
        self,
        *,
        cv: threading.Condition,
        sessions: SessionEndpoints,
        intents: IntentEndpoints,
        payments: PaymentEndpoints,
        settings: ApiSettings,
        api_key: str,
        limits: ApiLimits,
    ) -> None:
        self._cv = cv
        self._settings = settings
        self._api_key = api_key
        self._limits = limits
        self.log: deque[dict[str, Any]] = deque(maxlen=limits.max_logged_requests)
        self.idempotency = IdempotencyCache(
            max_keys=limits.max_idempotency_keys,
            max_request_bytes=limits.max_idempotent_request_bytes,
        )
        self.failures = FailureQueue()
        self.delays = Delays()
        s, i, p = sessions, intents, payments
        self.routes = [
            Route("/v1/checkout/sessions", self._api(s.create), methods=["POST"]),
            Route("/v1/checkout/sessions/{session_id}", self._api(s.retrieve), methods=["GET"]),
            Route(
                "/v1/checkout/sessions/{session_id}/line_items",
                self._api(s.list_line_items),
                methods=["GET"],
            ),
            Route(
                "/v1/checkout/sessions/{session_id}/expire",
                self._api(s.expire),
                methods=["POST"],
            ),
            Route("/v1/payment_intents/{intent_id}", self._api(i.retrieve), methods=["GET"]),
            Route(
                "/v1/payment_intents/{intent_id}/capture", self._api(i.capture), methods=["POST"]
            ),
            Route("/v1/payment_intents/{intent_id}/cancel", self._api(i.cancel), methods=["POST"]),
            Route("/v1/charges/{charge_id}", self._api(p.retrieve_charge), methods=["GET"]),
            Route("/v1/refunds", self._api(p.create_refund), methods=["POST"]),
            Route("/v1/refunds", self._api(p.list_refunds), methods=["GET"]),
            Route("/v1/refunds/{refund_id}", self._api(p.retrieve_refund), methods=["GET"]),
            Route("/v1/disputes/{dispute_id}", self._api(p.retrieve_dispute), methods=["GET"]),
            Route(
                "/v1/{rest:path}",
                self._api(_unknown_url),
                methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
            ),
        ]

    def _api(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if self._settings.delay_seconds > 0:
                await asyncio.sleep(self._settings.delay_seconds)
            try:
                body: bytes | None = await read_body(request, self._limits.max_request_bytes)
            except BodyTooLarge:
                body = None
            # Before anything is carried out: a hung call, once the client gave up, still
            # happens when it wakes (as at Stripe), which its Idempotency-Key makes harmless.
            await self.delays.sleep(
                route_path(request), dict(request.path_params), body, request.url.query
            )
            return self._handle(request, body, handler)

        return endpoint

    def _handle(self, request: Request, body: bytes | None, handler: Handler) -> Response:
        """Answer one call; `body` is None when it was over the limit."""
        call = Call("req_" + rand(14), request.headers.get("idempotency-key"))
        method = request.method
        path = route_path(request)
        replayed = injected = False
        params: dict[str, Any] = {}
        with self._cv:
            failure = self.failures.take(path)
            try:
                if failure is not None and not failure.after_processing:
                    raise failure.error()
                check_auth(request.headers.get("authorization"), self._api_key)
                if body is None:
                    raise StripeError(
                        413,
                        f"The request body is larger than {self._limits.max_request_bytes} "
                        "bytes, the most the Stripe stand-in accepts.",
                    )
                pairs = parse_qsl(request.url.query, keep_blank_values=True)
                if method in ("POST", "PUT", "PATCH"):
                    pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
                params = parse_stripe_params(pairs)
                status, text, replayed = self.idempotency.answer(
                    call.idempotency_key,
                    method,
                    path,
                    params,
                    len(body),
                    lambda: handler(call, params, dict(request.path_params)),
                )
                if failure is not None:  # after_processing: done, but the answer is lost
                    injected = True
                    raise failure.error()
            except StripeError as err:
                status, text = err.status, json.dumps(err.body(), indent=2)
                injected = injected or failure is not None
            self.log.append(
                {
                    "method": method,
                    "path": path,
                    "params": self._loggable(params, body),
                    "idempotency_key": call.idempotency_key,
                    "status": status,
                    "replayed": replayed,
                    "request_id": call.request_id,
                    "failure_injected": injected,
                    "at": time.time(),
                }
            )
        headers = {"Request-Id": call.request_id, "Stripe-Version": API_VERSION}
        if call.idempotency_key is not None and method == "POST":
            headers["Idempotency-Key"] = call.idempotency_key
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(text, status_code=status, media_type="application/json", headers=headers)

    def _loggable(self, params: dict[str, Any], body: bytes | None) -> dict[str, Any]:
        if body is None:
            return {"_omitted": f"more than {self._limits.max_request_bytes} bytes"}
        if len(body) > self._limits.max_logged_params_bytes:
            return {"_omitted": f"{len(body)} bytes"}
        return copy.deepcopy(params)


def route_path(request: Request) -> str:
    """The path below wherever the stand-in is mounted (e.g. under /_stripe)."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def _unknown_url(call: Call, params: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    raise StripeError(
        404,
        f"Unrecognized request URL (/v1/{path.get('rest', '')}). The Stripe stand-in "
        "serves Checkout Sessions, PaymentIntents, Charges, Refunds and Disputes only.",
    )
