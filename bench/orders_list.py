"""The merchant's order list, `GET /api/orders` (and one order, `GET /api/orders/{id}`), with
100,000 orders in the store: latency per kind of query against the server's floor, measured in
the same run (issue 17's goal: p99 under 50 ms).

Set-up, not timed, on a scratch database of the PostgreSQL named by `--url` (dropped at the
end):
1. seeding: `common.seed_orders` places `--orders` (100,000) orders through the application
   service (real domain events, no HTTP, no Stripe: carts saved 500 to a commit, orders decided
   with `place_orders` `--order-chunk` (200) to a commit), carts of `--users` (100) users and
   of guests (one in 10, at random), with a mix of outcomes: 85% confirmed (5% of all with a
   manual capture), 5% each refund_pending, refunded (with its refund) and released;
2. catch-up: the read models the measured requests read, `orders` and `products`, run in
   this process (`workers.Workers`, as bench/audit.py does for all of them) until each reaches
   the log's head, then stop (the others are not read here: catching them up too would double
   the set-up's time);
3. `ledger serve --no-workers` as a subprocess (env LEDGER_DATABASE_URL, LEDGER_ADMIN_TOKEN,
   no .env; Stripe: its built-in stand-in, never called). Without its workers: the read models
   are caught up and nothing writes, while the side-effect workers would start on 100,000
   orders' e-mails, captures, refunds and releases during the measurement. A query's
   consistent-read wait (`wait_for_head`) still runs: one query, as with workers caught up;
4. `--warmup` (20) untimed requests of each scenario.

Timed: each scenario `--requests` (300) times one after another (`sequential`: one
connection, the next request sent when the last answer is read), then `--concurrent-requests`
(400) times by `--concurrency` (8) clients at once (`concurrent`), through a minimal HTTP/1.1
keep-alive client (hot_product.Http: httpx would take a few ms of CPU a request from the server
on a small machine). Scenarios, `Authorization: Bearer` the admin token:
- `healthz`: `GET /healthz`, the baseline: the server's floor (routing, middleware, one JSON
  answer; no store);
- `product`: `GET /api/products/bench`, a catalog read: the floor of a read-model query
  (consistent-read wait, one pooled connection, one row);
- `first_page`: `GET /api/orders` (50 orders); `first_page_200`: `?limit=200`;
- `status`: `?status=` each of refunded, released, refund_pending, confirmed in turn;
- `user`: `?user_id=` a different user each time; `status_user`: both (a user's refunded
  orders: a rare combination, about 45 of a user's 900 at the defaults);
- `after`: `?after=` the position of a random order (a page anywhere in the list, default
  limit), and `walk` (sequential only): from the first page, `?limit=200&after=` each answer's
  `next_after`, in turn, until the list ends or the requests are spent (500 pages list 100,000
  orders; a walk to the end must have listed every order exactly once);
- `one_order`: `GET /api/orders/{id}` of a random order.
Every answer must be 200; sequential answers are checked (count, filters, newest first, the
orders' shape); each must list what it should.

    .venv/bin/python bench/orders_list.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--orders 100000] [--users 100] [--requests 300] [--concurrent-requests 400]
        [--concurrency 8] [--warmup 20] [--order-chunk 200] [--keep | --database NAME]

A run at the defaults takes about 4 minutes on 2 cores, 3 of them seeding; `--orders 10000`
about 30 s. `--keep` keeps the seeded database (its name on stderr; drop it yourself), and
`--database NAME` measures such a database as it is, neither seeded nor dropped: a change to
the read path measured again in 30 s.

Progress on stderr; one JSON document on stdout:
- `scenarios.<name>.sequential` / `.concurrent`: `requests`, `latency_ms` (p50, p90, p95,
  p99, max, mean, as the client saw it), `requests_per_s` (answers / wall time), `answers`
  (count per HTTP status), `orders_per_answer` (mean orders in an answer, sequential);
  `server_cpu_ms_per_request` (the server process's CPU time over the requests: the figure to
  compare runs by on a shared machine, where latency also measures the neighbours' load);
  `vs_healthz`: the scenario's p50 and p99 over `healthz`'s, same mode (the server's floor);
  `vs_product`: the same over `product`'s (a one-row read-model query);
- `walk`: pages read, orders listed, whether it reached the end, and whether every order was
  listed once (`complete`: when it reached the end);
- `goal`: `p99_ms` (50) and, per orders scenario and mode, whether its p99 is under it
  (`met`: all of them);
- `seeding` (orders, events, statuses, users, rates), `catch_up` (seconds, events/s, when
  each read model reached the head), `store` (the orders listed, by status, and the users),
  `log` (the server's warnings and errors, 5xx by path: none expected),
  `machine` (cores, load average at start, PostgreSQL), `source` (the commit the ledger ran from
  and the files under src/ that differed), `config`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import hot_product as hp  # noqa: E402  (processes and the minimal HTTP client, shared)
from common import (  # noqa: E402
    SEED_SKU,
    create_database,
    log_head,
    percentiles,
    progress,
    run_until_caught_up,
    scratch_database,
    seed_orders,
    source_version,
)

from ledger.storage import Database  # noqa: E402
from projections import default_projections  # noqa: E402
from projections.base import LIVE_SCHEMA  # noqa: E402
from web.logs import configure_logging  # noqa: E402
from web.routes.orders import encode_after  # noqa: E402

GOAL_P99_MS = 50.0
# The read models the measured requests read: the only ones caught up before serving.
READ_MODELS = ("orders", "products")
CATCH_UP_TIMEOUT_S = 1800.0
REQUEST_TIMEOUT_S = 30.0
WALK_LIMIT = 200
RARE_STATUS = "refunded"
STATUSES = ("refunded", "released", "refund_pending", "confirmed")
BASELINES = ("healthz", "product")
# Scenarios timed both one at a time and concurrently (`walk`: one at a time only).
SCENARIOS = (
    *BASELINES,
    "first_page",
    "first_page_200",
    "status",
    "user",
    "status_user",
    "after",
    "one_order",
)
AUTH = {"Authorization": f"Bearer {hp.ADMIN_TOKEN}", "Accept": "application/json"}


def catch_up(database: Database, events: int) -> dict[str, Any]:
    """Runs the read models of `READ_MODELS` until each has applied the log up to its head
    (as bench/audit.py's `catch_up`, for these alone); `events`: how many (for the rate)."""
    projections = [p for p in default_projections() if p.name in READ_MODELS]
    target, reached, seconds = run_until_caught_up(database, projections, CATCH_UP_TIMEOUT_S)
    return {
        "read_models": list(READ_MODELS),
        "events": events,
        "head": target,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "per_read_model_s": {name: round(reached[name], 3) for name in READ_MODELS},
    }


@dataclass
class Sample:
    """What the requests are made of: read from the store once it is caught up (untimed)."""

    orders: int
    order_ids: list[str]
    positions: list[int]  # the list positions of `order_ids`, in the same order
    users: list[str]
    statuses: dict[str, int]


def sample_store(database: Database, size: int) -> Sample:
    orders = f'"{LIVE_SCHEMA}".orders'
    with database.connect() as conn:
        row = conn.execute(f"SELECT count(*) FROM {orders}").fetchone()
        count = int(row[0]) if row else 0
        picked = conn.execute(
            f"SELECT order_id, position FROM {orders} ORDER BY random() LIMIT %s", (size,)
        ).fetchall()
        users = [
            str(r[0])
            for r in conn.execute(
                f"SELECT DISTINCT user_id FROM {orders} WHERE user_id IS NOT NULL ORDER BY 1"
            ).fetchall()
        ]
        statuses = dict(
            conn.execute(f"SELECT status, count(*) FROM {orders} GROUP BY status").fetchall()
        )
    return Sample(
        orders=count,
        order_ids=[str(r[0]) for r in picked],
        positions=[int(r[1]) for r in picked],
        users=users,
        statuses={str(k): int(v) for k, v in sorted(statuses.items())},
    )


@dataclass
class Scenario:
    """A kind of request: `path(i)` is the i-th request's path; `check(i, answer)` says what
    is wrong with the i-th answer's body (None: nothing)."""

    name: str
    path: Callable[[int], str]
    check: Callable[[int, dict[str, Any]], str | None]


_ORDER_KEYS = {
    "order_id",
    "checkout_session_id",
    "user_id",
    "status",
    "created_at",
    "currency",
    "amount_total",
    "amount_captured",
    "amount_refunded",
    "items",
    "refunds",
}


def check_page(
    body: dict[str, Any],
    *,
    limit: int,
    full: bool = True,
    status: str | None = None,
    user_id: str | None = None,
) -> str | None:
    """What is wrong with a page: `full`: it must hold `limit` orders and a `next_after`."""
    orders = body.get("orders")
    if not isinstance(orders, list) or set(body) != {"orders", "next_after"}:
        return f"not a page: {sorted(body)}"
    if len(orders) > limit or (full and (len(orders) != limit or body["next_after"] is None)):
        return f"{len(orders)} orders (limit {limit}), next_after {body['next_after']}"
    for order in orders:
        if set(order) != _ORDER_KEYS:
            return f"an order's fields: {sorted(order)}"
        if status is not None and order["status"] != status:
            return f"status {order['status']} listed for {status}"
        if user_id is not None and order["user_id"] != user_id:
            return f"user {order['user_id']} listed for {user_id}"
        if order["status"] == "refunded" and not order["refunds"]:
            return f"refunded order {order['order_id']} without its refund"
    created = [o["created_at"] for o in orders]
    if created != sorted(created, reverse=True):
        return "not newest first"
    return None


def scenarios(sample: Sample) -> list[Scenario]:
    ids, users = sample.order_ids, sample.users

    def status_of(i: int) -> str:
        return STATUSES[i % len(STATUSES)]

    def user_of(i: int) -> str:
        return users[i % len(users)]

    def single(i: int, body: dict[str, Any]) -> str | None:
        if body.get("order_id") != ids[i % len(ids)]:
            return f"asked for {ids[i % len(ids)]}, got {body.get('order_id')}"
        return None if set(body) == _ORDER_KEYS else f"an order's fields: {sorted(body)}"

    return [
        Scenario("healthz", lambda i: "/healthz", lambda i, b: None),
        Scenario(
            "product",
            lambda i: f"/api/products/{SEED_SKU}",
            lambda i, b: None if b.get("sku") == SEED_SKU else f"product {b}",
        ),
        Scenario("first_page", lambda i: "/api/orders", lambda i, b: check_page(b, limit=50)),
        Scenario(
            "first_page_200",
            lambda i: "/api/orders?limit=200",
            lambda i, b: check_page(b, limit=200),
        ),
        Scenario(
            "status",
            lambda i: f"/api/orders?status={status_of(i)}",
            lambda i, b: check_page(b, limit=50, status=status_of(i)),
        ),
        Scenario(
            "user",
            lambda i: f"/api/orders?user_id={user_of(i)}",
            lambda i, b: check_page(b, limit=50, user_id=user_of(i)),
        ),
        Scenario(
            "status_user",
            lambda i: f"/api/orders?status={RARE_STATUS}&user_id={user_of(i)}",
            lambda i, b: check_page(
                b, limit=50, full=False, status=RARE_STATUS, user_id=user_of(i)
            ),
        ),
        Scenario(
            "after",
            # The page after a random order: full unless that order is among the oldest 50.
            lambda i: f"/api/orders?after={encode_after(sample.positions[i % len(ids)])}",
            lambda i, b: check_page(b, limit=50, full=False),
        ),
        Scenario("one_order", lambda i: f"/api/orders/{ids[i % len(ids)]}", single),
    ]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    orders: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self, wall: float, checked: bool) -> dict[str, Any]:
        result: dict[str, Any] = {
            "requests": len(self.latencies),
            "latency_ms": percentiles(self.latencies),
            "requests_per_s": round(len(self.latencies) / wall, 1) if wall else None,
            "answers": dict(sorted(self.answers.items())),
        }
        if checked:
            result["orders_per_answer"] = round(self.orders / max(1, len(self.latencies)), 1)
            result["problems"] = {"count": len(self.problems), "first": self.problems[:3]}
        return result


async def get(http: hp.Http, path: str) -> tuple[int | str, bytes, float]:
    started = time.perf_counter()
    try:
        status, body = await http.request("GET", path, b"", AUTH)
        answer: int | str = status
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        answer, body = type(exc).__name__, b""
    return answer, body, time.perf_counter() - started


def record(
    tally: Tally, scenario: Scenario, i: int, answer: tuple[int | str, bytes, float]
) -> None:
    status, body, seconds = answer
    tally.latencies.append(seconds)
    tally.answers[str(status)] += 1
    if status != 200:
        tally.problems.append(f"{scenario.path(i)}: {status} {body[:200]!r}")
        return
    parsed = json.loads(body)
    tally.orders += len(parsed["orders"]) if "orders" in parsed else 0
    problem = scenario.check(i, parsed)
    if problem is not None:
        tally.problems.append(f"{scenario.path(i)}: {problem}")


async def sequential(url: str, scenario: Scenario, requests: int, offset: int) -> dict[str, Any]:
    """`requests` of the scenario one after another on one connection; each checked."""
    http = hp.Http(url, timeout=REQUEST_TIMEOUT_S)
    tally = Tally()
    answers: list[tuple[int, tuple[int | str, bytes, float]]] = []
    started = time.perf_counter()
    try:
        for i in range(offset, offset + requests):
            answers.append((i, await get(http, scenario.path(i))))
    finally:
        await http.close()
    wall = time.perf_counter() - started
    for i, answer in answers:  # checked once timing is over: no parsing between requests
        record(tally, scenario, i, answer)
    return tally.summary(wall, checked=True)


async def concurrent(
    url: str, scenario: Scenario, requests: int, concurrency: int, offset: int
) -> dict[str, Any]:
    """`requests` of the scenario by `concurrency` clients at once, each on its connection;
    answers counted by status, not parsed (the parsing would take the server's CPU)."""
    tally = Tally()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(offset, offset + requests):
        queue.put_nowait(i)
    clients = [hp.Http(url, timeout=REQUEST_TIMEOUT_S) for _ in range(concurrency)]

    async def client(http: hp.Http) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            status, body, seconds = await get(http, scenario.path(i))
            tally.latencies.append(seconds)
            tally.answers[str(status)] += 1
            if status != 200:
                tally.problems.append(f"{scenario.path(i)}: {status} {body[:200]!r}")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(http) for http in clients))
    finally:
        for http in clients:
            await http.close()
    result = tally.summary(time.perf_counter() - started, checked=False)
    result["problems"] = {"count": len(tally.problems), "first": tally.problems[:3]}
    return result


async def walk(url: str, pages: int, orders: int) -> dict[str, Any]:
    """From the first page, each answer's `next_after` in turn (limit 200), one at a time,
    until the list ends or `pages` are read; the orders listed must be distinct, newest first,
    and (at the end) all of them."""
    http = hp.Http(url, timeout=REQUEST_TIMEOUT_S)
    tally = Tally()
    seen: set[str] = set()
    duplicates = 0
    after: str | None = None
    reached_end = False
    started = time.perf_counter()
    try:
        for _ in range(pages):
            path = f"/api/orders?limit={WALK_LIMIT}" + (f"&after={after}" if after else "")
            status, body, seconds = await get(http, path)
            tally.latencies.append(seconds)
            tally.answers[str(status)] += 1
            if status != 200:
                tally.problems.append(f"{path}: {status} {body[:200]!r}")
                break
            page = json.loads(body)  # needed for the next request: parsed in the loop
            problem = check_page(page, limit=WALK_LIMIT, full=page["next_after"] is not None)
            if problem is not None:
                tally.problems.append(f"{path}: {problem}")
            for order in page["orders"]:
                duplicates += order["order_id"] in seen
                seen.add(order["order_id"])
            tally.orders += len(page["orders"])
            after = page["next_after"]
            if after is None:
                reached_end = True
                break
    finally:
        await http.close()
    result = tally.summary(time.perf_counter() - started, checked=True)
    result.update(
        pages=len(tally.latencies),
        orders_listed=tally.orders,
        duplicates=duplicates,
        reached_end=reached_end,
        complete=reached_end and duplicates == 0 and len(seen) == orders,
    )
    return result


def ratios(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    return {
        key: hp.ratio(result["latency_ms"][key], baseline["latency_ms"][key])
        for key in ("p50", "p99")
    }


async def metered(server: hp.Proc, timed: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """`timed`'s result with `server_cpu_ms_per_request`: the server process's CPU time (user
    and system) over the requests answered. Unlike latency, not stretched by other processes
    on a shared machine: the figure to compare runs by."""
    before = hp.cpu_seconds(server.pid)
    result = await timed
    cpu = hp.cpu_seconds(server.pid) - before
    result["server_cpu_ms_per_request"] = round(cpu * 1000 / max(1, result["requests"]), 3)
    return result


async def measure(server: hp.Proc, sample: Sample, args: argparse.Namespace) -> dict[str, Any]:
    url = server.url
    results: dict[str, Any] = {}
    for scenario in scenarios(sample):
        warm = hp.Http(url, timeout=REQUEST_TIMEOUT_S)
        try:
            for i in range(args.warmup):
                await get(warm, scenario.path(10_000_000 + i))
        finally:
            await warm.close()
        progress(f"{scenario.name}: {args.requests} one at a time")
        one = await metered(server, sequential(url, scenario, args.requests, 0))
        progress(
            f"{scenario.name}: {args.concurrent_requests} by {args.concurrency} clients at once"
        )
        many = await metered(
            server,
            concurrent(url, scenario, args.concurrent_requests, args.concurrency, args.requests),
        )
        results[scenario.name] = {"sequential": one, "concurrent": many}
        progress(
            f"  p50/p99 ms: one at a time {one['latency_ms']['p50']}/{one['latency_ms']['p99']},"
            f" {args.concurrency} at once {many['latency_ms']['p50']}/{many['latency_ms']['p99']};"
            f" server CPU ms a request {one['server_cpu_ms_per_request']}"
        )
    progress(f"walk: next_after from the first page, up to {args.requests * 2} pages")
    results["walk"] = {
        "sequential": await metered(server, walk(url, args.requests * 2, sample.orders))
    }
    for name, modes in results.items():
        if name == "healthz":
            continue
        for mode, result in modes.items():
            result["vs_healthz"] = ratios(result, results["healthz"][mode])
            if name != "product":
                result["vs_product"] = ratios(result, results["product"][mode])
    return results


def goal(results: dict[str, Any]) -> dict[str, Any]:
    meets = {
        name: {
            mode: (r["latency_ms"]["p99"] or 0) < GOAL_P99_MS and r["problems"]["count"] == 0
            for mode, r in modes.items()
        }
        for name, modes in results.items()
        if name not in BASELINES
    }
    return {
        "p99_ms": GOAL_P99_MS,
        "meets": meets,
        "met": all(all(m.values()) for m in meets.values()),
    }


def start_ledger(procs: hp.Processes, database_url: str) -> hp.Proc:
    port = hp.free_port()
    env = hp.clean_env(
        LEDGER_DATABASE_URL=database_url,
        LEDGER_ADMIN_TOKEN=hp.ADMIN_TOKEN,
        LEDGER_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    argv = [sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--no-workers"]
    proc = procs.start("ledger", argv, env, port)
    hp.wait_ready(proc, "/readyz", lambda s: s == 200)
    return proc


def run(args: argparse.Namespace, database: Database, log_dir: Path) -> dict[str, Any]:
    seeding: dict[str, Any] | None = None
    if args.database is None:
        progress(f"seeding {args.orders:,} orders of {args.users} users")
        seeding = seed_orders(database, args.orders, args.users, args.order_chunk)
        seeding["order_chunk"] = args.order_chunk
        progress(f"  {json.dumps(seeding)}")
    events = seeding["events"] if seeding else log_head(database)
    progress(f"read models catching up with (at most) {events:,} events")
    caught_up = catch_up(database, events)
    progress(f"  {caught_up['seconds']} s, {caught_up['events_per_s']} events/s")
    sample = sample_store(database, max(args.requests, args.concurrent_requests))
    if seeding is not None and sample.orders != args.orders:
        raise RuntimeError(f"the read model lists {sample.orders} orders of {args.orders}")
    procs = hp.Processes(log_dir)
    try:
        ledger = start_ledger(procs, database.conninfo_url())
        try:
            import uvloop  # uvicorn[standard] brings it: a cheaper loop for the generator
        except ImportError:
            results = asyncio.run(measure(ledger, sample, args))
        else:
            results = uvloop.run(measure(ledger, sample, args))
        log = hp.ledger_log_summary([ledger])
    finally:
        procs.stop_all()
    return {
        "scenarios": results,
        "goal": goal(results),
        "seeding": seeding,
        "catch_up": caught_up,
        "store": {"orders": sample.orders, "statuses": sample.statuses, "users": len(sample.users)},
        "log": log,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300, help="per scenario, one at a time")
    parser.add_argument("--concurrent-requests", type=int, default=400, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per scenario")
    parser.add_argument("--order-chunk", type=int, default=200, help="orders to a commit")
    parser.add_argument(
        "--database",
        help="measure this database of --url's server as it is (seeded by a run with --keep),"
        " neither seeded nor dropped: to measure a change without seeding again",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the seeded database (for --database); drop it"
        " yourself: DROP DATABASE <name> WITH (FORCE)",
    )
    args = parser.parse_args(argv)
    if args.keep and args.database is not None:
        parser.error("--keep seeds a new database; --database measures one as it is")
    if min(args.users, args.requests, args.concurrent_requests, args.concurrency) < 1:
        parser.error("--users, --requests, --concurrent-requests, --concurrency: at least 1")
    if args.orders < 1000 or args.order_chunk < 1 or args.warmup < 0:
        parser.error("--orders at least 1000, --order-chunk at least 1, --warmup not negative")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    configure_logging("WARNING")  # stdout carries the JSON result alone
    machine = {
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "postgres": hp.postgres_version(args.url),
        "python": sys.version.split()[0],
    }
    source = source_version()
    admin = Database.from_url(args.url)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_orders_"))
        if args.keep:
            database = create_database(admin, "bench_orders_")
            progress(f"seeding {database.params['dbname']}, kept: --database to measure it again")
        elif args.database is None:
            database = stack.enter_context(scratch_database(admin, "bench_orders_"))
        else:
            database = replace(admin, params={**admin.params, "dbname": args.database})
        result = run(args, database, Path(tmp))
    print(
        json.dumps(
            {
                "bench": "orders_list",
                "machine": machine,
                "source": source,
                "config": {
                    # With --database, what was measured is `store`, not --orders and --users.
                    k: None if args.database and k in ("orders", "users") else getattr(args, k)
                    for k in (
                        "orders",
                        "users",
                        "requests",
                        "concurrent_requests",
                        "concurrency",
                        "warmup",
                        "order_chunk",
                        "keep",
                        "database",
                    )
                },
                **result,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
