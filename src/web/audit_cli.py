"""`ledger audit ...`: the auditors' commands, for people without HTTP access."""

from __future__ import annotations

import argparse


def add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="read, replay and verify the event log")
    actions = audit.add_subparsers(dest="action", required=True)
    del actions  # each audit command adds itself below
