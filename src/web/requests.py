"""Reading request bodies: JSON only, bounded in size, validated into pydantic models."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from web.errors import ApiError, shorten

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 1024 * 1024


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refusing (413) anything over `limit` without reading it all.

    A client that closes the connection first raises Starlette's ClientDisconnect, which
    web.errors answers (to nobody) with 499: one log line, no traceback."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_json(request: Request, model: type[M], *, empty_ok: bool = False) -> M:
    content_type = request.headers.get("content-type", "")
    body = await read_limited(request)
    if empty_ok and not body.strip():
        return model()
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ApiError(422, "invalid_json", "The body is not valid JSON.") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        fields = [
            {
                # A field name may be the client's own (an unknown field): quoted briefly.
                "field": shorten(".".join(str(p) for p in e["loc"])) or "body",
                "message": e["msg"],
            }
            for e in error.errors(include_url=False, include_input=False)
        ]
        raise ApiError(
            422, "validation_error", "Some fields are missing or invalid.", fields=fields
        ) from None
