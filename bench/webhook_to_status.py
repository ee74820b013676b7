"""Reading your own write through HTTP: from Stripe's webhook to the status poll showing it.

Starts the ledger (with its workers, as `ledger serve` runs them) and the Stripe stand-in in
real HTTP servers on a scratch database, then for each of N paid checkouts: posts the signed
`checkout.session.completed`, and as soon as it answers 200 polls the storefront's status
endpoint until it shows `confirmed`. Light load: one checkout at a time, at a steady rate.
Prints JSON with the webhook's latency and the time from its 200 to the poll showing the order.
`--stripe-delay 0.25` makes every Stripe call of the timed part take 250 ms (a realistic Stripe;
the set-up runs without it): the webhook's latency then includes its re-fetch from Stripe.

    python bench/webhook_to_status.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
                                      [--checkouts 200] [--rate 20] [--stripe-delay 0.25]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import create_database, drop_database, percentiles
from tests.shop import running_shop

from ledger.storage import Database
from web.logs import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--checkouts", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="checkouts per second")
    parser.add_argument(
        "--stripe-delay", type=float, default=0.0, help="seconds each webhook's Stripe call takes"
    )
    args = parser.parse_args()
    configure_logging("WARNING")  # stdout carries the JSON result alone

    admin = Database.from_url(args.url)
    database = create_database(admin, "ledger_bench_")
    webhook: list[float] = []
    visible: list[float] = []
    polls: list[int] = []
    try:
        with running_shop(database) as shop:
            shop.product("mug", stock=args.checkouts)
            shop.stripe.webhook_url = None  # the bench delivers, and times, every webhook
            interval = 1.0 / args.rate
            for _ in range(args.checkouts):
                started = time.perf_counter()
                session_id = shop.checkout(shop.cart(mug=1))
                shop.stripe.complete(session_id, "pay")
                payload, signature = shop.stripe.build_event(
                    "checkout.session.completed", session_id
                )
                # Only the webhook's own calls wait: the checkout above is set-up.
                shop.stripe.delay_seconds = args.stripe_delay
                sent = time.perf_counter()
                assert shop.post_webhook(payload, signature).status_code == 200
                answered = time.perf_counter()
                shop.stripe.delay_seconds = 0.0
                count = 0
                while True:
                    count += 1
                    body: dict[str, Any] = shop.api.get(
                        f"/api/checkout-sessions/{session_id}/order"
                    ).json()
                    if body["status"] == "confirmed":
                        break
                seen = time.perf_counter()
                webhook.append(answered - sent)
                visible.append(seen - answered)
                polls.append(count)
                time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    finally:
        drop_database(admin, database.params["dbname"])
    print(
        json.dumps(
            {
                "bench": "webhook_to_status",
                "checkouts": args.checkouts,
                "rate_per_s": args.rate,
                "stripe_delay_s": args.stripe_delay,
                "webhook_latency": percentiles(webhook),
                "webhook_200_to_status_visible": percentiles(visible),
                "polls_needed_max": max(polls),
                "polls_needed_over_one": sum(1 for p in polls if p > 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
