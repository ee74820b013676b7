"""Fuzzing the HTTP API from its own `/openapi.json` with schemathesis.

The schema is loaded over HTTP from a real running shop (ledger + Stripe stand-in, real
PostgreSQL), and every operation it documents is driven with real HTTP requests: random valid
inputs (positive mode) and random inputs that break the schema (negative mode), each drawn by
schemathesis from the operation's own parameters and body. Every answer must

- never be a 5xx (`not_a_server_error`);
- have a status the operation itself documents, not only through its `default` answer
  (`status_explicitly_documented`, `status_code_conformance`), in the documented media type,
  with the documented headers and body schema (`content_type_conformance`,
  `response_headers_conformance`, `response_schema_conformance`);
- for valid input (as the document defines it), not be refused as invalid
  (`valid_input_accepted`: schemathesis' own `positive_data_acceptance`, less the one gap that
  JSON Schema cannot express, `5.0` for an integer);
- for a 4xx, be the contract's error (`contract_error_shape`): a JSON object whose only field
  is `error`, an object with a snake_case string `code`, a non-empty string `message`, and no
  fields but the ones the contract or the document names (`fields`, `items`). The one
  exception is what the document gives as an HTML page (the success page without a
  `session_id`: a page for people).

Requests go out with the token the operation asks for, the other role's token, a wrong token
or none, so that they reach the real handlers as well as the 401s; about half the valid cases
aim their path parameters at seeded objects (products with and without stock, open, empty and
paid carts, a confirmed order and its session) instead of random ids.

`POST /webhooks/stripe` takes a raw body signed with an HMAC over a timestamp: no JSON schema
can describe a valid signature. It is fuzzed like the rest (where every body, unsigned, must get
a documented answer in the contract's shape), and separately: random bytes with random headers
must get the contract's 400, random events the test signs itself a 200 or that 400.

Bounded and reproducible: Hypothesis runs derandomized (its seed comes from the test's code),
without an example database, with few examples per operation and mode.

Not the pytest plugin's `schemathesis.pytest.from_fixture`: with pytest 9.2 it fails before
running anything (`'Function' object has no attribute '_nodeid'`). Each operation's public
`as_strategy()` is used instead, so schemathesis' coverage phase (its enumerated boundary
cases) does not run here; the targeted tests at the end cover the edges it found elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledger.storage import Database
from tests.shop import (
    ADMIN,
    AUDITOR,
    STOREFRONT,
    WEBHOOK_SECRET,
    Shop,
    eventually,
    running_shop,
)
from web.openapi import OPERATIONS

# Inputs per operation and generation mode (positive, negative): 18 operations, about 700
# requests in all, half a minute on two busy cores.
MAX_EXAMPLES = 20

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# What an error object may hold besides `code` and `message`: the contract's and the document's
# named extra fields (`fields` with `validation_error`, `items` with `out_of_stock`).
ERROR_EXTRA_FIELDS = {"fields", "items"}
# Top-level fields a 4xx body may have besides `error`: the contract names none.
TOP_LEVEL_EXTRA_FIELDS: set[str] = set()

WRONG_TOKEN = "not-a-token"


# ------------------------------------------------------------------------- the error shape


def error_shape_problems(status: int, content_type: str, body: bytes) -> list[str]:
    """What is wrong with a 4xx answer, measured against the contract's error shape."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        return [f"{status}: content type {content_type!r}, not application/json"]
    try:
        data = json.loads(body)
    except ValueError:
        return [f"{status}: the body is not JSON: {body[:200]!r}"]
    if not isinstance(data, dict):
        return [f"{status}: the body is not a JSON object: {data!r}"]
    problems = []
    extra = set(data) - {"error"} - TOP_LEVEL_EXTRA_FIELDS
    if extra:
        problems.append(f"{status}: unexpected top-level fields {sorted(extra)}")
    error = data.get("error")
    if not isinstance(error, dict):
        return [*problems, f"{status}: `error` is not an object: {error!r}"]
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not SNAKE_CASE.match(code):
        problems.append(f"{status}: `error.code` is not a snake_case string: {code!r}")
    if not isinstance(message, str) or not message.strip():
        problems.append(f"{status}: `error.message` is not a non-empty string: {message!r}")
    extra = set(error) - {"code", "message"} - ERROR_EXTRA_FIELDS
    if extra:
        problems.append(f"{status}: unexpected fields in `error`: {sorted(extra)}")
    if "Traceback" in body.decode("utf-8", "replace"):
        problems.append(f"{status}: the body holds a stack trace")
    return problems


def _documented_media_type(case: schemathesis.Case, status: int) -> str | None:
    responses = case.operation.definition.raw.get("responses", {})
    answer = responses.get(str(status))
    if answer is None:
        return None
    content = answer.get("content") or {}
    return next(iter(content), None)


@schemathesis.check
def contract_error_shape(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Every 4xx is `{"error": {"code": <snake_case>, "message": <non-empty>, ...}}`."""
    if not 400 <= response.status_code < 500:
        return None
    # A page for people documents its 4xx as an HTML page (the success page without a
    # `session_id`): that one is exempt, any other answer of that page is not.
    if _documented_media_type(case, response.status_code) == "text/html":
        return None
    problems = error_shape_problems(
        response.status_code, response.headers.get("content-type", [""])[0], response.content
    )
    if problems:
        raise AssertionError("Not the contract's error shape: " + "; ".join(problems))
    return None


@schemathesis.check
def status_explicitly_documented(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """The status is one the operation lists itself. (Each operation also has a `default`
    answer in the error shape, which makes `status_code_conformance` accept any status.)"""
    responses = case.operation.definition.raw.get("responses", {})
    if str(response.status_code) not in responses:
        documented = sorted(code for code in responses if code != "default")
        raise AssertionError(
            f"{response.status_code} is not among the statuses documented for "
            f"{case.operation.label}: {', '.join(documented)}"
        )
    return None


def _has_integral_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_integral_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_integral_float(v) for v in value)
    return False


@schemathesis.check
def valid_input_accepted(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """What the document calls valid is not refused as invalid (`validation_error`,
    `invalid_json`, the success page's 400): the document says what the app checks.

    Except `5.0` where an integer is asked for: JSON Schema counts it as an integer, the API
    refuses it on purpose (strict, like `"5"` or `true`; tests/test_http_catalog_and_carts.py),
    and no JSON Schema keyword can say so."""
    meta = case.meta
    if meta is None or meta.generation.mode is not GenerationMode.POSITIVE:
        return None
    if case.operation.path == "/webhooks/stripe":  # no schema describes a valid signature
        return None
    if response.status_code not in (400, 422) or _has_integral_float(case.body):
        return None
    code = None
    if response.headers.get("content-type", [""])[0].startswith("application/json"):
        code = (json.loads(response.content).get("error") or {}).get("code")
    if response.status_code == 400 or code in ("validation_error", "invalid_json"):
        raise AssertionError(
            f"Valid input refused with {response.status_code} {code or ''}: "
            f"{response.content[:300]!r}"
        )
    return None


CHECKS = [
    not_a_server_error,
    valid_input_accepted,
    status_explicitly_documented,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    contract_error_shape,
]


# -------------------------------------------------------------------------- the shop


@dataclass
class Seeded:
    """Objects that exist in the running shop, for path parameters to hit."""

    skus: list[str]
    cart_ids: list[str]
    session_ids: list[str]
    order_ids: list[str]
    user_ids: list[str]


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


@pytest.fixture
def seeded(shop: Shop) -> Seeded:
    shop.product("mug", unit_amount=1250, stock=1000)
    shop.product("tee", unit_amount=2000, stock=1000)
    shop.product("sold-out", unit_amount=500, stock=0)
    open_cart = shop.cart(mug=2, tee=1)
    empty_cart = shop.cart()
    paid_cart = shop.cart(mug=1)
    session_id = shop.checkout(paid_cart)
    shop.stripe.complete(session_id, "pay")  # the stand-in delivers the webhook itself
    eventually(lambda: shop.status(session_id) == "confirmed")
    order_id = shop.api.get(f"/api/checkout-sessions/{session_id}/order").json()["order_id"]
    pending = shop.checkout(shop.cart(tee=1))
    return Seeded(
        skus=["mug", "tee", "sold-out"],
        cart_ids=[open_cart, empty_cart, paid_cart],
        session_ids=[session_id, pending],
        order_ids=[order_id],
        user_ids=["user-1"],  # the carts' user (`Shop.cart`)
    )


def fuzz_config() -> schemathesis.Config:
    # No random `Authorization` headers from the security schemes: `authorize` sets them.
    return schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})


@pytest.fixture
def api_schema(shop: Shop, seeded: Seeded) -> Any:
    """The document as the running server serves it, loaded over HTTP."""
    return schemathesis.openapi.from_url(f"{shop.url}/openapi.json", config=fuzz_config())


# Which seeded objects fill which path parameter, when a case is drawn to hit real data.
SEEDED_PARAMETERS = {
    "sku": "skus",
    "cart_id": "cart_ids",
    "session_id": "session_ids",
    "order_id": "order_ids",
    "user_id": "user_ids",
}


# Who sends a request: the role the operation asks for (most often), the other one, a wrong
# token, no token.
WHO = ["right", "right", "right", "other", "wrong", "none"]


def authorize(case: schemathesis.Case, who: str) -> None:
    security = case.operation.definition.raw.get("security") or []
    schemes = {name for requirement in security for name in requirement}
    right, other = (
        (AUDITOR, ADMIN)
        if "auditorToken" in schemes
        else (STOREFRONT, ADMIN)
        if "storefrontToken" in schemes
        else (ADMIN, AUDITOR)
    )
    token = {"right": right, "other": other, "wrong": WRONG_TOKEN, "none": None}[who]
    case.headers.pop("Authorization", None)
    if token is not None:
        case.headers["Authorization"] = f"Bearer {token}"


def aim_at_seeded_objects(case: schemathesis.Case, seeded: Seeded, pick: int) -> None:
    for name in case.path_parameters:
        pool: list[str] = getattr(seeded, SEEDED_PARAMETERS[name])
        case.path_parameters[name] = pool[pick % len(pool)]


def test_every_operation_answers_within_the_contract(
    api_schema: Any, shop: Shop, seeded: Seeded
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # schemathesis leaves out the operation the schema itself was loaded from.
    documented = {f"{op.method} {op.path}" for op in OPERATIONS} - {"GET /openapi.json"}
    assert {op.label for op in operations} == documented
    # Every operation and mode runs, and the failures are reported together. (Not with pytest's
    # subtests: they suspend and resume output capture between operations while the servers'
    # threads are writing their log lines to it.)
    failures = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, shop, seeded)
            except Exception as error:  # a failed check, shrunk and explained by schemathesis
                failures.append(f"{operation.label} ({mode.value}):\n{error}")
    assert not failures, "\n\n".join(failures)


def fuzz(operation: Any, mode: GenerationMode, shop: Shop, seeded: Seeded) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        who=st.sampled_from(WHO),
        pick=st.integers(0, 7),
    )
    def run(case: schemathesis.Case, who: str, pick: int) -> None:
        authorize(case, who)
        # About half the positive cases aim at seeded objects instead of random ids.
        if mode is GenerationMode.POSITIVE and pick < 4:
            aim_at_seeded_objects(case, seeded, pick)
        case.call_and_validate(base_url=shop.url, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # Nothing to negate: no parameters or body, or only unconstrained strings.
        assert mode is GenerationMode.NEGATIVE, operation.label


# -------------------------------------------------------------------- the Stripe webhook


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def assert_error_shape(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text)
    problems = error_shape_problems(
        response.status_code, response.headers.get("content-type", ""), response.content
    )
    assert not problems, problems


WEBHOOK_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_random_webhook_bodies_get_400_in_the_contracts_shape(shop: Shop) -> None:
    @WEBHOOK_SETTINGS
    @given(
        body=st.binary(max_size=2000)
        | st.text(max_size=500).map(str.encode)
        | st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
        # Any bytes a header may carry (latin-1 text without control characters) as well as
        # well-formed but wrong signatures.
        signature=st.none()
        | st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=100)
        | st.builds(
            lambda t, h: f"t={t},v1={h}",
            st.integers(),
            st.text(st.characters(codec="latin-1", exclude_categories=["Cc"])),
        ),
        content_type=st.sampled_from(["application/json", "text/plain", ""]),
    )
    def unsigned(body: bytes, signature: str | None, content_type: str) -> None:
        # As bytes: a header may carry any latin-1 text, which httpx would refuse as a str.
        headers = {b"Content-Type": content_type.encode()} if content_type else {}
        if signature is not None:
            headers[b"Stripe-Signature"] = signature.encode("latin-1")
        r = shop.api.post("/webhooks/stripe", content=body, headers=headers)
        assert_error_shape(r, 400)

    unsigned()


def test_signed_random_events_get_200_or_400_never_a_5xx(shop: Shop, seeded: Seeded) -> None:
    handled = [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
    ]
    ids = st.sampled_from(seeded.session_ids) | st.text(max_size=30) | st.integers()
    anything = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    objects = st.fixed_dictionaries(
        {},
        optional={
            "id": ids,
            "object": st.sampled_from(["checkout.session", "refund", "charge", "dispute"]),
            "payment_intent": anything,
            "metadata": st.dictionaries(st.text(max_size=10), anything, max_size=2) | anything,
        },
    )
    events = st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=30) | st.integers(),
            "object": st.just("event") | anything,
            "type": st.sampled_from(handled) | st.text(max_size=30) | anything,
            "data": st.fixed_dictionaries({}, optional={"object": objects | anything}) | anything,
            "created": st.integers(),
            "livemode": st.booleans(),
        },
    )

    @WEBHOOK_SETTINGS
    @given(event=events | st.lists(anything, max_size=3) | anything)
    def signed(event: Any) -> None:
        payload = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(payload)}
        r = shop.api.post("/webhooks/stripe", content=payload, headers=headers)
        if r.status_code == 200:
            assert r.json() == {"received": True}, r.text
        else:
            assert_error_shape(r, 400)

    signed()


# -------------------------------------------------------------- instants the auditor asks about


def test_stock_at_any_iso_instant_answers_within_the_contract(shop: Shop, seeded: Seeded) -> None:
    """`at` is any ISO-8601 time, with any offset, in years 1 to 9999: its UTC form may fall
    outside them (a 422 then, not a 500)."""
    offsets = st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
    )
    instants = st.datetimes(timezones=st.none() | offsets.map(timezone))

    east, west = timezone(timedelta(hours=1)), timezone(-timedelta(hours=1))

    @WEBHOOK_SETTINGS
    @given(at=instants, sku=st.sampled_from(seeded.skus))
    # The edges of what a datetime holds: in UTC, one is in year 10000, the other in year 0.
    @example(at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=west), sku="mug")
    @example(at=datetime(1, 1, 1, tzinfo=east), sku="mug")
    @example(at=datetime(9999, 12, 31, 23, 59, 59, 999999), sku="mug")
    def ask(at: datetime, sku: str) -> None:
        r = shop.api.get(
            f"/api/audit/products/{sku}/stock",
            params={"at": at.isoformat()},
            headers={"Authorization": f"Bearer {AUDITOR}"},
        )
        if r.status_code == 200:
            assert r.json()["sku"] == sku, r.text
        else:
            assert_error_shape(r, 404, 422)

    ask()


# ------------------------------------------------------------------ methods nobody documents


def test_an_undocumented_method_gets_405_naming_the_documented_ones(
    shop: Shop, seeded: Seeded, api_schema: Any
) -> None:
    """RFC 9110: a 405 lists in `Allow` every method the resource supports, whichever of its
    routes answered (GET and PUT of `/api/products/{sku}` share the path)."""
    raw = api_schema.raw_schema
    examples = {"sku": "mug", "cart_id": seeded.cart_ids[0], "session_id": seeded.session_ids[0]}
    examples["order_id"] = seeded.order_ids[0]
    examples["user_id"] = seeded.user_ids[0]
    for template, item in raw["paths"].items():
        path = template.format(**examples)
        documented = {method.upper() for method in item}
        allowed = documented | ({"HEAD"} if "GET" in documented else set())
        for method in sorted({"GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"} - allowed):
            r = shop.api.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"})
            assert_error_shape(r, 405)
            assert r.json()["error"]["code"] == "method_not_allowed", r.text
            sent = {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}
            assert sent == allowed, (method, template, r.headers.get("allow"))


def test_the_error_shape_check_refuses_what_the_contract_does_not_allow() -> None:
    def problems(body: Any, content_type: str = "application/json") -> list[str]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return error_shape_problems(422, content_type, raw)

    good = {"code": "validation_error", "message": "Some fields are missing or invalid."}
    assert problems({"error": good}) == []
    assert problems({"error": {**good, "fields": [{"field": "sku", "message": "bad"}]}}) == []
    assert problems({"error": good}, "text/html")
    assert problems(b"Traceback (most recent call last):")
    assert problems({"detail": "Not Found"})
    assert problems({"error": good, "status": 422})
    assert problems({"error": "validation_error"})
    assert problems({"error": {**good, "code": "ValidationError"}})
    assert problems({"error": {**good, "code": 422}})
    assert problems({"error": {**good, "message": ""}})
    assert problems({"error": {"code": "validation_error"}})
    assert problems({"error": {**good, "trace": "File app.py, line 3"}})
