"""The ledger's write path on a hot product, side by side with the baseline a user would write.

Both systems run as real processes on the same PostgreSQL and call the same Stripe stand-in:
- the ledger: `ledger serve` subprocess(es) (with their workers, as deployed), configured with
  a fresh scratch database and the stand-in as `STRIPE_API_BASE`;
- the baseline: `bench/baseline_app.py` (Starlette + psycopg 3 pool + stripe SDK, the seed
  design's webhook as one plain SQL transaction) in uvicorn subprocess(es), own scratch database;
- the Stripe stand-in (`stripe_standin.StripeStandIn`) in a process of its own, delivering
  no webhooks itself: this script signs and delivers every one, and times it.
Every sub-scenario gets fresh processes and fresh scratch databases (dropped afterwards).

Set-up, not timed: products and stock; per session a cart with one unit, a checkout session at
the stand-in (the ledger: through its HTTP API, which calls the stand-in with the stripe SDK;
the baseline: rows inserted directly and the session created with the stripe SDK), then the
stand-in's hosted pay page form is posted with outcome "pay". Timed: delivering the signed
`checkout.session.completed` of every session; any non-200 answer is delivered again (as Stripe
does) until it is answered 200.

Scenarios (`--scenarios`, default all):
- `hot`: N paid sessions (`--sessions`, 300) for ONE product with stock N*5/6 (250 of 300), so
  the rest must end refunded; closed loop at concurrency 1, 8 and 32 (`hot_c1`, `hot_c8`,
  `hot_c32`): each client task delivers, redelivers a non-200 later (it goes to the back of
  the queue), and takes the next.
- `spread`: N sessions over N products (stock 1 each) at concurrency 32 (`spread_c32`).
- `open`: N deliveries at a fixed `--rate` (50/s) for one hot product, sent on schedule whatever
  the answers (`open_50`); a non-200 is redelivered 1 s later. Right after a 200 the status is
  polled (the ledger: `GET /api/checkout-sessions/{id}/order`, the baseline: its own
  `GET /orders/{id}`) until it shows an outcome (`confirmed`, `refund_pending`, `refunded`).

The load generator is this process: asyncio on uvloop with a minimal HTTP/1.1 keep-alive
client (httpx would spend a few ms of CPU per request, taken from the servers on a small
machine); every attempt is signed afresh with the webhook secret
(`stripe.WebhookSignature.generate_signature_header`), in the event shape the stand-in's
`build_event` makes, with the session as the stand-in reports it once paid.

Run (bounded: a whole run at the defaults takes a few minutes):

    .venv/bin/python bench/hot_product.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--sessions 300] [--scenarios hot,spread,open] [--processes 1] [--rate 50] [--repeat 1]
        [--workers 1]

`--workers N` starts each ledger server as `ledger serve --workers N` (one port, N processes):
its `cpu_s.servers` then counts the parent and every child, `log.requests_by_process` gives the
requests each child answered (set-up included), `log.webhooks_by_process` the deliveries alone,
and `metrics` is whichever child answered the scrape. `bench/serve_workers.py` compares N = 2
with N = 1 in one run.

Progress goes to stderr; one JSON document to stdout:
- `machine`: cores, load average at start, PostgreSQL version; `source`: the commit the ledger
  ran from and the files under src/ that differed from it when the run started.
- `scenarios.<name>.ledger` / `.baseline`:
  - `settled_per_s`: sessions / wall time until every session got its 200 (closed loop);
  - `wall_s`, `deliveries` (all attempts), `non_200` (count) and `non_200_by_status`;
  - `webhook_ms`: latency of every delivery attempt (p50, p90, p95, p99, max, mean);
  - `outcomes`: statuses read back after the run (ledger: the status endpoint; baseline: its
    orders table), `refund` = refund_pending + refunded; `expected` what they must be;
    `stock_left`: on hand afterwards (hot) / sum over products (spread);
  - `cpu_s`: CPU seconds used during the timed phase by the servers, the stand-in, this
    load generator and every `postgres` process of the machine (other users' too), and `wall`;
  - open loop only: `rate_per_s`, `send_lag_ms_max` (how late the scheduler sent), and
    `status_lag_ms` (from the webhook's 200 to the status poll showing an outcome) with
    `polls_over_one`;
  - `rss_mb`: `max_vmrss` (max of VmRSS sampled every 0.5 s over the server processes, set-up
    included) and `vmhwm` (their VmHWM read at the end of the scenario);
  - `log`: the ledger's serve log (warning/error lines by event, 5xx answers by path), the
    baseline's uvicorn log (answers by status, error lines);
  - ledger only: `metrics` (its /metrics: webhook outcomes, anomalies, mean server-side webhook
    time).
- `scenarios.<name>.loadavg_at_start`: the machine's load average (it may be shared).
- `scenarios.<name>.ratio`: ledger / baseline for `settled_per_s` (below 1: the ledger is
  slower), the latency percentiles and (open) the status lag.
- with `--repeat N` (N > 1): `scenarios.<name>.repeats` (each run's ratios, settled/s, non-200
  answers and webhook p99, ledger and baseline) and `ratio_median`; the rest is the last run.
  The machine may be shared: repeats alternate the two systems, so a neighbour's load falls on
  both, and the median ratio is the figure to quote.
- `rss_peak_mb`: peak VmRSS in MB of any `ledger serve` (and baseline) process over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import psycopg
import stripe
from psycopg.conninfo import conninfo_to_dict

try:
    import sniffio  # noqa: F401
except ImportError:
    # Without sniffio, httpcore retries `import sniffio` (a search of sys.path) on every async
    # request; a None entry makes that import fail at once, with the same outcome (asyncio).
    sys.modules["sniffio"] = None  # type: ignore[assignment]

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import baseline_app  # noqa: E402  (the helper module next to this script)
from common import (  # noqa: E402
    create_database,
    drop_database,
    percentiles,
    progress,
    source_version,
)

ADMIN_TOKEN = "bench-admin"
STRIPE_KEY = "sk_test_bench"
API_VERSION = "2026-07-29.dahlia"  # what the stand-in stamps on its events
OUTCOME_STATUSES = {"confirmed", "refund_pending", "refunded"}
UNIT_AMOUNT = 1250
SETUP_CONCURRENCY = 8
CLOSED_LOOP_DEADLINE_S = 300.0  # a closed-loop run that has not settled by then is cut off
OPEN_LOOP_DEADLINE_S = 180.0
MAX_ATTEMPTS = 200  # per session; a session still refused after that is reported unsettled
STATUS_POLL_TIMEOUT_S = 15.0
START_TIMEOUT_S = 60.0
BENCH_DELAY_PATH = "/_bench/delay"  # outside /v1: no SDK call can reach it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


# ------------------------------------------------------------------------------------------
# Processes


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_", "BASELINE_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class Processes:
    """Every subprocess this run started, so that all of them are stopped whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
        log_path = self.log_dir / f"{name}-{port}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv, env=env, cwd=self.log_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        proc = Proc(name, popen, log_path, f"http://127.0.0.1:{port}")
        self.running.append(proc)
        return proc

    def stop(self, procs: list[Proc]) -> None:
        for proc in procs:
            proc.stop()
            if proc in self.running:
                self.running.remove(proc)

    def stop_all(self) -> None:
        self.stop(list(self.running))


def wait_ready(proc: Proc, path: str, ok: Callable[[int], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2, trust_env=False) as client:
        while True:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if ok(client.get(proc.url + path).status_code):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{proc.name} not ready in {START_TIMEOUT_S}s:\n{proc.log_tail()}"
                )
            time.sleep(0.1)


def serve_stand_in(port: int, secret: str) -> None:
    """The Stripe stand-in alone in this process (`--serve-stand-in`), delivering nothing."""
    import uvicorn

    from stripe_standin import StripeStandIn

    stand_in = StripeStandIn(
        api_key=STRIPE_KEY,
        webhook_url=None,
        webhook_secret=secret,
        public_base_url=f"http://127.0.0.1:{port}",
    )
    api = stand_in.app

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # The bench's one control (`set_stand_in_delay`): how long every /v1 call sleeps before
        # it is answered (the stand-in's own `delay_seconds`), so that only the timed phase
        # meets a Stripe with real latency and the set-up runs at full speed.
        if scope["type"] == "http" and scope["path"] == BENCH_DELAY_PATH:
            stand_in.delay_seconds = float(scope["query_string"].decode() or 0)
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await api(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def set_stand_in_delay(stand_in: Proc, seconds: float) -> None:
    """Every Stripe call the stand-in answers from now on waits `seconds` first."""
    with httpx.Client(timeout=5, trust_env=False) as client:
        r = client.post(f"{stand_in.url}{BENCH_DELAY_PATH}?{seconds}")
    if r.status_code != 204:
        raise RuntimeError(f"the stand-in refused its delay: {r.status_code}")


def start_stand_in(procs: Processes, secret: str) -> Proc:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-stand-in", str(port)]
    proc = procs.start("stand-in", argv, clean_env(BENCH_WEBHOOK_SECRET=secret), port)
    wait_ready(proc, "/v1/checkout/sessions/cs_none", lambda s: s in (401, 404))
    return proc


def start_servers(
    kind: Literal["ledger", "baseline"],
    procs: Processes,
    count: int,
    database_url: str,
    stand_in: Proc,
    secret: str,
    workers: int = 1,
) -> list[Proc]:
    """`count` ledger or baseline servers on `database_url`, calling the stand-in; all ready.
    `workers`: each ledger server is `ledger serve --workers N` (one port, N processes).

    One function for both so that the two systems start with the same Stripe settings.
    """
    started = []
    for _ in range(count):
        port = free_port()
        env = clean_env(
            STRIPE_API_KEY=STRIPE_KEY, STRIPE_WEBHOOK_SECRET=secret, STRIPE_API_BASE=stand_in.url
        )
        if kind == "ledger":
            env.update(
                LEDGER_DATABASE_URL=database_url,
                LEDGER_ADMIN_TOKEN=ADMIN_TOKEN,
                LEDGER_PUBLIC_URL=f"http://127.0.0.1:{port}",
            )
            argv = [sys.executable, "-m", "web.cli", "serve", "--port", str(port)]
            argv += ["--workers", str(workers)]
        else:
            env["BASELINE_DATABASE_URL"] = database_url
            argv = [sys.executable, str(BENCH_DIR / "baseline_app.py"), "--port", str(port)]
        started.append(procs.start(kind, argv, env, port))
        if kind == "ledger":
            # One at a time: the first one creates the tables.
            wait_ready(started[-1], "/readyz", lambda s: s == 200)
    if kind == "baseline":  # the set-up created the schema: all of them start at once
        for proc in started:
            wait_ready(proc, "/readyz", lambda s: s == 200)
    return started


def read_status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (`ledger serve --workers N`'s children), from /proc."""
    found: list[int] = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return found
    for child in children:
        found += [child, *descendants(child)]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of a server and of every process it started (children that exit are not
    counted: the servers' do not, while measured)."""
    return cpu_seconds(pid) + sum(cpu_seconds(c) for c in descendants(pid))


def postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of every `postgres` process on this machine (other users' too)."""
    found: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            found[int(entry)] = cpu_seconds(int(entry))
    return found


class CpuMeter:
    """CPU seconds used during a phase by the servers, the stand-in, this process, PostgreSQL."""

    def __init__(self, servers: list[Proc], stand_in: Proc) -> None:
        self.servers = servers
        self.stand_in = stand_in
        self.before = self._now()
        self.postgres_before = postgres_cpu()
        self.started = time.perf_counter()

    def _now(self) -> dict[str, float]:
        return {
            "servers": sum(tree_cpu_seconds(p.pid) for p in self.servers),
            "stand_in": cpu_seconds(self.stand_in.pid),
            "load_generator": time.process_time(),
        }

    def result(self) -> dict[str, float]:
        after = self._now()
        out = {k: round(after[k] - self.before[k], 2) for k in after}
        # Backends that ended during the phase are missed; new ones count whole.
        out["postgres_all"] = round(
            sum(t - self.postgres_before.get(pid, 0.0) for pid, t in postgres_cpu().items()), 2
        )
        out["wall"] = round(time.perf_counter() - self.started, 2)
        return out


class RssSampler:
    """Samples VmRSS of the watched processes every 0.5 s; keeps the max per label."""

    def __init__(self) -> None:
        self._watched: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.max_kb: dict[str, int] = collections.defaultdict(int)
        self.window_kb: dict[str, int] = collections.defaultdict(int)
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def watch(self, procs: list[Proc], label: str) -> None:
        with self._lock:
            for p in procs:
                self._watched[p.pid] = label

    def unwatch(self, procs: list[Proc]) -> None:
        with self._lock:
            for p in procs:
                self._watched.pop(p.pid, None)

    def take_window(self, label: str) -> int:
        """Max VmRSS (kB) of `label` since the last call, and start a new window."""
        self.sample()
        with self._lock:
            return self.window_kb.pop(label, 0)

    def sample(self) -> None:
        with self._lock:
            for pid, label in self._watched.items():
                kb = read_status_kb(pid, "VmRSS")
                if kb is not None:
                    self.max_kb[label] = max(self.max_kb[label], kb)
                    self.window_kb[label] = max(self.window_kb[label], kb)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()


# ------------------------------------------------------------------------------------------
# Databases


class Scratch:
    """Scratch databases on the admin URL's server; every one is dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        from ledger.storage import Database

        self.admin = Database.from_url(admin_url)
        self.names: list[str] = []

    def create(self, tag: str) -> str:
        database = create_database(self.admin, f"bench_hot_{tag}_")
        self.names.append(database.params["dbname"])
        return database.conninfo

    def drop(self, url: str) -> None:
        name = str(conninfo_to_dict(url)["dbname"])
        drop_database(self.admin, name)
        if name in self.names:
            self.names.remove(name)

    def drop_all(self) -> None:
        for name in list(self.names):
            drop_database(self.admin, name)
            self.names.remove(name)


def as_uri(conninfo: str) -> str:
    """A libpq key=value string as a postgresql:// URI (what LEDGER_DATABASE_URL documents)."""
    from ledger.storage import Database

    info = conninfo_to_dict(conninfo)
    return Database({k: str(v) for k, v in info.items() if v is not None}).conninfo_url()


# ------------------------------------------------------------------------------------------
# Set-up


@dataclass
class Delivery:
    session_id: str
    payload: str  # the event's JSON body; signed afresh on every attempt


async def bounded(
    items: list[Any], work: Callable[[Any], Awaitable[Any]], n: int = SETUP_CONCURRENCY
) -> list[Any]:
    gate = asyncio.Semaphore(n)

    async def one(item: Any) -> Any:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


def expect(response: httpx.Response, *codes: int) -> dict[str, Any]:
    if response.status_code not in codes:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def pay_and_build(client: httpx.AsyncClient, stand_in: Proc, session_id: str) -> Delivery:
    """Pay at the stand-in's hosted page (outcome "pay"), then build the event as it would."""
    r = await client.post(f"{stand_in.url}/pay/{session_id}/pay")
    if r.status_code != 303:
        raise RuntimeError(f"pay page answered {r.status_code}: {r.text[:200]}")
    session = expect(
        await client.get(
            f"{stand_in.url}/v1/checkout/sessions/{session_id}",
            headers={"Authorization": f"Bearer {STRIPE_KEY}"},
        ),
        200,
    )
    assert session["payment_status"] == "paid", session
    event = {  # the shape of StripeStandIn._make_event
        "id": f"evt_1{secrets.token_hex(12)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": session},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
    }
    return Delivery(session_id, json.dumps(event, indent=2))


async def setup_ledger(
    ledger: Proc, stand_in: Proc, skus: list[str], stock: dict[str, int]
) -> list[Delivery]:
    """Products, stock and one paid session per entry of `skus`, through the ledger's API."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=ledger.url, timeout=30, trust_env=False) as client:

        async def product(sku: str) -> None:
            body = {"name": f"Product {sku}", "unit_amount": UNIT_AMOUNT, "currency": "usd"}
            expect(await client.put(f"/api/products/{sku}", json=body, headers=admin), 200, 201)
            expect(
                await client.post(
                    f"/api/products/{sku}/stock",
                    json={"quantity": stock[sku], "reason": "bench"},
                    headers=admin,
                ),
                200,
            )

        await bounded(sorted(stock), product)

        async def session(sku: str) -> Delivery:
            cart_id = expect(await client.post("/api/carts", json={}), 201)["cart_id"]
            expect(await client.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": 1}), 200)
            created = expect(await client.post(f"/api/carts/{cart_id}/checkout"), 201)
            return await pay_and_build(client, stand_in, created["checkout_session_id"])

        return await bounded(skus, session)


def create_baseline_sessions(
    conninfo: str, stand_in: Proc, skus: list[str], stock: dict[str, int]
) -> list[str]:
    """Schema, product and cart rows inserted directly; sessions created with the stripe SDK."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(baseline_app.SCHEMA)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO products (sku, name, unit_amount, currency, on_hand)"
                " VALUES (%s, %s, %s, 'usd', %s)",
                [(sku, f"Product {sku}", UNIT_AMOUNT, n) for sku, n in sorted(stock.items())],
            )
        carts = [str(uuid.uuid4()) for _ in skus]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO carts (cart_id) VALUES (%s)", [(c,) for c in carts])
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": stand_in.url})
    session_ids = []
    for cart_id, sku in zip(carts, skus, strict=True):
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": UNIT_AMOUNT,
                            "product_data": {"name": f"Product {sku}"},
                        },
                        "quantity": 1,
                        "metadata": {"sku": sku},
                    }
                ],
                "metadata": {"cart_id": cart_id},
                "client_reference_id": cart_id,
                "success_url": "http://127.0.0.1/success?session_id={CHECKOUT_SESSION_ID}",
                "cancel_url": "http://127.0.0.1/cancel",
            },
            options={"idempotency_key": f"checkout-{cart_id}"},
        )
        session_ids.append(session.id)
    return session_ids


async def setup_baseline(
    conninfo: str, stand_in: Proc, skus: list[str], stock: dict[str, int]
) -> list[Delivery]:
    session_ids = await asyncio.to_thread(create_baseline_sessions, conninfo, stand_in, skus, stock)
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        return await bounded(session_ids, lambda s: pay_and_build(client, stand_in, s))


# ------------------------------------------------------------------------------------------
# Load


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    non_200: collections.Counter[str] = field(default_factory=collections.Counter)
    settled: int = 0
    unsettled: list[str] = field(default_factory=list)

    def record(self, status: str, seconds: float) -> bool:
        self.latencies.append(seconds)
        if status != "200":
            self.non_200[status] += 1
            return False
        return True

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries": len(self.latencies),
            "non_200": sum(self.non_200.values()),
            "non_200_by_status": dict(sorted(self.non_200.items())),
            "webhook_ms": percentiles(self.latencies),
            "unsettled": len(self.unsettled),
        }


class Http:
    """A minimal HTTP/1.1 keep-alive client for the timed phases.

    httpx costs a few ms of CPU per request; on a small machine the load generator would take
    that from the servers it measures. This costs a fraction of it: one pooled connection per
    request in flight, Content-Length or chunked bodies, nothing else.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: set[asyncio.StreamWriter] = set()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            + "\r\n"
        ).encode("latin-1") + body
        for attempt in range(2):
            reused = attempt == 0 and bool(self._idle)  # the second try: a fresh connection
            if reused:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self._all.add(writer)
            answered = False
            try:
                async with asyncio.timeout(self.timeout):
                    writer.write(head)
                    status_line = await reader.readline()
                    if not status_line:
                        raise ConnectionResetError("connection closed before an answer")
                    answered = True
                    status, answer, keep = await self._read_rest(reader, status_line)
            except ConnectionError:
                self._discard(writer)
                if reused and not answered and attempt == 0:
                    continue  # a kept-alive connection the server had closed: once more
                raise
            except BaseException:
                self._discard(writer)
                raise
            if keep:
                self._idle.append((reader, writer))
            else:
                self._discard(writer)
            return status, answer
        raise ConnectionResetError("connection closed before an answer")

    @staticmethod
    async def _read_rest(
        reader: asyncio.StreamReader, status_line: bytes
    ) -> tuple[int, bytes, bool]:
        status = int(status_line.split()[1])
        length, chunked, keep = 0, False, True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                keep = False
        if not chunked:
            return status, await reader.readexactly(length), keep
        parts: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                return status, b"".join(parts), keep
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self._all.discard(writer)

    async def close(self) -> None:
        for writer in list(self._all):
            self._discard(writer)
        self._idle.clear()


async def post_event(http: Http, delivery: Delivery, secret: str) -> tuple[str, float]:
    """One delivery attempt, signed now: (HTTP status or error name, seconds)."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            delivery.payload, secret
        ),
    }
    body = delivery.payload.encode()
    started = time.perf_counter()
    try:
        code, _ = await http.request("POST", "/webhooks/stripe", body, headers)
        status = str(code)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        status = type(exc).__name__
    return status, time.perf_counter() - started


async def closed_loop(
    targets: list[Proc], deliveries: list[Delivery], concurrency: int, secret: str
) -> dict[str, Any]:
    """`concurrency` client tasks; a refused delivery goes to the back of the queue."""
    tally = Tally()
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for i in range(len(deliveries)):
        queue.put_nowait((i, 0))
    clients = [Http(t.url) for t in targets]
    deadline = time.monotonic() + CLOSED_LOOP_DEADLINE_S

    async def worker() -> None:
        while True:
            i, attempt = await queue.get()
            try:
                http = clients[(i + attempt) % len(clients)]  # round-robin, retries too
                status, seconds = await post_event(http, deliveries[i], secret)
                if tally.record(status, seconds):
                    tally.settled += 1
                elif attempt + 1 >= MAX_ATTEMPTS or time.monotonic() > deadline:
                    tally.unsettled.append(deliveries[i].session_id)
                else:
                    queue.put_nowait((i, attempt + 1))
            finally:
                queue.task_done()

    started = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await queue.join()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for http in clients:
            await http.close()
    wall = time.perf_counter() - started
    return {
        "sessions": len(deliveries),
        "concurrency": concurrency,
        "processes": len(targets),
        "wall_s": round(wall, 3),
        "settled_per_s": round(tally.settled / wall, 2),
        **tally.summary(),
    }


async def open_loop(
    targets: list[Proc],
    deliveries: list[Delivery],
    rate: float,
    secret: str,
    status_path: Callable[[str], str],
) -> dict[str, Any]:
    """Deliveries on a fixed schedule; after each 200, poll the status until an outcome."""
    tally = Tally()
    lags: list[float] = []
    polls_over_one = 0
    send_lag: list[float] = []
    poll_failures: collections.Counter[str] = collections.Counter()
    clients = [Http(t.url) for t in targets]
    hard_deadline = time.monotonic() + OPEN_LOOP_DEADLINE_S

    async def one(i: int) -> None:
        nonlocal polls_over_one
        delivery = deliveries[i]
        attempt = 0
        while True:
            http = clients[(i + attempt) % len(clients)]
            status, seconds = await post_event(http, delivery, secret)
            if tally.record(status, seconds):
                break
            attempt += 1
            if attempt >= MAX_ATTEMPTS or time.monotonic() > hard_deadline:
                tally.unsettled.append(delivery.session_id)
                return
            await asyncio.sleep(1.0)  # Stripe retries later, never at once
        tally.settled += 1
        answered = time.perf_counter()
        polls = 0
        while True:
            polls += 1
            try:
                code, body = await http.request("GET", status_path(delivery.session_id))
                shown = str(json.loads(body).get("status")) if code == 200 else str(code)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                shown = type(exc).__name__
            if shown in OUTCOME_STATUSES:
                lags.append(time.perf_counter() - answered)
                break
            if time.perf_counter() - answered > STATUS_POLL_TIMEOUT_S:
                poll_failures[shown] += 1
                break
            await asyncio.sleep(0.005)
        if polls > 1:
            polls_over_one += 1

    started = time.perf_counter()
    tasks = []
    try:
        for i in range(len(deliveries)):
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            send_lag.append(max(0.0, time.perf_counter() - due))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for http in clients:
            await http.close()
    wall = time.perf_counter() - started
    return {
        "sessions": len(deliveries),
        "rate_per_s": rate,
        "processes": len(targets),
        "wall_s": round(wall, 3),
        "send_lag_ms_max": round(max(send_lag) * 1000, 2),
        **tally.summary(),
        "status_lag_ms": percentiles(lags),
        "polls_over_one": polls_over_one,
        "status_never_shown": dict(poll_failures),
    }


# ------------------------------------------------------------------------------------------
# Checks


async def ledger_outcomes(
    ledger: Proc, deliveries: list[Delivery], skus: set[str]
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=ledger.url, timeout=30, trust_env=False) as client:

        async def status(d: Delivery) -> str:
            r = await client.get(f"/api/checkout-sessions/{d.session_id}/order")
            return str(r.json()["status"]) if r.status_code == 200 else f"http_{r.status_code}"

        statuses = collections.Counter(await bounded(deliveries, status))

        async def available(sku: str) -> int:
            return int(expect(await client.get(f"/api/products/{sku}"), 200)["available"])

        left = sum(await bounded(sorted(skus), available))
    return {
        "confirmed": statuses.get("confirmed", 0),
        "refund": statuses.get("refund_pending", 0) + statuses.get("refunded", 0),
        "by_status": dict(sorted(statuses.items())),
        "stock_left": left,
    }


def baseline_outcomes(conninfo: str) -> dict[str, Any]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall()
        left = conn.execute("SELECT coalesce(sum(on_hand), 0) FROM products").fetchone()
    statuses = {str(s): int(n) for s, n in rows}
    return {
        "confirmed": statuses.get("confirmed", 0),
        "refund": statuses.get("refund_pending", 0) + statuses.get("refunded", 0),
        "by_status": dict(sorted(statuses.items())),
        "stock_left": int(left[0]) if left else 0,
    }


def ledger_metrics(procs: list[Proc]) -> dict[str, Any]:
    """Webhook outcomes, anomalies and the server-side webhook time from each /metrics."""
    outcomes: collections.Counter[str] = collections.Counter()
    anomalies: collections.Counter[str] = collections.Counter()
    seconds = count = 0.0
    with httpx.Client(timeout=10, trust_env=False) as client:
        for proc in procs:
            try:
                text = client.get(proc.url + "/metrics").text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name, _, value = line.rpartition(" ")
                label = name.partition('="')[2].rstrip('"}')
                if name.startswith("ledger_webhook_events_total{"):
                    outcomes[label] += int(float(value))
                elif name.startswith("ledger_anomalies_total{"):
                    anomalies[label] += int(float(value))
                elif name == "ledger_webhook_seconds_sum":
                    seconds += float(value)
                elif name == "ledger_webhook_seconds_count":
                    count += float(value)
    return {
        "webhook_outcomes": dict(sorted(outcomes.items())),
        "anomalies": dict(sorted(anomalies.items())),
        "server_webhook_mean_ms": round(seconds / count * 1000, 2) if count else None,
    }


def baseline_log_summary(procs: list[Proc]) -> dict[str, Any]:
    """uvicorn's log of the baseline: error lines and answers by status."""
    statuses: collections.Counter[str] = collections.Counter()
    errors = 0
    samples: list[str] = []
    for proc in procs:
        try:
            text = proc.log_path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if '" ' in line and "HTTP/1.1" in line:
                statuses[line.rsplit('" ', 1)[1].split()[0]] += 1
            elif line.startswith(("ERROR", "Traceback", "CRITICAL", "WARNING")):
                errors += 1
                if len(samples) < 5:
                    samples.append(line[:300])
    return {
        "answers_by_status": dict(sorted(statuses.items())),
        "error_lines": errors,
        "samples": samples,
    }


def ledger_log_summary(procs: list[Proc]) -> dict[str, Any]:
    levels: collections.Counter[str] = collections.Counter()
    events: collections.Counter[str] = collections.Counter()
    server_errors: collections.Counter[str] = collections.Counter()
    samples: list[str] = []
    other = 0
    # `ledger serve --workers N`: each child's requests, from the line it writes as it stops.
    requests_by_process: dict[str, int] = {}
    # The deliveries alone (the timed phase), by the pid on each webhook's line.
    webhooks_by_process: collections.Counter[str] = collections.Counter()
    for proc in procs:
        try:
            text = proc.log_path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                other += 1
                if len(samples) < 5:
                    samples.append(line[:300])
                continue
            if record.get("event") == "serve_process_stopped":
                requests_by_process[str(record.get("pid"))] = int(record.get("requests", 0))
            if record.get("path") == "/webhooks/stripe" and "pid" in record:
                webhooks_by_process[str(record["pid"])] += 1
            level = str(record.get("level", "?"))
            # Each request's one line (`http_request`, or the webhook's own) has its status.
            if "path" in record and int(record.get("status", 0)) >= 500:
                server_errors[f"{record.get('status')} {record.get('path', '')[:40]}"] += 1
            if level in ("warning", "error", "critical", "exception"):
                levels[level] += 1
                key = str(record.get("event"))
                if record.get("kind"):
                    key += f":{record['kind']}"
                events[key] += 1
                if len(samples) < 5 and level != "warning":
                    samples.append(line[:300])
    return {
        "by_level": dict(levels),
        "by_event": dict(events.most_common(10)),
        "http_5xx": dict(server_errors.most_common(10)),
        "non_json_lines": other,
        "samples": samples,
        "requests_by_process": requests_by_process,
        "webhooks_by_process": dict(webhooks_by_process),
    }


# ------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Plan:
    name: str
    skus: list[str]  # one per session
    stock: dict[str, int]
    concurrency: int | None  # None: open loop
    expected: dict[str, int]


def plans(scenarios: list[str], sessions: int, rate: float) -> list[Plan]:
    hot_stock = sessions * 5 // 6
    out: list[Plan] = []
    hot_expected = {"confirmed": hot_stock, "refund": sessions - hot_stock}
    if "hot" in scenarios:
        for c in (1, 8, 32):
            out.append(Plan(f"hot_c{c}", ["hot"] * sessions, {"hot": hot_stock}, c, hot_expected))
    if "spread" in scenarios:
        skus = [f"p{i:04d}" for i in range(sessions)]
        out.append(
            Plan(
                "spread_c32",
                skus,
                dict.fromkeys(skus, 1),
                32,
                {"confirmed": sessions, "refund": 0},
            )
        )
    if "open" in scenarios:
        out.append(
            Plan(
                f"open_{rate:g}",
                ["hot"] * sessions,
                {"hot": hot_stock},
                None,
                hot_expected,
            )
        )
    return out


@dataclass
class Run:
    args: argparse.Namespace
    procs: Processes
    scratch: Scratch
    rss: RssSampler
    secret: str = field(default_factory=lambda: f"whsec_bench_{secrets.token_hex(16)}")
    last_ledger_log: dict[str, Any] = field(default_factory=dict)
    last_baseline_log: dict[str, Any] = field(default_factory=dict)

    async def load(
        self,
        plan: Plan,
        targets: list[Proc],
        stand_in: Proc,
        deliveries: list[Delivery],
        status_path: Callable[[str], str],
    ) -> dict[str, Any]:
        delay = self.args.stripe_delay
        if delay:
            await asyncio.to_thread(set_stand_in_delay, stand_in, delay)
        try:
            cpu = CpuMeter(targets, stand_in)
            if plan.concurrency is None:
                result = await open_loop(
                    targets, deliveries, self.args.rate, self.secret, status_path
                )
            else:
                result = await closed_loop(targets, deliveries, plan.concurrency, self.secret)
            result["cpu_s"] = cpu.result()
        finally:
            if delay:  # the checks that follow read at full speed
                await asyncio.to_thread(set_stand_in_delay, stand_in, 0.0)
        result["stripe_delay_s"] = delay
        return result

    def rss_of(self, servers: list[Proc], kind: str) -> dict[str, float]:
        """The servers' memory in MB: the most sampled since the window began, and VmHWM."""
        hwm = [read_status_kb(p.pid, "VmHWM") or 0 for p in servers]
        return {
            "max_vmrss": round(self.rss.take_window(kind) / 1024, 1),
            "vmhwm": round(max(hwm) / 1024, 1),
        }

    async def ledger(self, plan: Plan, stand_in: Proc) -> dict[str, Any]:
        conninfo = self.scratch.create("ledger")
        servers: list[Proc] = []
        try:
            servers = start_servers(
                "ledger",
                self.procs,
                self.args.processes,
                as_uri(conninfo),
                stand_in,
                self.secret,
                self.args.workers,
            )
            self.rss.watch(servers, "ledger")
            self.rss.take_window("ledger")
            progress(f"{plan.name} ledger: set-up ({len(plan.skus)} sessions)")
            deliveries = await setup_ledger(servers[0], stand_in, plan.skus, plan.stock)
            progress(f"{plan.name} ledger: delivering")
            result = await self.load(
                plan, servers, stand_in, deliveries, lambda s: f"/api/checkout-sessions/{s}/order"
            )
            result["outcomes"] = await ledger_outcomes(servers[0], deliveries, set(plan.stock))
            result["outcomes"]["expected"] = plan.expected
            result["metrics"] = await asyncio.to_thread(ledger_metrics, servers)
            result["rss_mb"] = self.rss_of(servers, "ledger")
            return result
        finally:
            self.rss.unwatch(servers)
            self.procs.stop(servers)
            if servers:
                self.last_ledger_log = ledger_log_summary(servers)
            self.scratch.drop(conninfo)

    async def baseline(self, plan: Plan, stand_in: Proc) -> dict[str, Any]:
        conninfo = self.scratch.create("base")
        servers: list[Proc] = []
        try:
            progress(f"{plan.name} baseline: set-up ({len(plan.skus)} sessions)")
            deliveries = await setup_baseline(conninfo, stand_in, plan.skus, plan.stock)
            servers = start_servers(
                "baseline", self.procs, self.args.processes, conninfo, stand_in, self.secret
            )
            self.rss.watch(servers, "baseline")
            self.rss.take_window("baseline")
            progress(f"{plan.name} baseline: delivering")
            result = await self.load(plan, servers, stand_in, deliveries, lambda s: f"/orders/{s}")
            result["outcomes"] = baseline_outcomes(conninfo)
            result["outcomes"]["expected"] = plan.expected
            result["rss_mb"] = self.rss_of(servers, "baseline")
            return result
        finally:
            self.rss.unwatch(servers)
            self.procs.stop(servers)
            if servers:
                self.last_baseline_log = baseline_log_summary(servers)
            self.scratch.drop(conninfo)

    async def scenario(self, plan: Plan) -> dict[str, Any]:
        loadavg = [round(x, 2) for x in os.getloadavg()]
        stand_in = start_stand_in(self.procs, self.secret)
        try:
            ledger = await self.ledger(plan, stand_in)
            ledger["log"] = self.last_ledger_log
            baseline = await self.baseline(plan, stand_in)
            baseline["log"] = self.last_baseline_log
        finally:
            self.procs.stop([stand_in])
        keys = ["p50", "p90", "p99"]
        ratios: dict[str, float | None] = {
            "settled_per_s": ratio(ledger.get("settled_per_s"), baseline.get("settled_per_s")),
            **{
                f"webhook_{k}": ratio(ledger["webhook_ms"][k], baseline["webhook_ms"][k])
                for k in keys
            },
        }
        if plan.concurrency is None:
            ratios.pop("settled_per_s")
            for k in keys:
                ratios[f"status_lag_{k}"] = ratio(
                    ledger["status_lag_ms"][k], baseline["status_lag_ms"][k]
                )
        for name, r in (("ledger", ledger), ("baseline", baseline)):
            o = r["outcomes"]
            ok = (o["confirmed"], o["refund"]) == (
                o["expected"]["confirmed"],
                o["expected"]["refund"],
            )
            summary = (
                f"{r['settled_per_s']}/s" if "settled_per_s" in r else f"{r['rate_per_s']}/s open"
            )
            progress(
                f"{plan.name} {name}: {summary}, p50 {r['webhook_ms']['p50']} ms, "
                f"p99 {r['webhook_ms']['p99']} ms, non-200 {r['non_200']}, "
                f"confirmed {o['confirmed']} refund {o['refund']}" + ("" if ok else " (UNEXPECTED)")
            )
        return {
            "loadavg_at_start": loadavg,
            "ledger": ledger,
            "baseline": baseline,
            "ratio": ratios,
        }


def postgres_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


async def run_all(run: Run, selected: list[Plan], repeat: int) -> dict[str, Any]:
    """Each scenario `repeat` times (ledger and baseline alternate, so a noisy neighbour hits
    both alike): the last run in full, every run's ratios and figures, and the median ratios."""
    results: dict[str, Any] = {}
    for plan in selected:
        runs = [await run.scenario(plan) for _ in range(repeat)]
        results[plan.name] = runs[-1]
        if repeat > 1:
            results[plan.name]["repeats"] = [
                {
                    "ratio": r["ratio"],
                    **{
                        f"{side}_{key}": r[side].get(key)
                        for side in ("ledger", "baseline")
                        for key in ("settled_per_s", "non_200")
                    },
                    **{
                        f"{side}_webhook_p99": r[side]["webhook_ms"]["p99"]
                        for side in ("ledger", "baseline")
                    },
                }
                for r in runs
            ]
            results[plan.name]["ratio_median"] = {
                key: median(v for r in runs if (v := r["ratio"].get(key)) is not None)
                for key in runs[-1]["ratio"]
            }
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--scenarios", default="hot,spread,open")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--workers", type=int, default=1, help="each ledger server: `ledger serve --workers N`"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="open loop: deliveries per s")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario")
    parser.add_argument(
        "--stripe-delay",
        type=float,
        default=0.0,
        help="seconds every Stripe call waits during the timed phase (set-up runs without)",
    )
    parser.add_argument("--serve-stand-in", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - {"hot", "spread", "open"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.sessions < 6 or min(args.processes, args.repeat, args.workers) < 1:
        parser.error("--sessions must be at least 6, --processes, --workers, --repeat at least 1")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def cleanup(run: Run) -> Iterator[None]:
    try:
        yield
    finally:
        run.procs.stop_all()
        run.rss.stop()
        run.scratch.drop_all()


def main() -> None:
    args = parse_args()
    if args.serve_stand_in:
        serve_stand_in(args.serve_stand_in, os.environ["BENCH_WEBHOOK_SECRET"])
        return
    signal.signal(signal.SIGTERM, _terminate)
    selected = plans(args.scenarios.split(","), args.sessions, args.rate)
    machine = {
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "postgres": postgres_version(args.url),
        "python": sys.version.split()[0],
    }
    source = source_version()
    with tempfile.TemporaryDirectory(prefix="bench_hot_") as tmp:
        run = Run(args, Processes(Path(tmp)), Scratch(args.url), RssSampler())
        run.rss.start()
        with cleanup(run):
            try:
                import uvloop  # uvicorn[standard] brings it: a cheaper loop for the generator
            except ImportError:
                results = asyncio.run(run_all(run, selected, args.repeat))
            else:
                results = uvloop.run(run_all(run, selected, args.repeat))
        rss = {k: round(v / 1024, 1) for k, v in run.rss.max_kb.items()}
    print(
        json.dumps(
            {
                "bench": "hot_product",
                "machine": machine,
                "source": source,
                "config": {
                    "sessions": args.sessions,
                    "processes": args.processes,
                    "workers": args.workers,
                    "rate_per_s": args.rate,
                    "repeat": args.repeat,
                    "stripe_delay_s": args.stripe_delay,
                    "scenarios": [p.name for p in selected],
                },
                "scenarios": results,
                "rss_peak_mb": {
                    "ledger": rss.get("ledger"),
                    "baseline": rss.get("baseline"),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
