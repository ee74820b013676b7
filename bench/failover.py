"""Kills of the primary under load: is any acknowledged outcome lost, and how soon is the
service back? On a pg_auto_failover cluster of its own (tests/failover_cluster.py: a monitor
and two nodes with a synchronous standby, health checks tightened), with `ledger serve
--no-workers` and `ledger work` in processes of their own on its multi-host URL, the Stripe
stand-in in this process, and the failover tests' traffic (tests/failover_load.py: webhooks
round and round over paid sessions, a checkout through the HTTP API, a status poll).

Each kill: sessions of its own (all paid before the first kill, while stock is left), the load
under way, the primary's keeper and PostgreSQL killed with SIGKILL, writes awaited on the
promoted standby, the load kept up until webhooks are answered 200 again; then every session's
event redelivered until answered 200, and the old primary restarted to rejoin as the standby
before the next kill. Past 6 s without a primary (web.store_calls.RIDE_THROUGH_SECONDS)
requests answer 503 at once and the clients retry quickly, so `non_2xx` grows with the outage.
The same two `ledger` processes throughout, never restarted.

Prints JSON: `kills`, one object per kill with
- `writes_after_kill_s`: from the kill to the promoted standby taking a write (polled from
  outside the ledger every 50 ms),
- `first_2xx_after_writes_s`: from then to the end of the first request answered 2xx that was
  sent after it (any kind), and `first_webhook_200_after_writes_s`,
- `requests`, `non_2xx` (answers other than 2xx, or none, during that kill's load; 503s while
  no primary takes writes are the contract's), `slowest_s`,
- `acknowledged`: sessions whose webhook was answered 200 during that kill's load, and
  `acknowledged_lost`: those of them without their order in the new primary's log, before
  any redelivery (the figure to keep at 0);
then `acknowledged_lost_total`, `recovered_within_5s` (every kill's first 2xx within the
contract's 5 s of writes), `outcomes_ok` (after the redeliveries: one outcome per session, one
refund per refund owed, stock sold out and not oversold), `worker_alive_throughout` (`ledger
work` never exited), `audit_verify_exit` (`ledger audit
verify`: read models equal a replay, every invariant holds; 0 is a pass), `source`.

    .venv/bin/python bench/failover.py [--kills 3] [--sessions 30]

Run as root or as `postgres` (pg_autoctl runs as `postgres`). Progress on stderr; one JSON
document on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from common import progress, source_version
from tests.failover_cluster import FailoverCluster, failover_cluster
from tests.failover_load import (
    WEBHOOK,
    ShopLoad,
    WritesWatch,
    add_checkout_product,
    orders_placed,
)
from tests.processes import run_ledger, serving, working
from tests.shop import paid_session
from tests.test_failover import CHECKOUT_SKU, redeliver_until_received
from tests.test_faults import SKU, add_product, assert_one_outcome_each, ledger_env, stripe_stand_in

from ledger.domain import order_id_for
from ledger.storage import Database
from stripe_standin import StripeStandIn

SENDERS = 5
RECOVERY_BOUND_SECONDS = 5.0


def one_kill(
    cluster: FailoverCluster,
    database: Database,
    stand_in: StripeStandIn,
    base: str,
    sessions: list[str],
) -> tuple[dict[str, Any], list[str]]:
    """One kill under load: its figures, and the sessions checked out during it."""
    with (
        WritesWatch(cluster.url) as writes,
        ShopLoad(
            stand_in, base, sessions, senders=SENDERS, pollers=1, checkouts=1,
            checkout_sku=CHECKOUT_SKU,
        ) as load,
    ):  # fmt: skip
        load.wait_for_successes(0.0, SENDERS)
        old_primary = cluster.primary()
        cluster.kill(old_primary)
        killed_at = time.monotonic()
        writable_at = writes.wait_for_writes(60, cluster.states)
        load.wait_for_successes(writable_at, SENDERS)
    acknowledged = {s.about for s in load.of(WEBHOOK) if s.ok}
    placed = orders_placed(database)
    lost = sorted(sid for sid in acknowledged if str(order_id_for(sid)) not in placed)
    first = load.first_successes_after(writable_at)
    figures = {
        "writes_after_kill_s": round(writable_at - killed_at, 2),
        "first_2xx_after_writes_s": min(first.values(), default=None),
        "first_webhook_200_after_writes_s": first.get(WEBHOOK),
        "requests": len(load.of()),
        "non_2xx": len(load.failures()),
        "answers": load.summary(),
        "slowest_s": round(max(s.latency for s in load.of()), 2),
        "acknowledged": len(acknowledged),
        "acknowledged_lost": len(lost),
    }
    # Stripe retries until answered 200: nothing of this kill left undelivered for the next.
    redeliver_until_received(stand_in, base, load.sessions)
    cluster.restart(old_primary)
    cluster.wait_for_states({"primary", "secondary"}, 90)
    return figures, load.checked_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=30, help="paid sessions per kill")
    args = parser.parse_args()
    # Two thirds of the sessions find stock: the rest are refunded while the kills go on.
    units = args.kills * args.sessions * 2 // 3
    kills: list[dict[str, Any]] = []
    checked_out: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-failover-") as workdir,
        failover_cluster() as cluster,
        stripe_stand_in() as (stand_in, stripe_url),
    ):
        progress(f"cluster up: {cluster.url}")
        database = Database.from_url(cluster.url)
        env = ledger_env(cluster.url, stripe_url)
        with (
            serving(Path(workdir), "--no-workers", **env) as base,
            working(Path(workdir), **env) as worker,
            httpx.Client(base_url=base, timeout=30) as api,
        ):
            add_product(api, units)
            add_checkout_product(api, CHECKOUT_SKU, 10_000)
            # Paid before any kill: a checkout needs stock available, which the first kills'
            # orders take.
            every_session = [
                paid_session(api, stand_in, SKU) for _ in range(args.kills * args.sessions)
            ]
            for number in range(1, args.kills + 1):
                sessions = every_session[(number - 1) * args.sessions : number * args.sessions]
                figures, bought = one_kill(cluster, database, stand_in, base, sessions)
                checked_out += bought
                kills.append({"kill": number, **figures})
                progress(f"kill {number}: {json.dumps(figures)}")
            try:
                assert_one_outcome_each(
                    database, api, stand_in, every_session, units, confirmed_elsewhere=checked_out
                )
                outcomes_ok = True
            except AssertionError as wrong:
                progress(f"outcomes wrong: {wrong}")
                outcomes_ok = False
            worker_alive = worker.poll() is None
        verified = run_ledger(Path(workdir), "audit", "verify", LEDGER_DATABASE_URL=cluster.url)
        progress(verified.stdout.strip().splitlines()[-1] if verified.stdout.strip() else "")
    result = {
        "kills": kills,
        "acknowledged_lost_total": sum(k["acknowledged_lost"] for k in kills),
        "recovered_within_5s": all(
            k["first_2xx_after_writes_s"] is not None
            and k["first_2xx_after_writes_s"] < RECOVERY_BOUND_SECONDS
            for k in kills
        ),
        "outcomes_ok": outcomes_ok,
        "worker_alive_throughout": worker_alive,
        "audit_verify_exit": verified.returncode,
        "sessions_per_kill": args.sessions,
        "source": source_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
