"""Liveness, readiness, metrics and the OpenAPI document, for operators and orchestrators."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.storage import StoreUnavailable
from web.context import require_bearer, services
from web.logs import log
from web.metrics import exposition
from web.openapi_document import document_bytes
from web.responses import Health, NotReady, OpenApiDocument, Ready, checked
from web.route_docs import PROMETHEUS, UNAUTHORIZED, Answer, documented


@documented("GET", "Liveness", "operations", {200: Answer("The process lives.", Health)})
async def healthz(_: Request) -> JSONResponse:
    return JSONResponse(checked(Health, {"status": "ok"}))


@documented(
    "GET",
    "Readiness: whether the store answers",
    "operations",
    {
        200: Answer("Ready.", Ready),
        503: Answer("A dependency is down (never its address).", NotReady),
    },
)
async def readyz(request: Request) -> JSONResponse:
    try:
        await run_in_threadpool(services(request).database.check, 2)
    except StoreUnavailable as error:
        # The driver's reason names the host, port, database and user: the log keeps it for
        # operators, the answer (which anyone who can reach the port reads) only the dependency.
        log.warning("not_ready", dependency="database", reason=str(error))
        body = {
            "status": "unavailable",
            "dependency": "database",
            "error": {"code": "store_unavailable", "message": "The database does not answer."},
        }
        return JSONResponse(checked(NotReady, body), status_code=503)
    return JSONResponse(checked(Ready, {"status": "ready"}))


@documented(
    "GET",
    "Prometheus metrics",
    "operations",
    {200: Answer("Prometheus text format.", media_type=PROMETHEUS), 401: UNAUTHORIZED},
    security="metrics",
    optional_security=True,
)
async def metrics(request: Request) -> Response:
    token = services(request).settings.metrics_token
    if token is not None:  # unset: open, as the contract says (keep it off the public network)
        require_bearer(request, [token.get_secret_value()], "metrics")
    # In a thread: the app's figures query the database.
    body = await run_in_threadpool(exposition, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@documented(
    "GET",
    "This document",
    "operations",
    {200: Answer("The OpenAPI document.", OpenApiDocument)},
)
async def openapi(request: Request) -> Response:
    # The document of the routes this app serves, built once per process.
    return Response(document_bytes(request.app.routes), media_type="application/json")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
