"""`ledger serve --workers N` (N > 1): one port served by N processes.

The parent binds the port itself, once per child with SO_REUSEPORT, and starts N children
(`ledger serve` again, fresh interpreters, not forks: a forked copy of a process holding pools,
threads and locks is not a safe start), each inheriting one of those sockets and running the
whole server on it. The kernel spreads new connections over the sockets by a hash of their
addresses. One socket shared by all was tried first: the child that woke first drained the
whole accept queue (asyncio accepts in a loop), and a burst of 32 keep-alive connections left
77-93% of the requests on one process.

Each child runs its own background workers, and the advisory-lock leadership of `ledger work`
(`workers.leadership`) decides which child runs each read model and side effect: exactly one at
a time, as between separate `ledger serve` / `ledger work` processes.

The children start one after another, each once the previous one is ready (its tables made and
its workers started): two first starts on an empty database would race to create the tables.

The processes are one service, and `/metrics` reports the service whichever of them answers
the scrape: the parent creates a private directory for prometheus-client's multiprocess mode
(new and empty, so no file of an earlier run counts), names it to each child in
`PROMETHEUS_MULTIPROC_DIR`, tells the library of each child that ends (`mark_process_dead`), and
removes the directory when it stops (`web.metrics` says what a scrape adds up).

The parent does no HTTP work. SIGTERM or SIGINT to it stops every child gracefully (SIGTERM,
then SIGKILL after `STOP_TIMEOUT` seconds) and it exits 0. A child that ends on its own is
reported on stderr and ends the service: the parent stops the others and exits non-zero (the
child's exit status, or 1), so the supervisor that restarts a one-process `ledger serve`
(systemd, Docker's restart policy, Kubernetes) restarts this one as well. Restarting a child
here instead would hide a crash loop behind a port that still half answers.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from web.command_line import ConfigurationError, load_settings

# Where prometheus-client keeps each process's values in multiprocess mode: read by the library
# as a process imports it, so set in a child's environment before it starts.
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# How long a child may take to become ready (bootstrap, a read model rebuilt) before the
# service gives up on starting.
START_TIMEOUT = 300.0
# After SIGTERM, how long the children have to finish their requests and release their locks.
STOP_TIMEOUT = 30.0
# How often the parent looks at its children and at a stop request (seconds).
WATCH_TICK = 0.2
# The listening socket's backlog: uvicorn's default, which the one-process server uses.
BACKLOG = 2048


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets on one port (SO_REUSEPORT), one per child, bound as uvicorn binds its
    own. Bound here, all before any child starts, so a port in use is one clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # port 0: the others join the one the first got
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sockets


def refuse_stand_in() -> None:
    """Without STRIPE_API_KEY the built-in stand-in serves Stripe from the serving process's
    memory; a session created in one child would be unknown to the others (its pay page, its
    webhook, its refunds). Said at once, as a configuration error."""
    if load_settings().stripe_api_key is None:
        raise ConfigurationError(
            "--workers N (N > 1) needs STRIPE_API_KEY: the built-in Stripe stand-in keeps its"
            " state in one process's memory, which the other processes cannot see; without a"
            " key, run one process (--workers 1, the default)"
        )


@contextmanager
def metrics_directory() -> Iterator[str]:
    """The children's directory for prometheus-client's multiprocess mode: made new (so empty:
    the files of a run that crashed are in a directory of their own, never read again), and
    removed with what is in it at the end."""
    try:
        directory = tempfile.mkdtemp(prefix="ledger-metrics-")
    except OSError as error:
        raise ConfigurationError(
            f"cannot make a directory for the processes' metrics in {tempfile.gettempdir()}:"
            f" {error.strerror}"
        ) from None
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Children:
    """The children of one parent: started one at a time, watched, stopped together."""

    def __init__(
        self, args: argparse.Namespace, sockets: list[socket.socket], metrics_dir: str
    ) -> None:
        self.args = args
        self.sockets = sockets
        self.metrics_dir = metrics_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.marked_dead: set[int] = set()

    def argv(self, index: int, ready_fd: int) -> list[str]:
        argv = [sys.executable, "-m", "web.cli", "serve", "--host", self.args.host]
        sock = self.sockets[index]
        port = sock.getsockname()[1]  # the port bound, were `--port 0` asked
        argv += ["--port", str(port), "--listen-fd", str(sock.fileno())]
        argv += ["--ready-fd", str(ready_fd)]
        # The background work split between the processes too, not all in the first to start.
        argv += ["--share", f"{index}/{len(self.sockets)}"]
        if self.args.no_workers:
            argv.append("--no-workers")
        if self.args.demo and index == 0:  # the products once, not N times
            argv.append("--demo")
        return argv

    def start(self, index: int, stopping: threading.Event) -> int | None:
        """Starts child `index` and waits until it is ready: None, or the status to exit with."""
        ready_read, ready_write = os.pipe()
        try:
            proc = subprocess.Popen(
                self.argv(index, ready_write),
                pass_fds=(self.sockets[index].fileno(), ready_write),
                # In the environment, as the library reads it when the child imports it.
                env={**os.environ, MULTIPROCESS_DIR_VARIABLE: self.metrics_dir},
            )
        finally:
            os.close(ready_write)  # the child holds the only writer: its exit ends our read
        self.procs.append(proc)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not stopping.is_set():
                readable, _, _ = select.select([ready_read], [], [], WATCH_TICK)
                if readable:
                    if os.read(ready_read, 1):
                        return None
                    proc.wait()  # the pipe closed without a word: the child ended
                if proc.poll() is not None:
                    # Its own line on stderr said why (a configuration error, the database).
                    return proc.returncode or 1
                if time.monotonic() > deadline:
                    say(f"process {proc.pid} was not ready within {START_TIMEOUT:.0f}s")
                    return 1
            return 0
        finally:
            os.close(ready_read)

    def ended(self) -> subprocess.Popen[bytes] | None:
        dead = next((p for p in self.procs if p.poll() is not None), None)
        if dead is not None:
            self.mark_dead(dead)
        return dead

    def mark_dead(self, proc: subprocess.Popen[bytes]) -> None:
        """Tells prometheus-client that the child ended: its live gauges stop counting (its
        counters and histograms still do: what it served, the service served)."""
        # Imported here: `ledger serve` reads its variable before prometheus-client is imported.
        from prometheus_client.multiprocess import mark_process_dead

        if proc.pid not in self.marked_dead:
            self.marked_dead.add(proc.pid)
            mark_process_dead(proc.pid, self.metrics_dir)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"process {proc.pid} did not stop within {STOP_TIMEOUT:.0f}s; killed")
                proc.kill()
                proc.wait()
            self.mark_dead(proc)


def say(line: str) -> None:
    print(f"ledger serve: {line}", file=sys.stderr, flush=True)


def serve_processes(args: argparse.Namespace) -> int:
    """The parent: binds, starts `args.workers` children, waits for a signal or a death."""
    refuse_stand_in()
    sockets = listening_sockets(args.host, args.port, args.workers)
    try:
        with metrics_directory() as metrics_dir:
            return run_children(args, sockets, metrics_dir)
    finally:
        for sock in sockets:
            sock.close()


def run_children(args: argparse.Namespace, sockets: list[socket.socket], metrics_dir: str) -> int:
    """Starts the children on `sockets`, then watches them until a signal or a death."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    children = Children(args, sockets, metrics_dir)
    status = 0
    try:
        for index in range(args.workers):
            failed = children.start(index, stopping)
            if failed is not None:
                return status_of(failed, stopping)
        say(
            f"serving http://{args.host}:{sockets[0].getsockname()[1]} from {args.workers}"
            " processes: " + ", ".join(str(p.pid) for p in children.procs)
        )
        while not stopping.wait(WATCH_TICK):
            dead = children.ended()
            if dead is not None:
                status = dead.returncode or 1
                say(
                    f"process {dead.pid} ended (exit status {dead.returncode}); stopping the"
                    " others: restart the service"
                )
                break
        return status
    finally:
        children.stop()


def status_of(failed: int, stopping: threading.Event) -> int:
    """A start cut short by SIGTERM is a clean stop; a child that failed to start is not."""
    return 0 if stopping.is_set() and failed == 0 else failed


def announce_ready(ready_fd: int | None) -> None:
    """In a child: tells the parent it is ready, so it may start the next one."""
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)


def exit_with_parent() -> None:
    """In a child: stop (as on SIGTERM) if the parent goes away without stopping us, killed
    with SIGKILL say; otherwise orphans would go on answering on a port nobody supervises."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
