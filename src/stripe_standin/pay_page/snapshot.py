"""What a pay page shows, copied under the lock so that it is rendered outside it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from stripe_standin.state.records import Session
from stripe_standin.state.store import Store


@dataclass
class Snapshot:
    obj: dict[str, Any]
    items: list[dict[str, Any]]
    intent: dict[str, Any] | None
    charge: dict[str, Any] | None
    refunds: list[dict[str, Any]]  # oldest first
    dispute: dict[str, Any] | None
    hold_refunds: bool
    capture_method: str  # the session's payment_intent_data[capture_method]
    capture_before: int | None  # of a card payment held for capture


def take(store: Store, session: Session) -> Snapshot:
    intent = store.intent(session.intent) if session.intent else None
    charge = store.charge(session.charge) if session.charge else None
    dispute = store.dispute(session.dispute) if session.dispute else None
    latest = store.charge(intent["latest_charge"]) if intent and intent["latest_charge"] else None
    card = latest["payment_method_details"].get("card") if latest else None
    return Snapshot(
        obj=copy.deepcopy(session.obj),
        items=copy.deepcopy(session.items),
        intent=copy.deepcopy(intent),
        charge=copy.deepcopy(charge),
        refunds=copy.deepcopy(list(reversed(store.refunds_newest_first(session)))),
        dispute=copy.deepcopy(dispute),
        hold_refunds=session.hold_refunds,
        capture_method=session.capture_method,
        capture_before=card["capture_before"] if card else None,
    )
