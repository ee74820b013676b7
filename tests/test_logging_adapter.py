"""Pins what `web.logging_adapter` relies on in the standard library's `logging` (checked
against CPython 3.11): an upgrade that changes it fails here."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from web.logging_adapter import callers_found, find_callers


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Kept]:
    handler = Kept()
    logger = logging.getLogger("tests.logging_adapter")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    was = callers_found()
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        find_callers(was)


def log_here() -> None:
    logging.getLogger("tests.logging_adapter").info("hello")


def test_records_carry_their_caller_only_while_callers_are_found(kept: Kept) -> None:
    find_callers(True)
    assert callers_found()
    log_here()
    find_callers(False)
    assert not callers_found()
    log_here()
    found, skipped = kept.records
    assert (found.pathname, found.funcName) == (__file__, "log_here")
    assert found.lineno > 0
    assert (skipped.pathname, skipped.lineno, skipped.funcName) == (
        "(unknown file)",
        0,
        "(unknown function)",
    )
