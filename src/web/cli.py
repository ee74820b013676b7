"""The `ledger` command."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from ledger.storage import StoreUnavailable
from web.audit_cli import add_audit_commands
from web.command_line import ConfigurationError, load_settings, open_database

if TYPE_CHECKING:
    from web.tracing import Tracing


def _logging_and_tracing(*, process_id: int | None = None) -> Tracing | None:
    """JSON logs, and traces when OTEL_EXPORTER_OTLP_ENDPOINT asks for them (their ids then on
    every log line written inside a span); `process_id` on every line when given."""
    from web.logs import configure_logging
    from web.tracing import start_tracing

    tracing = start_tracing()
    configure_logging(trace_ids=tracing is not None, process_id=process_id)
    return tracing


def _stop_tracing(tracing: Tracing | None) -> None:
    if tracing is not None:
        tracing.shutdown()  # what is still buffered goes out before the process ends


def serve(args: argparse.Namespace) -> int:
    from web.serve_processes import MULTIPROCESS_DIR_VARIABLE

    if args.listen_fd is None:
        # One process exports its own registry (the parent of N names its children their
        # directory itself): no directory from outside, whose files would be added up.
        # Before anything imports prometheus-client, which reads it then.
        os.environ.pop(MULTIPROCESS_DIR_VARIABLE, None)
    if args.workers > 1 and args.listen_fd is None:
        from web.serve_processes import serve_processes

        return serve_processes(args)  # the parent: binds the port, runs N of what follows
    import uvicorn

    from web.app import create_app
    from web.bootstrap import background_workers, bootstrap
    from web.bounded_http import server_options
    from web.demo import seed_demo_products
    from web.logs import log
    from web.serve_processes import announce_ready, exit_with_parent
    from workers.leadership import Share

    child = args.listen_fd is not None  # one of `--workers N` processes, sharing their log
    tracing = _logging_and_tracing(process_id=os.getpid() if child else None)
    settings = load_settings()
    local_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    listen_url = f"http://{local_host}:{args.port}"
    services = bootstrap(settings, listen_url=listen_url, tracing=tracing)
    log.info(
        "ledger_starting",
        url=listen_url,
        store=services.database.describe(),
        stripe="stand-in" if services.stand_in else "stripe",
    )
    if args.demo:
        added = seed_demo_products(services.ledger)
        log.info("demo_products", added=added, storefront=f"{listen_url}/")
    share = Share.parse(args.share) if args.share else None
    workers = None if args.no_workers else background_workers(services, share)
    try:
        if workers is not None:
            workers.start()
        options: dict[str, Any] = {
            "log_config": None,  # uvicorn's own lines go through our JSON handler too
            "log_level": "warning",
            "access_log": False,  # the request middleware logs each request, with its id
            # Request heads over 64 KiB answer 431, past 1000 connections 503 (web.bounded_http).
            **server_options(),
        }
        app = create_app(services)
        if child:
            exit_with_parent()
            announce_ready(args.ready_fd)  # our tables exist: the parent may start the next
            # Our socket on the shared port (SO_REUSEPORT), bound and inherited from the parent.
            sock = socket.socket(fileno=args.listen_fd)
            uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])
        else:
            uvicorn.run(app, host=args.host, port=args.port, **options)
    finally:
        if child:
            # What this process served, for whoever checks that N processes shared the load.
            log.info("serve_process_stopped", requests=requests_served())
        if workers is not None:
            workers.stop()
        services.close()
        _stop_tracing(tracing)
    return 0


def requests_served() -> int:
    """HTTP requests this process answered (the count of `ledger_http_request_seconds`)."""
    from web.metrics import HTTP_LATENCY

    return int(
        sum(
            sample.value
            for metric in HTTP_LATENCY.collect()
            for sample in metric.samples
            if sample.name.endswith("_count")
        )
    )


def work(args: argparse.Namespace) -> int:
    from web.bootstrap import background_workers, bootstrap

    tracing = _logging_and_tracing()
    settings = load_settings()
    # Without a Stripe key the stand-in is served by `ledger serve`: the refund worker calls
    # it where that process answers (LEDGER_PUBLIC_URL, else serve's default address).
    services = (
        bootstrap(settings, listen_url=settings.public_url.rstrip("/"), tracing=tracing)
        if settings.public_url
        else bootstrap(settings, tracing=tracing)
    )
    try:
        background_workers(services).run_forever()
    finally:
        services.close()
        _stop_tracing(tracing)
    return 0


def rebuild_projections(args: argparse.Namespace) -> int:
    from projections import rebuild_all

    database = open_database()
    positions = rebuild_all(database, progress=lambda line: print(line, flush=True))
    print(
        f"rebuilt {len(positions)} read models: "
        + ", ".join(f"{k} at {v}" for k, v in positions.items())
    )
    return 0


def stripe_resync(args: argparse.Namespace) -> int:
    from ledger.settings import parse_duration
    from web.bootstrap import bootstrap

    tracing = _logging_and_tracing()
    older_than = parse_duration(args.older_than)
    settings = load_settings()
    if settings.stripe_api_key is None:
        raise ConfigurationError(
            "resync asks Stripe itself: set STRIPE_API_KEY (without it, the built-in stand-in"
            " lives inside `ledger serve`, whose workers resync periodically)"
        )
    services = bootstrap(settings, tracing=tracing)
    try:
        report = services.resync.run_once(older_than)
    finally:
        services.close()
        _stop_tracing(tracing)
    print(f"resync: {report.summary()}")
    return 1 if report.failures else 0


def forget_customer(args: argparse.Namespace) -> int:
    from ledger.customer_keys import PostgresCustomerKeys

    email = args.email.strip()
    if "@" not in email:
        raise ConfigurationError(f"not an e-mail address: {email[:64]!r}")
    keys = PostgresCustomerKeys(open_database())
    try:
        customer_id = keys.forget(email)
    finally:
        keys.close()
    if customer_id is None:
        # Erasure requests are often repeated: nothing held is a success, said plainly.
        print(f"nothing to forget: no personal data is held for {email}")
    else:
        print(
            f"forgot {email}: the key of customer {customer_id} is destroyed; their personal"
            " data in the log can no longer be read (the log and its hash chain are unchanged)"
        )
    return 0


def _process_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1 process: {text}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description="An event-sourced order ledger.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP API (and the workers)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument(
        "--no-workers", action="store_true", help="do not run the background workers here"
    )
    serve_cmd.add_argument(
        "--demo", action="store_true", help="add a few demo products (with stock) if missing"
    )
    serve_cmd.add_argument(
        "--workers",
        type=_process_count,
        default=1,
        metavar="N",
        help="serve the port from N processes (default 1); needs STRIPE_API_KEY when N > 1",
    )
    # Between `--workers N`'s parent and its children only: the inherited listening socket and
    # the pipe a child writes to once ready.
    serve_cmd.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--share", default=None, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve_cmd.set_defaults(handler=serve)
    commands.add_parser("work", help="run the background workers alone").set_defaults(handler=work)
    projections_cmd = commands.add_parser("projections", help="read models")
    actions = projections_cmd.add_subparsers(dest="action", required=True)
    actions.add_parser("rebuild", help="rebuild every read model from the log").set_defaults(
        handler=rebuild_projections
    )
    add_audit_commands(commands)
    stripe_cmd = commands.add_parser("stripe", help="Stripe")
    stripe_actions = stripe_cmd.add_subparsers(dest="action", required=True)
    resync_cmd = stripe_actions.add_parser(
        "resync", help="re-fetch what is still unsettled from Stripe and decide it"
    )
    resync_cmd.add_argument(
        "--older-than",
        default="10m",
        help="only what has waited at least this long (30s, 10m, 2h, 1d; default 10m)",
    )
    resync_cmd.set_defaults(handler=stripe_resync)
    customers_cmd = commands.add_parser("customers", help="customers' personal data")
    customer_actions = customers_cmd.add_subparsers(dest="action", required=True)
    forget_cmd = customer_actions.add_parser(
        "forget", help="erase a customer's personal data by destroying their key"
    )
    forget_cmd.add_argument("email", metavar="EMAIL")
    forget_cmd.set_defaults(handler=forget_customer)
    return parser


def _stop_gracefully(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises SIGTERM once it has shut down; the default action would end the
    # process without `finally` blocks or atexit handlers, leaving the embedded database
    # running with a handle nobody releases. A normal exit runs both.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_gracefully)
    try:
        return int(args.handler(args))
    except (ConfigurationError, StoreUnavailable, ValueError) as error:
        print(f"ledger: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
