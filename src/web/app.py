"""The Starlette application factory."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount

from web.bootstrap import STAND_IN_PREFIX, Services, processors
from web.errors import exception_handlers
from web.metrics import app_registry
from web.middleware import RequestIdMiddleware
from web.routes import (
    audit,
    carts,
    catalog,
    checkout,
    demo_orders,
    operations,
    order_actions,
    orders,
    pages,
    stripe_webhooks,
)

# Every route of the app, in the order the router tries them: what it serves, and what
# `/openapi.json` documents.
ROUTES: tuple[BaseRoute, ...] = (
    *catalog.routes,
    *carts.routes,
    *checkout.routes,
    *stripe_webhooks.routes,
    *orders.routes,
    *order_actions.routes,
    *audit.routes,
    *operations.routes,
    *pages.routes,
)


def create_app(services: Services) -> Starlette:
    routes: list[BaseRoute] = list(ROUTES)
    if services.stand_in is not None:
        # The demo's pages that need no token, because nothing real is paid: the stand-in's
        # pay page, and the merchant page of a demo order. With real Stripe, neither exists.
        routes.append(demo_orders.mount)
        routes.append(Mount(STAND_IN_PREFIX, app=services.stand_in.app))
    # Traced, the request's span wraps the request id middleware, so its log line is inside it.
    traced = services.tracing.middleware() if services.tracing is not None else []
    app = Starlette(
        routes=routes,
        middleware=[*traced, Middleware(RequestIdMiddleware)],
        exception_handlers=exception_handlers(),
    )
    # No redirect from `/api/products/` to `/api/products`: Starlette builds its absolute URL from
    # the request's Host header, which anyone can set. Such a path answers 404 instead.
    app.router.redirect_slashes = False
    if services.stand_in is not None:
        services.stand_in.app.router.redirect_slashes = False
    app.state.services = services
    # This app's scrape-time figures (lag, backlog, version conflicts) for /metrics.
    app.state.metrics_registry = app_registry(
        services.ledger, services.read_store, services.store_breaker, processors(services)
    )
    return app
