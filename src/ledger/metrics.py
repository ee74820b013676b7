"""Counters of the money paths, exported on /metrics (the process's default registry)."""

from __future__ import annotations

from prometheus_client import Counter

REFUNDS = Counter(
    "ledger_refunds_total",
    "Refunds of orders by outcome: pending (Stripe took it), succeeded, failed (a person acts)",
    ["outcome"],
)
OUTSIDE_REFUNDS = Counter(
    "ledger_outside_refunds_total",
    "Refunds of the ledger's payments made outside it (Stripe's Dashboard), by status",
    ["status"],
)
DISPUTES = Counter(
    "ledger_disputes_total", "Disputes of the ledger's payments, by status", ["status"]
)
STRIPE_FETCH_FAILURES = Counter(
    "ledger_stripe_fetch_failures_total",
    "Re-fetches from Stripe that failed for a while (answered 5xx so that Stripe retries)",
    ["kind"],
)
