"""Stripe's request parameters: form-encoded bracket keys in, validated Python values out.

Every helper raises :class:`StripeError` with the message and `param` real Stripe gives, so a
client's error handling meets the same answers here as there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from stripe_standin.errors import StripeError

MAX_AMOUNT = 99_999_999  # Stripe's limit for an amount in minor units (8 digits)
DEFAULT_PAGE = 10  # Stripe's default page size for every list

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def names(text: str) -> frozenset[str]:
    """A set of parameter names written as one whitespace-separated string."""
    return frozenset(text.split())


def parse_stripe_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Turn Stripe-style bracket keys (``a[0][b]=1``, ``expand[]=x``, ``metadata[k]=v``)
    into nested dicts and lists. Dicts whose keys are all integers become lists (by index),
    except under ``metadata``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = _KEY_RE.match(key)
        if not m:
            raise StripeError(400, f"Invalid parameter name: {key}", param=key)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node: dict[str, Any] = root
        for i, part in enumerate(parts):
            name = str(len(node)) if part == "" else part
            if i == len(parts) - 1:
                if isinstance(node.get(name), dict):
                    raise StripeError(400, f"Invalid parameter: {key}", param=key)
                node[name] = value
            else:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise StripeError(400, f"Invalid parameter: {key}", param=key)
                node = child
    return _listify(root, None)


def _listify(node: Any, key: str | None) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    if key != "metadata" and out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def check_known(params: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
    for name in params:
        if name not in allowed:
            full = f"{prefix}[{name}]" if prefix else name
            raise StripeError(400, f"Received unknown parameter: {full}", param=full)


def as_str(value: Any, param: str, *, max_len: int = 5000) -> str:
    if not isinstance(value, str):
        raise StripeError(400, f"Invalid string: {value!r}", param=param)
    if len(value) > max_len:
        raise StripeError(400, f"Invalid string: must be at most {max_len} characters", param=param)
    return value


def as_int(value: Any, param: str, *, minimum: int, maximum: int = MAX_AMOUNT) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise StripeError(400, f"Invalid integer: {value}", param=param)
    number = int(value)
    if number < minimum:
        raise StripeError(
            400, f"Invalid integer: {value} (must be at least {minimum})", param=param
        )
    if number > maximum:
        raise StripeError(400, f"Invalid integer: {value} (must be at most {maximum})", param=param)
    return number


def as_choice(value: Any, param: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise StripeError(400, f"Invalid {param}: must be one of {', '.join(choices)}", param=param)
    return str(value)


def as_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeError(400, "Invalid hash", param=param)
    if len(value) > 50:
        raise StripeError(400, "Metadata can have at most 50 keys", param=param)
    out: dict[str, str] = {}
    for k, v in value.items():
        if len(k) > 40:
            raise StripeError(400, "Metadata keys must be at most 40 characters", param=param)
        out[k] = as_str(v, f"{param}[{k}]", max_len=500)
    return out


def as_url(value: Any, param: str) -> str:
    url = as_str(value, param)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StripeError(400, "Not a valid URL", param=param, code="url_invalid")
    return url


def expand_list(params: dict[str, Any], allowed: Sequence[str]) -> list[str]:
    raw = params.get("expand", [])
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise StripeError(400, "Invalid array", param="expand")
    for item in items:
        if item not in allowed:
            raise StripeError(400, f"This property cannot be expanded ({item}).", param="expand")
    return items


def list_page(
    objects: Sequence[dict[str, Any]], params: dict[str, Any], kind: str
) -> tuple[list[dict[str, Any]], bool]:
    """One page of `objects` (already in the list's order) per Stripe's `limit`,
    `starting_after` and `ending_before`; and whether more follow in that direction."""
    limit = DEFAULT_PAGE
    if params.get("limit") is not None:
        limit = as_int(params["limit"], "limit", minimum=1, maximum=100)
    ids = [o["id"] for o in objects]

    def position_of(param: str) -> int:
        ref = as_str(params[param], param)
        if ref not in ids:
            raise StripeError(400, f"No such {kind}: '{ref}'", param=param, code="resource_missing")
        return ids.index(ref)

    if params.get("starting_after") is not None:
        start = position_of("starting_after") + 1
        return list(objects[start : start + limit]), start + limit < len(objects)
    if params.get("ending_before") is not None:
        end = position_of("ending_before")
        return list(objects[max(0, end - limit) : end]), end - limit > 0
    return list(objects[:limit]), limit < len(objects)


def list_object(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}
