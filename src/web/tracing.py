"""OpenTelemetry tracing, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Off, nothing of OpenTelemetry is imported and nothing is wrapped: the request path, the commits
and the workers run exactly the code they run without this module (the "no measurable cost"
goal), and no tracer provider is installed.

On, the standard `OTEL_*` variables configure the SDK (`OTEL_SERVICE_NAME`, default "ledger";
`OTEL_TRACES_SAMPLER`; `OTEL_BSP_SCHEDULE_DELAY`; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, headers,
timeouts...) and spans go out over OTLP/HTTP, in batches, from a thread of the SDK's own:
- each HTTP request is a server span (the ASGI instrumentation), continuing the caller's trace
  when it sends a W3C `traceparent`; named by its route template, never its raw path;
- each call to Stripe is a client span (the stripe SDK's transport, `ledger.stripe_transport`,
  wrapped here: the urllib3 instrumentation would do the same, but its releases lag those of
  the SDK and of the ASGI instrumentation, which pin each other's versions), and its
  `traceparent` goes along, so the built-in stand-in's own request span joins the same trace;
- each commit to the event store is a span named by the events it records;
- each event a side effect handles (refunds, captures, e-mails) is a span of its own trace,
  linked to the commit that recorded the event when this process made that commit;
- every log line written inside a span carries its `trace_id` and `span_id`.

The domain knows nothing of this: the commit and the side effects are wrapped here, at the
edge, the way OpenTelemetry's own instrumentations wrap the libraries they trace.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from side_effects.base import SideEffect
from web.metrics import UNMATCHED, route_label

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanContext, Tracer
    from structlog.typing import EventDict, WrappedLogger

    from ledger.decisions import DecidingApplication
    from ledger.stripe_transport import Urllib3Client

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
DEFAULT_SERVICE_NAME = "ledger"
# Commits remembered for linking the side effects that follow them, by event. Workers in this
# process handle an event within moments of its commit, so ten thousand events cover any
# backlog worth linking; older ones are simply not linked.
REMEMBERED_EVENTS = 10_000
# An event: its aggregate's id and its version there.
EventKey = tuple[Any, int]
# Spans in this process are named for the instrumentation scope below.
SCOPE = "ledger"


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not
    disabled (`OTEL_SDK_DISABLED=true`, the standard off switch)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(environ.get(ENDPOINT, "").strip())


def _dotenv_otel(environ: MutableMapping[str, str], path: str = ".env") -> None:
    """The `OTEL_*` lines of `.env` into the environment, where the SDK reads them (the other
    settings come from `.env` through pydantic-settings; these are read by OpenTelemetry
    itself). The real environment wins, as it does for every other setting; empty means unset,
    as for the settings (`env_ignore_empty`)."""
    if not os.path.exists(path):
        return
    from dotenv import dotenv_values

    for key, value in dotenv_values(path).items():
        if key.startswith("OTEL_") and value and not environ.get(key):
            environ[key] = value


class CommitContexts:
    """The span context of each recent commit, by the events it records (their aggregate and
    version): what a side effect handling one of those events links to. Known before the commit
    (unlike the events' log positions), so a worker woken by the commit always finds it.

    Kept in memory rather than in the log: the log is the audited, hash-chained record of what
    happened to orders, and a trace id is operational noise there (and a write per commit in a
    side table would cost every commit, traced or not). So the link exists when the worker
    runs in the process that made the commit (`ledger serve`, the default); a separate
    `ledger work` traces its work without it."""

    def __init__(self, capacity: int = REMEMBERED_EVENTS) -> None:
        self._capacity = capacity
        self._contexts: OrderedDict[EventKey, SpanContext] = OrderedDict()
        self._lock = threading.Lock()  # commits come from many threads

    def remember(self, events: Iterable[EventKey], context: SpanContext) -> None:
        with self._lock:
            for key in events:
                # A retried decision saves the same versions again: its commit wins.
                self._contexts[key] = context
                self._contexts.move_to_end(key)
            while len(self._contexts) > self._capacity:
                self._contexts.popitem(last=False)

    def of(self, event: EventKey) -> SpanContext | None:
        with self._lock:
            return self._contexts.get(event)


class Tracing:
    """The tracer provider this process exports through, and what it instruments."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer(SCOPE)
        self.commits = CommitContexts()

    # ---- the edges ----------------------------------------------------------------------------

    def middleware(self) -> list[Middleware]:
        """The request span, outermost of the app's own middleware so that the request's log
        line (`web.middleware`) is written inside it; then its name from the route."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.util.http import get_excluded_urls

        return [
            Middleware(
                OpenTelemetryMiddleware,
                tracer_provider=self.provider,
                # The route is known only once the router has run: the method until then
                # (never the raw path, whose ids would make every span name unique).
                default_span_details=_method_only,
                # One span per request, not three: the body's receive and send events are
                # not worth a span each.
                exclude_spans=["receive", "send"],
                excluded_urls=get_excluded_urls("ASGI"),
            ),
            Middleware(RouteSpanNames),
        ]

    def instrument_ledger(self, ledger: DecidingApplication) -> None:
        """A span for each commit of `ledger`: its `save`, wrapped on this instance."""
        from opentelemetry.trace import SpanKind

        save = ledger.save
        tracer = self.tracer
        commits = self.commits

        def traced_save(*objs: Any, **kwargs: Any) -> Any:
            # Read before saving: the save empties each aggregate's pending events.
            events = [e for obj in objs for e in getattr(obj, "pending_events", ())]
            names = list(dict.fromkeys(type(e).__qualname__ for e in events))
            with tracer.start_as_current_span(
                "commit " + ", ".join(names or ["nothing"]),
                kind=SpanKind.INTERNAL,
                attributes={
                    "ledger.events": len(events),
                    "ledger.aggregates": sorted({type(obj).__name__ for obj in objs}),
                },
            ) as span:
                commits.remember(
                    [(e.originator_id, e.originator_version) for e in events],
                    span.get_span_context(),
                )
                recordings = save(*objs, **kwargs)
                positions = [r.notification.id for r in recordings]
                if positions:
                    span.set_attribute("ledger.positions", [min(positions), max(positions)])
                return recordings

        # An instance attribute: the commands' `self.save(...)` finds it before the method.
        ledger.save = traced_save  # type: ignore[method-assign]

    def instrument_stripe(self, transport: Urllib3Client) -> None:
        """A client span for each HTTP exchange with Stripe (each network retry its own), with
        the span's `traceparent` sent along: its `send`, wrapped on this instance."""
        from urllib.parse import urlsplit

        from opentelemetry.propagate import inject
        from opentelemetry.trace import SpanKind, Status, StatusCode

        send = transport.send
        tracer = self.tracer

        def traced_send(
            method: str, url: str, headers: dict[str, str], body: Any, **kwargs: Any
        ) -> Any:
            parts = urlsplit(url)
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "url.full": url,
                "server.address": parts.hostname or "",
            }
            if parts.port is not None:
                attributes["server.port"] = parts.port
            with tracer.start_as_current_span(
                method, kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                inject(headers)
                response = send(method, url, headers, body, **kwargs)
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                return response

        transport.send = traced_send  # type: ignore[method-assign]

    def instrument_side_effects(self, processors: Iterable[object]) -> None:
        """A span for each event a side effect handles, linked to the commit that recorded it."""
        for processor in processors:
            if isinstance(processor, SideEffect):
                processor.handle = self._traced_handle(processor)  # type: ignore[method-assign]

    def _traced_handle(self, effect: SideEffect) -> Any:
        from opentelemetry.context import Context
        from opentelemetry.trace import Link, SpanKind

        handle = effect.handle
        tracer = self.tracer
        commits = self.commits
        name = f"handle {effect.name}"

        def traced_handle(event: Any, position: int) -> None:
            cause = commits.of((event.originator_id, event.originator_version))
            with tracer.start_as_current_span(
                name,
                # A trace of its own (a worker acts later, on its own schedule), linked to the
                # commit's: the standard shape for work that follows a message.
                context=Context(),
                kind=SpanKind.CONSUMER,
                links=[Link(cause)] if cause is not None else None,
                attributes={"ledger.position": position, "ledger.event": type(event).__qualname__},
            ):
                handle(event, position)

        return traced_handle

    def shutdown(self) -> None:
        """Exports what is still buffered, then stops the exporter's thread."""
        self.provider.shutdown()


def _method_only(scope: Scope) -> tuple[str, dict[str, Any]]:
    return str(scope.get("method", "HTTP")), {}


class RouteSpanNames:
    """Renames the request's span to `METHOD /route/{template}` once the router has chosen the
    route, and records the template as `http.route` (the semantic conventions' low-cardinality
    name). At the response's start: the instrumentation ends the span with the last body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")  # before routing: a mount extends it

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = route_label(scope, root_path)
                if route != UNMATCHED:
                    from opentelemetry import trace

                    span = trace.get_current_span()
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute("http.route", route)
            await send(message)

        await self.app(scope, receive, send_named)


def add_trace_id(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: the current span's trace and span ids on the line, when there is
    a span (only installed while tracing is on)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


_started: Tracing | None = None
_start_lock = threading.Lock()


def start_tracing(environ: MutableMapping[str, str] | None = None) -> Tracing | None:
    """Installs the tracer provider, the OTLP/HTTP exporter and the Stripe calls' instrumentation
    when the environment (or `.env`) asks for traces; None, having imported nothing of
    OpenTelemetry, when it does not. Once per process: a second call returns the first's."""
    global _started
    environ = os.environ if environ is None else environ
    _dotenv_otel(environ)
    if not tracing_wanted(environ):
        return None
    with _start_lock:
        if _started is None:
            _started = _install()
        return _started


def _install() -> Tracing:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; "ledger" only
    # where they name no service (the SDK's own default is "unknown_service").
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    # The exporter and the batching read their OTEL_* variables themselves (endpoint plus
    # /v1/traces, headers, timeout, batch delay and size). The export runs with
    # instrumentation suppressed, so its own HTTP calls make no spans.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return Tracing(provider)
