"""The stripe SDK's HTTP client on urllib3 (`ledger.stripe_http`), through real sockets: the
gateway against the stand-in in a real server, a port where nothing listens, a server that never
answers, and an HTTP proxy that forwards what it is sent."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import pytest
import stripe

from ledger.payments import PaymentProviderUnavailable
from ledger.stripe_gateway import StripeGateway
from ledger.stripe_http import Urllib3Client
from stripe_standin import StripeStandIn
from web.serving import run_in_thread

KEY = "sk_test_http"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextmanager
def _silent_server() -> Iterator[int]:
    """Accepts connections and reads, never answers: every call runs into the read timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_the_gateway_reads_and_writes_through_it() -> None:
    stand_in = StripeStandIn(
        api_key=KEY, webhook_url=None, webhook_secret="whsec_x", public_base_url="http://x"
    )
    with run_in_thread(stand_in.app) as server:
        gateway = StripeGateway(KEY, api_base=server.url)
        assert isinstance(gateway.http_client, Urllib3Client)
        created = gateway.client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": 1250,
                            "product_data": {"name": "Mug"},
                        },
                        "quantity": 2,
                    }
                ],
                "success_url": "http://shop/s",
                "cancel_url": "http://shop/c",
            },
            options={"idempotency_key": "checkout-1"},
        )
        session = gateway.retrieve_checkout(created.id)
        assert session is not None and session.amount_total == 2500
        # "No such session" is an answer (404), not a connection failure.
        assert gateway.retrieve_checkout("cs_test_missing") is None
        # The idempotency key went along: the same key gives the same session back.
        again = gateway.client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": 1250,
                            "product_data": {"name": "Mug"},
                        },
                        "quantity": 2,
                    }
                ],
                "success_url": "http://shop/s",
                "cancel_url": "http://shop/c",
            },
            options={"idempotency_key": "checkout-1"},
        )
        assert again.id == created.id


def test_nothing_listening_is_a_retryable_connection_error() -> None:
    client = Urllib3Client("http://127.0.0.1", connect_timeout=1.0, read_timeout=1.0)
    url = f"http://127.0.0.1:{_closed_port()}/v1/checkout/sessions/cs_1"
    with pytest.raises(stripe.APIConnectionError) as raised:
        client.request("get", url, {})
    assert raised.value.should_retry


def test_a_server_that_never_answers_is_a_retryable_failure_not_a_hang() -> None:
    # The read timeout ends each attempt (the SDK's own default would wait 80 s per attempt).
    with _silent_server() as port:
        gateway = StripeGateway(KEY, api_base=f"http://127.0.0.1:{port}")
        with pytest.raises(PaymentProviderUnavailable):
            gateway.retrieve_checkout("cs_1")


class _Forwarder(http.server.BaseHTTPRequestHandler):
    """A plain HTTP proxy: notes the absolute URL it was asked for, and fetches it."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        request = urllib.request.Request(self.path, headers=dict(self.headers))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_environment_s_proxy_is_used_unless_no_proxy_exempts_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = StripeStandIn(
        api_key=KEY, webhook_url=None, webhook_secret="whsec_x", public_base_url="http://x"
    )
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forwarder)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with run_in_thread(stand_in.app) as server:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            # As requests does: the variables of the environment, read when the client is made.
            api_base = server.url.replace("127.0.0.1", "localhost")
            assert StripeGateway(KEY, api_base=api_base).retrieve_checkout("cs_missing") is None
            assert _Forwarder.seen == [f"{api_base}/v1/checkout/sessions/cs_missing"]

            monkeypatch.setenv("NO_PROXY", "localhost")
            assert StripeGateway(KEY, api_base=api_base).retrieve_checkout("cs_other") is None
            assert len(_Forwarder.seen) == 1  # went straight to the stand-in
    finally:
        proxy.shutdown()
        proxy.server_close()
