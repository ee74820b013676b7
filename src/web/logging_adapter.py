"""The one place the ledger sets a private name of the standard library's `logging`.

Checked against CPython 3.11 (its `logging` module; tests/test_logging_adapter.py pins it).

`logging._srcfile`
    Every log record would otherwise carry the caller's file, line and function, found by
    walking the stack on every line logged; no line the ledger writes shows them. Setting
    `_srcfile` to None is how logging turns that off: the logging docs' "Optimization" section
    names exactly this, and the module's own comment says it "will prevent findCaller() from
    being called". No public switch does the same.
"""

from __future__ import annotations

import logging
import os

# What logging itself sets `_srcfile` to on import: its own source file, whose frames the
# caller lookup skips.
_LOGGING_SOURCE = os.path.normcase(logging.addLevelName.__code__.co_filename)


def find_callers(enabled: bool) -> None:
    """Sets whether log records carry the file, line and function that logged them."""
    logging._srcfile = _LOGGING_SOURCE if enabled else None


def callers_found() -> bool:
    """Whether log records carry the file, line and function that logged them."""
    return logging._srcfile is not None
