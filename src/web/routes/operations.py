"""Liveness and readiness, for operators and orchestrators."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.storage import StoreUnavailable
from web.context import services


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    try:
        await run_in_threadpool(services(request).database.check, 2)
    except StoreUnavailable as error:
        return JSONResponse(
            {
                "status": "unavailable",
                "error": {"code": "store_unavailable", "message": str(error)},
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready"})


async def metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
