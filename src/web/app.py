"""The Starlette application factory."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount

from web.bootstrap import STAND_IN_PREFIX, Services
from web.errors import exception_handlers
from web.middleware import RequestIdMiddleware
from web.routes import audit, carts, catalog, checkout, operations, pages, stripe_webhooks


def create_app(services: Services) -> Starlette:
    routes: list[BaseRoute] = [
        *catalog.routes,
        *carts.routes,
        *checkout.routes,
        *stripe_webhooks.routes,
        *audit.routes,
        *operations.routes,
        *pages.routes,
    ]
    if services.stand_in is not None:
        routes.append(Mount(STAND_IN_PREFIX, app=services.stand_in.app))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=exception_handlers(),
    )
    app.state.services = services
    return app
