"""Memory of the Stripe stand-in under abuse and under load, against a trivial app's.

Each server runs in a process of its own (`web.serving.run_in_thread` in a child of this
script), so that what the client allocates (20 MB bodies, 5,000 answers) is not counted; this
script reads the child's resident set size (psutil when installed, else /proc/PID/status VmRSS)
and its peak (VmHWM).

Per server, after a warm-up of 50 small requests (imports and first allocations, the same for
both): RSS before; five 20 MB bodies streamed without Content-Length (the stand-in must answer
413 having read at most 1 MiB of each); 5,000 checkout session creations (a 2-line cart, as the
ledger sends); RSS after. The baseline is a Starlette app whose one route answers 200 without
reading the body, served the same way and sent the same requests.

    .venv/bin/python bench/standin_memory.py [--sessions 5000] [--big 5] [--big-mb 20]

Progress on stderr; JSON on stdout: per server `rss_before_mb`, `rss_after_big_bodies_mb`,
`rss_after_mb`, `growth_mb`, `growth_per_session_kb` (growth over the session creations alone,
per session: the stand-in keeps every session, up to its cap), `peak_mb`, `statuses` (answers
by HTTP status), `seconds`; `growth_ratio` (the stand-in's growth
over the baseline's); `rss_from` (psutil or /proc); `source` (commit, changed files).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from common import progress, source_version

KEY = "sk_test_bench_memory"
RSS_FROM = "psutil" if importlib.util.find_spec("psutil") else "/proc"
WARM_UP = 50
CHUNK = 64 * 1024


def session_form(i: int) -> str:
    """A checkout session as the ledger creates one: two lines, metadata, URLs."""
    cart = f"7b0c3f3e-0000-4000-8000-{i:012d}"
    pairs = [("mode", "payment"), ("client_reference_id", cart), ("metadata[cart_id]", cart)]
    for n, (name, amount, quantity) in enumerate((("Mug", 1250, 2), ("Tea", 800, 1))):
        pairs += [
            (f"line_items[{n}][price_data][currency]", "usd"),
            (f"line_items[{n}][price_data][unit_amount]", str(amount)),
            (f"line_items[{n}][price_data][product_data][name]", name),
            (f"line_items[{n}][quantity]", str(quantity)),
        ]
    pairs += [
        ("payment_intent_data[metadata][cart_id]", cart),
        ("success_url", "http://127.0.0.1:8000/checkout/success?session_id={CHECKOUT_SESSION_ID}"),
        ("cancel_url", f"http://127.0.0.1:8000/?cart_id={cart}&checkout=cancelled"),
    ]
    return urlencode(pairs)


def serve(kind: str) -> None:
    """Child mode: serve one app, say where on stdout, run until stdin closes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from stripe_standin import StripeStandIn
    from web.serving import run_in_thread

    if kind == "standin":
        stand_in = StripeStandIn(
            api_key=KEY, webhook_url=None, webhook_secret="whsec_bench", public_base_url="http://x"
        )
        app: Any = stand_in.app
    else:

        async def ok(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/v1/checkout/sessions", ok, methods=["POST"])])
    server = run_in_thread(app)
    print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    server.stop()


def status_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid`, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def rss_of(pid: int) -> int:
    if RSS_FROM == "/proc":
        return status_of(pid)["VmRSS"]
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def big_body(megabytes: int) -> Iterator[bytes]:
    chunk = b"a" * CHUNK
    for _ in range(megabytes * 1024 * 1024 // CHUNK):
        yield chunk


def measure(kind: str, sessions: int, big: int, big_mb: int) -> dict[str, Any]:
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        where = json.loads(child.stdout.readline())
        pid, url = int(where["pid"]), f"{where['url']}/v1/checkout/sessions"
        headers = {
            "Authorization": f"Bearer {KEY}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        statuses: Counter[str] = Counter()
        with httpx.Client(timeout=120, headers=headers) as client:
            for i in range(WARM_UP):
                client.post(url, content=session_form(i))
            before = rss_of(pid)
            started = time.monotonic()
            for _ in range(big):
                statuses[str(client.post(url, content=big_body(big_mb)).status_code)] += 1
            after_big = rss_of(pid)
            progress(f"{kind}: {big} bodies of {big_mb} MB sent")
            for i in range(sessions):
                statuses[str(client.post(url, content=session_form(i)).status_code)] += 1
            seconds = time.monotonic() - started
        after = rss_of(pid)
        peak = status_of(pid).get("VmHWM")
        progress(f"{kind}: {sessions} sessions in {seconds:.1f} s")
    finally:
        child.stdin.close()
        child.wait(30)
    mb = 1024 * 1024
    return {
        "rss_before_mb": round(before / mb, 1),
        "rss_after_big_bodies_mb": round(after_big / mb, 1),
        "rss_after_mb": round(after / mb, 1),
        "growth_mb": round((after - before) / mb, 1),
        "growth_per_session_kb": round((after - after_big) / 1024 / max(sessions, 1), 2),
        "peak_mb": None if peak is None else round(peak / mb, 1),
        "statuses": dict(statuses),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--big", type=int, default=5, help="how many oversized bodies")
    parser.add_argument("--big-mb", type=int, default=20, help="size of each, in MB")
    parser.add_argument("--serve", choices=["standin", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    stand_in = measure("standin", args.sessions, args.big, args.big_mb)
    baseline = measure("baseline", args.sessions, args.big, args.big_mb)
    growth = baseline["growth_mb"]
    result = {
        "requests": {"big_bodies": args.big, "big_body_mb": args.big_mb, "sessions": args.sessions},
        "stand_in": stand_in,
        "baseline": baseline,
        "growth_ratio": round(stand_in["growth_mb"] / growth, 1) if growth > 0 else None,
        "rss_from": RSS_FROM,
        "source": source_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
