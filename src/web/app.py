"""The Starlette application factory."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from web.bootstrap import Services
from web.errors import exception_handlers
from web.middleware import RequestIdMiddleware
from web.routes import carts, catalog, operations


def create_app(services: Services) -> Starlette:
    app = Starlette(
        routes=[*catalog.routes, *carts.routes, *operations.routes],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=exception_handlers(),
    )
    app.state.services = services
    return app
