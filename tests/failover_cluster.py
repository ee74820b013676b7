"""A pg_auto_failover cluster of the test's own: a monitor and two PostgreSQL nodes with a
synchronous standby, on loopback ports, run as the `postgres` user (pg_autoctl refuses root),
under a directory of their own. The machine's shared server is never touched.

The monitor's health checks are tightened so a primary killed with SIGKILL is replaced in about
five seconds instead of about fifty (the team measured 4-6 s after `kill -9` of the primary with
the timeouts lowered, about 50 s with pg_auto_failover's defaults).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.shop import free_port

PG_AUTOCTL = "pg_autoctl"
USER = "postgres"
DBNAME = "ledger"

# Seconds and milliseconds: detected in ~2 s, failed over ~3 s later (the demote timeout gives a
# partitioned primary its time to demote itself first: no two primaries at once).
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "2000",
    "pgautofailover.primary_demote_timeout": "3000",
}
KEEPER_SETTINGS = {"timeout.network_partition_timeout": "2"}


def pg_ctl() -> str:
    """The newest installed PostgreSQL's pg_ctl (pg_autoctl finds the rest beside it)."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
    )
    if not versions:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql")
    return str(versions[-1])


def available() -> str | None:
    """Why a cluster cannot be built here, or None when it can."""
    if shutil.which(PG_AUTOCTL) is None:
        return (
            "pg_autoctl is not installed (apt-get install pg-auto-failover-cli"
            " postgresql-15-auto-failover; scripts/test does so as root)"
        )
    try:
        owner = pwd.getpwnam(USER)
    except KeyError:
        return f"no system user {USER!r} to run PostgreSQL as"
    if os.geteuid() not in (0, owner.pw_uid):
        return f"the tests run neither as root nor as {USER!r}, so cannot run pg_autoctl as it"
    return None


@dataclass
class Node:
    name: str
    port: int
    pgdata: Path
    keeper: subprocess.Popen[bytes] | None = None


@dataclass
class FailoverCluster:
    root: Path
    monitor_port: int
    nodes: list[Node] = field(default_factory=list)
    monitor: subprocess.Popen[bytes] | None = None

    # ---- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ledger's multi-host URL: whichever node accepts writes."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"postgresql://{USER}@{hosts}/{DBNAME}?target_session_attrs=read-write"

    @property
    def monitor_url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.monitor_port}/pg_auto_failover"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # The monitor's extension and pg_autoctl's own connections look for the socket here.
        env.update(PG_REGRESS_SOCK_DIR=str(self.root), PGHOST=str(self.root), HOME=str(self.root))
        return env

    # ---- running pg_autoctl ---------------------------------------------------------------

    def _autoctl(self, *args: str, timeout: float = 60) -> None:
        with (self.root / "commands.log").open("a") as out:
            subprocess.run(
                [PG_AUTOCTL, *args],
                cwd=self.root,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=timeout,
                user=USER,
            )

    def _run(self, pgdata: Path, log_name: str) -> subprocess.Popen[bytes]:
        """`pg_autoctl run` in a process group of its own, so a kill reaches its Postgres too."""
        log = (self.root / f"{log_name}.log").open("ab")
        try:
            return subprocess.Popen(
                [PG_AUTOCTL, "run", "--pgdata", str(pgdata)],
                cwd=self.root,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=USER,
                start_new_session=True,
            )
        finally:
            log.close()

    def create(self) -> None:
        pgctl = pg_ctl()
        common = ["--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--pgctl", pgctl]
        monitor_data = self.root / "monitor"
        self._autoctl(
            "create", "monitor", "--pgdata", str(monitor_data),
            "--pgport", str(self.monitor_port), *common,
        )  # fmt: skip
        self.monitor = self._run(monitor_data, "monitor")
        self._wait(lambda: self._monitor_answers(), 30, "the monitor to start")
        with psycopg.connect(self.monitor_url, autocommit=True) as conn:
            for name, value in MONITOR_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} TO {value}")
            conn.execute("SELECT pg_reload_conf()")
        monitor = f"postgres://autoctl_node@127.0.0.1:{self.monitor_port}/pg_auto_failover"
        for node in self.nodes:
            self._autoctl(
                "create", "postgres", "--pgdata", str(node.pgdata), "--pgport", str(node.port),
                "--listen", "127.0.0.1", "--name", node.name, "--dbname", DBNAME,
                "--monitor", f"{monitor}?sslmode=disable", *common,
                timeout=120,
            )  # fmt: skip
            for key, value in KEEPER_SETTINGS.items():
                self._autoctl("config", "set", "--pgdata", str(node.pgdata), key, value)
            node.keeper = self._run(node.pgdata, node.name)
        self.wait_for_states({"primary", "secondary"}, 60)

    def _monitor_answers(self) -> bool:
        try:
            with psycopg.connect(self.monitor_url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    # ---- what the monitor says ------------------------------------------------------------

    def states(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported, assigned) state, as the monitor has them."""
        with psycopg.connect(self.monitor_url, connect_timeout=2) as conn:
            rows = conn.execute(
                "SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node"
            ).fetchall()
        return {str(name): (str(reported), str(goal)) for name, reported, goal in rows}

    def wait_for_states(self, wanted: set[str], timeout: float) -> None:
        """Until the nodes have converged on `wanted` (one state per node)."""

        def converged() -> bool:
            with suppress(psycopg.Error):
                states = self.states()
                return (
                    len(states) == len(self.nodes)
                    and all(r == g for r, g in states.values())
                    and {r for r, _ in states.values()} == wanted
                )
            return False

        self._wait(converged, timeout, f"the nodes to be {sorted(wanted)}: {self._states_now()}")

    def _states_now(self) -> object:
        try:
            return self.states()
        except psycopg.Error as error:
            return error

    def primary(self) -> Node:
        """The node the monitor has as primary."""
        states = self.states()
        for node in self.nodes:
            if states.get(node.name, ("", ""))[0] in ("primary", "wait_primary"):
                return node
        raise AssertionError(f"no primary: {states}")

    # ---- faults -------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """The node's machine dies: its keeper and its PostgreSQL, SIGKILL, all at once."""
        assert node.keeper is not None
        with suppress(ProcessLookupError):
            os.killpg(node.keeper.pid, signal.SIGKILL)
        node.keeper.wait(timeout=10)
        node.keeper = None
        _kill_leftovers(node.pgdata)

    def switchover(self) -> None:
        """A planned switchover: the monitor has the standby promoted and the primary demoted
        (`pg_autoctl perform switchover`, which returns once it is done)."""
        self._autoctl("perform", "switchover", "--pgdata", str(self.root / "monitor"), timeout=90)

    def restart(self, node: Node) -> None:
        """The node's machine is back: its keeper starts again (and rejoins as a standby)."""
        node.keeper = self._run(node.pgdata, node.name)

    def stop(self) -> None:
        for proc in [n.keeper for n in self.nodes] + [self.monitor]:
            if proc is not None and proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in [n.keeper for n in self.nodes] + [self.monitor]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for node in self.nodes:
            _kill_leftovers(node.pgdata)
        _kill_leftovers(self.root / "monitor")


def _kill_leftovers(pgdata: Path) -> None:
    """A postmaster of `pgdata` still running (its keeper gone): killed, by its pid file."""
    pid_file = pgdata / "postmaster.pid"
    with suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().splitlines()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if str(pgdata).encode() in cmdline:  # still that server, not a reused pid
            os.kill(pid, signal.SIGKILL)


@contextmanager
def failover_cluster() -> Iterator[FailoverCluster]:
    """A monitor and two nodes, up with a primary and a synchronous standby; torn down after."""
    reason = available()
    if reason is not None:
        raise AssertionError(f"cannot build a pg_auto_failover cluster: {reason}")
    # Not under pytest's tmp_path: its directories are private to root.
    root = Path(tempfile.mkdtemp(prefix="ledger-failover-"))
    owner = pwd.getpwnam(USER)
    if os.geteuid() == 0:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = FailoverCluster(root, free_port())
    cluster.nodes = [Node(f"node{i}", free_port(), root / f"node{i}") for i in (1, 2)]
    try:
        cluster.create()
        yield cluster
    except BaseException:
        for log in sorted(root.glob("*.log")):
            print(f"---- {log.name} (last lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
