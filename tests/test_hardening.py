"""HTTP hardening, against a real `ledger serve`: bounded request heads and connections, no
redirect that echoes the Host header, error messages that quote input briefly, a client that
goes away mid-body logged once, and no database password in a configuration error."""

from __future__ import annotations

import contextlib
import inspect
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import Server
from tests.processes import run_ledger_within, serving
from tests.shop import free_port
from tests.waiting import wait_until
from web.bounded_http import MAX_CONNECTIONS, MAX_REQUEST_HEAD_BYTES, connection_limit


@dataclass
class Served:
    url: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pg_server: Server) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("hardening")
    database = pg_server.fresh_database()
    try:
        with serving(workdir, "--no-workers", LEDGER_DATABASE_URL=database.conninfo_url()) as url:
            port = int(url.rsplit(":", 1)[1])
            (log,) = workdir.glob(f"serve-{port}.log")
            yield Served(url, port, log)
    finally:
        pg_server.drop(database)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_response(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it ends the connection (closes it, or shuts down its
    side); the test fails when it has not ended it by `deadline`."""
    received = b""
    while True:
        assert time.monotonic() < deadline, f"the server never ended the connection: {received!r}"
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            continue  # the socket's own timeout: look at the deadline again
        if not chunk:
            return received
        received += chunk


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def padding(total: int) -> bytes:
    """Header lines of about `total` bytes."""
    line = b"X-Padding-%05d: " + b"p" * 1000 + b"\r\n"
    return b"".join(line % i for i in range(total // len(line % 0) + 1))


# ------------------------------------------------------------------ request head size


@pytest.mark.parametrize(
    "extra",
    [
        b"",
        # uvicorn asks its protocol's private `_should_upgrade` whether to hand an Upgrade
        # request to its WebSocket machinery; web.bounded_http overrides it so that a refused
        # head stays refused. A uvicorn that stops asking it (or renames it) fails here.
        b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
    ],
    ids=["plain", "upgrade"],
)
def test_a_huge_request_head_sent_at_once_is_refused(served: Served, extra: bytes) -> None:
    with connect(served.port) as sock:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + extra + padding(100_000) + b"\r\n"
        # Refused before it all arrived, perhaps: the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        # The server answers and ends the connection itself (read_response fails otherwise).
        response = read_response(sock, time.monotonic() + 10)
    status, body = status_and_body(response)
    assert status == 431, response[:300]
    assert json.loads(body)["error"]["code"] == "request_headers_too_large"


def test_uvicorn_builds_its_protocol_as_the_bounded_one_expects() -> None:
    # BoundedHttpToolsProtocol passes uvicorn's private `_loop` argument through and overrides
    # `_should_upgrade`: both must still be there (uvicorn 0.54, pinned in pyproject.toml).
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert "_loop" in inspect.signature(HttpToolsProtocol.__init__).parameters
    assert callable(getattr(HttpToolsProtocol, "_should_upgrade", None))


def test_an_endless_request_head_is_refused_without_reading_it_all(served: Served) -> None:
    # Headers trickle in without end: the server must answer once the head passes its limit,
    # not buffer them until they end (they never do).
    with connect(served.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        line = b"X-Padding: " + b"p" * 8000 + b"\r\n"
        while sent < 10_000_000 and time.monotonic() - started < 10:
            # A moment for the server to answer after each line: a trickle, not a flood.
            if select.select([sock], [], [], 0.01)[0]:
                break  # the server has answered
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(line)
        response = read_response(sock, time.monotonic() + 5)
    status, body = status_and_body(response)
    assert status == 431, response[:300]
    assert json.loads(body)["error"]["code"] == "request_headers_too_large"
    # Answered soon after the limit (at least 10 ms per line without an answer), not at the end
    # of the 10 MB.
    assert sent < MAX_REQUEST_HEAD_BYTES + 1_000_000, sent


def test_a_large_but_reasonable_request_head_is_served(served: Served) -> None:
    headers = {f"X-Padding-{i}": "p" * 1000 for i in range(40)}  # about 41 kB
    response = httpx.get(f"{served.url}/healthz", headers=headers, timeout=10)
    assert response.status_code == 200
    # And a long path under the limit is the app's to answer.
    assert httpx.get(f"{served.url}/{'a' * 30_000}", timeout=10).status_code == 404


def test_a_malformed_request_is_answered_in_the_error_shape(served: Served) -> None:
    with connect(served.port) as sock:
        sock.sendall(b"THIS IS NOT HTTP\x00\r\n\r\n")
        response = read_response(sock, time.monotonic() + 5)
    status, body = status_and_body(response)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"


# ------------------------------------------------------------------ concurrent connections


def test_connections_past_the_limit_answer_503(served: Served) -> None:
    limit = connection_limit()
    assert 0 < limit <= MAX_CONNECTIONS
    idle: list[socket.socket] = []
    try:
        for _ in range(limit):
            idle.append(connect(served.port))
        answers: list[httpx.Response] = []

        def refused() -> bool:  # true once the server has accepted all of them
            answers.append(httpx.get(f"{served.url}/healthz", timeout=10))
            return answers[-1].status_code == 503

        wait_until(refused, 20, lambda: answers[-1].text, interval=0.1)
        response = answers[-1]
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        assert response.headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()
    wait_until(
        lambda: httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200,
        20,
        lambda: "still refusing after the connections closed",
        interval=0.1,
    )


# ------------------------------------------------------------------ redirects


@pytest.mark.parametrize(
    "path", ["/api/products/", "/api/carts/", "/readyz/", "/_stripe/pay/cs_test_x/"]
)
def test_no_redirect_echoes_the_host_header(served: Served, path: str) -> None:
    response = httpx.get(f"{served.url}{path}", headers={"Host": "evil.example"}, timeout=10)
    assert "evil.example" not in response.headers.get("location", "")
    assert "evil.example" not in response.text
    assert response.status_code == 404


# ------------------------------------------------------------------ input in error messages


def quoted_briefly(message: str, sent: str) -> bool:
    return sent[:64] in message and sent[:65] not in message and len(message) < 300


@pytest.mark.parametrize("sku", ["A" * 10_000, "a b " * 2_500, "x'\\\x01" * 2_500])
def test_an_unknown_sku_is_quoted_briefly(served: Served, sku: str) -> None:
    response = httpx.get(f"{served.url}/api/products/{quote(sku, safe='')}", timeout=10)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_product"
    assert len(error["message"]) < 300, error["message"][:300]
    assert "…" in error["message"]
    if sku.isalnum():
        assert quoted_briefly(error["message"], sku)


def test_an_unknown_cart_is_quoted_briefly(served: Served) -> None:
    cart_id = "C" * 10_000
    response = httpx.put(
        f"{served.url}/api/carts/{cart_id}/items/mug", json={"quantity": 1}, timeout=10
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_cart"
    assert quoted_briefly(error["message"], cart_id), error["message"][:300]


def test_an_unknown_field_is_named_briefly(served: Served) -> None:
    field = "f " * 5_000
    response = httpx.post(f"{served.url}/api/carts", json={field: 1}, timeout=10)
    assert response.status_code == 422
    (problem,) = response.json()["error"]["fields"]
    assert problem["field"] == field[:64] + "…"


# ------------------------------------------------------------------ client gone mid-body


def test_a_client_gone_mid_body_is_one_info_line(served: Served) -> None:
    request_id = f"gone-{uuid.uuid4().hex}"
    with connect(served.port) as sock:
        # Expect: 100-continue makes the server say when the app starts reading the body, so
        # the client leaves while the body is awaited, not before the request got that far.
        sock.sendall(
            b"POST /api/carts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: " + request_id.encode() + b"\r\nContent-Length: 1000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = sock.recv(1024)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        sock.sendall(b"0123456789")
    wait_until(lambda: request_id in served.log_text(), what=lambda: "no log line for the request")
    # A request on another connection, logged after ours: the server's one thread has finished
    # with ours by then, so anything else it would log of it (a traceback) is written too.
    marker = f"marker-{uuid.uuid4().hex}"
    assert httpx.get(f"{served.url}/healthz", headers={"X-Request-ID": marker}).status_code == 200
    wait_until(lambda: marker in served.log_text())
    text = served.log_text()
    lines = [line for line in text.splitlines() if request_id in line]
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "info"
    assert record["event"] == "http_request"
    assert record["status"] == 499
    assert "Traceback" not in text
    assert "ClientDisconnect" not in text
    assert '"status": 500' not in text
    # And the server serves on.
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


# ------------------------------------------------------------------ database URL secrets


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:s3cretpw@127.0.0.1:{port}/db",
        "postgresql://user:s3cretpw@[bad/db",
        "postgresql://user:s3cret%pw@127.0.0.1:{port}/db",
        "postgresql://user@127.0.0.1:{port}/db?password=s3cretpw&bogus=1",
        "postgresql://user:s3cretpw@127.0.0.1:{port}/db%",
        "host=127.0.0.1 port={port} password=s3cretpw bogus=1",
    ],
)
def test_a_bad_database_url_never_prints_its_password(tmp_path: Path, url: str) -> None:
    result = run_ledger_within(
        60, tmp_path, "serve", LEDGER_DATABASE_URL=url.format(port=free_port())
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "database" in lines[0].lower() or "LEDGER_DATABASE_URL" in lines[0]
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
