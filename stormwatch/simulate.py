"""Synthetic alert storms: realistic, deterministic for a seed, in every input format.

A scenario is a set of alerts, each with firing episodes, owned by rule groups that are evaluated
the way Prometheus evaluates them: at every evaluation every firing alert is sent again (with
``endsAt`` four intervals ahead), a resolved alert is sent with ``endsAt`` = the evaluation that saw
it end and re-sent for up to 15 minutes. That notification stream is then encoded as the records a
real sender would produce (Prometheus pushes, Alertmanager webhooks with its own grouping and
timing, PagerDuty events, CloudEvents, native documents), so a replay exercises the adapters exactly
as production traffic does. No I/O here: ``stormwatch simulate``/``publish`` (stormwatch.commands.
simulate) do the files and Kafka. The scenarios and the file format are documented in
docs/simulate.md.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
import xxhash

from stormwatch.schemas.adapters.detect import FORMAT_HEADER, detect_format
from stormwatch.schemas.alert import InputFormat
from stormwatch.schemas.severity import normalize_severity
from stormwatch.streams.core.routing import Router
from stormwatch.streams.core.rules import RulesConfig

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_DURATION_MS",
    "DEFAULT_EVAL_MS",
    "FORMATS",
    "MIN_EVALUATIONS",
    "MIN_SIZE",
    "SCENARIOS",
    "SIM_EPOCH_MS",
    "FileFormatError",
    "FileRecord",
    "SimAlert",
    "SimRecord",
    "SimSummary",
    "Simulation",
    "SimulationError",
    "count_alerts",
    "decode_line",
    "encode_line",
    "generate",
    "shift_times",
]

FORMATS: tuple[str, ...] = tuple(f.value for f in InputFormat)
SCENARIOS = ("node-failure", "db-cascade", "flapping", "bad-deploy", "steady", "mixed", "topology-cascade")
MIN_SIZE = {
    "node-failure": 1,
    "db-cascade": 2,
    "flapping": 2,
    "bad-deploy": 2,
    "steady": 1,
    "mixed": 9,
    "topology-cascade": 2,
}

# Alerts per record when --batch is not given. Prometheus pushes up to 256 alerts per request;
# PagerDuty and CloudEvents senders usually send one event per request; None = a whole
# Alertmanager notification group in one webhook, as Alertmanager sends it.
DEFAULT_BATCH: dict[str, int | None] = {
    "prometheus": 256,
    "alertmanager": None,
    "pagerduty": 1,
    "cloudevents": 1,
    "native": 256,
}

SIM_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: default time origin, so a seed gives fixed bytes
DEFAULT_DURATION_MS = 10 * 60_000
DEFAULT_EVAL_MS = 30_000
MIN_EVALUATIONS = 10  # a storm needs room to build up, hold and resolve: duration >= 10 evaluations

# Prometheus: firing alerts are sent with endsAt = evaluation + 4 x interval; resolved alerts are
# kept and re-sent for 15 minutes (its resolvedRetention).
ENDS_AT_INTERVALS = 4
RESOLVED_RETENTION_MS = 15 * 60_000
# Flapping alerts are evaluated at most this far apart, so they can flip every few seconds.
FLAP_EVAL_MS = 5_000
# Alertmanager's notification timing and grouping (group_interval shortened from its 5m default so
# a ten-minute storm shows its updates; repeat_interval is its default).
AM_GROUP_WAIT_MS = 30_000
AM_GROUP_INTERVAL_MS = 60_000
AM_REPEAT_INTERVAL_MS = 4 * 3600_000
AM_GROUP_BY = ("alertname", "cluster", "service")
AM_RECEIVER = "stormwatch"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME = b"0001-01-01T00:00:00Z"


class SimulationError(ValueError):
    """Parameters no scenario can be built from; the message says what is allowed."""


class FileFormatError(ValueError):
    """A line of a simulation file that does not follow docs/simulate.md ("File format")."""


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One raw Kafka record: ``t_ms`` after the start, headers, value bytes, and its alert count."""

    t_ms: int
    headers: dict[str, str]
    value: bytes
    alerts: int = 1
    key: bytes | None = None


@dataclass(slots=True)
class SimAlert:
    """A distinct alert (one label set) and its firing episodes ``[start, end)`` in ms after t=0.

    Episodes are aligned to the evaluations of the alert's rule group: ``start`` is the evaluation
    that first saw it firing, ``end`` the one that first saw it resolved.
    """

    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str
    source: str
    group: int
    episodes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.labels["alertname"]


@dataclass(slots=True)
class SimSummary:
    """What a simulation holds; the counters are complete once its records are exhausted.

    A *notification* is one alert inside a record; a *re-send* repeats the status the alert had in
    its previous notification (what deduplication should drop).
    """

    scenario: str
    format: str
    seed: int
    duration_ms: int
    eval_interval_ms: int
    start_ms: int
    distinct_alerts: int
    records: int = 0
    notifications: int = 0
    resends: int = 0
    resolutions: int = 0
    bytes: int = 0
    last_t_ms: int = 0

    @property
    def resend_ratio(self) -> float:
        return self.resends / self.notifications if self.notifications else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "format": self.format,
            "seed": self.seed,
            "duration_ms": self.duration_ms,
            "eval_interval_ms": self.eval_interval_ms,
            "start_ms": self.start_ms,
            "distinct_alerts": self.distinct_alerts,
            "records": self.records,
            "notifications": self.notifications,
            "resends": self.resends,
            "resend_ratio": round(self.resend_ratio, 4),
            "resolutions": self.resolutions,
            "bytes": self.bytes,
            "last_t_ms": self.last_t_ms,
        }


# ---------------------------------------------------------------------------------------- plans


@dataclass(slots=True)
class _RuleGroup:
    """A Prometheus rule group: evaluated every ``eval_ms`` at ``phase + k * eval_ms``."""

    index: int
    name: str
    eval_ms: int
    phase_ms: int
    alerts: list[int] = field(default_factory=list)

    def align(self, t: float) -> int:
        """The first evaluation at or after ``t``."""
        if t <= self.phase_ms:
            return self.phase_ms
        return self.phase_ms + math.ceil((t - self.phase_ms) / self.eval_ms) * self.eval_ms


class _Plan:
    """The alerts and rule groups of a scenario, before any encoding."""

    def __init__(self, duration_ms: int, eval_ms: int) -> None:
        self.duration = duration_ms
        self.eval = eval_ms
        self.groups: list[_RuleGroup] = []
        self.alerts: list[SimAlert] = []
        self._identities: set[frozenset[tuple[str, str]]] = set()

    def finish(self) -> None:
        """Drop what only building needed (the duplicate check holds a set per alert)."""
        self._identities.clear()

    @property
    def unit(self) -> float:
        """A tenth of the duration: scenarios place their phases in these units (>= one evaluation)."""
        return self.duration / 10

    @property
    def step(self) -> float:
        """A few seconds: the delay between cascading effects, scaled down for fast evaluations."""
        return min(4_000.0, self.eval / 4)

    def group(self, name: str, phase_ms: float, eval_ms: int | None = None) -> _RuleGroup:
        every = eval_ms or self.eval
        group = _RuleGroup(len(self.groups), name, every, int(phase_ms) % every)
        self.groups.append(group)
        return group

    def add(
        self,
        group: _RuleGroup,
        labels: dict[str, str],
        annotations: dict[str, str],
        episodes: list[tuple[float, float]],
        *,
        expr: str,
    ) -> SimAlert:
        identity = frozenset(labels.items())
        if identity in self._identities:
            raise AssertionError(f"scenario produced the same alert twice: {labels}")
        self._identities.add(identity)
        aligned: list[tuple[int, int]] = []
        for on, off in sorted(episodes):
            # whole milliseconds, floored like the group's phase, so an onset that names a tick is one
            start = group.align(int(on))
            end = max(group.align(int(off)), start + group.eval_ms)
            if aligned and start <= aligned[-1][1]:
                aligned[-1] = (aligned[-1][0], max(end, aligned[-1][1]))
            else:
                aligned.append((start, end))
        if not aligned or aligned[0][0] >= self.duration or aligned[-1][1] >= self.duration:
            raise AssertionError(f"scenario episode outside the duration for {labels}: {aligned}")
        cluster = labels.get("cluster", "default")
        alert = SimAlert(
            labels=labels,
            annotations=annotations,
            generator_url=(
                f"http://prometheus-k8s.{cluster}.example.com:9090/graph?g0.expr={quote(expr, safe='')}"
                "&g0.tab=1"
            ),
            source=f"prometheus/{cluster}",
            group=group.index,
            episodes=aligned,
        )
        group.alerts.append(len(self.alerts))
        self.alerts.append(alert)
        return alert


# ------------------------------------------------------------------------------------ scenarios

_CLUSTERS = ("prod-eu-1", "prod-us-1", "prod-ap-1", "prod-eu-2", "prod-us-2")
_REGIONS = {
    "prod-eu-1": "eu-west-1",
    "prod-us-1": "us-east-1",
    "prod-ap-1": "ap-southeast-1",
    "prod-eu-2": "eu-central-1",
    "prod-us-2": "us-west-2",
}
_SERVICES = (
    "checkout",
    "payments",
    "cart",
    "catalog",
    "search",
    "recommendations",
    "shipping",
    "orders",
    "inventory",
    "accounts",
    "auth",
    "notifications",
    "email",
    "frontend",
    "api-gateway",
    "pricing",
    "reviews",
    "ads",
    "billing",
    "ledger",
    "fraud",
    "loyalty",
    "media",
    "profile",
    "sessions",
    "geo",
    "quotes",
    "invoices",
    "reports",
    "analytics",
)
_NAMESPACES = ("shop", "payments", "identity", "platform", "growth", "fulfilment")
_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes
_DB_SERVICES = ("orders-db", "accounts-db", "catalog-db", "payments-db")


def _pod_name(rng: random.Random, workload: str) -> str:
    rs = "".join(rng.choice(_POD_ALPHABET) for _ in range(10))
    suffix = "".join(rng.choice(_POD_ALPHABET) for _ in range(5))
    return f"{workload}-{rs}-{suffix}"


def _ip(rng: random.Random) -> str:
    return f"10.{rng.randrange(0, 256)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"


def _services(rng: random.Random, count: int, exclude: tuple[str, ...] = ()) -> list[str]:
    """``count`` distinct service names; past the pool's size they get a numeric suffix."""
    pool = [s for s in _SERVICES if s not in exclude]
    rng.shuffle(pool)
    names = pool[:count]
    n = 2
    while len(names) < count:
        names.extend(f"{s}-{n}" for s in pool[: count - len(names)])
        n += 1
    return names


def _node_name(rng: random.Random, cluster: str) -> str:
    """A node's name as EKS gives it, in ``cluster``'s region (three draws of ``rng``)."""
    return (
        f"ip-10-{rng.randrange(256)}-{rng.randrange(256)}-{rng.randrange(1, 255)}"
        f".{_REGIONS[cluster]}.compute.internal"
    )


_NODE_DOWN_EXPR = 'up{job="node-exporter"} == 0'


def _node_down(
    cluster: str, node: str, description: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """NodeDown's labels and annotations for ``node`` (its node-exporter stopped answering)."""
    labels = {
        "alertname": "NodeDown",
        "cluster": cluster,
        "instance": f"{node}:9100",
        "job": "node-exporter",
        "node": node,
        "severity": "critical",
    }
    annotations = {"summary": f"Node {node} is unreachable"}
    if description is not None:
        annotations["description"] = description
    annotations["runbook_url"] = "https://runbooks.example.com/node/NodeDown"
    return labels, annotations


def _node_failure(plan: _Plan, rng: random.Random, size: int, cluster: str) -> None:
    """One node dies: NodeDown, then every pod on it goes NotReady; all recover near the end."""
    u, d = plan.unit, plan.duration
    node = _node_name(rng, cluster)
    t_fail = rng.uniform(0, 0.5 * u)
    t_back = 0.75 * d + rng.uniform(0, 0.05 * d)
    node_group = plan.group("node-exporter", rng.uniform(0, plan.eval))
    why = f"node-exporter on {node} has not answered scrapes; the kubelet stopped posting status."
    labels, annotations = _node_down(cluster, node, why)
    plan.add(node_group, labels, annotations, [(t_fail, t_back)], expr=_NODE_DOWN_EXPR)
    remaining = size - 1
    if remaining == 0:
        return
    services = _services(rng, min(16, max(1, math.ceil(remaining / 6))))
    namespace_of = {s: rng.choice(_NAMESPACES) for s in services}
    apps = plan.group("kubernetes-apps", rng.uniform(0, plan.eval))
    targets = plan.group("prometheus-targets", rng.uniform(0, plan.eval))
    grace = min(40_000.0, u)  # the node controller marks pods NotReady after its grace period
    pod_index = 0
    while remaining > 0:
        service = services[pod_index % len(services)]
        pod_index += 1
        namespace = namespace_of[service]
        pod = _pod_name(rng, service)
        onset = t_fail + grace + rng.uniform(0, 0.5 * u)
        recovered = t_back + rng.uniform(0.02 * d, 0.08 * d)
        base = {"cluster": cluster, "namespace": namespace, "node": node, "pod": pod, "service": service}
        kinds: list[tuple[dict[str, str], dict[str, str], str]] = [
            (
                {"alertname": "KubePodNotReady", "job": "kube-state-metrics", "severity": "warning"},
                {
                    "summary": f"Pod {namespace}/{pod} has been in a non-ready state",
                    "runbook_url": "https://runbooks.example.com/kubernetes/KubePodNotReady",
                },
                f'kube_pod_status_ready{{condition="false",pod="{pod}"}} == 1',
            ),
            (
                {
                    "alertname": "KubeContainerWaiting",
                    "container": service,
                    "job": "kube-state-metrics",
                    "severity": "warning",
                },
                {
                    "summary": f"Container {service} in pod {namespace}/{pod} is waiting",
                    "runbook_url": "https://runbooks.example.com/kubernetes/KubeContainerWaiting",
                },
                f'kube_pod_container_status_waiting{{pod="{pod}"}} == 1',
            ),
            (
                {
                    "alertname": "TargetDown",
                    "instance": f"{_ip(rng)}:8080",
                    "job": service,
                    "severity": "critical",
                },
                {
                    "summary": f"Prometheus cannot scrape {service} on pod {pod}",
                    "runbook_url": "https://runbooks.example.com/prometheus/TargetDown",
                },
                f'up{{job="{service}",pod="{pod}"}} == 0',
            ),
        ]
        for extra, texts, expr in kinds:
            if remaining == 0:
                break
            group = apps if extra["alertname"] != "TargetDown" else targets
            plan.add(group, {**base, **extra}, texts, [(onset, recovered)], expr=expr)
            remaining -= 1


def _db_cascade(plan: _Plan, rng: random.Random, size: int, cluster: str, *, catalog: bool = False) -> None:
    """A database goes down; its dependents, then theirs, alert seconds later; recovery in reverse.

    The dependents are random services, each calling a random one of the level above; with
    ``catalog`` they are the services that call the database within 3 hops in the service catalog
    of ``stormwatch.storms`` (which deploy/topology.yaml describes), so a topology links them."""
    d, e, step = plan.duration, plan.eval, plan.step
    db = rng.choice(_DB_SERVICES)
    t_db = rng.uniform(0, 0.5 * plan.unit)
    db_group = plan.group(f"{db}.rules", t_db)
    db_labels = {"cluster": cluster, "namespace": "data", "service": db, "team": "db"}
    roots: list[tuple[dict[str, str], dict[str, str], str]] = [
        (
            {
                **db_labels,
                "alertname": "PostgresqlDown",
                "instance": f"{db}-0:9187",
                "job": "postgres-exporter",
                "pod": f"{db}-0",
                "severity": "critical",
            },
            {
                "summary": f"PostgreSQL primary {db}-0 is down",
                "runbook_url": "https://runbooks.example.com/postgres/PostgresqlDown",
            },
            f'pg_up{{service="{db}"}} == 0',
        )
    ]
    if size >= 8:
        for replica in (1, 2):
            roots.append(
                (
                    {
                        **db_labels,
                        "alertname": "PostgresqlReplicationStopped",
                        "instance": f"{db}-{replica}:9187",
                        "job": "postgres-exporter",
                        "pod": f"{db}-{replica}",
                        "severity": "error",
                    },
                    {
                        "summary": f"Replica {db}-{replica} lost its primary",
                        "runbook_url": "https://runbooks.example.com/postgres/ReplicationStopped",
                    },
                    f'pg_replication_is_replica{{pod="{db}-{replica}"}} == 1 '
                    "and pg_stat_wal_receiver_status == 0",
                )
            )
    remaining = size - len(roots)
    if catalog:
        levels = _catalog_levels(db, max(1, math.ceil(remaining / 2)))
        services = [s for level in levels for s in level]
    else:
        count = min(24, max(1, math.ceil(remaining / 6)))
        services = _services(rng, count)
        depth_count = min(3, count)
        levels = [[] for _ in range(depth_count)]
        for i, service in enumerate(services):
            levels[min(depth_count - 1, i * depth_count // count)].append(service)
    depends_on: dict[str, str] = {}
    onset: dict[str, float] = {}
    groups: dict[str, _RuleGroup] = {}
    previous_onsets = [float(t_db)]
    previous = [db]
    for level in levels:
        for service in level:
            depends_on[service] = rng.choice(_callees(service, previous) if catalog else previous)
            onset[service] = max(previous_onsets) + rng.uniform(step, 2 * step)
            groups[service] = plan.group(f"{service}-slo", onset[service])
        previous_onsets = [onset[s] for s in level]
        previous = level
    # Recovery in reverse order: the deepest level first, the database last, each strictly after
    # the level below it has resolved.
    t_recover = min(0.7 * d, d - 5.5 * e)
    resolved: dict[str, float] = {}
    floor = t_recover
    for level in reversed(levels):
        for service in level:
            resolved[service] = groups[service].align(floor + rng.uniform(0.5 * step, step))
        floor = max(resolved[s] for s in level)
    db_resolved = db_group.align(floor + rng.uniform(0.5 * step, step))
    for labels, texts, expr in roots:  # the primary and its replicas notice at the same evaluation
        plan.add(db_group, labels, texts, [(t_db, db_resolved)], expr=expr)

    severities: dict[str, tuple[str, str]] = {}
    for depth, level in enumerate(levels):
        choices = [("critical", "error"), ("error", "warning"), ("warning", "warning")][depth]
        for service in level:
            severities[service] = choices if rng.random() < 0.75 else (choices[1], choices[0])
    namespace_of = {s: rng.choice(_NAMESPACES) for s in services}
    pod_index = 0
    while remaining > 0:
        service = services[pod_index % len(services)]
        pod_index += 1
        pod = _pod_name(rng, service)
        upstream = depends_on[service]
        base = {
            "cluster": cluster,
            "instance": f"{_ip(rng)}:8080",
            "job": service,
            "namespace": namespace_of[service],
            "pod": pod,
            "service": service,
        }
        error_severity, latency_severity = severities[service]
        kinds = [
            (
                {"alertname": "HighErrorRate", "severity": error_severity},
                {
                    "summary": f"{service}: more than 5% of requests fail",
                    "description": f"Calls from {service} to {upstream} time out.",
                    "runbook_url": "https://runbooks.example.com/slo/HighErrorRate",
                },
                f'sum(rate(http_requests_total{{job="{service}",code=~"5.."}}[5m])) / '
                f'sum(rate(http_requests_total{{job="{service}"}}[5m])) > 0.05',
            ),
            (
                {"alertname": "HighLatency", "severity": latency_severity},
                {
                    "summary": f"{service}: p99 latency above 2s",
                    "description": f"Requests of {service} wait on {upstream}.",
                    "runbook_url": "https://runbooks.example.com/slo/HighLatency",
                },
                f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
                f'{{job="{service}"}}[5m]))) > 2',
            ),
        ]
        for extra, texts, expr in kinds:
            if remaining == 0:
                break
            plan.add(
                groups[service],
                {**base, **extra},
                texts,
                [(onset[service], resolved[service])],
                expr=expr,
            )
            remaining -= 1


def _catalog_levels(db: str, most: int) -> list[list[str]]:
    """The services that call ``db`` within 3 hops in the storms' catalog, level by level, at most
    ``most`` of them (the nearest first)."""
    from stormwatch.storms import dependents  # storms builds on this module: imported when used

    levels: list[list[str]] = []
    for level in dependents(db, 3):
        if most <= 0:
            break
        levels.append(level[:most])
        most -= len(levels[-1])
    return levels


def _callees(service: str, candidates: list[str]) -> list[str]:
    """The ones of ``candidates`` that ``service`` calls in the storms' catalog."""
    from stormwatch.storms import TOPOLOGY

    return [c for c in candidates if c in TOPOLOGY[service].depends_on]


def _topology_cascade(plan: _Plan, rng: random.Random, size: int, cluster: str) -> None:
    """db-cascade along the service catalog: what a topology file links into one incident."""
    _db_cascade(plan, rng, size, cluster, catalog=True)


def _flapping(plan: _Plan, rng: random.Random, size: int, cluster: str) -> None:
    """Alerts on a threshold that flip every few seconds, next to steady ones that just fire."""
    d, u = plan.duration, plan.unit
    flap_every = min(plan.eval, FLAP_EVAL_MS)
    flappers = math.ceil(size / 2)
    flap_group = plan.group("search-latency", rng.uniform(0, flap_every), flap_every)
    steady_group = plan.group("cache.rules", rng.uniform(0, plan.eval))
    flap_end = flap_group.align(0.85 * d) - flap_every  # the last flip leaves a tick to resolve on
    for _ in range(flappers):
        pod = _pod_name(rng, "search")
        episodes: list[tuple[float, float]] = []
        t = flap_group.align(rng.uniform(0, 0.5 * u))
        while t < flap_end:
            end = min(t + rng.randint(1, 3) * flap_every, flap_end)
            episodes.append((t, end))
            t = end + rng.randint(1, 2) * flap_every
        if not episodes:
            episodes.append((flap_group.phase_ms, flap_group.phase_ms + flap_every))
        plan.add(
            flap_group,
            {
                "alertname": "SearchLatencyHigh",
                "cluster": cluster,
                "instance": f"{_ip(rng)}:8080",
                "job": "search",
                "namespace": "shop",
                "pod": pod,
                "service": "search",
                "severity": "warning",
            },
            {
                "summary": "search: p95 latency around the 500ms threshold",
                "runbook_url": "https://runbooks.example.com/slo/SearchLatencyHigh",
            },
            episodes,
            expr="histogram_quantile(0.95, rate(search_duration_seconds_bucket[1m])) > 0.5",
        )
    for _ in range(size - flappers):
        pod = _pod_name(rng, "redis")
        plan.add(
            steady_group,
            {
                "alertname": "RedisMemoryHigh",
                "cluster": cluster,
                "instance": f"{_ip(rng)}:9121",
                "job": "redis-exporter",
                "namespace": "platform",
                "pod": pod,
                "service": "cache",
                "severity": "warning",
            },
            {
                "summary": f"Redis {pod} uses more than 90% of maxmemory",
                "runbook_url": "https://runbooks.example.com/redis/RedisMemoryHigh",
            },
            [(rng.uniform(0, 0.5 * u), 0.88 * d + rng.uniform(0, 0.02 * d))],
            expr="redis_memory_used_bytes / redis_memory_max_bytes > 0.9",
        )


def _bad_deploy(plan: _Plan, rng: random.Random, size: int, cluster: str) -> None:
    """A rollout of a broken version: every new replica errors and crash-loops until rollback."""
    d, u, step = plan.duration, plan.unit, plan.step
    service = rng.choice(_SERVICES)
    namespace = rng.choice(_NAMESPACES)
    major, minor, patch = rng.randint(1, 4), rng.randint(0, 30), rng.randint(0, 9)
    version = f"v{major}.{minor}.{patch + 1}"
    previous = f"v{major}.{minor}.{patch}"
    slo = plan.group(f"{service}-slo", rng.uniform(0, plan.eval))
    apps = plan.group("kubernetes-apps", rng.uniform(0, plan.eval))
    t_deploy = rng.uniform(0.5 * u, u)
    t_rollback = 0.6 * d + rng.uniform(0, 0.05 * d)
    wave_span = u / 2  # maxSurge 25%: four waves of new replicas
    base = {"cluster": cluster, "namespace": namespace, "service": service, "version": version}
    plan.add(
        apps,
        {
            **base,
            "alertname": "KubeDeploymentRolloutStuck",
            "deployment": service,
            "job": "kube-state-metrics",
            "severity": "warning",
        },
        {
            "summary": f"Rollout of deployment {namespace}/{service} to {version} is not progressing",
            "runbook_url": "https://runbooks.example.com/kubernetes/KubeDeploymentRolloutStuck",
        },
        [(t_deploy + 1.5 * u, t_rollback + u)],
        expr=f'kube_deployment_status_condition{{deployment="{service}",condition="Progressing",'
        f'status="false"}} == 1',
    )
    remaining = size - 1
    replicas = math.ceil(remaining / 2)
    for i in range(replicas):
        wave = i * 4 // replicas
        pod = _pod_name(rng, service)
        up = t_deploy + wave * wave_span + rng.uniform(step, 3 * step)
        down = t_rollback + wave * wave_span / 2 + rng.uniform(0, step)
        replica = {**base, "instance": f"{_ip(rng)}:8080", "pod": pod}
        plan.add(
            slo,
            {**replica, "alertname": "HighErrorRate", "job": service, "severity": "critical"},
            {
                "summary": f"{service} {version}: more than 5% of requests fail on {pod}",
                "description": f"Introduced by the rollout of {version} (previous: {previous}).",
                "runbook_url": "https://runbooks.example.com/slo/HighErrorRate",
            },
            [(up, down)],
            expr=f'sum by (pod) (rate(http_requests_total{{job="{service}",code=~"5.."}}[1m])) > 0.05',
        )
        remaining -= 1
        if remaining == 0:
            break
        plan.add(
            apps,
            {
                **replica,
                "alertname": "KubePodCrashLooping",
                "container": service,
                "job": "kube-state-metrics",
                "severity": "error",
            },
            {
                "summary": f"Pod {namespace}/{pod} ({service} {version}) is crash looping",
                "runbook_url": "https://runbooks.example.com/kubernetes/KubePodCrashLooping",
            },
            [(up + rng.uniform(0.25, 0.5) * u, down)],
            expr=f'increase(kube_pod_container_status_restarts_total{{pod="{pod}"}}[10m]) > 0',
        )
        remaining -= 1


_STEADY_KINDS = (
    ("DiskWillFillIn24Hours", "warning", "predict_linear(node_filesystem_avail_bytes[6h], 86400) < 0"),
    ("CertificateExpiresSoon", "info", "probe_ssl_earliest_cert_expiry - time() < 86400 * 14"),
    (
        "HighMemoryUsage",
        "warning",
        "container_memory_working_set_bytes / container_spec_memory_limit_bytes > 0.9",
    ),
    ("QueueBacklogGrowing", "warning", "deriv(queue_messages_ready[10m]) > 0"),
    ("JobFailed", "error", "kube_job_status_failed > 0"),
    ("SlowQueries", "info", "rate(db_slow_queries_total[5m]) > 1"),
    ("CronJobMissed", "warning", "time() - kube_cronjob_status_last_schedule_time > 3600"),
    ("ErrorBudgetBurn", "critical", "slo:error_budget_burn_rate:1h > 14.4"),
)


def _steady(plan: _Plan, rng: random.Random, size: int, cluster: str) -> None:
    """Unrelated alerts starting and resolving at an even pace: a background for latency runs."""
    d, e = plan.duration, plan.eval
    count = max(1, min(size, e // 100))  # rule groups spread evenly over the interval
    groups = [plan.group(f"background-{i}", i * e / count) for i in range(count)]
    services = _services(rng, size)
    for i, service in enumerate(services):
        alertname, severity, expr = _STEADY_KINDS[rng.randrange(len(_STEADY_KINDS))]
        # Long enough for Alertmanager's group_wait to see it firing, short enough to fit the storm.
        shortest = min(max(3 * e, 2 * AM_GROUP_WAIT_MS), 0.4 * d)
        lifetime = rng.uniform(shortest, max(shortest, 0.3 * d))
        start = rng.uniform(0, max(0.0, 0.9 * d - lifetime - e))
        plan.add(
            groups[i % count],
            {
                "alertname": alertname,
                "cluster": cluster,
                "instance": f"{_ip(rng)}:9100",
                "job": service,
                "namespace": rng.choice(_NAMESPACES),
                "service": service,
                "severity": severity,
            },
            {"summary": f"{alertname} on {service}"},
            [(start, start + lifetime)],
            expr=expr,
        )


_BUILDERS: dict[str, Callable[[_Plan, random.Random, int, str], None]] = {
    "node-failure": _node_failure,
    "db-cascade": _db_cascade,
    "flapping": _flapping,
    "bad-deploy": _bad_deploy,
    "steady": _steady,
    "topology-cascade": _topology_cascade,
}
# Share of --size each part of `mixed` gets; flapping stays small, as in real life.
_MIXED_SHARES = (
    ("node-failure", 0.3),
    ("db-cascade", 0.25),
    ("bad-deploy", 0.2),
    ("flapping", 0.05),
    ("steady", 0.2),
)


def _mixed_sizes(size: int) -> list[tuple[str, int]]:
    sizes = {name: max(MIN_SIZE[name], int(size * share)) for name, share in _MIXED_SHARES}
    sizes["steady"] += size - sum(sizes.values())
    while sizes["steady"] < MIN_SIZE["steady"]:  # the minimums took more than the shares left
        largest = max((n for n in sizes if n != "steady"), key=lambda n: sizes[n] - MIN_SIZE[n])
        sizes[largest] -= 1
        sizes["steady"] += 1
    return [(name, sizes[name]) for name, _ in _MIXED_SHARES]


def _build(scenario: str, size: int, seed: int, duration_ms: int, eval_ms: int) -> _Plan:
    plan = _Plan(duration_ms, eval_ms)
    if scenario == "mixed":
        for i, (name, part) in enumerate(_mixed_sizes(size)):
            _BUILDERS[name](plan, random.Random(f"{seed}/{name}"), part, _CLUSTERS[i])
    else:
        rng = random.Random(f"{seed}/{scenario}")
        _BUILDERS[scenario](plan, rng, size, rng.choice(_CLUSTERS))
    plan.finish()
    return plan


# --------------------------------------------------------------------------- notification stream

# One notification of the evaluation stream: (alert index, firing, episode start, endsAt).
_Note = tuple[int, bool, int, int]


def _evaluations(plan: _Plan) -> Iterator[tuple[int, list[_Note]]]:
    """What Prometheus sends, evaluation by evaluation, in time order: (t, notifications).

    At an evaluation every firing alert is sent with endsAt = t + 4 intervals; the evaluation that
    sees an alert resolved sends it with endsAt = t, and later ones re-send it like that for the
    resolved retention, until it fires again or the duration ends.
    """
    duration = plan.duration
    alerts = plan.alerts
    # per alert: episodes as (start, end, resend_until) and a cursor into them
    spans: list[list[tuple[int, int, int]]] = []
    for alert in alerts:
        episodes = alert.episodes
        spans.append(
            [
                (s, e, min(e + RESOLVED_RETENTION_MS, next_start, duration))
                for (s, e), next_start in zip(
                    episodes, [s for s, _ in episodes[1:]] + [duration], strict=True
                )
            ]
        )
    cursor = [0] * len(alerts)
    heap: list[tuple[int, int, int]] = []  # (t, group index, group's last useful t)
    for gi, group in enumerate(plan.groups):
        if group.alerts:
            first = min(spans[a][0][0] for a in group.alerts)
            last = max(spans[a][-1][2] for a in group.alerts)
            heap.append((group.align(first), gi, last))
    heapq.heapify(heap)
    while heap:
        t, gi, last = heapq.heappop(heap)
        group = plan.groups[gi]
        ends_firing = t + ENDS_AT_INTERVALS * group.eval_ms
        notes: list[_Note] = []
        for ai in group.alerts:
            eps = spans[ai]
            i = cursor[ai]
            while i < len(eps) and t >= eps[i][2]:
                i += 1
            cursor[ai] = i
            if i == len(eps):
                continue
            start, end, _ = eps[i]
            if t < start:
                continue
            if t < end:
                notes.append((ai, True, start, ends_firing))
            else:
                notes.append((ai, False, start, end))
        if notes:
            yield t, notes
        following = t + group.eval_ms
        if following < last:
            heapq.heappush(heap, (following, gi, last))


# -------------------------------------------------------------------------------------- encoders


class _Times:
    """Epoch-ms -> timestamp text, memoized (alerts of one evaluation share their times)."""

    def __init__(self, origin_ms: int, style: str) -> None:
        self.origin = origin_ms
        self.style = style
        self._cache: dict[int, bytes] = {}

    def __call__(self, rel_ms: int) -> bytes:
        text = self._cache.get(rel_ms)
        if text is None:
            text = _format_time(self.origin + rel_ms, self.style).encode()
            if len(self._cache) > 65_536:
                self._cache.clear()
            self._cache[rel_ms] = text
        return text


def _format_time(abs_ms: int, style: str) -> str:
    """``go``: RFC 3339 with trailing zeros trimmed, as Go marshals times (Prometheus, Alertmanager);
    ``ms``: fixed milliseconds and ``Z``; ``pagerduty``: milliseconds and ``+0000``, as in
    PagerDuty's documentation."""
    dt = _EPOCH + timedelta(milliseconds=abs_ms)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    ms = abs_ms % 1000
    if style == "go":
        return base + (f".{ms:03d}".rstrip("0") if ms else "") + "Z"
    if style == "pagerduty":
        return f"{base}.{ms:03d}+0000"
    return f"{base}.{ms:03d}Z"


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _label_hash(labels: dict[str, str]) -> str:
    return xxhash.xxh3_64_hexdigest(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS))


def _fnv64a_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted label names and values."""
    data = b"".join(name.encode() + b"\xff" + labels[name].encode() + b"\xff" for name in sorted(labels))
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class _Encoder:
    """Per-format bytes of one notification (``fragment``) and of one record (``wrap``)."""

    def __init__(self, plan: _Plan, start_ms: int, batch: int) -> None:
        self.plan = plan
        self.batch = batch

    def fragment(self, ai: int, firing: bool, starts: int, ends: int, t: int) -> bytes:
        raise NotImplementedError

    def wrap(self, fragments: list[bytes], t: int) -> bytes:
        raise NotImplementedError


class _PrometheusEncoder(_Encoder):
    def __init__(self, plan: _Plan, start_ms: int, batch: int) -> None:
        super().__init__(plan, start_ms, batch)
        self.time = _Times(start_ms, "go")
        self.head = [
            b'{"labels":' + _json(a.labels) + b',"annotations":' + _json(a.annotations) + b',"startsAt":"'
            for a in plan.alerts
        ]
        self.tail = [b'","generatorURL":' + _json(a.generator_url) + b"}" for a in plan.alerts]

    def fragment(self, ai: int, firing: bool, starts: int, ends: int, t: int) -> bytes:
        time = self.time
        return b"".join((self.head[ai], time(starts), b'","endsAt":"', time(ends), self.tail[ai]))

    def wrap(self, fragments: list[bytes], t: int) -> bytes:
        return b"[" + b",".join(fragments) + b"]"


class _NativeEncoder(_Encoder):
    def __init__(self, plan: _Plan, start_ms: int, batch: int) -> None:
        super().__init__(plan, start_ms, batch)
        self.time = _Times(start_ms, "ms")
        self.head = [
            b'{"labels":'
            + _json(a.labels)
            + b',"annotations":'
            + _json(a.annotations)
            + b',"source":'
            + _json(a.source)
            + b',"generator_url":'
            + _json(a.generator_url)
            for a in plan.alerts
        ]

    def fragment(self, ai: int, firing: bool, starts: int, ends: int, t: int) -> bytes:
        # Native senders state the status; a firing alert has no known end.
        if firing:
            return b"".join((self.head[ai], b',"status":"firing","starts_at":"', self.time(starts), b'"}'))
        return b"".join(
            (
                self.head[ai],
                b',"status":"resolved","starts_at":"',
                self.time(starts),
                b'","ends_at":"',
                self.time(ends),
                b'"}',
            )
        )

    def wrap(self, fragments: list[bytes], t: int) -> bytes:
        if self.batch == 1:
            return b'{"stormwatch":1,' + fragments[0][1:]
        return b'{"stormwatch":1,"alerts":[' + b",".join(fragments) + b"]}"


class _CloudEventsEncoder(_NativeEncoder):
    """One structured event per alert (native data); a JSON batch of events when batching."""

    def __init__(self, plan: _Plan, start_ms: int, batch: int) -> None:
        super().__init__(plan, start_ms, batch)
        self.event_head = [
            b'{"specversion":"1.0","id":"' + _label_hash(a.labels).encode() + b"-" for a in plan.alerts
        ]
        self.event_source = [
            b'","source":' + _json("/" + a.source) + b',"subject":' + _json(a.name) for a in plan.alerts
        ]

    def fragment(self, ai: int, firing: bool, starts: int, ends: int, t: int) -> bytes:
        kind = b"firing" if firing else b"resolved"
        return b"".join(
            (
                self.event_head[ai],
                str(t).encode(),
                self.event_source[ai],
                b',"type":"dev.stormwatch.alert.',
                kind,
                b'","time":"',
                self.time(t),
                b'","datacontenttype":"application/json","data":',
                super().fragment(ai, firing, starts, ends, t),
                b"}",
            )
        )

    def wrap(self, fragments: list[bytes], t: int) -> bytes:
        if self.batch == 1:
            return fragments[0]
        return b"[" + b",".join(fragments) + b"]"


class _PagerDutyEncoder(_Encoder):
    """Events API v2: trigger while firing (re-sent each evaluation), a payload-less resolve."""

    def __init__(self, plan: _Plan, start_ms: int, batch: int, routing_key: str) -> None:
        super().__init__(plan, start_ms, batch)
        self.time = _Times(start_ms, "pagerduty")
        self.key_head = b'{"routing_key":"' + routing_key.encode() + b'","event_action":"'
        self.dedup = [b'","dedup_key":' + _json(_dedup_key(a)) for a in plan.alerts]
        self.payload = [b',"payload":' + _json(_pd_payload(a))[:-1] + b',"timestamp":"' for a in plan.alerts]
        self.tail = [
            b'"},"client":"Prometheus","client_url":' + _json(a.generator_url) + b"}" for a in plan.alerts
        ]

    def fragment(self, ai: int, firing: bool, starts: int, ends: int, t: int) -> bytes:
        if firing:
            return b"".join(
                (
                    self.key_head,
                    b"trigger",
                    self.dedup[ai],
                    self.payload[ai],
                    self.time(starts),
                    self.tail[ai],
                )
            )
        return b"".join((self.key_head, b"resolve", self.dedup[ai], b"}"))

    def wrap(self, fragments: list[bytes], t: int) -> bytes:
        if self.batch == 1:
            return fragments[0]
        return b"[" + b",".join(fragments) + b"]"


def _dedup_key(alert: SimAlert) -> str:
    return f"{alert.name}/{_label_hash(alert.labels)}"


def _pd_payload(alert: SimAlert) -> dict[str, Any]:
    """PagerDuty's payload fields from Prometheus-style labels (what an integration would send)."""
    labels = alert.labels
    where = labels.get("pod") or labels.get("instance") or labels.get("node") or labels["cluster"]
    return {
        "summary": alert.annotations.get("summary", alert.name),
        "source": where,
        "severity": labels.get("severity", "warning"),
        "component": labels.get("service") or labels.get("job") or alert.name,
        "group": labels.get("namespace") or labels["cluster"],
        "class": alert.name,
        "custom_details": {
            "labels": labels,
            "runbook_url": alert.annotations.get("runbook_url", ""),
        },
    }


def _pd_labels(alert: SimAlert) -> dict[str, str]:
    """The labels stormwatch's PagerDuty adapter derives from a trigger (docs/input-formats.md)."""
    payload = _pd_payload(alert)
    return {
        "source": payload["source"],
        "component": payload["component"],
        "group": payload["group"],
        "class": payload["class"],
        "alertname": payload["class"],
        "severity": normalize_severity(payload["severity"]).value,
        "dedup_key": _dedup_key(alert),
    }


# ------------------------------------------------------------------------------- record streams


def _eval_records(
    plan: _Plan, encoder: _Encoder, headers: dict[str, str], summary: SimSummary
) -> Iterator[SimRecord]:
    """Records straight from the evaluation stream: notifications of one instant, ``batch`` at a time."""
    batch = encoder.batch
    last = [-1] * len(plan.alerts)  # -1 never sent, 0 resolved, 1 firing
    fragments: list[bytes] = []
    pending_t = 0

    def flush() -> SimRecord:
        value = encoder.wrap(fragments, pending_t)
        record = SimRecord(pending_t, headers, value, len(fragments))
        summary.records += 1
        summary.bytes += len(value)
        summary.last_t_ms = pending_t
        fragments.clear()
        return record

    for t, notes in _evaluations(plan):
        if fragments and t != pending_t:
            yield flush()
        pending_t = t
        for ai, firing, starts, ends in notes:
            state = 1 if firing else 0
            previous = last[ai]
            if previous == state:
                summary.resends += 1
            elif not firing and previous == 1:
                summary.resolutions += 1
            last[ai] = state
            summary.notifications += 1
            fragments.append(encoder.fragment(ai, firing, starts, ends, t))
            if len(fragments) >= batch:
                yield flush()
    if fragments:
        yield flush()


@dataclass(slots=True)
class _AmGroup:
    key: tuple[str, ...]
    labels: dict[str, str]
    alerts: dict[int, tuple[bool, int, int]] = field(default_factory=dict)  # ai -> (firing, start, end)
    notified: dict[int, bool] = field(default_factory=dict)  # ai -> firing, as last notified
    last_sent: int = -1


def _am_records(
    plan: _Plan, start_ms: int, batch: int | None, headers: dict[str, str], summary: SimSummary
) -> Iterator[SimRecord]:
    """Alertmanager's webhooks for the evaluation stream Prometheus sends it.

    Alerts are grouped by AM_GROUP_BY; a new group is notified after group_wait, then every
    group_interval if its alerts changed (or after repeat_interval if not). A notification carries
    the group's firing alerts and those resolved since the last one; resolved alerts then leave the
    group, and an empty group is deleted.
    """
    time = _Times(start_ms, "go")
    alerts = plan.alerts
    pieces = [
        (
            b'","labels":' + _json(a.labels) + b',"annotations":' + _json(a.annotations) + b',"startsAt":"',
            b'","generatorURL":' + _json(a.generator_url) + b',"fingerprint":"',
            _fnv64a_fingerprint(a.labels).encode() + b'"}',
        )
        for a in alerts
    ]
    group_of = [tuple(a.labels.get(name, "") for name in AM_GROUP_BY) for a in alerts]
    groups: dict[tuple[str, ...], _AmGroup] = {}
    flushes: list[tuple[int, int, tuple[str, ...]]] = []  # (t, sequence, group key)
    sequence = 0
    last = [-1] * len(alerts)

    def notify(group: _AmGroup, t: int) -> Iterator[SimRecord]:
        members = list(group.alerts.items())
        size = batch or len(members)
        for begin in range(0, len(members), size):
            chunk = members[begin : begin + size]
            parts = []
            common_labels = dict(alerts[chunk[0][0]].labels)
            common_annotations = dict(alerts[chunk[0][0]].annotations)
            any_firing = False
            for ai, (firing, starts, ends) in chunk:
                alert = alerts[ai]
                if len(common_labels) > 0:
                    common_labels = {k: v for k, v in common_labels.items() if alert.labels.get(k) == v}
                if len(common_annotations) > 0:
                    common_annotations = {
                        k: v for k, v in common_annotations.items() if alert.annotations.get(k) == v
                    }
                any_firing = any_firing or firing
                head, middle, tail = pieces[ai]
                parts.append(
                    b"".join(
                        (
                            b'{"status":"firing' if firing else b'{"status":"resolved',
                            head,
                            time(starts),
                            b'","endsAt":"',
                            _GO_ZERO_TIME if firing else time(ends),
                            middle,
                            tail,
                        )
                    )
                )
                state = 1 if firing else 0
                if last[ai] == state:
                    summary.resends += 1
                elif not firing and last[ai] == 1:
                    summary.resolutions += 1
                last[ai] = state
                summary.notifications += 1
            group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group.labels.items())) + "}"
            cluster = alerts[chunk[0][0]].labels.get("cluster", "default")
            envelope = orjson.dumps(
                {
                    "receiver": AM_RECEIVER,
                    "status": "firing" if any_firing else "resolved",
                    "alerts": [],
                    "groupLabels": group.labels,
                    "commonLabels": common_labels,
                    "commonAnnotations": common_annotations,
                    "externalURL": f"http://alertmanager.{cluster}.example.com:9093",
                    "version": "4",
                    "groupKey": group_key,
                    "truncatedAlerts": 0,
                }
            )
            before, after = envelope.split(b'"alerts":[]', 1)
            value = b"".join((before, b'"alerts":[', b",".join(parts), b"]", after))
            summary.records += 1
            summary.bytes += len(value)
            summary.last_t_ms = t
            yield SimRecord(t, headers, value, len(chunk))

    def run_flush(t: int, key: tuple[str, ...]) -> Iterator[SimRecord]:
        nonlocal sequence
        group = groups[key]
        changed = any(group.notified.get(ai) != firing for ai, (firing, _, _) in group.alerts.items())
        if changed or t - group.last_sent >= AM_REPEAT_INTERVAL_MS:
            yield from notify(group, t)
            group.last_sent = t
            group.notified = {ai: firing for ai, (firing, _, _) in group.alerts.items() if firing}
            group.alerts = {ai: state for ai, state in group.alerts.items() if state[0]}
        if group.alerts:
            sequence += 1
            heapq.heappush(flushes, (t + AM_GROUP_INTERVAL_MS, sequence, key))
        else:
            del groups[key]

    for t, notes in _evaluations(plan):
        while flushes and flushes[0][0] < t:
            due, _, key = heapq.heappop(flushes)
            yield from run_flush(due, key)
        for ai, firing, starts, ends in notes:
            key = group_of[ai]
            group = groups.get(key)
            if group is None:
                if not firing:
                    continue  # a resolved re-send of an alert Alertmanager already forgot
                labels = alerts[ai].labels
                group = _AmGroup(key, {n: labels[n] for n in AM_GROUP_BY if labels.get(n)})
                groups[key] = group
                sequence += 1
                heapq.heappush(flushes, (t + AM_GROUP_WAIT_MS, sequence, key))
            if firing or ai in group.alerts:
                group.alerts[ai] = (firing, starts, ends)
    while flushes:
        due, _, key = heapq.heappop(flushes)
        group = groups[key]
        if all(group.notified.get(ai) == firing for ai, (firing, _, _) in group.alerts.items()):
            del groups[key]  # nothing left to tell: the stream is over
            continue
        yield from run_flush(due, key)


# ------------------------------------------------------------------------------------ simulation


class Simulation(Iterator[SimRecord]):
    """The records of one scenario, in time order; ``summary`` is complete once they are exhausted."""

    def __init__(
        self,
        scenario: str,
        plan: _Plan,
        *,
        fmt: str,
        seed: int,
        batch: int | None,
        start_ms: int,
    ) -> None:
        self.scenario = scenario
        self.format = fmt
        self.start_ms = start_ms
        self.batch = batch
        self.alerts = plan.alerts
        self.headers: dict[str, str] = {FORMAT_HEADER: fmt}
        self.summary = SimSummary(
            scenario=scenario,
            format=fmt,
            seed=seed,
            duration_ms=plan.duration,
            eval_interval_ms=plan.eval,
            start_ms=start_ms,
            distinct_alerts=len(plan.alerts),
        )
        self._records: Iterator[SimRecord]
        if fmt == "alertmanager":
            self._records = _am_records(plan, start_ms, batch, self.headers, self.summary)
        else:
            size = batch or 1
            encoder: _Encoder
            if fmt == "prometheus":
                encoder = _PrometheusEncoder(plan, start_ms, size)
            elif fmt == "native":
                encoder = _NativeEncoder(plan, start_ms, size)
            elif fmt == "cloudevents":
                self.headers["content-type"] = (
                    "application/cloudevents+json" if size == 1 else "application/cloudevents-batch+json"
                )
                encoder = _CloudEventsEncoder(plan, start_ms, size)
            else:
                routing_key = random.Random(f"{seed}/routing-key").randbytes(16).hex()
                encoder = _PagerDutyEncoder(plan, start_ms, size, routing_key)
            self._records = _eval_records(plan, encoder, self.headers, self.summary)

    def __next__(self) -> SimRecord:
        return next(self._records)

    def canonical_labels(self, alert: SimAlert) -> dict[str, str]:
        """The labels the pipeline sees for ``alert`` when it fires, after its format's adapter."""
        return _pd_labels(alert) if self.format == "pagerduty" else alert.labels

    def expected_groups(self, rules: RulesConfig | None = None) -> int:
        """How many correlation groups the alerts fall into under ``rules`` (default: built-in).

        One group is one incident unless it resolves and fires again after its reopen window, or is
        merged; inhibited groups are recorded but do not open incidents (docs/simulate.md).
        """
        router = Router(rules if rules is not None else RulesConfig())
        return len({router.route(self.canonical_labels(a)).group_key for a in self.alerts})


def generate(
    scenario: str,
    *,
    size: int,
    seed: int,
    fmt: str = "prometheus",
    duration_ms: int = DEFAULT_DURATION_MS,
    batch: int | None = None,
    start_ms: int = SIM_EPOCH_MS,
    eval_interval_ms: int = DEFAULT_EVAL_MS,
) -> Simulation:
    """Build ``scenario`` with ``size`` distinct alerts and return its records as an iterator.

    The same arguments always give the same records, byte for byte. ``batch`` is the most alerts
    per record (default: DEFAULT_BATCH for the format); ``start_ms`` is the epoch time of t=0 used
    inside the payloads.
    """
    if scenario not in SCENARIOS:
        raise SimulationError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if fmt not in FORMATS:
        raise SimulationError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if size < MIN_SIZE[scenario]:
        raise SimulationError(f"--size must be at least {MIN_SIZE[scenario]} for {scenario}, got {size}")
    if batch is not None and batch < 1:
        raise SimulationError(f"--batch must be at least 1, got {batch}")
    if eval_interval_ms < 1000:
        raise SimulationError(f"the evaluation interval must be at least 1s, got {eval_interval_ms}ms")
    if duration_ms < MIN_EVALUATIONS * eval_interval_ms:
        raise SimulationError(
            f"the duration must be at least {MIN_EVALUATIONS} evaluation intervals "
            f"({MIN_EVALUATIONS * eval_interval_ms // 1000}s with an interval of "
            f"{eval_interval_ms // 1000}s), "
            f"got {duration_ms // 1000}s; lengthen --duration or shorten --eval-interval"
        )
    plan = _build(scenario, size, seed, duration_ms, eval_interval_ms)
    if batch is None:
        batch = DEFAULT_BATCH[fmt]
    return Simulation(scenario, plan, fmt=fmt, seed=seed, batch=batch, start_ms=start_ms)


# ----------------------------------------------------------------------------------- file format

_SHIFTED_KEYS = frozenset({"startsAt", "endsAt", "starts_at", "ends_at", "timestamp", "time"})
# String maps whose content is identity or free text: never rewritten, even a label named "time".
_OPAQUE_KEYS = frozenset(
    {"labels", "annotations", "groupLabels", "commonLabels", "commonAnnotations", "custom_details"}
)


@dataclass(slots=True)
class FileRecord:
    """One line of a simulation file, decoded; ``value`` is the parsed JSON (None: a tombstone)."""

    t_ms: int
    headers: dict[str, str]
    value: Any
    key: str | None = None
    t0_ms: int | None = None


def encode_line(record: SimRecord, t0_ms: int) -> bytes:
    """``{"t":..,"t0":..,"headers":{..},"value":<JSON>}`` and a newline (docs/simulate.md)."""
    parts = [b'{"t":', str(record.t_ms).encode(), b',"t0":', str(t0_ms).encode()]
    if record.key is not None:
        parts += [b',"key":', orjson.dumps(record.key.decode())]  # the file format keeps keys as text
    parts += [b',"headers":', orjson.dumps(record.headers), b',"value":', record.value, b"}\n"]
    return b"".join(parts)


def decode_line(line: bytes | str, lineno: int) -> FileRecord | None:
    """Parse one line; None for a blank line. Raises FileFormatError naming the line and field."""
    if not line.strip():
        return None
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise FileFormatError(f"line {lineno}: not JSON ({exc})") from None
    if type(doc) is not dict:
        raise FileFormatError(f"line {lineno}: expected a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"t", "t0", "headers", "value", "key"})
    if unknown:
        raise FileFormatError(
            f"line {lineno}: unknown field {unknown[0]!r} (known: headers, key, t, t0, value)"
        )
    t = doc.get("t")
    if type(t) is not int or t < 0:
        raise FileFormatError(f'line {lineno}: "t" must be a non-negative integer (ms), got {t!r}')
    t0 = doc.get("t0")
    if t0 is not None and type(t0) is not int:
        raise FileFormatError(f'line {lineno}: "t0" must be an integer (epoch ms), got {t0!r}')
    headers = doc.get("headers") or {}
    if type(headers) is not dict or any(type(v) is not str for v in headers.values()):
        raise FileFormatError(f'line {lineno}: "headers" must be an object of strings')
    if "value" not in doc:
        raise FileFormatError(f'line {lineno}: "value" is missing (use null for a tombstone)')
    key = doc.get("key")
    if key is not None and type(key) is not str:
        raise FileFormatError(f'line {lineno}: "key" must be a string or null, got {type(key).__name__}')
    return FileRecord(t_ms=t, headers=headers, value=doc["value"], key=key, t0_ms=t0)


def shift_times(doc: Any, delta_ms: int) -> Any:
    """Move every timestamp inside a record value by ``delta_ms``, in place; returns ``doc``.

    Rewritten: values of the keys startsAt, endsAt, starts_at, ends_at, timestamp and time, at any
    depth: RFC 3339 strings (written back in UTC with milliseconds) and epoch numbers (seconds, or
    milliseconds when >= 1e11). Left alone: labels, annotations and the other string maps (their
    text is identity), Go's zero time, and anything that is not a time.
    """
    if delta_ms == 0:
        return doc
    cache: dict[str, str] = {}
    stack = [doc]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for k, v in node.items():
                if k in _SHIFTED_KEYS and type(v) is not dict and type(v) is not list:
                    node[k] = _shift_value(v, delta_ms, cache)
                elif k not in _OPAQUE_KEYS and (type(v) is dict or type(v) is list):
                    stack.append(v)
        elif type(node) is list:
            stack.extend(item for item in node if type(item) is dict or type(item) is list)
    return doc


def _shift_value(value: Any, delta_ms: int, cache: dict[str, str]) -> Any:
    kind = type(value)
    if kind is str:
        shifted = cache.get(value)
        if shifted is None:
            shifted = value
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                when = None
            if when is not None and when.tzinfo is not None and when.year >= 1971:
                moved = when.astimezone(UTC) + timedelta(milliseconds=delta_ms)
                shifted = moved.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moved.microsecond // 1000:03d}Z"
            cache[value] = shifted
        return shifted
    if kind is int or kind is float:
        if abs(value) >= 1e11:
            return value + delta_ms
        if abs(value) >= 1e8:  # epoch seconds
            if kind is int and delta_ms % 1000 == 0:
                return value + delta_ms // 1000
            return value + delta_ms / 1000
    return value


def _data_count(data: Any) -> int:
    if type(data) is list:
        return len(data)
    if type(data) is dict and type(data.get("alerts")) is list:
        return len(data["alerts"])
    return 1


def count_alerts(doc: Any, fmt: str | None) -> int:
    """How many alerts a record value carries (for rates and summaries; adapters decide for real)."""
    if fmt is None or fmt not in FORMATS:
        detected = detect_format(doc)
        fmt = detected.value if detected is not None else None
    if doc is None:
        return 0
    if fmt == "cloudevents":
        events = doc if type(doc) is list else [doc]
        return sum(_data_count(e.get("data")) if type(e) is dict else 1 for e in events)
    if type(doc) is list:
        return len(doc)
    if type(doc) is dict and type(doc.get("alerts")) is list:
        return len(doc["alerts"])
    return 1
