"""The stripe SDK's transport (`ledger.stripe_transport`): the environment's proxy settings are
honoured as `requests` honoured them, and a failure to reach Stripe is the SDK's retryable
connection error."""

from __future__ import annotations

import socket

import pytest
import stripe

from ledger.stripe_transport import Urllib3Client, _environment_proxy


def test_the_environment_names_the_proxy_for_stripe(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _environment_proxy("https://api.stripe.com") is None

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _environment_proxy("https://api.stripe.com") == "http://proxy.internal:3128"
    assert _environment_proxy("http://127.0.0.1:8000/_stripe") is None  # HTTP_PROXY unset

    monkeypatch.setenv("NO_PROXY", "localhost,.stripe.com")
    assert _environment_proxy("https://api.stripe.com") is None


def test_a_stripe_that_cannot_be_reached_is_a_retryable_connection_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    client = Urllib3Client(base, connect_timeout=1.0, read_timeout=1.0)
    with pytest.raises(stripe.APIConnectionError) as raised:
        client.request("GET", f"{base}/v1/checkout/sessions/cs_x", {})
    assert raised.value.should_retry
    client.close()
