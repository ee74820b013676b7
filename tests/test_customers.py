"""Erasable personal data: the customer's address is sealed in the log with a key of their own,
and `ledger customers forget EMAIL` destroys that key. Sealing in memory; the key table on a
real PostgreSQL with real threads; forgetting end to end with the shop, the stand-in, a real
SMTP server and the `ledger` command as a process."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from ledger.customer_keys import PostgresCustomerKeys
from ledger.personal_data import Contact, CustomerKey, new_key, seal, unseal
from ledger.storage import Database
from tests.mail import Mailbox, smtp_url
from tests.processes import run_ledger
from tests.shop import AUDITOR, eventually, running_shop
from tests.test_money_paths import metric, settles_as
from tests.test_notifications import scalar

ALICE = "alice@example.com"
BOB = "bob@example.org"


def a_key() -> CustomerKey:
    return CustomerKey(customer_id=uuid.uuid4(), key=new_key())


# ---- sealing, in memory ----------------------------------------------------------------------


def test_a_sealed_contact_opens_with_its_key_and_holds_no_clear_text() -> None:
    key = a_key()
    envelope = seal(key, Contact(email=ALICE))
    assert envelope["customer_id"] == str(key.customer_id)
    assert "alice" not in json.dumps(envelope)
    assert unseal(key, envelope) == Contact(email=ALICE)
    assert seal(key, Contact(email=ALICE)) != envelope  # a fresh nonce each time


def test_an_envelope_opens_with_no_other_key_and_cannot_change_customer() -> None:
    key, other = a_key(), a_key()
    envelope = seal(key, Contact(email=ALICE))
    with pytest.raises(ValueError):
        unseal(other, envelope)
    moved = {**envelope, "customer_id": str(other.customer_id)}
    with pytest.raises(ValueError):  # the customer id is authenticated with the data
        unseal(CustomerKey(other.customer_id, key.key), moved)


# ---- the key table, on PostgreSQL ------------------------------------------------------------


def test_one_key_per_customer_however_the_address_is_written(database: Database) -> None:
    keys = PostgresCustomerKeys(database)
    try:
        first = keys.key_for(ALICE)
        assert keys.key_for("  Alice@Example.COM ") == first
        assert keys.key_for(BOB) != first
        assert keys.key_of(first.customer_id) == first
        assert keys.forget("ALICE@example.com") == first.customer_id
        assert keys.key_of(first.customer_id) is None
        assert keys.forget(ALICE) is None
        # A customer who comes back after being forgotten is a new customer.
        assert keys.key_for(ALICE).customer_id != first.customer_id
    finally:
        keys.close()


def test_a_new_customer_paying_twice_at_once_gets_one_key(database: Database) -> None:
    stores = [PostgresCustomerKeys(database) for _ in range(2)]  # as two processes would
    start = threading.Barrier(8)
    found: list[CustomerKey] = []

    def pay(i: int) -> None:
        start.wait()
        found.append(stores[i % 2].key_for(ALICE))

    threads = [threading.Thread(target=pay, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for store in stores:
        store.close()
    assert len(found) == 8 and len(set(found)) == 1
    assert scalar(database, "SELECT count(*) FROM customer_keys") == 1


# ---- forgetting, end to end ------------------------------------------------------------------


def order_placed(database: Database, order_id: str) -> dict[str, Any]:
    with database.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT convert_from(state, 'UTF8') FROM ledger_events"
            " WHERE originator_id = %s AND topic LIKE '%%OrderPlaced'",
            (order_id,),
        ).fetchone()
    assert row is not None
    state: dict[str, Any] = json.loads(row[0])
    return state


def test_a_forgotten_customer_cannot_be_read_and_the_history_still_verifies(
    database: Database, mailbox: Mailbox, smtp_port: int, tmp_path: Path
) -> None:
    def ledger(*args: str) -> Any:
        return run_ledger(tmp_path, *args, LEDGER_DATABASE_URL=database.conninfo_url())

    with running_shop(database, LEDGER_SMTP_URL=smtp_url(smtp_port)) as shop:
        shop.product("print", unit_amount=4000, stock=1)
        bobs = shop.checkout(shop.cart(print=1))
        alices = shop.checkout(shop.cart(print=1))
        shop.stripe.hold_refunds(alices)  # Alice's refund stays pending until we say
        shop.stripe.complete(bobs, "pay", email=BOB)
        settles_as(shop, bobs, "confirmed")
        shop.stripe.complete(alices, "pay", email=ALICE)  # the print is gone: a refund
        settles_as(shop, alices, "refund_pending")
        bob_order, alice_order = str(shop.order(bobs).id), str(shop.order(alices).id)
        eventually(lambda: len(mailbox.received()) == 1)
        assert mailbox.received()[0]["To"] == BOB

        # The log holds each address sealed, under a different customer, never in clear.
        alice_sealed = order_placed(database, alice_order)["customer"]
        bob_sealed = order_placed(database, bob_order)["customer"]
        assert alice_sealed["customer_id"] != bob_sealed["customer_id"]
        clear = scalar(
            database,
            "SELECT count(*) FROM ledger_events WHERE convert_from(state, 'UTF8') ~* "
            "'alice|bob|example'",
        )
        assert clear == 0
        digest_before = ledger("audit", "digest").stdout.split()[-1]

        forgot = ledger("customers", "forget", "Alice@Example.com")
        assert forgot.returncode == 0, forgot.stderr
        assert alice_sealed["customer_id"] in forgot.stdout

        # Her refund goes through; its notice is skipped for good, Bob's data is untouched.
        forgotten = metric(shop, "ledger_emails_total", kind="refund", outcome="forgotten")
        (refund,) = shop.stripe.refunds()
        shop.stripe.settle_refund(refund["id"], "succeeded")
        settles_as(shop, alices, "refunded")
        eventually(
            lambda: (
                metric(shop, "ledger_emails_total", kind="refund", outcome="forgotten")
                == forgotten + 1
            )
        )
        assert [m["To"] for m in mailbox.received()] == [BOB]
        assert shop.services.personal_data.open(alice_sealed) is None
        assert shop.services.personal_data.open(bob_sealed) == Contact(email=BOB)

        # What the storefront and auditors see still works, and shows no personal data.
        status = shop.api.get(f"/api/checkout-sessions/{alices}/order")
        assert status.json()["status"] == "refunded" and "@" not in status.text
        history = shop.api.get(
            f"/api/audit/orders/{alice_order}/history",
            headers={"Authorization": f"Bearer {AUDITOR}"},
        )
        assert history.status_code == 200 and "@" not in history.text
        eventually(lambda: ledger("audit", "digest").stdout.split()[-1] != digest_before)

    # The log and its hash chain are unchanged by forgetting, and verify.
    verified = ledger("audit", "verify", "--digest", digest_before)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert order_placed(database, alice_order)["customer"] == alice_sealed
    again = ledger("customers", "forget", ALICE)
    assert again.returncode == 0 and "nothing to forget" in again.stdout


def test_forget_needs_an_address(database: Database, tmp_path: Path) -> None:
    done = run_ledger(
        tmp_path, "customers", "forget", "nobody", LEDGER_DATABASE_URL=database.conninfo_url()
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "ledger: not an e-mail address: 'nobody'"
