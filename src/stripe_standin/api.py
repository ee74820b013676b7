"""The /v1 routes and what every Stripe API call goes through: the API key, the body limit,
form parameters, Idempotency-Key semantics, injected failures, and a bounded request log."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stripe_standin.bodies import BodyTooLarge, read_body
from stripe_standin.endpoints import Call, Endpoints, Handler
from stripe_standin.errors import StripeError
from stripe_standin.ids import rand
from stripe_standin.params import parse_stripe_params
from stripe_standin.vocabulary import API_VERSION

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


@dataclass(frozen=True)
class _Saved:
    method: str
    path: str
    fingerprint: str  # of the parameters: a retry must send the same ones
    status: int
    text: str


class IdempotencyCache:
    """The saved answers by Idempotency-Key, the least recently used forgotten first."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._saved: OrderedDict[str, _Saved] = OrderedDict()

    def get(self, key: str) -> _Saved | None:
        saved = self._saved.get(key)
        if saved is not None:
            self._saved.move_to_end(key)
        return saved

    def put(self, key: str, saved: _Saved) -> None:
        self._saved[key] = saved
        self._saved.move_to_end(key)
        while len(self._saved) > self._max_keys:
            self._saved.popitem(last=False)

    def __len__(self) -> int:
        return len(self._saved)


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
        endpoints: Endpoints,
        settings: ApiSettings,
        api_key: str,
        limits: ApiLimits,
    ) -> None:
        self._cv = cv
        self._settings = settings
        self._api_key = api_key
        self._limits = limits
        self.log: deque[dict[str, Any]] = deque(maxlen=limits.max_logged_requests)
        self.idempotency = IdempotencyCache(limits.max_idempotency_keys)
        self.failures = FailureQueue()
        e = endpoints
        self.routes = [
            Route("/v1/checkout/sessions", self._api(e.create_session), methods=["POST"]),
            Route(
                "/v1/checkout/sessions/{session_id}",
                self._api(e.retrieve_session),
                methods=["GET"],
            ),
            Route(
                "/v1/checkout/sessions/{session_id}/line_items",
                self._api(e.list_line_items),
                methods=["GET"],
            ),
            Route(
                "/v1/checkout/sessions/{session_id}/expire",
                self._api(e.expire_session),
                methods=["POST"],
            ),
            Route(
                "/v1/payment_intents/{intent_id}",
                self._api(e.retrieve_payment_intent),
                methods=["GET"],
            ),
            Route("/v1/charges/{charge_id}", self._api(e.retrieve_charge), methods=["GET"]),
            Route("/v1/refunds", self._api(e.create_refund), methods=["POST"]),
            Route("/v1/refunds", self._api(e.list_refunds), methods=["GET"]),
            Route("/v1/refunds/{refund_id}", self._api(e.retrieve_refund), methods=["GET"]),
            Route("/v1/disputes/{dispute_id}", self._api(e.retrieve_dispute), methods=["GET"]),
            Route(
                "/v1/{rest:path}",
                self._api(e.unknown_url),
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
                status, text, replayed = self._execute(
                    call,
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

    def _execute(
        self,
        call: Call,
        method: str,
        path: str,
        params: dict[str, Any],
        body_size: int,
        answer: Callable[[], dict[str, Any]],
    ) -> tuple[int, str, bool]:
        """(status, JSON text, replayed) of the handler's answer, or of the one saved for
        this call's Idempotency-Key (POST only, as Stripe)."""
        key = call.idempotency_key if method == "POST" else None
        if key is None:
            return 200, json.dumps(answer(), indent=2), False
        if len(key) > 255:
            raise StripeError(
                400,
                "Idempotency keys can be at most 255 characters long.",
                type_="idempotency_error",
            )
        # A digest, not the parameters: what is kept per key stays small.
        fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        saved = self.idempotency.get(key)
        if saved is not None:
            if (saved.method, saved.path, saved.fingerprint) != (method, path, fingerprint):
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{call.idempotency_key}' if you meant to execute a different request.",
                    type_="idempotency_error",
                )
            return saved.status, saved.text, True
        try:
            status, text, keep = 200, json.dumps(answer(), indent=2), True
        except StripeError as err:
            status, text, keep = err.status, json.dumps(err.body(), indent=2), err.saved
        if keep and body_size <= self._limits.max_idempotent_request_bytes:
            self.idempotency.put(key, _Saved(method, path, fingerprint, status, text))
        return status, text, False

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


def check_auth(header: str | None, expected: str) -> None:
    """Stripe's 401 unless the `Authorization` header (Bearer, or Basic with the key as user
    name) carries the `expected` key."""
    if not header:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
        )
    scheme, _, value = header.strip().partition(" ")
    key = value.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key).decode().partition(":")[0]
        except ValueError:
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not hmac.compare_digest(key.encode(), expected.encode()):
        shown = f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"
        raise StripeError(401, f"Invalid API Key provided: {shown}")
