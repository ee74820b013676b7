"""A real uvicorn server on a background thread (the tests, local stand-ins), with the bounds
every ledger server runs with (`web.bounded_http`)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from web.bounded_http import server_options


class RunningServer:
    """A uvicorn server listening in a daemon thread. Use `.url`; call `.stop()` when done."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to shut down and wait for its thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer(url={self.url!r}, running={self.running})"


def run_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
    log_level: str = "warning",
    **config: Any,
) -> RunningServer:
    """Start `app` (any ASGI app) in uvicorn on a daemon thread and wait until it listens.

    `port=0` picks a free ephemeral port; the chosen one is in `.port` / `.url`.
    Extra keyword arguments go to `uvicorn.Config` (e.g. `lifespan="off"`).
    Raises RuntimeError if the server does not come up (port taken, lifespan startup failed...).
    """
    config.setdefault("access_log", False)
    for option, value in server_options().items():
        config.setdefault(option, value)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level, **config)
    server = uvicorn.Server(uv_config)
    failure: list[BaseException] = []

    def _run() -> None:
        try:
            server.run()
        except BaseException as exc:  # SystemExit from uvicorn on bind failure, too
            failure.append(exc)

    thread = threading.Thread(target=_run, name=f"uvicorn-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            detail = f": {failure[0]!r}" if failure else ""
            raise RuntimeError(f"uvicorn server on {host}:{port} failed to start{detail}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(
                f"uvicorn server on {host}:{port} did not start in {startup_timeout}s"
            )
        time.sleep(0.01)
    bound_port = port
    for srv in server.servers:
        for sock in srv.sockets:
            bound_port = int(sock.getsockname()[1])
            break
        break
    return RunningServer(server, thread, host, bound_port)
