"""The frame every page shares: the layout template, versioned static assets, data for the
page's scripts, and the headers that keep a page (and the session id in its address) private.

Pages are plain HTML from string templates (`web/templates/`), with a little JavaScript and CSS
served by the app itself (`web/static/`, under `/static`): no build step, no external assets.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.responses import HTMLResponse

WEB_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # The session id in the address is what unlocks the order status: never pass it on.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'"
    ),
}


@functools.cache
def template(name: str) -> string.Template:
    return string.Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


@functools.cache
def asset(name: str) -> str:
    """The URL of a static file, versioned by its content so browsers never run stale code."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def _script_json(value: Any) -> str:
    """JSON safe to place inside a <script type="application/json"> element."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(
    *,
    title: str,
    body: str,
    status_code: int = 200,
    head: str = "",
    scripts: tuple[str, ...] = (),
    data: Mapping[str, Any] | None = None,
) -> HTMLResponse:
    """A whole page. `data` maps element ids to values the scripts read as JSON: the CSP
    allows no inline script, and the scripts spell no status of their own."""
    blocks = "".join(
        f'<script type="application/json" id="{html.escape(id_)}">{_script_json(value)}</script>'
        for id_, value in (data or {}).items()
    )
    tags = "".join(f'<script src="{html.escape(asset(s))}" defer></script>' for s in scripts)
    page = template("layout.html").substitute(
        title=html.escape(title),
        css=html.escape(asset("style.css")),
        icon=html.escape(asset("favicon.svg")),
        head=head,
        body=body,
        scripts=blocks + tags,
    )
    return HTMLResponse(page, status_code=status_code, headers=PAGE_HEADERS)
