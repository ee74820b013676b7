"""ASGI middleware: a request id for every request, bound to its log lines and its events;
and each request's latency by route template, for /metrics."""

from __future__ import annotations

import os
import re
import time
from typing import Any, Literal

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.logs import log
from web.metrics import HTTP_LATENCY, method_label, route_label

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Where a handler leaves the line its request is logged as (`log_once`).
_LOG_LINE = "log_line"

Level = Literal["info", "warning", "error"]


def log_once(scope: Scope, logger: Any, event: str, level: Level = "info", **fields: Any) -> None:
    """Logs the request as `event` with `fields` on `logger` (a structlog logger), instead of
    `http_request`: one line per request, still with its method, path, status and duration
    (and the context bound to it).

    For a request whose handler has its own story to tell (a webhook's outcome): a second
    line per request cost as much CPU as the rest of the logging of a webhook."""
    scope.setdefault("state", {})[_LOG_LINE] = (getattr(logger, level), event, fields)


class RequestIdMiddleware:
    """Takes a sane incoming X-Request-ID or makes one; echoes it; logs each request once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # 32 random hex digits, as uuid4().hex gives, at a quarter of its cost.
        request_id = incoming if _SAFE_ID.match(incoming) else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        root_path = scope.get("root_path", "")  # before routing: a mount extends it
        started = time.perf_counter()
        status = 500
        timed = False

        def time_it() -> None:
            nonlocal timed
            if not timed:
                timed = True
                HTTP_LATENCY.labels(
                    route_label(scope, root_path), method_label(scope["method"]), str(status)
                ).observe(time.perf_counter() - started)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                time_it()  # before the last byte leaves: whoever has the answer finds it counted
            await send(message)

        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            time_it()  # no complete answer went out (an error, a client gone): counted here
            write, event, fields = scope["state"].get(_LOG_LINE) or (log.info, "http_request", {})
            write(
                event,
                **fields,
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()
