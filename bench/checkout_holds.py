"""Checkout on one hot product with stock holds (`LEDGER_STOCK_HOLD=15m`) against the same
ledger without holds, in the same run: what holding the stock at checkout costs.

Both modes run the ledger as deployed: `ledger serve` subprocess(es) (workers included, so the
holds' timer runs too) on a fresh scratch database of the PostgreSQL named by `--url`, calling
the Stripe stand-in in a process of its own (`hot_product.py --serve-stand-in`) through the
stripe SDK, as they would call Stripe. The only difference between the modes is
`LEDGER_STOCK_HOLD` (`--hold`, default `15m`; unset for the baseline). Every measurement gets
fresh servers and a fresh database (dropped afterwards); the stand-in is shared by the two
modes of a scenario.

Set-up, not timed: the product `hot` and its stock; one cart per checkout with 1 unit of it
(`POST /api/carts`, `PUT .../items/hot`), made by the same clients; then `--warmup` checkouts
of another product, so that both modes start measuring a server that has served checkouts.
Timed: `--concurrency` (32) client tasks, each taking the next cart and `POST
/api/carts/{id}/checkout` (which, with holds, checks and holds the stock in one commit, then
creates the Stripe session with `expires_at`), until every cart has been answered once; no
retries, so every 5xx is counted.

Scenarios (`--scenarios`, default both), each N = `--checkouts` (300) carts:
- `plenty`: stock 2N, so nothing is refused: every checkout must answer 201.
- `runs_out`: stock N*5/6 (250 of 300). With holds, exactly that many answer 201 and the rest
  409 `out_of_stock`; without holds the ledger checks stock but takes none before payment,
  so all N answer 201 (the surplus would be refunded after payment: see hot_product.py).

    .venv/bin/python bench/checkout_holds.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--checkouts 300] [--concurrency 32] [--processes 1] [--hold 15m]
        [--scenarios plenty,runs_out] [--repeat 1] [--warmup 16]

Progress on stderr; one JSON document on stdout:
- `machine`, `source` (the commit the ledger ran from and the files under src/ that differed);
- `scenarios.<name>.holds` / `.no_holds`:
  - `checkouts_per_s`: checkouts answered (201 or 409) / wall time of the timed phase;
    `created_per_s`: 201s / wall time; `wall_s`;
  - `answers`: count per status (and error code), `created` (201), `out_of_stock` (409),
    `server_errors` (5xx), `failed` (no answer: connection errors, timeouts);
  - `latency_ms`: every checkout's latency as the client saw it (p50, p90, p95, p99, max, mean),
    `latency_ms_201` the 201s' alone;
  - `held_until_set`: 201s whose `held_until` is not null (all with holds, none without);
  - `available_after`: `GET /api/products/hot`'s `available` afterwards; `expected` what the
    answers and `available_after` must be, and `as_expected`;
  - `cpu_s`: CPU seconds in the timed phase of the servers, the stand-in, this load generator
    and every `postgres` process of the machine; `log`: the serve log's warnings, errors and
    5xx by path.
- `scenarios.<name>.ratio`: holds / no holds for `checkouts_per_s` (below 1: holds are
  slower) and the latency percentiles (above 1: holds are slower).
- `scenarios.<name>.goal` (`plenty` only, the issue's): `checkouts_per_s` with holds at least
  0.8 times without, no 5xx, and every measurement `as_expected` (else holds were not held).
- with `--repeat N` (N > 1): `scenarios.<name>.repeats` (each run's ratios, rates, p99 and 5xx)
  and `ratio_median`, the figure to quote (the machine may be shared; the modes alternate
  which goes first); the rest is the last run.
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
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import hot_product as hp  # noqa: E402  (its processes, stand-in and HTTP client, shared)
from common import (  # noqa: E402
    create_database,
    drop_database,
    percentiles,
    progress,
    source_version,
)

HOT = "hot"
WARM = "warm"
MODES = ("holds", "no_holds")
SETUP_CONCURRENCY = 8
REQUEST_TIMEOUT_S = 30.0
GOAL_RATIO = 0.8  # checkouts/s with holds at least this times without (issue 16)


@dataclass
class Scenario:
    name: str
    checkouts: int
    stock: int

    def expected(self, holds: bool) -> dict[str, int]:
        created = min(self.checkouts, self.stock) if holds else self.checkouts
        return {
            "created": created,
            "out_of_stock": self.checkouts - created,
            "server_errors": 0,
            "available_after": self.stock - created if holds else self.stock,
        }


def scenarios(names: list[str], checkouts: int) -> list[Scenario]:
    out = []
    if "plenty" in names:
        out.append(Scenario("plenty", checkouts, checkouts * 2))
    if "runs_out" in names:
        out.append(Scenario("runs_out", checkouts, checkouts * 5 // 6))
    return out


# ------------------------------------------------------------------------------------------
# Servers and databases


class Scratch:
    """Scratch databases on `--url`'s server, every one dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        from ledger.storage import Database

        self.admin = Database.from_url(admin_url)
        self.names: list[str] = []

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database for the block, as a postgresql:// URI."""
        database = create_database(self.admin, "bench_holds_")
        name = database.params["dbname"]
        self.names.append(name)
        try:
            yield database.conninfo_url()
        finally:
            drop_database(self.admin, name)
            self.names.remove(name)

    def drop_all(self) -> None:
        for name in list(self.names):
            drop_database(self.admin, name)
            self.names.remove(name)


def start_ledgers(
    procs: hp.Processes, count: int, database_url: str, stand_in: hp.Proc, hold: str | None
) -> list[hp.Proc]:
    """`count` `ledger serve` processes on `database_url`, calling the stand-in; all ready."""
    started = []
    for _ in range(count):
        port = hp.free_port()
        env = hp.clean_env(
            STRIPE_API_KEY=hp.STRIPE_KEY,
            STRIPE_WEBHOOK_SECRET=f"whsec_bench_{secrets.token_hex(16)}",
            STRIPE_API_BASE=stand_in.url,
            LEDGER_DATABASE_URL=database_url,
            LEDGER_ADMIN_TOKEN=hp.ADMIN_TOKEN,
            LEDGER_PUBLIC_URL=f"http://127.0.0.1:{port}",
        )
        if hold is not None:
            env["LEDGER_STOCK_HOLD"] = hold
        argv = [sys.executable, "-m", "web.cli", "serve", "--port", str(port)]
        started.append(procs.start("ledger-holds" if hold else "ledger", argv, env, port))
        hp.wait_ready(started[-1], "/readyz", lambda s: s == 200)  # the first makes the tables
    return started


# ------------------------------------------------------------------------------------------
# Set-up and load


async def set_up(ledger: hp.Proc, scenario: Scenario, warmup: int) -> tuple[list[str], list[str]]:
    """The products and stock; the carts to check out (1 unit of `hot` each) and the warm-up's."""
    admin = {"Authorization": f"Bearer {hp.ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=ledger.url, timeout=30, trust_env=False) as client:
        for sku, stock in ((HOT, scenario.stock), (WARM, max(warmup, 1))):
            body = {"name": f"Product {sku}", "unit_amount": hp.UNIT_AMOUNT, "currency": "usd"}
            hp.expect(await client.put(f"/api/products/{sku}", json=body, headers=admin), 200, 201)
            stocked = await client.post(
                f"/api/products/{sku}/stock",
                json={"quantity": stock, "reason": "bench"},
                headers=admin,
            )
            hp.expect(stocked, 200)

        async def cart(sku: str) -> str:
            cart_id: str = hp.expect(await client.post("/api/carts", json={}), 201)["cart_id"]
            line = await client.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": 1})
            hp.expect(line, 200)
            return cart_id

        carts = await hp.bounded([HOT] * scenario.checkouts, cart, SETUP_CONCURRENCY)
        warm = await hp.bounded([WARM] * warmup, cart, SETUP_CONCURRENCY)
    return carts, warm


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    latencies_201: list[float] = field(default_factory=list)
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    held_until_set: int = 0

    def record(self, status: int | str, body: bytes, seconds: float) -> None:
        self.latencies.append(seconds)
        if status == 201:
            self.latencies_201.append(seconds)
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(body).get("held_until") is not None:
                    self.held_until_set += 1
            self.answers["201"] += 1
            return
        code = None
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            code = json.loads(body)["error"]["code"]
        self.answers[f"{status} {code}" if code else str(status)] += 1

    def count(self, prefix: str) -> int:
        return sum(n for key, n in self.answers.items() if key.startswith(prefix))


async def checkout_all(
    targets: list[hp.Proc], carts: list[str], concurrency: int
) -> tuple[Tally, float]:
    """`concurrency` clients, each checking out the next cart until none is left; wall time."""
    tally = Tally()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(carts)):
        queue.put_nowait(i)
    clients = [hp.Http(t.url, timeout=REQUEST_TIMEOUT_S) for t in targets]
    headers = {"Accept": "application/json"}

    async def client() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            http = clients[i % len(clients)]
            started = time.perf_counter()
            try:
                status, body = await http.request(
                    "POST", f"/api/carts/{carts[i]}/checkout", b"", headers
                )
                answer: int | str = status
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                answer, body = type(exc).__name__, b""
            tally.record(answer, body, time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        for http in clients:
            await http.close()
    return tally, time.perf_counter() - started


async def available(ledger: hp.Proc, sku: str) -> int | None:
    async with httpx.AsyncClient(base_url=ledger.url, timeout=30, trust_env=False) as client:
        r = await client.get(f"/api/products/{sku}")
    return int(r.json()["available"]) if r.status_code == 200 else None


# ------------------------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    args: argparse.Namespace
    procs: hp.Processes
    scratch: Scratch

    async def measure(self, scenario: Scenario, stand_in: hp.Proc, holds: bool) -> dict[str, Any]:
        mode = "holds" if holds else "no_holds"
        hold = self.args.hold if holds else None
        with self.scratch.database() as url:
            servers: list[hp.Proc] = []
            try:
                servers = start_ledgers(self.procs, self.args.processes, url, stand_in, hold)
                progress(f"{scenario.name} {mode}: set-up ({scenario.checkouts} carts)")
                carts, warm = await set_up(servers[0], scenario, self.args.warmup)
                if warm:
                    await checkout_all(servers, warm, min(SETUP_CONCURRENCY, len(warm)))
                progress(f"{scenario.name} {mode}: checking out")
                cpu = hp.CpuMeter(servers, stand_in)
                tally, wall = await checkout_all(servers, carts, self.args.concurrency)
                cpu_s = cpu.result()
                left = await available(servers[0], HOT)
            finally:
                self.procs.stop(servers)
            log = hp.ledger_log_summary(servers) if servers else {}
        answered = tally.count("201") + tally.count("409")
        result: dict[str, Any] = {
            "hold": hold,
            "checkouts": scenario.checkouts,
            "stock": scenario.stock,
            "concurrency": self.args.concurrency,
            "processes": len(servers),
            "wall_s": round(wall, 3),
            "checkouts_per_s": round(answered / wall, 2),
            "created_per_s": round(tally.count("201") / wall, 2),
            "answers": dict(sorted(tally.answers.items())),
            "created": tally.count("201"),
            "out_of_stock": tally.answers["409 out_of_stock"],
            "server_errors": tally.count("5"),
            "failed": sum(n for key, n in tally.answers.items() if not key[:1].isdigit()),
            "latency_ms": percentiles(tally.latencies),
            "latency_ms_201": percentiles(tally.latencies_201),
            "held_until_set": tally.held_until_set,
            "available_after": left,
            "expected": scenario.expected(holds),
            "cpu_s": cpu_s,
            "log": log,
        }
        seen = {key: result[key] for key in result["expected"]}
        result["as_expected"] = seen == result["expected"] and tally.held_until_set == (
            result["created"] if holds else 0
        )
        lat = result["latency_ms"]
        progress(
            f"{scenario.name} {mode}: {result['checkouts_per_s']}/s, p50 {lat['p50']} ms, "
            f"p99 {lat['p99']} ms, 201 {result['created']}, 409 {result['out_of_stock']}, "
            f"5xx {result['server_errors']}" + ("" if result["as_expected"] else " (UNEXPECTED)")
        )
        return result

    async def scenario(self, scenario: Scenario, holds_first: bool) -> dict[str, Any]:
        loadavg = [round(x, 2) for x in os.getloadavg()]
        stand_in = hp.start_stand_in(self.procs, f"whsec_bench_{secrets.token_hex(16)}")
        results: dict[str, Any] = {}
        try:
            for holds in (True, False) if holds_first else (False, True):
                results["holds" if holds else "no_holds"] = await self.measure(
                    scenario, stand_in, holds
                )
        finally:
            self.procs.stop([stand_in])
        with_, without = results["holds"], results["no_holds"]
        ratios = {
            "checkouts_per_s": hp.ratio(with_["checkouts_per_s"], without["checkouts_per_s"]),
            **{
                f"latency_{k}": hp.ratio(with_["latency_ms"][k], without["latency_ms"][k])
                for k in ("p50", "p90", "p99")
            },
        }
        out: dict[str, Any] = {
            "loadavg_at_start": loadavg,
            "first": "holds" if holds_first else "no_holds",
            "holds": with_,
            "no_holds": without,
            "ratio": ratios,
        }
        return out


async def run_all(run: Run, selected: list[Scenario], repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for scenario in selected:
        runs = [await run.scenario(scenario, holds_first=i % 2 == 0) for i in range(repeat)]
        last = runs[-1]
        if repeat > 1:
            last["repeats"] = [
                {
                    "first": r["first"],
                    "ratio": r["ratio"],
                    **{
                        f"{mode}_{key}": r[mode][key]
                        for mode in MODES
                        for key in ("checkouts_per_s", "server_errors")
                    },
                    **{f"{mode}_p99": r[mode]["latency_ms"]["p99"] for mode in MODES},
                }
                for r in runs
            ]
            last["ratio_median"] = {
                key: median(v for r in runs if (v := r["ratio"].get(key)) is not None)
                for key in last["ratio"]
            }
        if scenario.name == "plenty":  # the goal, on the median ratio when repeated
            quoted = last.get("ratio_median", last["ratio"])["checkouts_per_s"]
            errors = sum(r[mode]["server_errors"] for r in runs for mode in MODES)
            # A ratio is only worth quoting when both modes did what they must (holds held).
            expected = all(r[mode]["as_expected"] for r in runs for mode in MODES)
            last["goal"] = {
                "holds_vs_no_holds_checkouts_per_s": quoted,
                "at_least": GOAL_RATIO,
                "server_errors": errors,
                "all_as_expected": expected,
                "met": quoted is not None and quoted >= GOAL_RATIO and errors == 0 and expected,
            }
        results[scenario.name] = last
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--checkouts", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--hold", default="15m", help="LEDGER_STOCK_HOLD with holds on")
    parser.add_argument("--scenarios", default="plenty,runs_out")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario")
    parser.add_argument("--warmup", type=int, default=16, help="untimed checkouts first")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - {"plenty", "runs_out"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.checkouts < 6 or args.concurrency < 1 or args.processes < 1 or args.repeat < 1:
        parser.error("--checkouts must be at least 6; --concurrency, --processes, --repeat 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    selected = scenarios(args.scenarios.split(","), args.checkouts)
    machine = {
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "postgres": hp.postgres_version(args.url),
        "python": sys.version.split()[0],
    }
    source = source_version()
    with tempfile.TemporaryDirectory(prefix="bench_holds_") as tmp:
        run = Run(args, hp.Processes(Path(tmp)), Scratch(args.url))
        try:
            try:
                import uvloop  # uvicorn[standard] brings it: a cheaper loop for the generator
            except ImportError:
                results = asyncio.run(run_all(run, selected, args.repeat))
            else:
                results = uvloop.run(run_all(run, selected, args.repeat))
        finally:
            run.procs.stop_all()
            run.scratch.drop_all()
    print(
        json.dumps(
            {
                "bench": "checkout_holds",
                "machine": machine,
                "source": source,
                "config": {
                    "checkouts": args.checkouts,
                    "concurrency": args.concurrency,
                    "processes": args.processes,
                    "hold": args.hold,
                    "warmup": args.warmup,
                    "repeat": args.repeat,
                    "scenarios": [s.name for s in selected],
                },
                "scenarios": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
