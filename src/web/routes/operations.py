"""Liveness and readiness, for operators and orchestrators."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.storage import StoreUnavailable
from web.context import services


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    try:
        await run_in_threadpool(services(request).database.check)
    except StoreUnavailable as error:
        return JSONResponse(
            {
                "status": "unavailable",
                "error": {"code": "store_unavailable", "message": str(error)},
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready"})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
