"""Customer e-mail, end to end: the shop, the Stripe stand-in and a real SMTP server (aiosmtpd)
on a free local port. The e-mails never block an order, are sent once, and the address never
reaches the event log."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

from ledger.settings import Settings, SmtpServer, parse_smtp_url
from ledger.storage import Database
from tests.mail import Mailbox, smtp_server, smtp_url
from tests.shop import Shop, eventually, free_port, running_shop
from tests.waiting import wait_at_rest, wait_until

CUSTOMER = "customer@example.com"  # what the stand-in puts in `customer_details.email`


def paid_order(
    shop: Shop, sku: str = "mug", quantity: int = 2, email: str = CUSTOMER
) -> tuple[str, str]:
    """A paid checkout (the customer's address `email`): (session id, order id) once the order
    is recorded."""
    session_id = shop.checkout(shop.cart(**{sku: quantity}))
    shop.stripe.complete(session_id, "pay", email=email)
    eventually(lambda: shop.status(session_id) not in ("processing", "awaiting_payment"))
    order = shop.order(session_id)
    assert order is not None
    return session_id, str(order.id)


def seconds_to_mail(shop: Shop, mailbox: Mailbox, address: str) -> float:
    """An order paid by `address`: seconds from its confirmation to its e-mail's arrival."""
    _, order_id = paid_order(shop, "mug", 1, email=address)
    confirmed = time.monotonic()
    mid = f"<confirmation.{order_id}@ledger>"
    wait_until(lambda: len(mailbox.with_id(mid)) == 1, timeout=30)
    waited = time.monotonic() - confirmed
    assert mailbox.with_id(mid)[0]["To"] == address
    return waited


def emails(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("ledger_emails_total", {"kind": kind, "outcome": outcome})
    return value or 0.0


def scalar(database: Database, query: str) -> Any:
    with database.connect(autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_a_paid_checkout_sends_one_confirmation(
    database: Database, mailbox: Mailbox, smtp_port: int
) -> None:
    with running_shop(
        database, LEDGER_SMTP_URL=smtp_url(smtp_port), LEDGER_MAIL_FROM="shop@example.org"
    ) as shop:
        shop.product("mug", unit_amount=1250, stock=5)
        session_id, order_id = paid_order(shop, "mug", 2)
        assert shop.status(session_id) == "confirmed"

        eventually(lambda: len(mailbox.received()) >= 1)
        (message,) = mailbox.received()
        assert message["Message-ID"] == f"<confirmation.{order_id}@ledger>"
        assert message["To"] == CUSTOMER
        assert message["From"] == "shop@example.org"
        assert order_id in message["Subject"]
        body = message.get_content()
        assert order_id in body
        assert "2 x Product mug (mug) at $12.50" in body
        assert "Total: $25.00" in body

        # Stripe tells us again; the log is replayed: no second e-mail.
        assert shop.deliver("checkout.session.completed", session_id).status_code == 200
        # The worker has handled whatever that delivery recorded: a second e-mail had its chance.
        wait_at_rest(database, "notifications")
        assert len(mailbox.received()) == 1
        sent = scalar(database, "SELECT count(*) FROM sent_messages")
        assert sent == 1

    # The address is sealed with the customer's key: never in clear in the event log.
    in_log = scalar(
        database,
        "SELECT count(*) FROM ledger_events"
        " WHERE convert_from(state, 'UTF8') LIKE '%@example.com%'",
    )
    assert in_log == 0


def test_a_refunded_order_sends_one_refund_notice(
    database: Database, mailbox: Mailbox, smtp_port: int
) -> None:
    with running_shop(database, LEDGER_SMTP_URL=smtp_url(smtp_port)) as shop:
        shop.product("last", unit_amount=900, stock=1)
        first = shop.checkout(shop.cart(last=1))
        second = shop.checkout(shop.cart(last=1))
        shop.stripe.complete(first, "pay")
        eventually(lambda: shop.status(first) == "confirmed")
        shop.stripe.complete(second, "pay")  # the stock is gone: refunded
        eventually(lambda: shop.status(second) == "refunded", timeout=30)
        confirmed, refunded = str(shop.order(first).id), str(shop.order(second).id)

        eventually(lambda: len(mailbox.received()) >= 2, timeout=15)
        # Every event so far handled, the refund's last ones too: no other e-mail is coming.
        wait_at_rest(database, "refunds", "notifications")
        ids = sorted(m["Message-ID"] for m in mailbox.received())
        assert ids == sorted([f"<confirmation.{confirmed}@ledger>", f"<refund.{refunded}@ledger>"])
        (notice,) = mailbox.with_id(f"<refund.{refunded}@ledger>")
        assert notice["To"] == CUSTOMER
        assert "Refunded: $9.00" in notice.get_content()


def test_a_mail_server_down_delays_the_mail_never_the_order(
    database: Database, mailbox: Mailbox
) -> None:
    port = free_port()  # nothing listens there yet: connection refused
    with running_shop(database, LEDGER_SMTP_URL=smtp_url(port)) as shop:
        shop.product("mug", stock=5)
        deferred = emails("confirmation", "deferred")
        session_id, order_id = paid_order(shop)
        assert shop.status(session_id) == "confirmed"  # confirmed meanwhile, mail or not
        eventually(lambda: emails("confirmation", "deferred") > deferred)
        pending = "SELECT count(*) FROM side_effect_retries WHERE name = 'notifications'"
        eventually(lambda: scalar(database, pending) == 1)  # recorded just after the metric

        with smtp_server(mailbox, port):  # back: the retry (with backoff) delivers it
            eventually(lambda: len(mailbox.received()) == 1, timeout=30)
            (message,) = mailbox.received()
            assert message["Message-ID"] == f"<confirmation.{order_id}@ledger>"
            eventually(lambda: scalar(database, pending) == 0)


def test_a_recipient_the_server_stalls_on_holds_back_no_other_email(
    database: Database, mailbox: Mailbox, smtp_port: int
) -> None:
    """The SMTP server hangs on one recipient: every other e-mail arrives within seconds,
    the stalled one fails its attempt (the mailer's timeout) and is retried on its own
    schedule, and once the server answers it arrives: one e-mail per Message-ID."""
    stalled = "stalled@example.com"
    mailbox.stalling.add(stalled)
    with running_shop(database, LEDGER_SMTP_URL=smtp_url(smtp_port)) as shop:
        shop.product("mug", stock=10)
        _, stuck = paid_order(shop, "mug", 1, email=stalled)
        wait_until(lambda: mailbox.stalled == 1)  # the worker's attempt hangs on it now
        # Each of these is confirmed while that attempt hangs (it would for 5 s): its e-mail
        # still arrives at once.
        waited = [seconds_to_mail(shop, mailbox, f"customer{n}@example.com") for n in range(4)]
        assert max(waited) < 3.0, waited  # a sanity bound: one stalled attempt lasts 5 s
        assert mailbox.with_id(f"<confirmation.{stuck}@ledger>") == []
        pending = "SELECT count(*) FROM side_effect_retries WHERE name = 'notifications'"
        wait_until(lambda: scalar(database, pending) == 1, timeout=30)  # failed, to be retried

        mailbox.stalling.clear()  # the server answers again: the retry delivers it
        wait_until(lambda: len(mailbox.with_id(f"<confirmation.{stuck}@ledger>")) == 1, 30)
        wait_at_rest(database, "notifications", timeout=30)
        counts = mailbox.message_ids()
        assert len(counts) == 5 and set(counts.values()) == {1}, counts
        assert mailbox.with_id(f"<confirmation.{stuck}@ledger>")[0]["To"] == stalled


def test_a_refused_recipient_is_recorded_and_skipped(
    database: Database, mailbox: Mailbox, smtp_port: int
) -> None:
    with running_shop(database, LEDGER_SMTP_URL=smtp_url(smtp_port)) as shop:
        shop.product("mug", stock=5)
        refused = emails("confirmation", "refused")
        mailbox.refusing = True
        _, bounced = paid_order(shop)
        eventually(lambda: len(mailbox.refused) == 1)
        mailbox.refusing = False
        eventually(lambda: emails("confirmation", "refused") == refused + 1)

        _, delivered = paid_order(shop)
        eventually(lambda: len(mailbox.with_id(f"<confirmation.{delivered}@ledger>")) == 1)
        # Past both orders, with nothing in the retry schedule (it is written in the commit
        # that moves the position on): the refused one will never be tried again.
        wait_at_rest(database, "notifications")
        assert mailbox.with_id(f"<confirmation.{bounced}@ledger>") == []
        assert mailbox.refused == [CUSTOMER]
        retries = "SELECT count(*) FROM side_effect_retries WHERE name = 'notifications'"
        assert scalar(database, retries) == 0


def test_a_fresh_deployment_starts_at_the_head(
    database: Database, mailbox: Mailbox, smtp_port: int
) -> None:
    with running_shop(database, LEDGER_SMTP_URL=smtp_url(smtp_port)) as shop:
        shop.product("mug", stock=5)
        old_session, old = paid_order(shop)
        eventually(lambda: len(mailbox.received()) == 1)
    # As if the log had been written before e-mail existed: no position, nothing sent.
    with database.connect(autocommit=True) as conn:
        conn.execute("DELETE FROM projection_tracking WHERE name = 'notifications'")
        conn.execute("DELETE FROM sent_messages")
    mailbox.messages.clear()

    with running_shop(database, LEDGER_SMTP_URL=smtp_url(smtp_port)) as shop:
        _, new = paid_order(shop)
        eventually(lambda: len(mailbox.received()) >= 1)
        # Past the whole log: the old order, had it been looked at, would have been mailed.
        wait_at_rest(database, "notifications")
        ids = [m["Message-ID"] for m in mailbox.received()]
        assert ids == [f"<confirmation.{new}@ledger>"]
        assert old != new
        # Not even looked at: the old order's session was never asked for (this stand-in is
        # a new one, which would not know it: the address would be missing, not the call).
        asked = [r["path"] for r in shop.stripe.requests() if r["method"] == "GET"]
        assert asked
        assert not [path for path in asked if old_session in path]


def test_refunds_still_start_at_the_beginning_of_the_log(database: Database) -> None:
    from projections import default_projections, prepare

    with running_shop(database) as shop:
        shop.product("mug", stock=5)
        paid_order(shop)
    with database.connect(autocommit=True) as conn:
        conn.execute("DELETE FROM projection_tracking WHERE name IN ('refunds', 'notifications')")
    prepare(
        database,
        default_projections(),
        ["refunds", "notifications"],
        start_at_head=["notifications"],
    )
    positions = dict(
        _rows(
            database,
            "SELECT name, position FROM projection_tracking"
            " WHERE name IN ('refunds', 'notifications')",
        )
    )
    head = scalar(database, "SELECT max(notification_id) FROM ledger_events")
    assert positions == {"refunds": 0, "notifications": head}


def test_without_an_smtp_url_the_mail_is_logged(database: Database) -> None:
    logged = emails("confirmation", "logged")
    with running_shop(database) as shop:
        shop.product("mug", stock=5)
        paid_order(shop)
        eventually(lambda: emails("confirmation", "logged") == logged + 1)


def test_smtp_urls() -> None:
    assert parse_smtp_url("smtp://mail.example.org") == SmtpServer("mail.example.org", 25, False)
    assert parse_smtp_url("smtps://u%40x:p%3Aw@mail.example.org:2465") == SmtpServer(
        "mail.example.org", 2465, True, "u@x", "p:w"
    )
    for bad in ("http://mail.example.org", "smtp://", "smtp://host:port"):
        with pytest.raises(ValueError):
            parse_smtp_url(bad)
    with pytest.raises(ValidationError):
        Settings(LEDGER_SMTP_URL=SecretStr("mail.example.org"))
    assert Settings.model_fields["mail_from"].default == "orders@localhost"


def _rows(database: Database, query: str) -> list[tuple[Any, ...]]:
    with database.connect(autocommit=True) as conn:
        return list(conn.execute(query).fetchall())
