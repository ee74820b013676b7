"""Prometheus metrics the service exports on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOK_OUTCOMES = Counter(
    "ledger_webhook_events_total", "Stripe webhook deliveries by outcome", ["outcome"]
)
WEBHOOK_LATENCY = Histogram(
    "ledger_webhook_seconds",
    "Time to answer a Stripe webhook delivery",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ANOMALIES = Counter(
    "ledger_anomalies_total",
    "Webhook events the ledger recorded nothing for because something was off",
    ["kind"],
)
