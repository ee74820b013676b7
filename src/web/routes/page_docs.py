"""The pages' entries in the OpenAPI document (`web.routes.pages`: HTML for people).

They belong beside their handlers, as every API route's do; pages.py is being rewritten
separately, so until its handlers carry their own `@documented` they are attached here, and
`routes` is the pages' routes once documented.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from web.route_docs import HTML, Answer, Query, documented
from web.routes import pages

documented(
    "GET",
    "The checkout success page: shows the order's status, polling until it is final",
    "pages",
    {
        200: Answer("An HTML page.", media_type=HTML),
        400: Answer("An HTML page: `session_id` is missing or blank.", media_type=HTML),
    },
    query=(
        Query(
            "session_id",
            # Blank (empty or only spaces) counts as missing: the 400 page.
            Annotated[str, Field(min_length=1, pattern=r"\S")],
            "The Stripe Checkout session id.",
            required=True,
        ),
    ),
)(pages.success_page)
documented("GET", "A demo storefront", "pages", {200: Answer("An HTML page.", media_type=HTML)})(
    pages.storefront
)

routes = pages.routes
