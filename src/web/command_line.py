"""What the `ledger` commands share: settings from the environment, the store they work on,
and their lines for people on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import TypeAlias

from pydantic import ValidationError

from ledger.settings import Settings
from ledger.storage import Database, resolve_database

# What `add_subparsers()` returns, to which each group of commands adds its own: argparse gives
# the type no public name, so its private one is written here alone.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# Progress lines on stderr at most this often (seconds).
PROGRESS_EVERY = 2.0


class ConfigurationError(Exception):
    """Bad configuration: reported as one line on stderr, never a traceback."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'configuration'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise ConfigurationError(problems.replace("Value error, ", "")) from None


def open_database(settings: Settings | None = None) -> Database:
    """The configured store (the embedded one when none is), checked to answer."""
    settings = settings or load_settings()
    database = resolve_database(settings.database_url, settings.data_dir)
    database.check()
    return database


def say(line: str) -> None:
    """A line for the person at the terminal (stdout stays for what scripts read)."""
    print(line, file=sys.stderr, flush=True)
