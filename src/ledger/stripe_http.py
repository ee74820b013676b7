"""The stripe SDK's HTTP client for the ledger: urllib3 straight, one pool shared by every thread.

The SDK's `RequestsClient` goes through a `requests.Session` per thread, whose request
preparation (settings merged per call, cookies, hooks, URL and header objects) cost about
0.4 ms of CPU per call on top of urllib3, which does the sending in either case: measured in
one process, 1.0 ms of the caller's CPU per `raw_request` with requests and 0.6 ms with this
client, against a local stand-in. A webhook makes one such call; in the hot-product bench that
was about 5% of the server's CPU. The SDK documents `stripe.HTTPClient` as the class custom
clients inherit from: its retries, errors, idempotency keys and telemetry stay the SDK's.

What `RequestsClient` did that this keeps: connect and read timeouts per call; the SDK's CA
bundle for TLS; `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the environment (requests honours
them); a timeout or a connection error raises `APIConnectionError` that the SDK may retry,
TLS verification failing one it must not. Tracing (`web.tracing`) wraps `request` on the
instance, as it wraps the ledger's commits.
"""

from __future__ import annotations

import textwrap
import urllib.request
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

import stripe
import urllib3
from urllib3.exceptions import HTTPError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

# Connections kept per host: as many as calls may wait on Stripe at once while serving requests
# (`web.store_calls.STRIPE_BOUND_CALLS`) plus the workers' few, so that a burst at 250 ms a call
# does not open and drop a connection per call. Idle ones cost a socket each.
POOL_CONNECTIONS = 300


class Urllib3Client(stripe.HTTPClient):
    name = "urllib3"

    def __init__(
        self, api_base: str, connect_timeout: float, read_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        options: dict[str, Any] = {
            "maxsize": POOL_CONNECTIONS,
            "block": False,
            "timeout": timeout,
            # The SDK retries (max_network_retries, with its backoff and idempotency keys);
            # urllib3 retrying too would multiply them.
            "retries": False,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": stripe.ca_bundle_path,
        }
        proxy = _proxy_for(api_base)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:  # the body's bytes (the SDK's stubs say str)
        try:
            response = self._pool.request(
                method.upper(), url, body=post_data, headers=headers, redirect=False
            )
        except Exception as error:
            _raise_connection_error(error)
        return response.data, response.status, response.headers

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        try:
            response = self._pool.request(
                method.upper(),
                url,
                body=post_data,
                headers=headers,
                redirect=False,
                preload_content=False,
            )
        except Exception as error:
            _raise_connection_error(error)
        return response, response.status, response.headers

    def close(self) -> None:
        self._pool.clear()


def _proxy_for(api_base: str) -> str | None:
    """The proxy the environment names for `api_base`'s scheme, unless NO_PROXY exempts it."""
    parts = urlsplit(api_base)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _raise_connection_error(error: Exception) -> NoReturn:
    """As the SDK's own clients do: a timeout or a broken connection may be retried; a TLS
    failure may not (it will not heal by itself); anything else is not either."""
    if isinstance(error, SSLError):
        should_retry = False
        message = "Could not verify Stripe's SSL certificate."
    elif isinstance(error, (Urllib3Timeout, ProtocolError, ConnectionError)):
        should_retry = True
        message = "Unexpected error communicating with Stripe."
    elif isinstance(error, HTTPError):
        should_retry = False
        message = "Unexpected error communicating with Stripe."
    else:
        should_retry = False
        message = "Unexpected error communicating with Stripe (a local configuration issue?)."
    detail = f"{type(error).__name__}: {error}"
    raise stripe.APIConnectionError(
        textwrap.fill(message) + f"\n\n(Network error: {detail})", should_retry=should_retry
    ) from error
