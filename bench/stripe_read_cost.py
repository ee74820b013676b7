"""The caller's CPU per re-fetch of a checkout session (`GET /v1/checkout/sessions/{id}`), by
the ways of making it, in one run against one Stripe stand-in.

The stand-in runs in a process of its own (`hot_product.py --serve-stand-in`), so only the
caller's CPU is counted: `time.process_time()` over `--calls` calls of each way, one after the
other, after a warm-up; the order of the ways is rotated over `--rounds` rounds and the best
round of each kept (the machine is shared: the least disturbed round is the closest to the
cost). Each way reads the same paid session and returns its parsed JSON (or the gateway's
`CheckoutSession`), so each pays for the same bytes.

Ways:
- `gateway`: `StripeGateway.retrieve_checkout`, what the webhook calls;
- `sdk_requests` / `sdk_httpx` / `sdk_urllib`: the SDK's `raw_request` over each HTTP client it
  ships that runs here (requests, httpx, urllib.request). `sdk_urllib` opens a connection per
  call (urllib.request keeps none alive): cheap here over loopback HTTP, not an option against
  Stripe, where each call would pay a TLS handshake;
- `urllib3_direct`: a keep-alive `urllib3.PoolManager` GET with the headers that matter
  (Authorization, the SDK's pinned Stripe-Version, a User-Agent), then `json.loads`.

    .venv/bin/python bench/stripe_read_cost.py [--calls 3000] [--rounds 3] [--threads 1]

`--threads N` makes the calls from N threads at once, as the server's pool does (each thread
its own share of `--calls`); the per-call CPU then includes what contention for the GIL adds.

Measured on 2026-12-06 (2 shared cores, load average 10-23; four runs, 1 and 8 threads): the
gateway (then the SDK over requests) 600-750 µs per call, the direct urllib3 read 190-285 µs.
The SDK path was kept; later that day its transport became urllib3 (`ledger.stripe_transport`):
`gateway` 701 and 772 µs per call against `sdk_requests` 1,386 and 1,347 µs (1 and 8 threads,
same runs, load average 9-15): 0.51-0.57x, some 0.6 ms saved per call.

One JSON document on stdout: `cpu_us_per_call` (best round) and `all_rounds` per way, and each
way's saving against `gateway`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import stripe
import urllib3
from common import progress
from hot_product import STRIPE_KEY, Processes, start_stand_in

Way = Callable[[], Any]


def paid_session(api_base: str) -> str:
    """A checkout session at the stand-in, paid through its hosted page (the webhook's case)."""
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": api_base})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 1250,
                        "product_data": {"name": "Mug"},
                    },
                    "quantity": 1,
                }
            ],
            "metadata": {"cart_id": "cart-1"},
            "client_reference_id": "cart-1",
            "success_url": "http://shop/ok",
            "cancel_url": "http://shop/cancel",
        }
    )
    paid = httpx.post(f"{api_base}/pay/{session.id}/pay", trust_env=False, timeout=5)
    if paid.status_code >= 400:
        raise RuntimeError(f"the pay page answered {paid.status_code}")
    return session.id


def ways(api_base: str, session_id: str) -> dict[str, Way]:
    from ledger.stripe_gateway import (
        CONNECT_TIMEOUT_SECONDS,
        NETWORK_RETRIES,
        READ_TIMEOUT_SECONDS,
        StripeGateway,
    )

    gateway = StripeGateway(STRIPE_KEY, api_base=api_base)
    path = f"/v1/checkout/sessions/{session_id}"

    def sdk(http_client: stripe.HTTPClient) -> Way:
        client = stripe.StripeClient(
            STRIPE_KEY,
            base_addresses={"api": api_base},
            max_network_retries=NETWORK_RETRIES,
            http_client=http_client,
        )
        return lambda: client.raw_request("get", path).data

    timeout = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
    pool = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
        retries=urllib3.Retry(total=NETWORK_RETRIES, status_forcelist=(429, 500, 502, 503, 504)),
    )
    url = api_base + path
    headers = {
        "Authorization": f"Bearer {STRIPE_KEY}",
        "Stripe-Version": stripe.api_version,
        "User-Agent": f"ledger stripe-python/{stripe.VERSION}",
    }

    def direct() -> Any:
        response = pool.request("GET", url, headers=headers)
        return json.loads(response.data)

    found: dict[str, Way] = {
        "gateway": lambda: gateway.retrieve_checkout(session_id),
        "sdk_requests": sdk(stripe.RequestsClient(timeout=timeout)),
        "sdk_httpx": sdk(stripe.HTTPXClient(timeout=timeout[1], allow_sync_methods=True)),
        "sdk_urllib": sdk(stripe.UrllibClient()),
        "urllib3_direct": direct,
    }
    return found


def cpu_us_per_call(way: Way, calls: int, threads: int) -> float:
    """The process's CPU per call, `calls` calls made from `threads` threads at once (the server
    makes its Stripe calls from a pool of threads, contending for the GIL)."""
    per_thread = calls // threads

    def run(count: int) -> None:
        for _ in range(count):
            way()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, [50] * threads))  # connections opened, caches warm
        started = time.process_time()
        list(pool.map(run, [per_thread] * threads))
        used = time.process_time() - started
    return used / (per_thread * threads) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="callers at once")
    args = parser.parse_args()

    procs = Processes(Path(os.environ.get("TMPDIR", "/tmp")))
    try:
        stand_in = start_stand_in(procs, secret="whsec_bench")
        session_id = paid_session(stand_in.url)
        found = ways(stand_in.url, session_id)
        shape = found["urllib3_direct"]()
        if shape != found["sdk_requests"]():
            raise RuntimeError("the direct read and the SDK's disagree on the session")
        rounds: dict[str, list[float]] = {name: [] for name in found}
        names = list(found)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                rounds[name].append(
                    round(cpu_us_per_call(found[name], args.calls, args.threads), 1)
                )
                progress(f"round {r + 1}: {name} {rounds[name][-1]} µs")
    finally:
        procs.stop_all()
    best = {name: min(values) for name, values in rounds.items()}
    print(
        json.dumps(
            {
                "calls_per_round": args.calls,
                "threads": args.threads,
                "session_status": shape.get("status"),
                "payment_status": shape.get("payment_status"),
                "cpu_us_per_call": best,
                "saving_vs_gateway_us": {
                    name: round(best["gateway"] - value, 1) for name, value in best.items()
                },
                "all_rounds": rounds,
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
