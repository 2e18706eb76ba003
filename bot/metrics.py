"""Prometheus metrics (prometheus_client), served on ``GET /metrics``. Defined once, here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client import metrics as prometheus_metrics
from prometheus_client import values as prometheus_values
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)

# prometheus_client's helpers have no annotations: typed here once
_go_string: Callable[[float], str] = floatToGoString
_check_exemplar: Callable[[dict[str, str]], None] = getattr(prometheus_metrics, "_validate_exemplar")  # noqa: B009

_BOUNDS: dict[tuple[float, ...], list[float]] = {}  # one list of upper bounds per bucket layout


class LeanHistogram(Histogram):
    """A ``Histogram`` whose children cost a third of the memory, with the same samples and exposition.

    A child per (environment, host, operation) is thousands in a fleet: prometheus_client's cost 3.3 KiB
    each (a ``MutexValue`` with a lock and a ``__dict__`` of its own per bucket, and a list of the bounds
    per child), 13 MiB for 2000 hosts (issue 26). Here a child keeps its bucket counts in one list of
    floats and its sum beside it, under one lock, and the children share one list of bounds. In
    prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), whose values live in files,
    it is the plain ``Histogram``."""

    _lean = False

    def _prepare_buckets(self, source_buckets: Sequence[float | str]) -> None:
        super()._prepare_buckets(source_buckets)
        self._upper_bounds = _BOUNDS.setdefault(tuple(self._upper_bounds), self._upper_bounds)

    def _metric_init(self) -> None:
        if prometheus_values.ValueClass is not prometheus_values.MutexValue:
            super()._metric_init()
            return
        self._lean = True
        self._created = time.time()
        self._cells_lock = threading.Lock()
        self._counts = [0.0] * len(self._upper_bounds)
        self._total = 0.0
        self._exemplars: dict[int, Exemplar] | None = None

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        if not self._lean:
            super().observe(amount, exemplar)
            return
        with self._cells_lock:  # a child: always observable (observe on the parent is super()'s, which refuses)
            self._total += amount
            for i, bound in enumerate(self._upper_bounds):
                if amount <= bound:
                    self._counts[i] += 1
                    if exemplar:
                        _check_exemplar(exemplar)
                        if self._exemplars is None:
                            self._exemplars = {}
                        self._exemplars[i] = Exemplar(exemplar, amount, time.time())
                    break

    def _child_samples(self) -> Iterable[Sample]:
        if not self._lean:
            return super()._child_samples()
        with self._cells_lock:
            counts, total, exemplars = list(self._counts), self._total, dict(self._exemplars or {})
        samples = []
        acc = 0.0
        for i, bound in enumerate(self._upper_bounds):
            acc += counts[i]
            samples.append(Sample("_bucket", {"le": _go_string(bound)}, acc, None, exemplars.get(i)))
        samples.append(Sample("_count", {}, acc, None, None))
        if self._upper_bounds[0] >= 0:
            samples.append(Sample("_sum", {}, total, None, None))
        if prometheus_metrics._use_created:
            samples.append(Sample("_created", {}, self._created, None, None))
        return tuple(samples)

COMMANDS = Counter(
    "pgsessions_commands_total", "Slash commands by command name and outcome", ["command", "outcome"], registry=REGISTRY
)
ACK_SECONDS = Histogram(
    "pgsessions_ack_seconds",
    "Time from receiving a Slack request to answering it",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 3, 5),
    registry=REGISTRY,
)
DB_QUERY_SECONDS = LeanHistogram(
    "pgsessions_db_query_seconds",
    "Latency of the bot's database work by environment, host and operation",
    ["env", "host", "op"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
KILL_REQUESTS = Counter(
    "pgsessions_kill_requests_total",
    "Kill requests by action, final state and outcome",
    ["env", "action", "state", "outcome"],
    registry=REGISTRY,
)
REPLAY_LAG_SECONDS = Gauge(
    "pgsessions_replay_lag_seconds", "Replay lag of a standby in seconds (0 when caught up)", ["env", "standby"],
    registry=REGISTRY,
)
REPLAY_LAG_BYTES = Gauge(
    "pgsessions_replay_lag_bytes", "Received but not yet replayed WAL in bytes", ["env", "standby"], registry=REGISTRY
)
CHECK_FAILURES = Counter(
    "pgsessions_check_failures_total", "Failed scheduled checks per host", ["env", "host"], registry=REGISTRY
)
OPEN_INCIDENTS = Gauge("pgsessions_open_incidents", "Open lag incidents", registry=REGISTRY)
DB_UNAVAILABLE = Counter(
    "pgsessions_db_unavailable_total",
    "Times the bot could not reach a monitored server or its query failed (connect/statement timeout, refused, auth)",
    ["env", "host"],
    registry=REGISTRY,
)
SLACK_REQUESTS = Counter(
    "pgsessions_slack_requests_total",
    "Slack requests received over HTTP or Socket Mode by kind and HTTP status answered",
    ["kind", "status"],
    registry=REGISTRY,
)
SLACK_OUTBOX_PENDING = Gauge(
    "pgsessions_slack_outbox_pending",
    "Alert messages and edits kept in the state store, waiting for Slack's Web API to take them",
    registry=REGISTRY,
)
SLACK_OUTBOX = Counter(
    "pgsessions_slack_outbox_total",
    "Outbox calls by op (post, update, thread_reply) and outcome (delivered, retried, failed, superseded)",
    ["op", "outcome"],
    registry=REGISTRY,
)
# The fleet (bot/fleet/): what this replica checks. With the SQLite state store the one replica owns all.
FLEET_OWNED = Gauge(
    "pgsessions_fleet_environments_owned", "Environments whose checks this replica runs now", registry=REGISTRY
)
FLEET_REPLICAS = Gauge(
    "pgsessions_fleet_replicas", "Live replicas on the state store, as this replica saw at its last heartbeat",
    registry=REGISTRY,
)
FLEET_CHECKS = Counter(
    "pgsessions_fleet_checks_total", "Scheduled checks run by this replica, per environment", ["env"],
    registry=REGISTRY,
)
FLEET_CHECKS_PER_SECOND = Gauge(
    "pgsessions_fleet_checks_per_second", "Scheduled checks this replica ran per second (over the last interval)",
    registry=REGISTRY,
)
FLEET_CYCLE_SECONDS = Gauge(
    "pgsessions_fleet_cycle_seconds",
    "Time this replica took for its last round of checks (first start to last end of one check interval's burst)",
    registry=REGISTRY,
)
FLEET_HANDOVERS = Counter(
    "pgsessions_fleet_lease_handovers_total",
    "Environment leases that changed hands at this replica: gained, released (handed over) or lost (taken)",
    ["direction"],
    registry=REGISTRY,
)
STATE_STORE_UP = Gauge(
    "pgsessions_state_store_up",
    "1 while the bot's state store answers and nothing waits in memory for it, else 0 (bot.state.health)",
    registry=REGISTRY,
)
BUILD_INFO = Info("pgsessions_build", "Version of the running bot", registry=REGISTRY)


def _version() -> str:
    try:
        return version("pgsessions")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "unknown"


BUILD_INFO.info({"version": _version()})


def wsgi_app() -> Callable[..., Iterable[bytes]]:
    return make_wsgi_app(REGISTRY)
