"""Prometheus metrics the service exports on /metrics.

Two registries make up a scrape: the process's default one (counters and histograms bumped
where things happen, here and in `ledger.metrics`), and one per app whose `LedgerCollector`
reads its figures at scrape time from the app's own database and ledger (several apps may
share a process, as in the tests, so those figures cannot live in the global registry).

Several processes serving one port (`ledger serve --workers N`, N > 1) are one service, and a
scrape goes to whichever of them accepts it: there the counters and histograms are in
prometheus-client's multiprocess mode, its documented way. The parent gives its children a
directory of their own in `PROMETHEUS_MULTIPROC_DIR` (`web.serve_processes`); every process
keeps its values in files there, and a scrape adds up the files of all of them
(`MultiProcessCollector`) instead of reading its default registry. The figures the
`LedgerCollector` reads from the database (lag, backlog) are the service's whichever process
reads them, so they are given once, as they are. The version conflicts, which each app counts
in its memory, come from a multiprocess counter then (`ledger.metrics.VERSION_CONFLICTS`). The
default registry's process and Python figures (`process_*`, `python_*`) describe one process
and are left out then (the library's collectors of them do not add up across processes).
A gauge added to the default registry must say how processes combine
(`Gauge(..., multiprocess_mode="livesum")`, say): its default, `all`, gives one series per pid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.routing import Mount
from starlette.types import Scope

from ledger.application import Ledger
from ledger.domain.vocabulary import RefundStatus
from ledger.metrics import REFUNDS
from ledger.storage import StoreUnavailable
from projections.base import Projection
from projections.store import Progress, ReadStore
from side_effects.base import SideEffect
from web.serve_processes import MULTIPROCESS_DIR_VARIABLE
from web.store_calls import StoreBreaker
from workers import Processor

logger = logging.getLogger(__name__)

# How long a scrape waits for a database connection before it leaves the figures out.
SCRAPE_CONNECTION_TIMEOUT = 2.0

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

HTTP_LATENCY = Histogram(
    "ledger_http_request_seconds",
    "Time to answer an HTTP request, by route template (`unmatched`: no route), method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Every outcome a refund step is counted under (ledger.refunds), at 0 from the start: a series
# that exists before its first increment lets `rate()` and alerts see that first one.
for _outcome in RefundStatus:
    REFUNDS.labels(_outcome.value)

UNMATCHED = "unmatched"
# Methods labelled by name; any other (a client may send any token) is `other`, so that no
# client can grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope, root_path: str) -> str:
    """The path template of the route that answered (`/api/carts/{cart_id}`), never the raw
    path, whose ids would make a series each; `root_path`: the scope's before routing.

    The router leaves the route in `scope["route"]`; a mounted app's router replaces it with its
    own, and the mount's prefix is then in `root_path` (our mounts have no path parameters, so
    the prefix is a constant)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    prefix = str(scope.get("root_path", ""))[len(root_path) :]
    if isinstance(route, Mount):  # static files, or no route of the mounted app matched
        return f"{prefix}/{{path}}"
    return prefix + path


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


class LedgerCollector(Collector):
    """Figures read when scraped: how far each read model is behind the log, each side
    effect's backlog, and the ledger's version conflicts. A database that does not answer
    leaves the database's figures out of the scrape (`/readyz` says it is down) instead of
    failing it."""

    def __init__(
        self,
        ledger: Ledger,
        read_store: ReadStore,
        breaker: StoreBreaker,
        processors: Sequence[Processor],
        *,
        version_conflicts: bool = True,
    ) -> None:
        """`version_conflicts`: whether to give this ledger's own count (not when the
        multiprocess files give the service's)."""
        self.ledger = ledger
        self.version_conflicts = version_conflicts
        self.read_store = read_store
        self.breaker = breaker
        # As the runner tells them apart: a read model first (it has `name` and `topics` too).
        self.read_models = [p.name for p in processors if isinstance(p, Projection)]
        self.side_effects = {
            p.name: tuple(p.topics)
            for p in processors
            if not isinstance(p, Projection) and isinstance(p, SideEffect)
        }

    def describe(self) -> Iterator[Metric]:
        """The families without values, so that registering never queries the database."""
        yield from self._families(None, None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._progress(), datetime.now(UTC))

    def _families(self, progress: Progress | None, now: datetime | None) -> Iterator[Metric]:
        """With `now`, a scrape's families (the database's left out when `progress` is None);
        without, the families `describe` announces, with no samples."""
        if self.version_conflicts:
            yield CounterMetricFamily(
                "ledger_version_conflicts",
                "Decisions decided again because another writer saved first (optimistic "
                "concurrency); near zero while writers take their locks",
                value=self.ledger.version_conflicts if now is not None else None,
            )
        if now is not None and progress is None:
            return
        lag = GaugeMetricFamily(
            "ledger_projection_lag_seconds",
            "Age of the oldest event a read model has not applied yet (0: caught up)",
            labels=["read_model"],
        )
        backlog = GaugeMetricFamily(
            "ledger_worker_backlog_events",
            "Events a side-effect worker still has to handle: those after its position, plus "
            "the failed ones waiting in its retry schedule (ledger_worker_retry_items)",
            labels=["worker"],
        )
        retry_items = GaugeMetricFamily(
            "ledger_worker_retry_items",
            "Failed events waiting in a side-effect worker's retry schedule",
            labels=["worker"],
        )
        if progress is not None and now is not None:
            for name in self.read_models:
                oldest = progress.oldest_unapplied.get(name)
                age = 0.0 if oldest is None else (now - oldest).total_seconds()
                lag.add_metric([name], max(0.0, age))  # clocks of two hosts may disagree
            for name in self.side_effects:
                unhandled = progress.unhandled.get(name, 0)
                retrying = progress.retrying.get(name, 0)
                backlog.add_metric([name], unhandled + retrying)
                retry_items.add_metric([name], retrying)
        yield from (lag, backlog, retry_items)

    def _progress(self) -> Progress | None:
        if self.breaker.open and self.breaker.is_down():
            return None  # known to be down: no scrape waits for a connection that fails
        try:
            return self.read_store.progress(
                self.read_models, self.side_effects, timeout=SCRAPE_CONNECTION_TIMEOUT
            )
        except (StoreUnavailable, psycopg.Error) as error:
            self.breaker.report_failure()
            logger.warning("metrics: the database's figures are left out (%s)", error)
        except Exception:  # the scrape answers without these figures, whatever went wrong
            logger.exception("metrics: the database's figures are left out")
        return None


def multiprocess_dir() -> str | None:
    """The directory of the processes' values when this process is one of several serving
    one port (prometheus-client is then in multiprocess mode), else None."""
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


def app_registry(
    ledger: Ledger, read_store: ReadStore, breaker: StoreBreaker, processors: Sequence[Processor]
) -> CollectorRegistry:
    """A registry of one app's scrape-time figures (see the module's docstring); in
    multiprocess mode, with every process's counters and histograms too."""
    registry = CollectorRegistry()
    directory = multiprocess_dir()
    if directory is not None:
        MultiProcessCollector(registry, path=directory)
    registry.register(
        LedgerCollector(
            ledger, read_store, breaker, processors, version_conflicts=directory is None
        )
    )
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text of the service's metrics: the process's and the app's figures, or
    in multiprocess mode the app's registry alone, which adds up every process's (blocking: the
    figures query the database)."""
    if multiprocess_dir() is not None:
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(registry)
