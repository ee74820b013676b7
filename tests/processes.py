"""`ledger` as real processes: the environment they start with, and `ledger serve` running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.shop import free_port

LEDGER = [sys.executable, "-m", "web.cli"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would configure the ledger from outside the test."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEDGER_", "STRIPE_", "POSTGRES_", "PG"))
    }
    env.update(extra)
    return env


# How long `ledger ARGS...` may take before the test fails rather than waits on.
RUN_TIMEOUT_SECONDS = 120.0


# The environment is passed as keywords (`LEDGER_DATABASE_URL=...`, or `**env`), so what else a
# helper takes comes first, positionally: a keyword option beside `**env: str` would be one that
# a dict of variables could fill, and mypy rightly refuses that.


def run_ledger(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ledger ARGS...` to its end, in `cwd`, configured by `env` alone."""
    return run_ledger_within(RUN_TIMEOUT_SECONDS, cwd, *args, **env)


def run_ledger_within(
    timeout: float, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`run_ledger`, failing the test after `timeout` seconds instead."""
    return subprocess.run(
        [*LEDGER, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def serving(workdir: Path, *args: str, **env: str) -> Iterator[str]:
    """`ledger serve ARGS...` in `workdir` until ready: its URL. Stopped with SIGINT (Ctrl-C)."""
    with serving_stopped_by(signal.SIGINT, workdir, *args, **env) as url:
        yield url


@contextmanager
def serving_stopped_by(stop_with: int, workdir: Path, *args: str, **env: str) -> Iterator[str]:
    """`serving`, stopped with signal `stop_with` at the end."""
    port = free_port()
    log_path = workdir / f"serve-{port}.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [*LEDGER, "serve", "--port", str(port), *args],
        cwd=workdir,
        env=clean_env(**env),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ledger serve exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("ledger serve did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc, stop_with)
        log_file.close()


@contextmanager
def working(workdir: Path, name: str = "work", **env: str) -> Iterator[subprocess.Popen[str]]:
    """`ledger work` running in `workdir`, its output in `workdir/{name}.log`; stopped with
    SIGTERM at the end (killed if it has not stopped within 20 s). A test may kill it first."""
    log_path = workdir / f"{name}.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [*LEDGER, "work"],
        cwd=workdir,
        env=clean_env(**env),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        _stop(proc, signal.SIGTERM)
        log_file.close()


def _stop(proc: subprocess.Popen[str], how: int) -> None:
    """Stops it with signal `how` (unless it ended already), killed after 20 s."""
    if proc.poll() is None:
        proc.send_signal(how)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
