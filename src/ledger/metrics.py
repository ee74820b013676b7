"""Counters of the money paths, exported on /metrics (the process's default registry, or with
`ledger serve --workers N` every process's files: `web.metrics`)."""

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
EMAILS = Counter(
    "ledger_emails_total",
    "Customer e-mails by kind (confirmation, refund) and outcome: sent, logged (no SMTP"
    " configured), deferred (failed for a while: retried), refused (the server refused the"
    " recipient for good: skipped), no_address or no_order (nothing to send to: skipped)",
    ["kind", "outcome"],
)
AUTHORIZATIONS = Counter(
    "ledger_authorizations_total",
    "Manual capture: authorized payments by outcome: captured, capture_failed (Stripe refused"
    " the capture for good: the order's payment failed), released (cancelled: the order could"
    " not be served), release_failed (Stripe refused to cancel: it was captured elsewhere, and"
    " is refunded)",
    ["outcome"],
)

# Decisions decided again after a version conflict. In no registry: one process alone exports
# each app's own count (`DecidingApplication.version_conflicts`, several apps may share a
# process); processes serving one port together export the sum of this counter's files, the
# service's (multiprocess mode, `web.metrics`).
VERSION_CONFLICTS = Counter(
    "ledger_version_conflicts",
    "Decisions decided again because another writer saved first (optimistic concurrency); near"
    " zero while writers take their locks",
    registry=None,
)
