"""docker-compose.yml and the Dockerfile, read against the real `ledger` CLI and Settings.

Docker itself does not run here, so this checks what can be checked without it: every command
parses, every variable is one the ledger reads, compose's interpolation (done here as compose
does it) needs an admin token and gives each process settings that load, and the health checks
are the ones that work on a first start.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ledger.settings import Settings
from web.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
LEDGER_SERVICES = ("ledger", "worker")
# In the contract's configuration table but not read by Settings yet; passing them through
# now means a deployment configures them once.
CONTRACT_ONLY_VARIABLES = {"LEDGER_METRICS_TOKEN", "LEDGER_SMTP_URL", "LEDGER_MAIL_FROM"}
# What the postgres image reads (its documentation's "Environment Variables").
POSTGRES_IMAGE_VARIABLES = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_PASSWORD_FILE",
    "POSTGRES_DB",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_WALDIR",
    "POSTGRES_HOST_AUTH_METHOD",
    "PGDATA",
}
RESTART_POLICIES = re.compile(r"^(always|unless-stopped|on-failure(:\d+)?)$")


# ---- compose's variable interpolation, as the Compose specification defines it -------------


class MissingVariable(Exception):
    pass


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    """`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    `${VAR?error}`, `${VAR:+alternative}`, `${VAR+alternative}`."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise ValueError(f"invalid interpolation: {match[0]!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        value = env.get(name)
        if op is None:
            return value or ""
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if missing else str(value)
        if op.endswith("?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return "" if missing else arg  # `+`

    return _REFERENCE.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value in the file (not the keys), as compose does before it reads it."""
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


# ---- helpers ---------------------------------------------------------------------------


def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose(**env: str) -> dict[str, Any]:
    """The file as compose reads it with `env` as the only environment."""
    resolved = interpolate(raw_compose(), env)
    assert isinstance(resolved, dict)
    return resolved


def services(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    found = (config or raw_compose())["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {name: value for name, value in pairs}
    return {name: "" if value is None else str(value) for name, value in env.items()}


def healthcheck_argv(service: Mapping[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    kind, *argv = test
    if kind == "CMD-SHELL":
        return shlex.split(" ".join(argv))
    assert kind == "CMD", test
    return [str(arg) for arg in argv]


def option(argv: list[str], *names: str) -> str | None:
    """The value of `-h 127.0.0.1`, `--host=127.0.0.1` or `-h127.0.0.1` in `argv`."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
            if not name.startswith("--") and arg.startswith(name) and len(arg) > len(name):
                return arg[len(name) :]
    return None


def parsed_command(service: Mapping[str, Any]) -> Any:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    assert argv[0] == "ledger", argv
    return build_parser().parse_args(argv[1:])


# ---- the compose file ------------------------------------------------------------------


def test_the_file_interpolates_cleanly_with_only_the_admin_token_set() -> None:
    config = compose(LEDGER_ADMIN_TOKEN="s3cret")
    assert set(LEDGER_SERVICES) | {"db"} <= set(services(config))
    assert "$" not in repr(config), "every reference resolves (a literal $ is written $$)"


def test_no_admin_token_is_an_error_at_compose_up() -> None:
    raw = environment(services()["ledger"])["LEDGER_ADMIN_TOKEN"]
    assert re.fullmatch(r"\$\{LEDGER_ADMIN_TOKEN:\?[^}]+\}", raw), raw
    for env in ({}, {"LEDGER_ADMIN_TOKEN": ""}):
        with pytest.raises(MissingVariable, match="LEDGER_ADMIN_TOKEN"):
            compose(**env)
    resolved = environment(services(compose(LEDGER_ADMIN_TOKEN="s3cret"))["ledger"])
    assert resolved["LEDGER_ADMIN_TOKEN"] == "s3cret"
    # Nowhere else does the token get a default either.
    assert "LEDGER_ADMIN_TOKEN:-" not in COMPOSE_FILE.read_text()


@pytest.mark.parametrize("name", LEDGER_SERVICES)
def test_every_ledger_variable_is_one_the_ledger_reads(name: str) -> None:
    known = {field.alias for field in Settings.model_fields.values() if field.alias}
    unknown = set(environment(services()[name])) - known - CONTRACT_ONLY_VARIABLES
    assert not unknown, f"{name} sets variables the ledger does not read: {sorted(unknown)}"


def test_the_database_gets_only_postgres_image_variables() -> None:
    unknown = set(environment(services()["db"])) - POSTGRES_IMAGE_VARIABLES
    assert not unknown, sorted(unknown)


@pytest.mark.parametrize("name", LEDGER_SERVICES)
def test_ledger_services_reach_the_compose_database(name: str) -> None:
    config = compose(LEDGER_ADMIN_TOKEN="s3cret")
    db = environment(services(config)["db"])
    url = urlsplit(environment(services(config)[name])["LEDGER_DATABASE_URL"])
    assert url.scheme in ("postgresql", "postgres")
    assert (url.hostname, url.port or 5432) == ("db", 5432)
    assert url.username == db["POSTGRES_USER"]
    assert url.password == db["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == db.get("POSTGRES_DB", db["POSTGRES_USER"])


def _load_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: Mapping[str, str]
) -> Settings:
    for variable in list(os.environ):
        if variable.startswith(("LEDGER_", "STRIPE_")):
            monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return Settings()


@pytest.mark.parametrize("name", LEDGER_SERVICES)
def test_each_process_loads_its_settings_with_the_stand_in(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = environment(services(compose(LEDGER_ADMIN_TOKEN="s3cret"))[name])
    settings = _load_settings(monkeypatch, tmp_path, env)
    assert settings.stripe_api_key is None  # an empty STRIPE_API_KEY is no key: the stand-in
    assert settings.database_url is not None
    if name == "ledger":
        assert settings.public_url == "http://localhost:8000"
        assert settings.admin_token is not None
        assert settings.admin_token.get_secret_value() == "s3cret"


@pytest.mark.parametrize("name", LEDGER_SERVICES)
def test_each_process_gets_a_real_stripe_key_and_its_secret(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = compose(
        LEDGER_ADMIN_TOKEN="s3cret",
        STRIPE_API_KEY="sk_test_x",
        STRIPE_WEBHOOK_SECRET="whsec_a,whsec_b",
        LEDGER_RESYNC_AFTER="2m",
    )
    settings = _load_settings(monkeypatch, tmp_path, environment(services(config)[name]))
    assert settings.stripe_api_key is not None
    assert settings.stripe_api_key.get_secret_value() == "sk_test_x"
    assert settings.webhook_secrets == ["whsec_a", "whsec_b"]
    if name == "worker":  # the resync runs in the workers
        assert settings.resync_after.total_seconds() == 120


def test_public_url_is_configurable() -> None:
    config = compose(LEDGER_ADMIN_TOKEN="s3cret", LEDGER_PUBLIC_URL="https://shop.example")
    assert environment(services(config)["ledger"])["LEDGER_PUBLIC_URL"] == "https://shop.example"


def test_the_ledger_serves_http_and_the_worker_runs_the_workers() -> None:
    ledger = parsed_command(services()["ledger"])
    assert ledger.command == "serve"
    assert ledger.host == "0.0.0.0"  # reachable from outside its container
    assert ledger.no_workers, "the worker service runs them"
    published = [str(p) for p in services()["ledger"].get("ports", [])]
    assert any(p.split(":")[-1] == str(ledger.port) for p in published), published

    worker = parsed_command(services()["worker"])
    assert worker.command == "work"


def test_the_worker_reaches_the_stand_in_where_the_ledger_serves_it() -> None:
    """Without STRIPE_API_KEY, `ledger work` calls the stand-in at LEDGER_PUBLIC_URL; inside
    the worker's container that must be the ledger service on the compose network."""
    config = compose(LEDGER_ADMIN_TOKEN="s3cret", LEDGER_PUBLIC_URL="https://shop.example")
    url = urlsplit(environment(services(config)["worker"])["LEDGER_PUBLIC_URL"])
    assert url.scheme == "http"
    assert url.hostname in services(config)
    assert parsed_command(services(config)[url.hostname]).command == "serve"
    assert url.port == parsed_command(services(config)[url.hostname]).port


def test_the_database_healthcheck_waits_for_the_real_server() -> None:
    db = services()["db"]
    db_env = environment(db)
    argv = healthcheck_argv(db)
    assert argv[0] in ("pg_isready", "psql"), argv
    # Over TCP: the temporary server of a first start listens on the Unix socket only.
    host = option(argv, "-h", "--host")
    assert host in ("127.0.0.1", "localhost", "::1"), argv
    assert option(argv, "-d", "--dbname") == db_env.get("POSTGRES_DB", db_env["POSTGRES_USER"])
    assert option(argv, "-U", "--username") == db_env["POSTGRES_USER"]
    assert db["healthcheck"].get("start_period"), "a fresh volume takes a while to initialise"


@pytest.mark.parametrize("name", LEDGER_SERVICES)
def test_ledger_services_restart_and_wait_for_a_healthy_database(name: str) -> None:
    service = services()[name]
    assert RESTART_POLICIES.match(str(service.get("restart", ""))), service.get("restart")
    depends_on = service.get("depends_on")
    assert isinstance(depends_on, dict), "the long form, with a condition"
    assert depends_on["db"]["condition"] == "service_healthy"


def test_no_service_waits_on_itself_or_on_something_that_is_not_there() -> None:
    all_services = services()
    for name, service in all_services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in all_services and dependency != name, (name, dependency)


# ---- the ledger's health check, run for real against a stand-in /readyz -----------------


class _Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = type(self).status if self.path == "/readyz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[tuple[int, type[_Readyz]]]:
    handler = type("Readyz", (_Readyz,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_ledger_healthcheck_asks_readyz(readyz: tuple[int, type[_Readyz]]) -> None:
    service = services()["ledger"]
    argv = healthcheck_argv(service)
    assert argv[:2] == ["python", "-c"], "the image has python, not curl"
    code = argv[2]
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/readyz", code)
    assert match, code
    assert int(match[1]) == parsed_command(service).port

    port, handler = readyz

    def run(on_port: int) -> int:
        script = code.replace(match[0], f"http://127.0.0.1:{on_port}/readyz")
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, timeout=30
        ).returncode

    handler.status = 200
    assert run(port) == 0
    handler.status = 503
    assert run(port) != 0
    with socket.socket() as closed:  # bound, never listening: the connection is refused
        closed.bind(("127.0.0.1", 0))
        assert run(closed.getsockname()[1]) != 0


# ---- the image -------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def test_the_image_installs_the_package_with_ledger_on_path() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("ledger") == "web.cli:main"

    instructions = _dockerfile_instructions()
    base = next(arg for word, arg in instructions if word == "FROM")
    # The official image's pip puts console scripts in /usr/local/bin, which is on PATH.
    assert re.match(r"(docker\.io/)?(library/)?python:3\.1[1-9]", base), base
    copied = " ".join(arg for word, arg in instructions if word in ("COPY", "ADD"))
    assert "pyproject.toml" in copied and "src" in copied, copied
    installs = [
        shlex.split(arg)
        for word, arg in instructions
        if word == "RUN" and re.search(r"\bpip3? install\b", arg)
    ]
    assert any("." in argv and "--user" not in argv for argv in installs), installs

    cmd = next(arg for word, arg in reversed(instructions) if word == "CMD")
    argv = yaml.safe_load(cmd)  # the exec (JSON) form
    assert argv[0] == "ledger"
    build_parser().parse_args(argv[1:])


def test_the_build_context_leaves_local_state_and_secrets_out() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".ledger", ".venv"} <= ignored, ignored
