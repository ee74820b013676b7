"""Customer e-mail: an order confirmation for each confirmed order, a refund notice for each
refunded one, sent by a side effect that follows the log and so never blocks, delays or fails
an order.

- The address is Stripe's (the checkout session's `customer_details.email`), recorded on the
  order sealed with the customer's key: opened to send, never in clear in the log. A customer
  forgotten since (`ledger customers forget`) gets no more mail; that is skipped, not retried.
- The `Message-ID` is derived from the order and the kind (`<confirmation.{order_id}@ledger>`),
  so a resend after a crash can be recognised.
- What was sent is recorded (`SentLog`: checked before sending, written after): a replay of the
  log sends nothing twice, and a crash between sending and recording resends once at most. A
  store that fails over between the two is waited for (`RECORD_PATIENCE_SECONDS`): the record
  is idempotent, and a message sent but not recorded would be sent again.
- The SMTP server refusing the recipient for good (a 5xx answer to RCPT) is logged as an error,
  counted (`ledger_emails_total{outcome="refused"}`) and skipped; so is an order whose session
  had no address. Anything else (server down, a 4xx answer, the store unavailable) raises, and the
  workers try that event again on its own backoff, holding back no other.
- A fresh deployment starts at the log's head (`start_at_head`): past customers get no mail.
- With no `LEDGER_SMTP_URL`, each e-mail is written to the log instead of sent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
import structlog

from ledger.application import Ledger
from ledger.domain import Order
from ledger.metrics import EMAILS
from ledger.money import format_amount
from ledger.personal_data import PersonalData
from ledger.storage import StoreUnavailable
from side_effects.base import reacts_to
from side_effects.mailers import SMTP_TIMEOUT_SECONDS, Email, Mailer, RecipientRefused

# Every log line's `logger` field: kept across the move out of ledger, for searches on it.
log = structlog.get_logger("ledger.notifications")

# How long a message sent is kept trying to be recorded while the store is away: past a
# failover (a standby promoted in about 5 s), within the worker's attempt (2 SMTP timeouts).
RECORD_PATIENCE_SECONDS = 8.0
RECORD_FIRST_PAUSE_SECONDS = 0.05
RECORD_LONGEST_PAUSE_SECONDS = 0.25

CONFIRMATION = "confirmation"
REFUND = "refund"


def message_id(kind: str, order_id: object) -> str:
    """The e-mail's Message-ID: the same for every (re)send of one kind of mail of one order."""
    return f"<{kind}.{order_id}@ledger>"


class SentLog(Protocol):
    """Which messages were sent already, by Message-ID (kept in the database)."""

    def was_sent(self, message_id: str) -> bool: ...

    def record(self, message_id: str) -> None: ...


class Notifications:
    """Builds and sends one e-mail about one order, at most once in effect."""

    def __init__(
        self,
        ledger: Ledger,
        personal_data: PersonalData,
        mailer: Mailer,
        sent: SentLog,
        mail_from: str,
    ) -> None:
        self.ledger = ledger
        self.personal_data = personal_data
        self.mailer = mailer
        self.sent = sent
        self.mail_from = mail_from

    def notify(self, kind: str, order_id: Any, refunded_amount: int | None = None) -> None:
        """Sends the `kind` e-mail of the order unless it was sent already. Returns normally
        when it is sent or skipped for good; raises when it should be tried again later."""
        mid = message_id(kind, order_id)
        if self.sent.was_sent(mid):
            return
        order = self.ledger.read_order(order_id)
        if order is None:
            return self._skip(kind, "no_order", order_id, mid)
        if order.customer is None:
            return self._skip(kind, "no_address", order_id, mid)
        contact = self.personal_data.open(order.customer)
        if contact is None:
            return self._skip(kind, "forgotten", order_id, mid)
        message = self._message(kind, order, contact.email, mid, refunded_amount)
        try:
            outcome = self.mailer.send(message)
        except RecipientRefused as refusal:
            EMAILS.labels(kind=kind, outcome="refused").inc()
            log.error(
                "email_refused",
                kind=kind,
                order_id=str(order_id),
                message_id=mid,
                code=refusal.code,
                response=refusal.response,
            )
            return
        except Exception as error:
            EMAILS.labels(kind=kind, outcome="deferred").inc()
            log.warning(
                "email_deferred",
                kind=kind,
                order_id=str(order_id),
                message_id=mid,
                error=f"{type(error).__name__}: {error}",
            )
            raise
        self._record(mid)
        EMAILS.labels(kind=kind, outcome=outcome).inc()
        log.info(f"email_{outcome}", kind=kind, order_id=str(order_id), message_id=mid)

    def _record(self, mid: str) -> None:
        """Records a message the server accepted, trying again while the store is away (the
        insert is idempotent, so a commit in doubt may be repeated): given up, the event is
        tried again later, and the message sent once more, as after a crash."""
        deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
        pause = RECORD_FIRST_PAUSE_SECONDS
        failures = 0
        while True:
            try:
                self.sent.record(mid)
                break
            # A connection to a node just demoted answers "read-only" until it is replaced.
            except (StoreUnavailable, psycopg.errors.ReadOnlySqlTransaction) as error:
                failures += 1
                if time.monotonic() + pause > deadline:
                    log.warning("email_not_recorded", message_id=mid, error=str(error))
                    raise
            time.sleep(pause)
            pause = min(pause * 2, RECORD_LONGEST_PAUSE_SECONDS)
        if failures:
            # What kept a failover from sending this message twice: worth seeing in the log.
            log.info("email_recorded_late", message_id=mid, failed_attempts=failures)

    def _skip(self, kind: str, outcome: str, order_id: Any, mid: str) -> None:
        EMAILS.labels(kind=kind, outcome=outcome).inc()
        log.warning(f"email_skipped_{outcome}", kind=kind, order_id=str(order_id), message_id=mid)

    def _message(
        self, kind: str, order: Order, address: str, mid: str, refunded_amount: int | None
    ) -> Email:
        if kind == CONFIRMATION:
            subject = f"Your order {order.id} is confirmed"
            text = _confirmation_text(order)
        else:
            subject = f"Your order {order.id} has been refunded"
            amount = order.amount_total if refunded_amount is None else refunded_amount
            text = _refund_text(order, amount)
        return Email(self.mail_from, address, subject, mid, text)


class NotificationWorker:
    """Follows the log for PaymentConfirmed and RefundIssued and sends their e-mails."""

    name = "notifications"
    topics: Sequence[str] = reacts_to(
        Order.PaymentConfirmed,  # type: ignore[attr-defined]
        Order.RefundIssued,  # type: ignore[attr-defined]
    )
    start_at_head = True  # a fresh deployment does not mail every past customer
    # Several e-mails at once, so that one recipient the server stalls on holds back no other;
    # few, as mail servers limit connections per client.
    concurrency = 4
    # An SMTP conversation is a handful of exchanges, each bounded by the mailer's timeout: an
    # attempt slower than two of those is stuck (a server trickling its answers), and fails.
    attempt_timeout = 2 * SMTP_TIMEOUT_SECONDS

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications

    def handle(self, event: Any, position: int) -> None:
        if isinstance(event, Order.RefundIssued):  # type: ignore[attr-defined]
            self.notifications.notify(REFUND, event.originator_id, int(event.amount))
        else:
            self.notifications.notify(CONFIRMATION, event.originator_id)


def _confirmation_text(order: Order) -> str:
    return "\n".join(
        [
            "Thank you for your order.",
            "",
            f"Order: {order.id}",
            "",
            *_item_lines(order),
            "",
            f"Total: {format_amount(order.amount_total, order.currency)}",
            "",
        ]
    )


def _refund_text(order: Order, amount: int) -> str:
    return "\n".join(
        [
            "We have refunded your order.",
            "",
            f"Order: {order.id}",
            "",
            *_item_lines(order),
            "",
            # In the currency Stripe charged, which may not be the one the cart was priced in.
            f"Refunded: {format_amount(amount, order.charged[1])}",
            "It may take a few days to show on your statement.",
            "",
        ]
    )


def _item_lines(order: Order) -> list[str]:
    return [
        f"{line['quantity']} x {line.get('name') or line['sku']}"
        f" ({line['sku']}) at {format_amount(int(line['unit_amount']), order.currency)}"
        for line in order.lines
    ]


__all__ = [
    "CONFIRMATION",
    "REFUND",
    "NotificationWorker",
    "Notifications",
    "SentLog",
    "message_id",
]
