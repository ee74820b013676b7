"""Copies of the store's objects as the API and the inspection methods hand them out, with
the fields a caller asked to expand filled in."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from stripe_standin.params import DEFAULT_PAGE, list_object
from stripe_standin.state.records import Session
from stripe_standin.state.store import Store

# The kinds of object `StripeStandIn.build_event` builds events about, by their ids' prefix.
_KIND_OF_PREFIX = {"cs": "checkout.session", "re": "refund", "ch": "charge", "dp": "dispute"}
BUILDABLE = frozenset(_KIND_OF_PREFIX.values())


def session_view(
    store: Store, session: Session, *, expand: Sequence[str] = (), expand_all: bool = False
) -> dict[str, Any]:
    view = copy.deepcopy(session.obj)
    url = f"/v1/checkout/sessions/{session.id}/line_items"
    if expand_all:
        view["line_items"] = list_object(url, copy.deepcopy(session.items), False)
    elif "line_items" in expand:
        page = copy.deepcopy(session.items[:DEFAULT_PAGE])
        view["line_items"] = list_object(url, page, len(session.items) > DEFAULT_PAGE)
    if "payment_intent" in expand and session.intent is not None:
        view["payment_intent"] = copy.deepcopy(store.intent(session.intent))
    return view


def intent_view(store: Store, intent: dict[str, Any], expand: Sequence[str] = ()) -> dict[str, Any]:
    view = copy.deepcopy(intent)
    if "latest_charge" in expand and intent["latest_charge"] is not None:
        view["latest_charge"] = copy.deepcopy(store.charge(intent["latest_charge"]))
    return view


def sessions(store: Store) -> list[dict[str, Any]]:
    return [session_view(store, s, expand_all=True) for s in store.all_sessions()]


def intents(store: Store) -> list[dict[str, Any]]:
    return copy.deepcopy(store.all_intents())


def charges(store: Store) -> list[dict[str, Any]]:
    return copy.deepcopy(store.all_charges())


def refunds(store: Store) -> list[dict[str, Any]]:
    """Each refund with the `idempotency_key` it was created with."""
    return [
        {**copy.deepcopy(r.obj), "idempotency_key": r.idempotency_key} for r in store.all_refunds()
    ]


def disputes(store: Store) -> list[dict[str, Any]]:
    return copy.deepcopy(store.all_disputes())


def kind_of(object_id: str) -> str | None:
    return _KIND_OF_PREFIX.get(object_id.partition("_")[0])


def object_of(store: Store, kind: str, object_id: str) -> dict[str, Any]:
    """The store's own object of a `BUILDABLE` kind; KeyError if there is none."""
    if kind == "checkout.session":
        return store.control_session(object_id).obj
    if kind == "refund":
        found = store.refund(object_id)
    elif kind == "charge":
        found = store.charge(object_id)
    else:
        found = store.dispute(object_id)
    if found is None:
        raise KeyError(object_id)
    return found
