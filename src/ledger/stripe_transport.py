"""How the stripe SDK's requests reach Stripe: urllib3, one pool shared by every thread.

The SDK's default transport, `requests`, costs more CPU per call than all the SDK's own work:
per call it merges settings, looks up ~/.netrc and the environment's proxies, and builds a
request and a response object around urllib3's; and it keeps a session (and so a pool of
connections) per thread, so each of the many threads that call Stripe opens connections of its
own. Here the SDK keeps everything it does (requests built, retries with their back-off,
idempotency keys, errors mapped): only the HTTP exchange is urllib3's, with the environment's
proxies resolved once, when the client is made.
"""

from __future__ import annotations

import textwrap
import urllib.request
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

import stripe
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
)

# Connections kept alive between calls, by default; past them, a call opens a connection that
# is closed afterwards (it never waits for one). The service keeps one per thread that may call
# Stripe at once (`web.bootstrap`).
POOL_SIZE = 16

# Failures the SDK may retry (with its back-off, within its retry budget): nothing reached
# Stripe, or its answer did not arrive. A request refused by TLS verification is not retried.
_RETRYABLE = (ConnectTimeoutError, ReadTimeoutError, NewConnectionError, ProtocolError, ProxyError)


class Urllib3Client(stripe.HTTPClient):
    """A `stripe.HTTPClient` over one shared urllib3 pool (thread-safe), for the SDK's
    synchronous calls."""

    name = "urllib3"

    def __init__(
        self,
        api_base: str,
        connect_timeout: float,
        read_timeout: float,
        connections: int = POOL_SIZE,
    ) -> None:
        super().__init__()
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        # Stripe's own CA bundle, as the SDK's requests client verifies with.
        options: dict[str, Any] = {
            "maxsize": connections,
            "block": False,
            "ca_certs": stripe.ca_bundle_path,
        }
        proxy = _environment_proxy(api_base)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )

    # Bytes, as the SDK's own requests client returns (the base class says str).
    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        response = self.send(method, url, dict(headers or {}), post_data, preload_content=True)
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
        response = self.send(method, url, dict(headers or {}), post_data, preload_content=False)
        return response, response.status, response.headers

    def close(self) -> None:
        self._pool.clear()

    def send(
        self, method: str, url: str, headers: dict[str, str], body: Any, *, preload_content: bool
    ) -> urllib3.BaseHTTPResponse:
        """One HTTP exchange (no retry, no redirect); a failure to get an answer raises the
        SDK's `APIConnectionError`, retryable where the request may be sent again. Tracing
        wraps this method (`web.tracing`)."""
        try:
            return self._pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=self._timeout,
                retries=False,  # the SDK retries, with its back-off and its budget
                redirect=False,
                preload_content=preload_content,
            )
        except HTTPError as error:
            _raise_connection_error(error)


def _environment_proxy(api_base: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, ...) names for Stripe's
    API, as `requests` would pick it for every call."""
    parts = urlsplit(api_base)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme or "https")


def _raise_connection_error(error: HTTPError) -> NoReturn:
    retry = isinstance(error, _RETRYABLE)
    message = textwrap.fill(
        "Unexpected error communicating with Stripe. If this problem persists,"
        " let us know at support@stripe.com."
    )
    raise stripe.APIConnectionError(
        f"{message}\n\n(Network error: {type(error).__name__}: {error})", should_retry=retry
    ) from error
