"""Idempotency-Key semantics, as Stripe's: a POST retried with the same key gets the first
answer again (replayed), and a key reused with other parameters is refused."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stripe_standin.errors import StripeError


@dataclass(frozen=True)
class _Saved:
    method: str
    path: str
    fingerprint: str  # of the parameters: a retry must send the same ones
    status: int
    text: str


class IdempotencyCache:
    """The saved answers by Idempotency-Key, the least recently used forgotten first."""

    def __init__(self, *, max_keys: int, max_request_bytes: int) -> None:
        self._max_keys = max_keys
        self._max_request_bytes = max_request_bytes  # answers to bigger requests are not saved
        self._saved: OrderedDict[str, _Saved] = OrderedDict()

    def answer(
        self,
        key: str | None,
        method: str,
        path: str,
        params: dict[str, Any],
        body_size: int,
        answer: Callable[[], dict[str, Any]],
    ) -> tuple[int, str, bool]:
        """(status, JSON text, replayed) of the handler's answer, or of the one saved for
        `key` (POST only, as Stripe)."""
        key = key if method == "POST" else None
        if key is None:
            return 200, json.dumps(answer(), indent=2), False
        if len(key) > 255:
            raise StripeError(
                400,
                "Idempotency keys can be at most 255 characters long.",
                type_="idempotency_error",
            )
        # A digest, not the parameters: what is kept per key stays small.
        fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        saved = self._get(key)
        if saved is not None:
            if (saved.method, saved.path, saved.fingerprint) != (method, path, fingerprint):
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    type_="idempotency_error",
                )
            return saved.status, saved.text, True
        try:
            status, text, keep = 200, json.dumps(answer(), indent=2), True
        except StripeError as err:
            status, text, keep = err.status, json.dumps(err.body(), indent=2), err.saved
        if keep and body_size <= self._max_request_bytes:
            self._put(key, _Saved(method, path, fingerprint, status, text))
        return status, text, False

    def _get(self, key: str) -> _Saved | None:
        saved = self._saved.get(key)
        if saved is not None:
            self._saved.move_to_end(key)
        return saved

    def _put(self, key: str, saved: _Saved) -> None:
        self._saved[key] = saved
        self._saved.move_to_end(key)
        while len(self._saved) > self._max_keys:
            self._saved.popitem(last=False)

    def __len__(self) -> int:
        return len(self._saved)
