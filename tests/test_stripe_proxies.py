"""The gateway reaches Stripe through the proxy the environment names (HTTP_PROXY, NO_PROXY, ...),
as read once when it is made: a real stand-in behind a real forwarding proxy, over HTTP."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from ledger.stripe_gateway import StripeGateway
from stripe_standin.standin import StripeStandIn
from tests.shop import STRIPE_KEY, WEBHOOK_SECRET
from web.serving import run_in_thread

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class ForwardingProxy(ThreadingHTTPServer):
    """A plain HTTP proxy: forwards each request to the host its absolute URL names, and
    remembers the URLs."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.forwarded: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: ForwardingProxy

    def _forward(self) -> None:
        self.server.forwarded.append(self.path)
        target = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        upstream = http.client.HTTPConnection(target.netloc, timeout=10)
        try:
            upstream.request(
                self.command, target.path + f"?{target.query}" * bool(target.query), body, headers
            )
            answer = upstream.getresponse()
            content = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stripe_url() -> Iterator[str]:
    stand_in = StripeStandIn(
        api_key=STRIPE_KEY,
        webhook_url=None,
        webhook_secret=WEBHOOK_SECRET,
        public_base_url="http://127.0.0.1",
    )
    server = run_in_thread(stand_in.app)
    try:
        yield server.url
    finally:
        stand_in.close()
        server.stop()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardingProxy]:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    server = ForwardingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_calls_to_stripe_go_through_the_proxy_the_environment_names(
    stripe_url: str, proxy: ForwardingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    gateway = StripeGateway(STRIPE_KEY, api_base=stripe_url)
    assert gateway.retrieve_checkout("cs_test_unknown") is None
    assert gateway.retrieve_checkout("cs_test_other") is None
    assert proxy.forwarded == [
        f"{stripe_url}/v1/checkout/sessions/cs_test_unknown",
        f"{stripe_url}/v1/checkout/sessions/cs_test_other",
    ]


def test_no_proxy_for_a_host_that_no_proxy_names(
    stripe_url: str, proxy: ForwardingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    gateway = StripeGateway(STRIPE_KEY, api_base=stripe_url)
    assert gateway.retrieve_checkout("cs_test_unknown") is None
    assert proxy.forwarded == []


def test_the_proxy_is_read_once_when_the_gateway_is_made(
    stripe_url: str, proxy: ForwardingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = StripeGateway(STRIPE_KEY, api_base=stripe_url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert gateway.retrieve_checkout("cs_test_unknown") is None
    assert proxy.forwarded == []
