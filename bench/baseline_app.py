"""The baseline for `bench/hot_product.py`: the webhook a user would otherwise write.

The seed design's fulfilment as ONE plain SQL transaction, on the same stack as the ledger:
Starlette served by uvicorn[standard] (uvloop, httptools), a psycopg 3 connection pool, and the
stripe SDK's `StripeClient` (its default requests client, the ledger gateway's timeouts and
retry budget) pointed at the same Stripe stand-in. The blocking part (Stripe call and
transaction) runs in Starlette's threadpool, as the ledger's does. No event log, no read
models, no workers. (The SDK's async client is not used: it goes through httpx, whose
httpcore retries a failing `import sniffio` on every request where sniffio is not installed,
as in this virtualenv, which costs more CPU than the SQL.)

`POST /webhooks/stripe`:
  1. verify the `Stripe-Signature` on the raw body (`stripe.WebhookSignature.verify_header`,
     300 s tolerance; 400 when it does not match);
  2. for `checkout.session.completed` / `async_payment_succeeded`, retrieve the session from
     Stripe with `expand[]=line_items` (as the ledger does); "no such session" is answered 200,
     any other Stripe failure 503 so that Stripe retries;
  3. a paid session, in one transaction:
     `INSERT INTO orders ... ON CONFLICT (checkout_session_id) DO NOTHING` (a duplicate answers
     200 and changes nothing), then per line (sorted by sku)
     `UPDATE products SET on_hand = on_hand - q WHERE sku = ... AND on_hand >= q` (the row lock
     serialises buyers of one product; 0 rows means sold out: the order is recorded as
     `refund_pending` instead), then the cart is marked converted; 200.
     A store failure answers 503.

`GET /orders/{session_id}` answers the order's status (the storefront's poll, so the open-loop
scenario polls both systems alike); `GET /readyz` answers 200 when the database does.

Line items name their SKU in `metadata[sku]` (set when the bench creates the session); the cart
id comes from the session's `metadata[cart_id]`. Tables: `SCHEMA` (created by the bench).

Run (the bench does this, one process per `--processes`):

    BASELINE_DATABASE_URL=postgresql://... STRIPE_API_KEY=sk_test_... \\
    STRIPE_WEBHOOK_SECRET=whsec_... STRIPE_API_BASE=http://127.0.0.1:PORT \\
        .venv/bin/python bench/baseline_app.py --port 8100
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import stripe
import uvicorn
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SCHEMA = """
CREATE TABLE products (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    unit_amount integer NOT NULL,
    currency    text NOT NULL,
    on_hand     integer NOT NULL CHECK (on_hand >= 0)
);
CREATE TABLE carts (
    cart_id uuid PRIMARY KEY,
    status  text NOT NULL DEFAULT 'open'
);
CREATE TABLE orders (
    checkout_session_id text PRIMARY KEY,
    cart_id             uuid NOT NULL REFERENCES carts,
    status              text NOT NULL,
    reason              text,
    payment_intent      text,
    amount_total        integer NOT NULL,
    currency            text NOT NULL,
    lines               jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
"""

SIGNATURE_TOLERANCE_SECONDS = 300
MAX_BODY = 1024 * 1024
HANDLED = {"checkout.session.completed", "checkout.session.async_payment_succeeded"}
POOL_MIN, POOL_MAX = 4, 16  # the ledger's pool: 4 connections, 12 more on demand


class _SoldOut(Exception):
    pass


def _received() -> JSONResponse:
    return JSONResponse({"received": True})


def _error(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": code.replace("_", " ")}}, status)


class Baseline:
    def __init__(self, conninfo: str, api_key: str, api_base: str, secret: str) -> None:
        self.secret = secret
        self.pool = ConnectionPool(
            conninfo,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            kwargs={"autocommit": True},
            timeout=5,
            open=False,
        )
        # The stripe SDK's default (requests) client, with the ledger gateway's timeouts and
        # retry budget; called from the threadpool, as the SDK's synchronous API wants.
        self.stripe = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=1,
            http_client=stripe.RequestsClient(timeout=(1.0, 1.5)),
        )

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(self.pool.open, True)
        try:
            yield
        finally:
            await run_in_threadpool(self.pool.close)

    async def webhook(self, request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, "payload_too_large")
        try:
            text = body.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text,
                request.headers.get("stripe-signature", ""),
                self.secret,
                tolerance=SIGNATURE_TOLERANCE_SECONDS,
            )
            event = json.loads(text)
            event_type = event["type"]
            session_id = event["data"]["object"]["id"]
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, KeyError):
            return _error(400, "invalid_event")
        if event_type not in HANDLED:
            return _received()
        return await run_in_threadpool(self.fulfil, session_id)

    def fulfil(self, session_id: str) -> JSONResponse:
        try:
            session = self.stripe.v1.checkout.sessions.retrieve(
                session_id, params={"expand": ["line_items"]}
            )
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return _received()  # not a session of ours: nothing to do, ever
            return _error(503, "stripe_unavailable")
        except stripe.StripeError:
            return _error(503, "stripe_unavailable")
        if session.payment_status != "paid":
            return _received()
        raw = session.to_dict()
        lines = sorted(
            (item["metadata"]["sku"], int(item["quantity"])) for item in raw["line_items"]["data"]
        )
        try:
            self.record(raw, lines)
        except (psycopg.OperationalError, PoolTimeout):
            return _error(503, "store_unavailable")
        except psycopg.errors.ForeignKeyViolation:
            return _received()  # a cart this shop does not know: nothing to do, ever
        return _received()

    def record(self, session: dict[str, Any], lines: list[tuple[str, int]]) -> str:
        """The order for a paid session, in one transaction. Returns its status."""
        session_id = session["id"]
        cart_id = session["metadata"]["cart_id"]
        with self.pool.connection() as conn, conn.transaction():
            cur = conn.execute(
                "INSERT INTO orders (checkout_session_id, cart_id, status, payment_intent,"
                " amount_total, currency, lines) VALUES (%s, %s, 'confirmed', %s, %s, %s, %s)"
                " ON CONFLICT (checkout_session_id) DO NOTHING",
                (
                    session_id,
                    cart_id,
                    session.get("payment_intent"),
                    session["amount_total"],
                    session["currency"],
                    json.dumps([{"sku": s, "quantity": q} for s, q in lines]),
                ),
            )
            if cur.rowcount == 0:
                return "duplicate"
            try:
                if len(lines) == 1:  # a refused UPDATE changes nothing: no savepoint needed
                    self._take(conn, lines)
                else:
                    with conn.transaction():  # savepoint: all lines or none
                        self._take(conn, lines)
            except _SoldOut:
                conn.execute(
                    "UPDATE orders SET status = 'refund_pending', reason = 'out_of_stock'"
                    " WHERE checkout_session_id = %s",
                    (session_id,),
                )
                return "refund_pending"
            conn.execute("UPDATE carts SET status = 'converted' WHERE cart_id = %s", (cart_id,))
            return "confirmed"

    @staticmethod
    def _take(conn: psycopg.Connection[Any], lines: list[tuple[str, int]]) -> None:
        for sku, quantity in lines:
            cur = conn.execute(
                "UPDATE products SET on_hand = on_hand - %s WHERE sku = %s AND on_hand >= %s",
                (quantity, sku, quantity),
            )
            if cur.rowcount == 0:
                raise _SoldOut(sku)

    def _order(self, session_id: str) -> JSONResponse:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT status FROM orders WHERE checkout_session_id = %s", (session_id,)
            ).fetchone()
        if row is None:
            return _error(404, "unknown_checkout_session")
        return JSONResponse({"checkout_session_id": session_id, "status": row[0]})

    async def order(self, request: Request) -> JSONResponse:
        return await run_in_threadpool(self._order, request.path_params["session_id"])

    def _ready(self) -> JSONResponse:
        try:
            with self.pool.connection() as conn:
                conn.execute("SELECT 1")
        except (psycopg.OperationalError, PoolTimeout):
            return _error(503, "store_unavailable")
        return JSONResponse({"status": "ready"})

    async def readyz(self, _request: Request) -> JSONResponse:
        return await run_in_threadpool(self._ready)


def create_app(conninfo: str, api_key: str, api_base: str, secret: str) -> Starlette:
    baseline = Baseline(conninfo, api_key, api_base, secret)
    return Starlette(
        routes=[
            Route("/webhooks/stripe", baseline.webhook, methods=["POST"]),
            Route("/orders/{session_id}", baseline.order, methods=["GET"]),
            Route("/readyz", baseline.readyz, methods=["GET"]),
        ],
        lifespan=baseline.lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    app = create_app(
        os.environ["BASELINE_DATABASE_URL"],
        os.environ["STRIPE_API_KEY"],
        os.environ["STRIPE_API_BASE"],
        os.environ["STRIPE_WEBHOOK_SECRET"],
    )
    # uvicorn's defaults otherwise (uvloop, httptools, an access log line per request).
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
