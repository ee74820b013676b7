"""What a cart's size costs: `GET /api/carts/{id}` and `PUT .../items/{sku}` on a 100-line cart
(Stripe Checkout's own limit, and the ledger's) against a 1-line cart, in the same run.

The ledger runs as deployed: a `ledger serve` subprocess (workers included) on a scratch
database of the PostgreSQL server named by `--url`, with the built-in Stripe stand-in. Set-up,
not timed: `--lines` products (one currency), one cart holding all of them and one cart holding
one. Timed, one request at a time over one kept-alive connection, the two carts alternating so
that a neighbour's load on this shared machine falls on both alike:
- `get`: `--requests` GETs of each cart;
- `put`: `--requests` PUTs on each cart, each changing the quantity of an existing line (1 <-> 2),
  so every one records an event and answers the whole priced cart.
Before the timed phase, `--warmup` requests of each kind (the aggregate cache then holds every
product, as in a shop that is up and running).

    .venv/bin/python bench/cart_lines.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--lines 100] [--requests 200] [--warmup 20]

Progress on stderr; JSON on stdout:
- `get_ms` / `put_ms`: `lines_<N>` and `lines_1`, each the latency percentiles (p50, p90, p95,
  p99, max, mean) as the client sees them; `ratio_p50` and `ratio_mean` (N-line / 1-line);
- `lines`, `requests`, `loadavg_at_start`, `cores`, `postgres` (server version) and `source`
  (the commit the ledger ran from and the files under src/ that differed from it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from common import REPO_DIR, percentiles, progress, scratch_database, source_version

from ledger.storage import Database

ADMIN_TOKEN = "bench-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def ledger_serve(database: Database) -> Iterator[str]:
    """A `ledger serve` process on `database`, ready; its base URL. Stopped afterwards."""
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_", "BASELINE_"))
    }
    env.update(
        PYTHONUNBUFFERED="1",
        LEDGER_DATABASE_URL=database.conninfo_url(),
        LEDGER_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="cart_lines_") as work_dir:
        log_path = Path(work_dir) / "serve.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "web.cli", "serve", "--port", str(port)],
                env=env,
                cwd=work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            wait_ready(proc, url, log_path)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2, trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ledger serve exited at start:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url + "/readyz").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ledger serve not ready:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:500]}"
        )
    return response


def set_up(api: httpx.Client, lines: int) -> tuple[str, str, list[str]]:
    """The big cart's id, the small cart's id, and the big cart's SKUs."""
    skus = [f"bench-{i:04d}" for i in range(lines)]
    for sku in skus:
        body = {"name": f"Product {sku}", "unit_amount": 1000, "currency": "usd"}
        expect(api.put(f"/api/products/{sku}", json=body, headers=ADMIN), 200, 201)
    carts = []
    for count in (lines, 1):
        cart_id = expect(api.post("/api/carts", json={}), 201).json()["cart_id"]
        for sku in skus[:count]:
            expect(api.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": 1}), 200)
        carts.append(cart_id)
    return carts[0], carts[1], skus


def timed(api: httpx.Client, method: str, path: str, body: Any = None) -> float:
    started = time.perf_counter()
    expect(api.request(method, path, json=body), 200)
    return time.perf_counter() - started


def run(database: Database, lines: int, requests: int, warmup: int) -> dict[str, Any]:
    with (
        ledger_serve(database) as url,
        httpx.Client(base_url=url, timeout=30, trust_env=False) as api,
    ):
        progress(f"set-up: {lines} products, a {lines}-line and a 1-line cart")
        big, small, skus = set_up(api, lines)
        carts = {f"lines_{lines}": (big, skus[-1]), "lines_1": (small, skus[0])}
        samples: dict[str, dict[str, list[float]]] = {
            "get": {k: [] for k in carts},
            "put": {k: [] for k in carts},
        }
        quantity = 1
        for n in range(warmup + requests):
            quantity = 3 - quantity  # 1 <-> 2: each PUT records a change
            for key, (cart_id, sku) in carts.items():
                get_s = timed(api, "GET", f"/api/carts/{cart_id}")
                put_s = timed(
                    api, "PUT", f"/api/carts/{cart_id}/items/{sku}", {"quantity": quantity}
                )
                if n >= warmup:
                    samples["get"][key].append(get_s)
                    samples["put"][key].append(put_s)
            if n == warmup:
                progress(f"warm-up done; timing {requests} requests of each kind per cart")
    result: dict[str, Any] = {}
    for kind, by_cart in samples.items():
        stats = {key: percentiles(values) for key, values in by_cart.items()}
        big_stats, small_stats = stats[f"lines_{lines}"], stats["lines_1"]
        result[f"{kind}_ms"] = {
            **stats,
            "ratio_p50": _ratio(big_stats["p50"], small_stats["p50"]),
            "ratio_mean": _ratio(big_stats["mean"], small_stats["mean"]),
        }
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    admin = Database.from_url(args.url)
    results: dict[str, Any] = {
        "lines": args.lines,
        "requests": args.requests,
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "source": source_version(),
    }
    with admin.connect() as conn:
        row = conn.execute("SHOW server_version").fetchone()
        results["postgres"] = row[0] if row else None
    os.chdir(REPO_DIR)
    with scratch_database(admin, "ledger_bench_") as database:
        results.update(run(database, args.lines, args.requests, args.warmup))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
