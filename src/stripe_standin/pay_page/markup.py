"""The pay page's HTML templates (`templates/`, shipped as package data), filled so that
every text is escaped and only markup made from templates goes in unescaped."""

from __future__ import annotations

import functools
import html
import string
from importlib.resources import files


class Html(str):
    """Markup safe to put in a page as it is: a filled template, never text from a session."""


def fill(template: str, /, **values: str) -> Html:
    """The file `template` with `values`: plain strings escaped, `Html` as it is."""
    safe = {k: v if isinstance(v, Html) else html.escape(v) for k, v in values.items()}
    return Html(_template(template).substitute(safe))


def join(parts: list[Html]) -> Html:
    return Html("".join(parts))


@functools.cache
def _template(name: str) -> string.Template:
    text = (files("stripe_standin.pay_page") / "templates" / name).read_text(encoding="utf-8")
    # The files end with a newline, as text files do; fragments join without one.
    return string.Template(text.removesuffix("\n"))
