"""uvicorn's HTTP protocol as the ledger runs it: bounded request heads and connections, and
its refusals (400, 431, 503) in the contract's error shape.

The one place that leans on uvicorn's internals (checked against uvicorn 0.54, pinned in
pyproject.toml): the protocol's parser callbacks, its private `_loop` constructor argument, and
its private `_should_upgrade` (overridden so that a refused head is never handed to the
WebSocket upgrade). tests/test_hardening.py pins each of them.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from web.logs import log

# The request line and headers together. uvicorn's httptools protocol (what `uvicorn[standard]`
# runs) has no limit of its own (`h11_max_incomplete_event_size` binds h11 only), so a client
# could send megabytes of headers and have them all buffered. 64 KiB is twice what nginx passes
# by default (4 x 8 KiB buffers) and far above what browsers, storefronts and Stripe send.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
# Connections (or running requests) at once before new requests answer 503: far above what two
# cores serve, bounded below the process's file-descriptor limit (the store's connections and
# the log need some too).
MAX_CONNECTIONS = 1000
_FDS_KEPT_FOR_OTHER_USES = 100
# After refusing a head, how long the rest of what the client sends is read and dropped, so that
# it receives the refusal instead of a reset (a "lingering close", as nginx does).
LINGER_SECONDS = 2.0
# Over capacity, at most one warning per this many seconds, with the count since the last one.
OVER_CAPACITY_LOG_EVERY = 10.0


def connection_limit(preferred: int = MAX_CONNECTIONS) -> int:
    """`preferred`, or less when the process may not open that many file descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return preferred
    return max(1, min(preferred, soft - _FDS_KEPT_FOR_OTHER_USES))


def _error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with a contract-shaped JSON body, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return b"".join(
        [
            f"HTTP/1.1 {status} {reason}\r\n".encode(),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class _Throttle:
    """Counts events; says how many happened since it last said so, at most every `every` s."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._count = 0
        self._last = -every

    def hit(self) -> int | None:
        self._count += 1
        now = time.monotonic()
        if now - self._last < self.every:
            return None
        self._last, count, self._count = now, self._count, 0
        return count


_over_capacity_log = _Throttle(OVER_CAPACITY_LOG_EVERY)


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "service_unavailable",
                "message": "The server has too many connections right now; please retry shortly.",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a bound on the request head (431), and its refusals
    (400, 431, and 503 past `limit_concurrency`) in the contract's error shape."""

    max_head_bytes = MAX_REQUEST_HEAD_BYTES

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Checked here rather than by uvicorn, whose 503 is plain text.
        self._connection_limit = self.limit_concurrency
        self.limit_concurrency = None
        self._reading_head = True  # between requests, and until a request's head is complete
        self._head_received = 0  # raw bytes since the head began (the last chunk may hold body)
        self._head_size = 0  # the head's request target and headers, as parsed
        self._refusing = False  # the head is too large: the parser's callbacks do nothing more
        self._lingering = False  # the refusal is written: whatever else arrives is dropped

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._reading_head:
            self._head_received += len(data)
        super().data_received(data)
        # A head still incomplete past the limit is refused now, not buffered until it ends.
        too_large = self._refusing or (
            self._reading_head and self._head_received > self.max_head_bytes
        )
        if too_large and not self.transport.is_closing():
            self._refuse_head()

    def on_url(self, url: bytes) -> None:
        if not self._refusing:
            self._head_size += len(url)
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refusing:
            self._head_size += len(name) + len(value) + 4
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refusing:
            return
        if self._head_size > self.max_head_bytes:
            # Complete, but too large (it came in one read): refused once the read is parsed.
            self._refusing = True
            return
        self._reading_head = False
        limit = self._connection_limit
        if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
            count = _over_capacity_log.hit()
            if count is not None:
                log.warning("http_over_capacity", answered_503=count, limit=limit)
            # The request goes to the 503 app instead of ours, exactly where uvicorn would.
            app, self.app = self.app, _over_capacity
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refusing:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusing:
            return
        self._reading_head = True
        self._head_received = 0
        self._head_size = 0
        super().on_message_complete()

    def _should_upgrade(self) -> bool:
        return not self._refusing and super()._should_upgrade()

    def send_400_response(self, msg: str) -> None:
        self.transport.write(
            _error_bytes(400, "Bad Request", "bad_request", "This is not a valid HTTP request.")
        )
        self.transport.close()

    def _refuse_head(self) -> None:
        self._refusing = self._lingering = True
        log.info(
            "http_head_too_large",
            status=431,
            limit=self.max_head_bytes,
            client=self.client[0] if self.client else None,
        )
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's head, while the previous response is still being written.
            self.transport.close()
            return
        self.transport.write(
            _error_bytes(
                431,
                "Request Header Fields Too Large",
                "request_headers_too_large",
                f"The request line and headers are over {self.max_head_bytes} bytes.",
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def server_options() -> dict[str, Any]:
    """uvicorn.Config arguments every ledger server runs with."""
    return {"http": BoundedHttpToolsProtocol, "limit_concurrency": connection_limit()}
