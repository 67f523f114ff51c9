"""What a node's and the coordinator's ``/metrics`` say, and how each party builds them.

Request metrics come from :class:`fedmatch.grpcutil.metrics.MetricsInterceptor`. State
gauges are read at scrape time from the live service (no counter is kept inside service
code): register size, audit log entries and bytes, last checkpoint (size and age), live key
epochs, search workers, the register's rows that do not reconcile with the audit log, and
each requesting state's quota use (charged today and in all, from the quota table; refused,
as the replay guard that enforces the quotas counts them) with the quotas' limits. The
coordinator also counts each fan-out call per node and outcome, from the responses it
returns (their ``nodes`` results).

Label values come only from closed sets: the party's role, member-state codes of the
federation (a node's own, the coordinator's configured nodes, a requesting state of
:data:`~fedmatch.domain.FEDERATION_STATES`; anything else is ``other``), the node outcome
enum, the kinds of reconciliation mismatch, and the method names of the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fedmatch.audit.log import CHECKPOINT_FILE, LOG_FILE, AuditLog
from fedmatch.audit.note import Checkpoint, Note
from fedmatch.domain import FEDERATION_STATES
from fedmatch.grpcutil.metrics import MetricsInterceptor, RpcMetrics
from fedmatch.rpc.v1 import coordinator_pb2

__all__ = [
    "FANOUT_OUTCOMES",
    "PartyMetrics",
    "coordinator_metrics",
    "node_metrics",
]

log = logging.getLogger("fedmatch.metrics")

FANOUT_OUTCOMES = tuple(
    name.removeprefix("NODE_OUTCOME_").lower() for name in coordinator_pb2.NodeOutcome.keys()
)

# Per-node fan-out calls: a node answers within milliseconds (hit details) to its deadline.
_FANOUT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class _HasLog(Protocol):
    @property
    def log(self) -> AuditLog: ...


class _Keys(Protocol):
    def live_count(self) -> int: ...


@dataclass
class PartyMetrics:
    """A party's registry and the interceptor that feeds it (put it first on the server)."""

    registry: CollectorRegistry
    interceptor: MetricsInterceptor


def _gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


class _StateCollector(Collector):
    """Gauges read from live state at each scrape; a reading that fails (e.g. the log is
    being closed at shutdown) is left out of that scrape instead of failing it."""

    def __init__(
        self, readings: Sequence[tuple[str, str, Callable[[], float]]], info: dict[str, str]
    ):
        self._readings = readings
        self._info = info

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield _gauge("fedmatch_party_info", "The party this endpoint belongs to.", 1, **self._info)
        for name, doc, read in self._readings:
            try:
                value = float(read())
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one gauge
                log.debug("metric %s not read: %s", name, type(exc).__name__)
                continue
            yield _gauge(name, doc, value)


def _audit_readings(audit: _HasLog) -> list[tuple[str, str, Callable[[], float]]]:
    def log_bytes() -> float:
        return (audit.log.directory / LOG_FILE).stat().st_size

    def checkpoint_size() -> float:
        note = (audit.log.directory / CHECKPOINT_FILE).read_bytes()
        return Checkpoint.parse(Note.parse(note).body).size

    def checkpoint_age() -> float:
        # The checkpoint file is replaced whenever one is published for a grown log.
        return max(0.0, time.time() - (audit.log.directory / CHECKPOINT_FILE).stat().st_mtime)

    return [
        ("fedmatch_audit_log_entries", "Entries durably in the audit log.", lambda: audit.log.size),
        ("fedmatch_audit_log_bytes", "Size of the audit log file in bytes.", log_bytes),
        (
            "fedmatch_audit_checkpoint_entries",
            "Entries covered by the last published checkpoint.",
            checkpoint_size,
        ),
        (
            "fedmatch_audit_checkpoint_age_seconds",
            "Seconds since the last checkpoint was published (one is published only when "
            "the log grew).",
            checkpoint_age,
        ),
    ]


class _NodeLike(Protocol):
    @property
    def member_state(self) -> str: ...
    @property
    def audit(self) -> _HasLog: ...
    @property
    def keys(self) -> _Keys: ...
    @property
    def engine(self) -> Any: ...
    @property
    def reconciler(self) -> Any: ...  # node.reconcile.Reconciler
    @property
    def gate(self) -> Any: ...  # its replay guard keeps the quotas
    @property
    def policy(self) -> Any: ...  # the quotas' limits
    def record_count(self) -> int: ...


# The kinds of row that do not reconcile (fedmatch/audit/register.py, Reconciliation).
RECONCILIATION_PROBLEMS = ("unlogged", "erased_present", "missing", "unaccounted")


def _state_label(state: str) -> str:
    """A requesting state as a label value: a federation code, anything else ``other``."""
    return state if state in FEDERATION_STATES else "other"


class _NodeCollector(Collector):
    """The node's labelled readings at each scrape: its register's reconciliation with its
    audit log (per kind of mismatch), and each requesting state's quota use (label: the
    state's code, from the closed set of federation states)."""

    def __init__(self, service: _NodeLike) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            mismatches = self._service.reconciler.mismatches()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one reading
            log.debug("reconciliation not read: %s", type(exc).__name__)
        else:
            family = GaugeMetricFamily(
                "fedmatch_register_unreconciled_records",
                "Rows of the register that do not reconcile with the audit log, by problem: "
                "unlogged (no enrolment entry), erased_present (its erasure is logged), "
                "missing (logged, not in the register), unaccounted (beyond the log's count).",
                labels=["problem"],
            )
            for problem in RECONCILIATION_PROBLEMS:
                family.add_metric([problem], mismatches.get(problem, 0))
            yield family
        try:
            today, total, refused = self._service.gate.replay.quota_use()
            policy = self._service.policy
        except Exception as exc:  # noqa: BLE001
            log.debug("quotas not read: %s", type(exc).__name__)
            return
        yield _gauge(
            "fedmatch_quota_daily_limit",
            "Searches and resolves a requesting state may make at this node per UTC day.",
            policy.daily_quota,
        )
        yield _gauge(
            "fedmatch_quota_per_minute_limit",
            "Searches and resolves a requesting state may make at this node per minute.",
            policy.requests_per_minute,
        )
        for name, doc, values, cls in (
            (
                "fedmatch_quota_used_today",
                "Searches and resolves charged to the requesting state today (UTC).",
                today,
                GaugeMetricFamily,
            ),
            (
                "fedmatch_quota_charged",
                "Searches and resolves charged to the requesting state (every day kept).",
                total,
                CounterMetricFamily,
            ),
            (
                "fedmatch_quota_refused",
                "Searches and resolves refused by the rate limit or the daily quota, per "
                "requesting state, since the node started.",
                refused,
                CounterMetricFamily,
            ),
        ):
            summed: dict[str, float] = {}
            for state, value in values.items():
                label = _state_label(state)
                summed[label] = summed.get(label, 0) + value
            metric = cls(name, doc, labels=["member_state"])
            for label, value in sorted(summed.items()):
                metric.add_metric([label], value)
            yield metric


def node_metrics(service: _NodeLike) -> PartyMetrics:
    """The metrics of a node serving ``service`` (a :class:`node.service.NodeService`)."""
    registry = CollectorRegistry(auto_describe=True)
    readings = [
        ("fedmatch_register_records", "Records in the register.", service.record_count),
        *_audit_readings(service.audit),
        (
            "fedmatch_key_epochs_live",
            "Requester key registrations (key epochs) currently live.",
            service.keys.live_count,
        ),
        (
            "fedmatch_search_workers",
            "Search worker processes of the engine.",
            lambda: getattr(service.engine, "workers", 1),
        ),
    ]
    registry.register(
        _StateCollector(readings, {"role": "node", "member_state": service.member_state})
    )
    registry.register(_NodeCollector(service))
    return PartyMetrics(registry, MetricsInterceptor(RpcMetrics(registry)))


class _CoordinatorLike(Protocol):
    @property
    def audit(self) -> _HasLog: ...
    def member_states(self) -> Iterable[str]: ...


class FanoutMetrics:
    """Per-node outcomes of the coordinator's fan-outs, counted from its responses."""

    def __init__(self, registry: CollectorRegistry, states: Iterable[str]) -> None:
        self._states = frozenset(states)
        self.calls = Counter(
            "fedmatch_fanout_calls",
            "Calls the coordinator made to a node, by RPC, node and outcome.",
            ["grpc_method", "member_state", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "fedmatch_fanout_node_seconds",
            "Duration of the coordinator's calls to a node.",
            ["member_state"],
            buckets=_FANOUT_BUCKETS,
            registry=registry,
        )

    def observe(self, method: str, response: Any) -> None:
        results = getattr(response, "nodes", None)
        if results is None:
            return
        name = method.rpartition("/")[2]
        for result in results:
            if not isinstance(result, coordinator_pb2.NodeResult):
                return
            state = result.member_state if result.member_state in self._states else "other"
            try:
                outcome = coordinator_pb2.NodeOutcome.Name(result.outcome)
            except ValueError:
                outcome = "NODE_OUTCOME_UNSPECIFIED"
            outcome = outcome.removeprefix("NODE_OUTCOME_").lower()
            self.calls.labels(name, state, outcome).inc()
            self.latency.labels(state).observe(max(0, result.elapsed_ms) / 1000.0)


def _unhealthy_nodes(service: object) -> int:
    checks = getattr(service, "node_checks", None)
    return int(checks.unhealthy()) if checks is not None else 0


def coordinator_metrics(service: _CoordinatorLike) -> PartyMetrics:
    """The metrics of the coordinator serving ``service``."""
    registry = CollectorRegistry(auto_describe=True)
    states = list(service.member_states())
    readings = [
        *_audit_readings(service.audit),
        ("fedmatch_federation_nodes", "Nodes in the coordinator's registry.", lambda: len(states)),
        (
            "fedmatch_federation_nodes_unhealthy",
            "Nodes the coordinator's last check found unreachable or not cosigning with the "
            "key its config names for them.",
            lambda: _unhealthy_nodes(service),
        ),
    ]
    registry.register(_StateCollector(readings, {"role": "coordinator", "member_state": "EU"}))
    fanout = FanoutMetrics(registry, states)
    return PartyMetrics(registry, MetricsInterceptor(RpcMetrics(registry), fanout.observe))
