"""A local stand-in for the parts of the Stripe API the ledger uses.

The ledger talks to it through the real stripe SDK, exactly as it talks to Stripe:
``stripe.StripeClient(key, base_addresses={"api": BASE})`` where BASE is wherever
:attr:`StripeStandIn.app` is served (its own port, or mounted under a path prefix such as
``/_stripe`` inside another Starlette app; the SDK simply concatenates BASE and ``/v1/...``).

It speaks Stripe's wire format (form-encoded bracket parameters in, JSON out, Stripe-shaped
errors and status codes, Idempotency-Key semantics), serves a hosted "pay page" with buttons
for every Checkout outcome, and delivers signed ``checkout.session.*`` webhooks from a
background thread with retries.

Everything is kept in memory, guarded by one lock; nothing survives a restart.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import heapq
import hmac
import html
import itertools
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

API_VERSION = "2026-07-29.dahlia"
OUTCOMES = ("pay", "pay_later", "async_succeed", "async_fail", "expire")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
LINE_ITEMS_PAGE = 10  # Stripe's default page size, also for an expanded `line_items`
MAX_AMOUNT = 99_999_999  # Stripe's limit for an amount in minor units (8 digits)

_ALNUM = string.ascii_letters + string.digits
_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ZERO_DECIMAL = _names("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf")
_THREE_DECIMAL = _names("bhd jod kwd omr tnd")

# Parameters real Stripe accepts on these endpoints. Those the stand-in does not model are
# accepted and ignored; anything else is refused like Stripe does ("Received unknown parameter").
_SESSION_CREATE_PARAMS = _names(
    """adaptive_pricing after_expiration allow_promotion_codes automatic_tax
    billing_address_collection branding_settings cancel_url client_reference_id
    consent_collection currency custom_fields custom_text customer customer_account
    customer_creation customer_email customer_update discounts excluded_payment_method_types
    expand expires_at invoice_creation line_items locale metadata mode name_collection
    optional_items origin_context payment_intent_data payment_method_collection
    payment_method_configuration payment_method_data payment_method_options
    payment_method_types permissions phone_number_collection redirect_on_completion
    return_url saved_payment_method_options setup_intent_data shipping_address_collection
    shipping_options submit_type subscription_data success_url tax_id_collection ui_mode
    wallet_options"""
)
_LINE_ITEM_PARAMS = _names(
    "adjustable_quantity dynamic_tax_rates metadata price price_data quantity tax_rates"
)
_PRICE_DATA_PARAMS = _names(
    "currency product product_data recurring tax_behavior unit_amount unit_amount_decimal"
)
_PRODUCT_DATA_PARAMS = _names("description images metadata name tax_code")
_REFUND_CREATE_PARAMS = _names(
    """amount charge currency customer expand instructions_email metadata origin
    payment_intent reason refund_application_fee reverse_transfer"""
)


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _new_id(prefix: str) -> str:
    return f"{prefix}_{'test_a1' if prefix == 'cs' else '1'}{_rand(24)}"


def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for `payload`: ``t=<unix>,v1=<hex>[,v1=...]``.

    `secret` may hold several comma-separated `whsec_...` secrets (as while a secret is being
    rolled); each one contributes a `v1` value.
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    t = int(time.time()) if timestamp is None else int(timestamp)
    signed = f"{t}.".encode() + raw
    parts = [f"t={t}"]
    for one in (s.strip() for s in secret.split(",")):
        if one:
            digest = hmac.new(one.encode(), signed, hashlib.sha256).hexdigest()
            parts.append(f"v1={digest}")
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# Errors and parameter parsing


class _StripeError(Exception):
    """An error answer in Stripe's shape. `saved`: kept as the result for its Idempotency-Key
    (Stripe saves results once an endpoint began executing, not for parameter validation)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        saved: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.saved = saved

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            err["param"] = self.param
        return {"error": err}


def parse_stripe_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Turn Stripe-style bracket keys (``a[0][b]=1``, ``expand[]=x``, ``metadata[k]=v``)
    into nested dicts and lists. Dicts whose keys are all integers become lists (by index),
    except under ``metadata``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = _KEY_RE.match(key)
        if not m:
            raise _StripeError(400, f"Invalid parameter name: {key}", param=key)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node: dict[str, Any] = root
        for i, part in enumerate(parts):
            name = str(len(node)) if part == "" else part
            if i == len(parts) - 1:
                if isinstance(node.get(name), dict):
                    raise _StripeError(400, f"Invalid parameter: {key}", param=key)
                node[name] = value
            else:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise _StripeError(400, f"Invalid parameter: {key}", param=key)
                node = child
    return _listify(root, None)


def _listify(node: Any, key: str | None) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    if key != "metadata" and out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def _check_known(params: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
    for name in params:
        if name not in allowed:
            full = f"{prefix}[{name}]" if prefix else name
            raise _StripeError(400, f"Received unknown parameter: {full}", param=full)


def _as_str(value: Any, param: str, *, max_len: int = 5000) -> str:
    if not isinstance(value, str):
        raise _StripeError(400, f"Invalid string: {value!r}", param=param)
    if len(value) > max_len:
        raise _StripeError(
            400, f"Invalid string: must be at most {max_len} characters", param=param
        )
    return value


def _as_int(value: Any, param: str, *, minimum: int, maximum: int = MAX_AMOUNT) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise _StripeError(400, f"Invalid integer: {value}", param=param)
    number = int(value)
    if number < minimum:
        raise _StripeError(
            400, f"Invalid integer: {value} (must be at least {minimum})", param=param
        )
    if number > maximum:
        raise _StripeError(
            400, f"Invalid integer: {value} (must be at most {maximum})", param=param
        )
    return number


def _as_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise _StripeError(400, "Invalid hash", param=param)
    if len(value) > 50:
        raise _StripeError(400, "Metadata can have at most 50 keys", param=param)
    out: dict[str, str] = {}
    for k, v in value.items():
        if len(k) > 40:
            raise _StripeError(400, "Metadata keys must be at most 40 characters", param=param)
        out[k] = _as_str(v, f"{param}[{k}]", max_len=500)
    return out


def _as_url(value: Any, param: str) -> str:
    url = _as_str(value, param)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _StripeError(400, "Not a valid URL", param=param, code="url_invalid")
    return url


def _expand_list(params: dict[str, Any], allowed: Sequence[str]) -> list[str]:
    raw = params.get("expand", [])
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise _StripeError(400, "Invalid array", param="expand")
    for item in items:
        if item not in allowed:
            raise _StripeError(400, f"This property cannot be expanded ({item}).", param="expand")
    return items


def _format_amount(minor: int, currency: str) -> str:
    cur = currency.lower()
    exp = 0 if cur in _ZERO_DECIMAL else 3 if cur in _THREE_DECIMAL else 2
    if exp == 0:
        return f"{minor} {cur.upper()}"
    return f"{minor / 10**exp:.{exp}f} {cur.upper()}"


# --------------------------------------------------------------------------------------------
# State


@dataclass
class _Session:
    obj: dict[str, Any]  # the checkout.session object, without line_items
    items: list[dict[str, Any]]  # line item objects
    charge: str | None = None  # set once the payment succeeded
    async_state: str | None = None  # "pending" | "succeeded" | "failed" (delayed methods)


@dataclass
class _Ctx:
    request_id: str
    idempotency_key: str | None
    api_key: str


@dataclass
class _Saved:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass(order=True)
class _Attempt:
    due: float
    seq: int
    event: dict[str, Any] = field(compare=False)
    url: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


_Handler = Callable[[_Ctx, dict[str, Any], dict[str, str]], dict[str, Any]]


class StripeStandIn:
    """In-memory Stripe Checkout + Refunds stand-in. See the module docstring.

    Attributes: `app` (the ASGI app), `webhook_url` (may be set later), `webhook_secret`,
    `public_base_url`, `delay_seconds` (every /v1 call sleeps this long first),
    `retry_delays` (pauses between webhook attempts; attempts = len + 1),
    `delivery_timeout` (seconds per webhook POST).
    """

    def __init__(
        self,
        *,
        webhook_url: str | None,
        webhook_secret: str,
        public_base_url: str,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        delivery_timeout: float = 10.0,
    ) -> None:
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.public_base_url = public_base_url.rstrip("/")
        self.retry_delays: tuple[float, ...] = tuple(retry_delays)
        self.delivery_timeout = delivery_timeout
        self.delay_seconds: float = 0.0

        self._cv = threading.Condition(threading.RLock())
        self._sessions: dict[str, _Session] = {}
        self._by_payment_intent: dict[str, str] = {}
        self._by_charge: dict[str, str] = {}
        self._refunds: dict[str, dict[str, Any]] = {}
        self._refund_keys: dict[str, str | None] = {}
        self._idempotent: dict[tuple[str, str], _Saved] = {}
        self._requests: list[dict[str, Any]] = []
        self._fail_queue: list[tuple[int, bool]] = []
        self._events: list[dict[str, Any]] = []
        self._deliveries: list[dict[str, Any]] = []
        self._settled = 0
        self._queue: list[_Attempt] = []
        self._seq = itertools.count()
        self._dispatcher: threading.Thread | None = None
        self._closed = False

        self.app = Starlette(
            routes=[
                Route("/v1/checkout/sessions", self._api(self._create_session), methods=["POST"]),
                Route(
                    "/v1/checkout/sessions/{session_id}",
                    self._api(self._retrieve_session),
                    methods=["GET"],
                ),
                Route(
                    "/v1/checkout/sessions/{session_id}/line_items",
                    self._api(self._list_line_items),
                    methods=["GET"],
                ),
                Route(
                    "/v1/checkout/sessions/{session_id}/expire",
                    self._api(self._expire_session),
                    methods=["POST"],
                ),
                Route("/v1/refunds", self._api(self._create_refund), methods=["POST"]),
                Route("/v1/refunds/{refund_id}", self._api(self._retrieve_refund), methods=["GET"]),
                Route(
                    "/v1/{rest:path}",
                    self._api(self._unknown_url),
                    methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
                ),
                Route("/pay/{session_id}", self._pay_page, methods=["GET"], name="pay_page"),
                Route(
                    "/pay/{session_id}/{action}",
                    self._pay_action,
                    methods=["POST"],
                    name="pay_action",
                ),
            ]
        )

    # ---------------------------------------------------------------- inspection / control

    def sessions(self) -> list[dict[str, Any]]:
        """Copies of every checkout.session, in creation order, with all `line_items`."""
        with self._cv:
            return [self._session_view(s, expand_all=True) for s in self._sessions.values()]

    def refunds(self) -> list[dict[str, Any]]:
        """Copies of every refund object plus the `idempotency_key` it was created with."""
        with self._cv:
            return [
                {**copy.deepcopy(r), "idempotency_key": self._refund_keys.get(rid)}
                for rid, r in self._refunds.items()
            ]

    def requests(self) -> list[dict[str, Any]]:
        """Log of /v1 calls: method, path, params, idempotency_key, status, replayed,
        request_id, failure_injected."""
        with self._cv:
            return copy.deepcopy(self._requests)

    def events(self) -> list[dict[str, Any]]:
        """Every event the stand-in emitted (delivered or not), in order."""
        with self._cv:
            return copy.deepcopy(self._events)

    def deliveries(self) -> list[dict[str, Any]]:
        """One record per webhook attempt: event_id, type, session_id, attempt, status (the
        HTTP status of the answer, None on a connection error), error, outcome
        ("delivered" | "retrying" | "failed" | "undelivered" when webhook_url was None)."""
        with self._cv:
            return copy.deepcopy(self._deliveries)

    def wait_for_deliveries(self, n: int, timeout: float = 10) -> None:
        """Block until at least `n` events are settled: delivered (2xx answer), given up after
        the last attempt, or recorded undelivered. Raises TimeoutError (with the log) if not."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._settled >= n, timeout):
                raise TimeoutError(
                    f"only {self._settled} of {n} webhook events settled within {timeout}s; "
                    f"deliveries: {self._deliveries}"
                )

    def fail_next(self, count: int, status: int = 500, *, after_processing: bool = False) -> None:
        """The next `count` /v1 calls answer `status` with a Stripe-shaped `api_error` body.

        With `after_processing=True` each call is carried out first (state changes, the result
        is saved for its Idempotency-Key) and only the answer is replaced: a lost response.
        """
        with self._cv:
            self._fail_queue.extend([(status, after_processing)] * count)

    def complete(self, session_id: str, outcome: str) -> None:
        """Do what a pay page button does: "pay" | "pay_later" | "async_succeed" |
        "async_fail" | "expire". Raises KeyError (unknown session) or ValueError (unknown
        outcome, or not possible in the session's state)."""
        with self._cv:
            if session_id not in self._sessions:
                raise KeyError(session_id)
            self._apply_outcome(session_id, outcome, None)

    def build_event(
        self, type: str, session_id: str, *, timestamp: int | None = None
    ) -> tuple[bytes, str]:
        """(payload, Stripe-Signature value) of a `checkout.session.*` event about the session
        as it is now, signed with `webhook_secret`. Not recorded and not delivered."""
        if not type.startswith("checkout.session."):
            raise ValueError(f"not a checkout.session event type: {type}")
        with self._cv:
            session = self._sessions[session_id]
            event = self._make_event(type, session, None)
        payload = json.dumps(event, indent=2).encode()
        return payload, sign_payload(payload, self.webhook_secret, timestamp)

    def close(self) -> None:
        """Stop the webhook delivery thread (pending deliveries are dropped)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._dispatcher
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    # ---------------------------------------------------------------- /v1 plumbing

    def _api(self, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if self.delay_seconds > 0:
                await asyncio.sleep(self.delay_seconds)
            body = await request.body()
            return self._handle_api(request, body, handler)

        return endpoint

    def _handle_api(self, request: Request, body: bytes, handler: _Handler) -> Response:
        ctx = _Ctx("req_" + _rand(14), request.headers.get("idempotency-key"), "")
        method = request.method
        path = _route_path(request)
        replayed = False
        injected = False
        params: dict[str, Any] = {}
        with self._cv:
            failure = self._fail_queue.pop(0) if self._fail_queue else None
            try:
                if failure is not None and not failure[1]:
                    raise _StripeError(
                        failure[0],
                        "An unknown error occurred (simulated by the Stripe stand-in).",
                        type_="api_error",
                    )
                pairs = parse_qsl(request.url.query, keep_blank_values=True)
                if method in ("POST", "PUT", "PATCH"):
                    pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
                params = parse_stripe_params(pairs)
                ctx.api_key = _check_auth(request.headers.get("authorization"))
                saved_key: tuple[str, str] | None = None
                if method == "POST" and ctx.idempotency_key is not None:
                    if len(ctx.idempotency_key) > 255:
                        raise _StripeError(
                            400,
                            "Idempotency keys can be at most 255 characters long.",
                            type_="idempotency_error",
                        )
                    saved_key = (ctx.api_key, ctx.idempotency_key)
                saved = self._idempotent.get(saved_key) if saved_key else None
                if saved is not None:
                    if (saved.method, saved.path, saved.params) != (method, path, params):
                        raise _StripeError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{ctx.idempotency_key}' if you meant to execute a different "
                            "request.",
                            type_="idempotency_error",
                        )
                    status, answer, replayed = saved.status, saved.body, True
                else:
                    try:
                        status, answer = 200, handler(ctx, params, dict(request.path_params))
                        keep = True
                    except _StripeError as err:
                        status, answer, keep = err.status, err.body(), err.saved
                    if saved_key is not None and keep:
                        self._idempotent[saved_key] = _Saved(method, path, params, status, answer)
                if failure is not None:  # after_processing: the answer is lost
                    injected = True
                    raise _StripeError(
                        failure[0],
                        "An unknown error occurred (simulated by the Stripe stand-in).",
                        type_="api_error",
                    )
            except _StripeError as err:
                status, answer = err.status, err.body()
                injected = injected or failure is not None
            self._requests.append(
                {
                    "method": method,
                    "path": path,
                    "params": copy.deepcopy(params),
                    "idempotency_key": ctx.idempotency_key,
                    "status": status,
                    "replayed": replayed,
                    "request_id": ctx.request_id,
                    "failure_injected": injected,
                    "at": time.time(),
                }
            )
            text = json.dumps(answer, indent=2)
        headers = {"Request-Id": ctx.request_id, "Stripe-Version": API_VERSION}
        if ctx.idempotency_key is not None and method == "POST":
            headers["Idempotency-Key"] = ctx.idempotency_key
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(text, status_code=status, media_type="application/json", headers=headers)

    # ---------------------------------------------------------------- /v1 handlers (locked)

    def _create_session(
        self, ctx: _Ctx, params: dict[str, Any], _path: dict[str, str]
    ) -> dict[str, Any]:
        _check_known(params, _SESSION_CREATE_PARAMS)
        mode = params.get("mode")
        if mode is None:
            raise _StripeError(
                400, "Missing required param: mode.", param="mode", code="parameter_missing"
            )
        if mode != "payment":
            raise _StripeError(
                400, f"The Stripe stand-in only supports mode=payment, not {mode!r}.", param="mode"
            )
        expand = _expand_list(params, ["line_items"])
        raw_items = params.get("line_items")
        if not raw_items:
            raise _StripeError(
                400,
                "line_items is required in payment mode.",
                param="line_items",
                code="parameter_missing",
            )
        if not isinstance(raw_items, list):
            raise _StripeError(400, "Invalid array", param="line_items")
        now = int(time.time())
        currency: str | None = None
        items: list[dict[str, Any]] = []
        for i, raw in enumerate(raw_items):
            item, cur = _line_item(raw, i, now)
            if currency is not None and cur != currency:
                raise _StripeError(
                    400,
                    "All line items must use the same currency.",
                    param=f"line_items[{i}][price_data][currency]",
                )
            currency = cur
            items.append(item)
        subtotal = sum(int(it["amount_subtotal"]) for it in items)
        if subtotal > MAX_AMOUNT:
            raise _StripeError(
                400, "The total amount is too large.", param="line_items", code="amount_too_large"
            )
        metadata = _as_metadata(params.get("metadata"))
        client_reference_id = params.get("client_reference_id")
        if client_reference_id is not None:
            client_reference_id = _as_str(client_reference_id, "client_reference_id", max_len=200)
        success_url = params.get("success_url")
        if success_url is not None:
            success_url = _as_url(success_url, "success_url")
        cancel_url = params.get("cancel_url")
        if cancel_url is not None:
            cancel_url = _as_url(cancel_url, "cancel_url")
        expires_at = now + 24 * 3600
        if params.get("expires_at") is not None:
            expires_at = _as_int(params["expires_at"], "expires_at", minimum=0, maximum=2**40)
            if not now + 30 * 60 - 5 <= expires_at <= now + 24 * 3600 + 5:
                raise _StripeError(
                    400,
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from now.",
                    param="expires_at",
                )
        session_id = _new_id("cs")
        obj: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "adaptive_pricing": {"enabled": False},
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": subtotal,
            "amount_total": subtotal,
            "automatic_tax": {
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "billing_address_collection": None,
            "cancel_url": cancel_url,
            "client_reference_id": client_reference_id,
            "client_secret": None,
            "collected_information": None,
            "consent": None,
            "consent_collection": None,
            "created": now,
            "currency": currency,
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": None,
            "customer_account": None,
            "customer_creation": "if_required",
            "customer_details": None,
            "customer_email": None,
            "discounts": [],
            "expires_at": expires_at,
            "integration_identifier": None,
            "invoice": None,
            "invoice_creation": {
                "enabled": False,
                "invoice_data": {
                    "account_tax_ids": None,
                    "custom_fields": None,
                    "description": None,
                    "footer": None,
                    "issuer": None,
                    "metadata": {},
                    "rendering_options": None,
                },
            },
            "livemode": False,
            "locale": None,
            "managed_payments": {"enabled": False},
            "metadata": metadata,
            "mode": "payment",
            "origin_context": None,
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "if_required",
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "permissions": None,
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": None,
            "subscription": None,
            "success_url": success_url,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted_page",
            "url": f"{self.public_base_url}/pay/{session_id}",
            "wallet_options": None,
        }
        session = _Session(obj=obj, items=items)
        self._sessions[session_id] = session
        self._ensure_dispatcher()
        return self._session_view(session, expand=expand)

    def _retrieve_session(
        self, ctx: _Ctx, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        _check_known(params, frozenset({"expand"}))
        expand = _expand_list(params, ["line_items"])
        return self._session_view(self._get_session(path["session_id"]), expand=expand)

    def _list_line_items(
        self, ctx: _Ctx, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        _check_known(params, frozenset({"expand", "limit", "starting_after", "ending_before"}))
        _expand_list(params, [])
        session = self._get_session(path["session_id"])
        limit = LINE_ITEMS_PAGE
        if params.get("limit") is not None:
            limit = _as_int(params["limit"], "limit", minimum=1, maximum=100)
        items = session.items
        ids = [it["id"] for it in items]

        def position_of(param: str) -> int:
            ref = _as_str(params[param], param)
            if ref not in ids:
                raise _StripeError(
                    400, f"No such line item: '{ref}'", param=param, code="resource_missing"
                )
            return ids.index(ref)

        if params.get("starting_after") is not None:
            start = position_of("starting_after") + 1
            page = items[start : start + limit]
            has_more = start + limit < len(items)
        elif params.get("ending_before") is not None:
            end = position_of("ending_before")
            page = items[max(0, end - limit) : end]
            has_more = end - limit > 0
        else:
            page = items[:limit]
            has_more = limit < len(items)
        return _list_object(session.obj["id"], page, has_more)

    def _expire_session(
        self, ctx: _Ctx, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        _check_known(params, frozenset({"expand"}))
        expand = _expand_list(params, ["line_items"])
        session = self._get_session(path["session_id"])
        if session.obj["status"] != "open":
            raise _StripeError(
                400,
                'Only Checkout Sessions with a status in ["open"] can be expired.',
                saved=True,
            )
        self._apply_outcome(session.obj["id"], "expire", ctx)
        return self._session_view(session, expand=expand)

    def _create_refund(
        self, ctx: _Ctx, params: dict[str, Any], _path: dict[str, str]
    ) -> dict[str, Any]:
        _check_known(params, _REFUND_CREATE_PARAMS)
        _expand_list(params, [])
        pi = params.get("payment_intent")
        charge = params.get("charge")
        if pi is None and charge is None:
            raise _StripeError(
                400,
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                code="parameter_missing",
            )
        if pi is not None and charge is not None:
            raise _StripeError(400, "Provide only one of payment_intent or charge.", param="charge")
        if pi is not None:
            pi = _as_str(pi, "payment_intent")
            session_id = self._by_payment_intent.get(pi)
            if session_id is None:
                raise _StripeError(
                    404,
                    f"No such payment_intent: '{pi}'",
                    param="payment_intent",
                    code="resource_missing",
                )
        else:
            charge = _as_str(charge, "charge")
            session_id = self._by_charge.get(charge)
            if session_id is None:
                raise _StripeError(
                    404, f"No such charge: '{charge}'", param="charge", code="resource_missing"
                )
        amount: int | None = None
        if params.get("amount") is not None:
            amount = _as_int(params["amount"], "amount", minimum=1)
        reason = params.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise _StripeError(
                400,
                f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}",
                param="reason",
            )
        metadata = _as_metadata(params.get("metadata"))
        session = self._sessions[session_id]
        pi_id = session.obj["payment_intent"]
        if session.obj["payment_status"] != "paid" or session.charge is None:
            raise _StripeError(
                400,
                f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                code="payment_intent_unexpected_state",
                saved=True,
            )
        paid = int(session.obj["amount_total"])
        currency = str(session.obj["currency"])
        refunded = sum(
            int(r["amount"]) for r in self._refunds.values() if r["payment_intent"] == pi_id
        )
        remaining = paid - refunded
        if remaining <= 0:
            raise _StripeError(
                400,
                f"Charge {session.charge} has already been refunded.",
                code="charge_already_refunded",
                saved=True,
            )
        if amount is None:
            amount = remaining
        elif amount > remaining:
            raise _StripeError(
                400,
                f"Refund amount ({_format_amount(amount, currency)}) is greater than "
                f"unrefunded amount on charge ({_format_amount(remaining, currency)})",
                param="amount",
                code="charge_already_refunded",
                saved=True,
            )
        refund_id = _new_id("re")
        refund: dict[str, Any] = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "balance_transaction": "txn_1" + _rand(24),
            "charge": session.charge,
            "created": int(time.time()),
            "currency": currency,
            "customer": None,
            "customer_account": None,
            "destination_details": {
                "card": {
                    "reference": None,
                    "reference_status": "pending",
                    "reference_type": "acquirer_reference_number",
                    "type": "refund",
                },
                "type": "card",
            },
            "metadata": metadata,
            "payment_intent": pi_id,
            "payment_method": "pm_1" + _rand(24),
            "reason": reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self._refunds[refund_id] = refund
        self._refund_keys[refund_id] = ctx.idempotency_key
        return copy.deepcopy(refund)

    def _retrieve_refund(
        self, ctx: _Ctx, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        _check_known(params, frozenset({"expand"}))
        _expand_list(params, [])
        refund = self._refunds.get(path["refund_id"])
        if refund is None:
            raise _StripeError(
                404, f"No such refund: '{path['refund_id']}'", param="id", code="resource_missing"
            )
        return copy.deepcopy(refund)

    def _unknown_url(
        self, ctx: _Ctx, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        raise _StripeError(
            404,
            f"Unrecognized request URL (/v1/{path.get('rest', '')}). The Stripe stand-in "
            "serves only Checkout Sessions and Refunds.",
        )

    # ---------------------------------------------------------------- state helpers (locked)

    def _get_session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise _StripeError(
                404,
                f"No such checkout.session: '{session_id}'",
                param="session",
                code="resource_missing",
            )
        return session

    def _session_view(
        self, session: _Session, *, expand: Sequence[str] = (), expand_all: bool = False
    ) -> dict[str, Any]:
        view = copy.deepcopy(session.obj)
        if expand_all:
            view["line_items"] = _list_object(view["id"], copy.deepcopy(session.items), False)
        elif "line_items" in expand:
            page = copy.deepcopy(session.items[:LINE_ITEMS_PAGE])
            view["line_items"] = _list_object(
                view["id"], page, len(session.items) > LINE_ITEMS_PAGE
            )
        return view

    def _apply_outcome(self, session_id: str, outcome: str, ctx: _Ctx | None) -> None:
        """Move the session on as the pay page button `outcome` does and queue its events."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        session = self._sessions[session_id]
        obj = session.obj
        status, pay_status = obj["status"], obj["payment_status"]

        def refuse() -> ValueError:
            return ValueError(
                f"cannot {outcome} checkout session {session_id}: it is {status}"
                f" / {pay_status}"
                + (f" / payment {session.async_state}" if session.async_state else "")
            )

        if outcome in ("pay", "pay_later", "expire") and status != "open":
            raise refuse()
        if outcome == "async_succeed" and session.async_state != "pending":
            raise refuse()
        if outcome == "async_fail" and not (status == "open" or session.async_state == "pending"):
            raise refuse()

        if outcome == "expire":
            obj.update(status="expired", url=None)
            self._emit("checkout.session.expired", session, ctx)
            return
        if status == "open":  # pay, pay_later, or async_fail on an open session
            pi = _new_id("pi")
            obj.update(
                status="complete",
                url=None,
                payment_intent=pi,
                customer_details={
                    "address": None,
                    "business_name": None,
                    "email": "customer@example.com",
                    "individual_name": None,
                    "name": None,
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
            )
            self._by_payment_intent[pi] = session_id
            if outcome == "pay":
                self._mark_paid(session)
            else:
                session.async_state = "pending"
                obj["payment_method_types"] = ["card", "us_bank_account"]
            self._emit("checkout.session.completed", session, ctx)
        if outcome == "async_succeed":
            session.async_state = "succeeded"
            self._mark_paid(session)
            self._emit("checkout.session.async_payment_succeeded", session, ctx)
        elif outcome == "async_fail":
            session.async_state = "failed"
            self._emit("checkout.session.async_payment_failed", session, ctx)

    def _mark_paid(self, session: _Session) -> None:
        session.obj["payment_status"] = "paid"
        session.charge = _new_id("ch")
        self._by_charge[session.charge] = session.obj["id"]

    def _make_event(self, type_: str, session: _Session, ctx: _Ctx | None) -> dict[str, Any]:
        return {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": copy.deepcopy(session.obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {
                "id": ctx.request_id if ctx else None,
                "idempotency_key": ctx.idempotency_key if ctx else None,
            },
            "type": type_,
        }

    def _emit(self, type_: str, session: _Session, ctx: _Ctx | None) -> None:
        event = self._make_event(type_, session, ctx)
        self._events.append(event)
        url = self.webhook_url
        if url is None:
            self._record(
                event,
                attempt=0,
                status=None,
                error="webhook_url is not set",
                outcome="undelivered",
                url=None,
            )
            self._settled += 1
            self._cv.notify_all()
            return
        heapq.heappush(self._queue, _Attempt(time.monotonic(), next(self._seq), event, url))
        self._ensure_dispatcher()
        self._cv.notify_all()

    def _record(
        self,
        event: dict[str, Any],
        *,
        attempt: int,
        status: int | None,
        error: str | None,
        outcome: str,
        url: str | None,
    ) -> None:
        self._deliveries.append(
            {
                "event_id": event["id"],
                "type": event["type"],
                "session_id": event["data"]["object"]["id"],
                "attempt": attempt,
                "status": status,
                "error": error,
                "outcome": outcome,
                "url": url,
                "at": time.time(),
            }
        )

    def _expire_overdue(self) -> None:
        now = time.time()
        for session_id, session in self._sessions.items():
            if session.obj["status"] == "open" and session.obj["expires_at"] <= now:
                self._apply_outcome(session_id, "expire", None)

    # ---------------------------------------------------------------- webhook delivery thread

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None and not self._closed:
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name="stripe-standin-webhooks", daemon=True
            )
            self._dispatcher.start()

    def _dispatch_loop(self) -> None:
        with httpx.Client(timeout=self.delivery_timeout, trust_env=False) as client:
            while True:
                with self._cv:
                    while True:
                        if self._closed:
                            return
                        self._expire_overdue()
                        now = time.monotonic()
                        if self._queue and self._queue[0].due <= now:
                            job = heapq.heappop(self._queue)
                            break
                        wait = min(self._queue[0].due - now, 1.0) if self._queue else 1.0
                        self._cv.wait(wait)
                status, error = self._post(client, job)
                with self._cv:
                    if status is not None and 200 <= status < 300:
                        outcome = "delivered"
                    elif job.attempt <= len(self.retry_delays):
                        outcome = "retrying"
                    else:
                        outcome = "failed"
                    self._record(
                        job.event,
                        attempt=job.attempt,
                        status=status,
                        error=error,
                        outcome=outcome,
                        url=job.url,
                    )
                    if outcome == "retrying":
                        due = time.monotonic() + self.retry_delays[job.attempt - 1]
                        heapq.heappush(
                            self._queue,
                            _Attempt(due, next(self._seq), job.event, job.url, job.attempt + 1),
                        )
                    else:
                        self._settled += 1
                    self._cv.notify_all()

    def _post(self, client: httpx.Client, job: _Attempt) -> tuple[int | None, str | None]:
        payload = json.dumps(job.event, indent=2).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Accept": "*/*; q=0.5, application/xml",
            "Cache-Control": "no-cache",
            "Stripe-Signature": sign_payload(payload, self.webhook_secret),
        }
        try:
            answer = client.post(job.url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return answer.status_code, None

    # ---------------------------------------------------------------- hosted pay page

    async def _pay_page(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        with self._cv:
            session = self._sessions.get(session_id)
            if session is None:
                return _page(
                    "Checkout not found",
                    "<p>There is no checkout session with this reference.</p>",
                    404,
                )
            obj = copy.deepcopy(session.obj)
            items = copy.deepcopy(session.items)
            async_state = session.async_state
        return HTMLResponse(self._render_pay_page(request, obj, items, async_state))

    async def _pay_action(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        action = request.path_params["action"]
        await request.body()
        if action not in OUTCOMES:
            return _page("Unknown action", f"<p>{html.escape(action)} is not an action.</p>", 404)
        with self._cv:
            session = self._sessions.get(session_id)
            if session is None:
                return _page(
                    "Checkout not found",
                    "<p>There is no checkout session with this reference.</p>",
                    404,
                )
            try:
                self._apply_outcome(session_id, action, None)
            except ValueError as exc:
                back = request.url_for("pay_page", session_id=session_id).path
                return _page(
                    "That is no longer possible",
                    f"<p>{html.escape(str(exc))}.</p>"
                    f'<p><a href="{html.escape(back)}">Back to the checkout page</a></p>',
                    409,
                )
            obj = session.obj
            if action == "expire":
                target = obj["cancel_url"]
            else:
                target = obj["success_url"]
                if target:
                    target = target.replace("{CHECKOUT_SESSION_ID}", session_id)
        if not target:
            target = request.url_for("pay_page", session_id=session_id).path
        return RedirectResponse(target, status_code=303)

    def _render_pay_page(
        self,
        request: Request,
        obj: dict[str, Any],
        items: list[dict[str, Any]],
        async_state: str | None,
    ) -> str:
        sid = str(obj["id"])
        currency = str(obj["currency"])
        rows = "".join(
            "<tr><th scope='row'>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(str(it["description"])),
                int(it["quantity"]),
                html.escape(_format_amount(int(it["price"]["unit_amount"]), currency)),
                html.escape(_format_amount(int(it["amount_total"]), currency)),
            )
            for it in items
        )
        total = html.escape(_format_amount(int(obj["amount_total"]), currency))

        def button(action: str, label: str, hint: str) -> str:
            path = html.escape(request.url_for("pay_action", session_id=sid, action=action).path)
            return (
                f'<form method="post" action="{path}">'
                f'<button type="submit" data-action="{action}" '
                f'aria-describedby="hint-{action}">{label}</button>'
                f'<p class="hint" id="hint-{action}">{hint}</p></form>'
            )

        status, pay_status = obj["status"], obj["payment_status"]
        if status == "open":
            message = "Choose how this test payment should go."
            actions = (
                button("pay", "Pay", "The card payment succeeds at once.")
                + button(
                    "pay_later",
                    "Pay later",
                    "A delayed payment method: checkout completes, payment clears later.",
                )
                + button(
                    "async_fail",
                    "Fail payment",
                    "A delayed payment method whose payment then fails.",
                )
                + button(
                    "expire", "Let it expire", "Abandon the checkout; the session expires unpaid."
                )
            )
        elif async_state == "pending":
            message = "Checkout is complete; the payment has not cleared yet."
            actions = button(
                "async_succeed", "Payment clears", "The delayed payment succeeds."
            ) + button("async_fail", "Payment fails", "The delayed payment fails.")
        else:
            if status == "expired":
                message = "This checkout session has expired. Nothing was charged."
            elif async_state == "failed":
                message = "The payment failed. Nothing was charged."
            elif pay_status == "paid":
                message = "Paid. Thank you."
            else:
                message = f"This checkout session is {status}."
            link = obj["cancel_url"] if status == "expired" else obj["success_url"]
            actions = (
                f'<p><a href="{html.escape(link.replace("{CHECKOUT_SESSION_ID}", sid))}">'
                "Return to the shop</a></p>"
                if link
                else ""
            )
        body = f"""
<p class="badge">Test mode: a local Stripe stand-in. No real payment is taken.</p>
<table>
<caption>Order summary</caption>
<thead><tr><th scope="col">Item</th><th scope="col">Quantity</th>
<th scope="col">Unit price</th><th scope="col">Amount</th></tr></thead>
<tbody>{rows}</tbody>
<tfoot><tr><th scope="row" colspan="3">Total</th><td data-total>{total}</td></tr></tfoot>
</table>
<p role="status" data-status="{html.escape(str(status))}"
 data-payment-status="{html.escape(str(pay_status))}">{html.escape(message)}</p>
<div class="actions">{actions}</div>
<p class="ref">Reference: <code>{html.escape(sid)}</code></p>"""
        return _page_html(f"Pay {total}", body)


# --------------------------------------------------------------------------------------------
# Module helpers


def _route_path(request: Request) -> str:
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def _check_auth(header: str | None) -> str:
    if not header:
        raise _StripeError(
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
    if not re.fullmatch(r"(sk|rk)_(test|live)_\w+|(sk|rk)_\w+", key):
        shown = f"{key[:8]}{'*' * 4}{key[-4:]}" if len(key) > 12 else "****"
        raise _StripeError(401, f"Invalid API Key provided: {shown}")
    return key


def _line_item(raw: Any, i: int, now: int) -> tuple[dict[str, Any], str]:
    base = f"line_items[{i}]"
    if not isinstance(raw, dict):
        raise _StripeError(400, "Invalid object", param=base)
    _check_known(raw, _LINE_ITEM_PARAMS, base)
    if raw.get("price") is not None:
        raise _StripeError(
            400,
            f"No such price: '{raw['price']}' (the Stripe stand-in supports price_data only)",
            param=f"{base}[price]",
            code="resource_missing",
        )
    price_data = raw.get("price_data")
    if not isinstance(price_data, dict):
        raise _StripeError(
            400,
            f"Missing required param: {base}[price_data].",
            param=f"{base}[price_data]",
            code="parameter_missing",
        )
    pbase = f"{base}[price_data]"
    _check_known(price_data, _PRICE_DATA_PARAMS, pbase)
    if price_data.get("recurring") is not None:
        raise _StripeError(
            400,
            "You must provide at least one recurring price in `subscription` mode when using "
            "prices.",
            param=f"{pbase}[recurring]",
        )
    currency = price_data.get("currency")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise _StripeError(400, f"Invalid currency: {currency}", param=f"{pbase}[currency]")
    currency = currency.lower()
    if price_data.get("unit_amount") is None:
        raise _StripeError(
            400,
            f"Missing required param: {pbase}[unit_amount].",
            param=f"{pbase}[unit_amount]",
            code="parameter_missing",
        )
    unit_amount = _as_int(price_data["unit_amount"], f"{pbase}[unit_amount]", minimum=0)
    product_data = price_data.get("product_data")
    if not isinstance(product_data, dict):
        raise _StripeError(
            400,
            f"You must specify either `product` or `product_data` in {pbase}.",
            param=f"{pbase}[product_data]",
            code="parameter_missing",
        )
    _check_known(product_data, _PRODUCT_DATA_PARAMS, f"{pbase}[product_data]")
    name = _as_str(product_data.get("name"), f"{pbase}[product_data][name]")
    if not name.strip():
        raise _StripeError(
            400, "A product name cannot be empty.", param=f"{pbase}[product_data][name]"
        )
    if raw.get("quantity") is None:
        raise _StripeError(
            400,
            f"Quantity is required. Add `quantity` to `{base}`.",
            param=f"{base}[quantity]",
            code="parameter_missing",
        )
    quantity = _as_int(raw["quantity"], f"{base}[quantity]", minimum=1, maximum=999_999)
    amount = unit_amount * quantity
    item: dict[str, Any] = {
        "id": "li_1" + _rand(24),
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": currency,
        "description": name,
        "metadata": _as_metadata(raw.get("metadata"), f"{base}[metadata]"),
        "price": {
            "id": "price_1" + _rand(24),
            "object": "price",
            "active": False,
            "billing_scheme": "per_unit",
            "created": now,
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": "prod_" + _rand(14),
            "recurring": None,
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        },
        "quantity": quantity,
    }
    return item, currency


def _list_object(session_id: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "url": f"/v1/checkout/sessions/{session_id}/line_items",
    }


_CSS = """
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.5}
body{margin:0;padding:1rem}main{max-width:40rem;margin:0 auto}
table{border-collapse:collapse;width:100%;margin:1rem 0}
caption{text-align:left;font-weight:600}
th,td{padding:.4rem .5rem;border-bottom:1px solid #8886;text-align:left}
td:not(:first-child),tfoot td{text-align:right}
.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;background:#fde68a;
color:#1f2937}
.actions{display:grid;gap:.5rem;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr))}
.actions form{margin:0}
button{font:inherit;width:100%;padding:.6rem 1rem;border-radius:.4rem;cursor:pointer;
border:2px solid #1d4ed8;background:#1d4ed8;color:#fff}
button[data-action=async_fail],button[data-action=expire]{background:transparent;
color:inherit}
button:focus-visible,a:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.hint{margin:.25rem 0 0;font-size:.875rem}
.ref{font-size:.875rem}
"""


def _page_html(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


def _page(title: str, body: str, status: int) -> HTMLResponse:
    return HTMLResponse(_page_html(title, body), status_code=status)
