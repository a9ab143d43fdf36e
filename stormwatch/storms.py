"""Multi-cause alert storms with ground truth: the measuring stick for correlation quality.

``stormwatch simulate`` builds one failure at a time (or several, each in its own cluster); a real
storm is many failures at once, overlapping in time, sharing clusters. ``storm-mix`` is such a
storm: twenty root causes in two clusters (node failures with every pod on them, database, cache
and queue outages followed seconds later by errors in the services that use them, a bad deploy
over 50 pods on 10 nodes, the same alert name failing in both clusters at once, flapping alerts, a
re-send storm, ...) plus unrelated background alerts. Every distinct alert knows the cause it
belongs to (``Storm.truth``, outside its labels, so the pipeline cannot peek), which is what
``stormwatch.bench.quality`` scores incidents against.

The storm reuses ``stormwatch.simulate``'s plans, rule groups and encoders, so its records are
exactly what Prometheus sends (re-sends every evaluation, resolved retention) in any input format,
and its labels follow the scenarios' conventions. Services depend on each other through one fixed
catalog, ``TOPOLOGY`` (``topology_facts()`` as plain data): which services a database's outage
reaches is decided by that graph, not by chance, so a topology file can describe every seed.

The storm is fair to a correlator that links groups by topology and time: within one cluster, two
causes whose components are related (a dependency path of at most ``RELATED_HOPS``, or a shared
node) fire at least ``RELATED_GAP_MS`` apart, so one incident per cause is reachable without
guessing. Unrelated causes do overlap; the twins share everything but the cluster.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stormwatch.schemas.fingerprint import key_fingerprint, label_fingerprint
from stormwatch.simulate import (
    _NODE_DOWN_EXPR,
    _STEADY_KINDS,
    DEFAULT_EVAL_MS,
    FLAP_EVAL_MS,
    FORMATS,
    SIM_EPOCH_MS,
    SimAlert,
    Simulation,
    SimulationError,
    _ip,
    _node_down,
    _node_name,
    _Plan,
    _pod_name,
    _RuleGroup,
)

__all__ = [
    "CLUSTERS",
    "NOISE",
    "RELATED_GAP_MS",
    "RELATED_HOPS",
    "STORMS",
    "STORM_DURATION_MS",
    "TOPOLOGY",
    "Cause",
    "Component",
    "Storm",
    "build_storm",
    "dependents",
    "topology_facts",
]

STORMS = ("storm-mix",)
NOISE = "noise"
"""The cause id of background alerts: each is unrelated to everything else."""

CLUSTERS = ("prod-eu-1", "prod-us-1")
STORM_DURATION_MS = 30 * 60_000
RELATED_HOPS = 3
RELATED_GAP_MS = 5 * 60_000

_MIN = 60_000
_STEP_MS = 4_000  # seconds between a failure and the errors of the next level of dependents


# ------------------------------------------------------------------------------------ topology


@dataclass(frozen=True, slots=True)
class Component:
    """One thing that can fail, as the alerts' ``service`` label names it (the same in every
    cluster); ``depends_on`` are the components it calls."""

    name: str
    kind: str  # service, database, cache, queue, dns, external, control-plane
    namespace: str | None
    depends_on: tuple[str, ...] = ()


def _catalog(*components: Component) -> dict[str, Component]:
    return {c.name: c for c in components}


TOPOLOGY: dict[str, Component] = _catalog(
    Component("orders-db", "database", "data"),
    Component("accounts-db", "database", "data"),
    Component("catalog-db", "database", "data"),
    Component("payments-db", "database", "data"),
    Component("logging-es", "database", "logging"),
    Component("kafka", "queue", "data"),
    Component("cache", "cache", "platform"),
    Component("kube-dns", "dns", "kube-system"),
    Component("etcd", "control-plane", "kube-system"),
    Component("kube-apiserver", "control-plane", "kube-system", ("etcd",)),
    Component("cdn", "external", None),
    Component("orders", "service", "shop", ("orders-db", "kafka")),
    Component("shipping", "service", "fulfilment", ("orders",)),
    Component("invoices", "service", "payments", ("orders",)),
    Component("checkout", "service", "shop", ("orders", "payments", "cart")),
    Component("frontend", "service", "shop", ("checkout", "search")),
    Component("payments", "service", "payments", ("payments-db",)),
    Component("ledger", "service", "payments", ("payments-db",)),
    Component("billing", "service", "payments", ("accounts", "payments")),
    Component("fraud", "service", "payments", ("payments",)),
    Component("accounts", "service", "identity", ("accounts-db",)),
    Component("profile", "service", "identity", ("accounts-db",)),
    Component("auth", "service", "identity", ("accounts",)),
    Component("sessions", "service", "identity", ("auth", "cache")),
    Component("api-gateway", "service", "platform", ("auth",)),
    Component("loyalty", "service", "growth", ("accounts",)),
    Component("catalog", "service", "shop", ("catalog-db",)),
    Component("search", "service", "shop", ("catalog",)),
    Component("pricing", "service", "shop", ("catalog-db",)),
    Component("cart", "service", "shop", ("catalog", "pricing", "cache")),
    Component("recommendations", "service", "growth", ("catalog",)),
    Component("reviews", "service", "growth", ("catalog-db",)),
    Component("notifications", "service", "growth", ("kafka",)),
    Component("email", "service", "growth", ("kafka",)),
    Component("ads", "service", "growth"),
    Component("media", "service", "growth"),
    Component("geo", "service", "platform"),
    Component("quotes", "service", "fulfilment"),
    Component("reports", "service", "growth"),
)
"""The service catalog every storm-mix seed draws from; deploy/topology.yaml should cover it."""

# Background alerts come from tooling outside the catalog, so nothing relates them to a cause.
_NOISE_SERVICES = (
    ("grafana", "observability"),
    ("loki", "observability"),
    ("thanos-compactor", "observability"),
    ("jenkins", "ci"),
    ("gitlab-runner", "ci"),
    ("argocd", "ci"),
    ("vault", "tools"),
    ("harbor", "tools"),
    ("sentry", "tools"),
    ("airflow", "tools"),
    ("metabase", "tools"),
    ("keycloak", "tools"),
    ("minio", "tools"),
    ("velero", "tools"),
)


def topology_facts() -> dict[str, dict[str, Any]]:
    """``TOPOLOGY`` as plain data: ``{name: {"kind", "namespace", "depends_on": [...]}}``."""
    return {
        c.name: {"kind": c.kind, "namespace": c.namespace, "depends_on": list(c.depends_on)}
        for c in TOPOLOGY.values()
    }


def dependents(root: str, hops: int) -> list[list[str]]:
    """The components that depend on ``root`` within ``hops`` calls, level by level (level 1
    calls ``root`` directly); each component on the first level that reaches it."""
    seen = {root}
    levels: list[list[str]] = []
    frontier = [root]
    for _ in range(hops):
        level = sorted(
            c.name for c in TOPOLOGY.values() if c.name not in seen and set(c.depends_on) & set(frontier)
        )
        if not level:
            break
        seen.update(level)
        levels.append(level)
        frontier = level
    return levels


# ---------------------------------------------------------------------------------- the storm


@dataclass(frozen=True, slots=True)
class Cause:
    """One root cause and what the generator knows about it (never visible to the pipeline).

    ``root`` is the component at fault (``node/NAME``, ``database/orders-db``,
    ``deployment/recommendations``, ...), ``root_alert`` the alert that names it; ``dependents``
    lists the services that alert only because they use the root, and ``edges`` the
    ``(service, upstream)`` dependencies the failure travelled along (all in ``TOPOLOGY``).
    ``root_late``: the root's alert arrives after its first dependents' (its exporter answered
    late), so a correlator sees the symptoms before the cause.
    """

    id: str
    kind: str
    cluster: str
    root: str
    root_alert: str
    summary: str
    components: tuple[str, ...]
    nodes: tuple[str, ...] = ()
    dependents: tuple[str, ...] = ()
    edges: tuple[tuple[str, str], ...] = ()
    root_late: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "cluster": self.cluster,
            "root": self.root,
            "root_alert": self.root_alert,
            "summary": self.summary,
            "components": list(self.components),
            "nodes": list(self.nodes),
            "dependents": list(self.dependents),
            "edges": [list(e) for e in self.edges],
            "root_late": self.root_late,
        }


@dataclass(slots=True)
class Storm:
    """A built storm: its distinct alerts, the cause of each (``truth[i]`` for ``alerts[i]``,
    ``NOISE`` for background) and the causes. ``simulation()`` gives its records, as often as
    needed and in any format."""

    name: str
    seed: int
    causes: list[Cause]
    truth: list[str]
    _plan: _Plan

    @property
    def alerts(self) -> list[SimAlert]:
        return self._plan.alerts

    @property
    def duration_ms(self) -> int:
        return self._plan.duration

    def simulation(
        self, fmt: str = "prometheus", *, batch: int | None = None, start_ms: int = SIM_EPOCH_MS
    ) -> Simulation:
        """The storm's records in ``fmt`` (the same bytes for the same seed and arguments)."""
        if fmt not in FORMATS:
            raise SimulationError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if batch is None:
            batch = 1 if fmt in ("pagerduty", "cloudevents") else (None if fmt == "alertmanager" else 256)
        return Simulation(self.name, self._plan, fmt=fmt, seed=self.seed, batch=batch, start_ms=start_ms)

    def truth_by_fingerprint(self, fmt: str = "prometheus") -> dict[str, str]:
        """Fingerprint (as the adapters of ``fmt`` compute it) -> cause id, for every alert."""
        sim = self.simulation(fmt)
        out: dict[str, str] = {}
        for alert, cause in zip(self.alerts, self.truth, strict=True):
            labels = sim.canonical_labels(alert)
            if fmt == "pagerduty":
                out[key_fingerprint("pagerduty", labels["dedup_key"])] = cause
            else:
                out[label_fingerprint(labels)] = cause
        return out

    def alerts_by_cause(self) -> dict[str, list[SimAlert]]:
        """Cause id -> its alerts, causes in storm order, then ``NOISE``."""
        out: dict[str, list[SimAlert]] = {c.id: [] for c in self.causes}
        out[NOISE] = []
        for alert, cause in zip(self.alerts, self.truth, strict=True):
            out[cause].append(alert)
        return out

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for cause in self.truth:
            counts[cause] = counts.get(cause, 0) + 1
        return {
            "storm": self.name,
            "seed": self.seed,
            "duration_ms": self.duration_ms,
            "clusters": list(CLUSTERS),
            "root_causes": len(self.causes),
            "distinct_alerts": len(self.alerts),
            "noise_alerts": counts.get(NOISE, 0),
            "alerts_per_cause": {c.id: counts.get(c.id, 0) for c in self.causes},
        }


class _Builder:
    """Adds alerts to one plan, remembering the cause of each; rule groups are per cluster (one
    Prometheus per cluster) and shared by the causes that use the same rules."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.plan = _Plan(STORM_DURATION_MS, DEFAULT_EVAL_MS)
        self.truth: list[str] = []
        self.causes: list[Cause] = []
        self._groups: dict[tuple[str, str], _RuleGroup] = {}
        self._nodes: dict[str, set[str]] = {c: set() for c in CLUSTERS}
        self._clusters: dict[str, str] = {}  # cause id -> its cluster

    def rng(self, what: str) -> random.Random:
        """A generator of its own per cause: adding a cause changes no other."""
        return random.Random(f"{self.seed}/storm-mix/{what}")

    def begin(self, name: str, cluster: str) -> tuple[str, random.Random]:
        """A new cause in ``cluster``: its id (``name@cluster``) and its own generator."""
        cid = f"{name}@{cluster}"
        self._clusters[cid] = cluster
        return cid, self.rng(cid)

    def group(
        self, cluster: str, name: str, eval_ms: int = DEFAULT_EVAL_MS, phase_ms: float | None = None
    ) -> _RuleGroup:
        """The rule group ``name`` of the cluster's Prometheus; ``phase_ms`` pins when a new group
        evaluates (a cascade's groups evaluate right as their failure shows, so it arrives in order)."""
        found = self._groups.get((cluster, name))
        if found is None:
            if phase_ms is None:
                phase_ms = self.rng(f"group/{cluster}/{name}").uniform(0, eval_ms)
            found = self._groups[(cluster, name)] = self.plan.group(name, phase_ms, eval_ms)
        return found

    def node(self, cluster: str, rng: random.Random) -> str:
        """A node of ``cluster`` no other cause uses (a shared node would relate two causes)."""
        while True:
            name = _node_name(rng, cluster)
            if name not in self._nodes[cluster]:
                self._nodes[cluster].add(name)
                return name

    def add(
        self,
        cause: str,
        group: _RuleGroup,
        labels: dict[str, str],
        annotations: dict[str, str],
        episodes: list[tuple[float, float]],
        expr: str,
    ) -> None:
        self.plan.add(group, labels, annotations, episodes, expr=expr)
        self.truth.append(cause)

    def cause(self, cid: str, *, kind: str, root: str, root_alert: str, summary: str, **more: Any) -> None:
        """Record the cause ``cid`` (from ``begin``): ``root`` is the component at fault as
        ``KIND/NAME``, also the cause's only component unless ``more`` gives ``components``
        (``more``: the other fields of ``Cause``)."""
        more.setdefault("components", (root.partition("/")[2],))
        cluster = self._clusters[cid]
        self.causes.append(
            Cause(
                id=cid, kind=kind, cluster=cluster, root=root, root_alert=root_alert, summary=summary, **more
            )
        )


def _around(rng: random.Random, minute: float) -> float:
    """A moment within 20 s after ``minute`` of the storm, in ms: when a failure starts or ends."""
    return minute * _MIN + rng.uniform(0, 20_000)


def _namespace(service: str) -> str:
    return TOPOLOGY[service].namespace or "default"


# ------------------------------------------------------------------------------ cause builders


def _node_failure(
    b: _Builder, name: str, cluster: str, at_m: float, back_m: float, services: list[str]
) -> None:
    """NodeDown, then (after the node controller's grace period) every pod on the node: not ready,
    its container waiting, its scrape target down. Pods recover after the node is back."""
    cid, rng = b.begin(name, cluster)
    node = b.node(cluster, rng)
    t_fail = _around(rng, at_m)
    t_back = back_m * _MIN + rng.uniform(0, 30_000)
    labels, annotations = _node_down(cluster, node)
    b.add(cid, b.group(cluster, "node-exporter"), labels, annotations, [(t_fail, t_back)], _NODE_DOWN_EXPR)
    for service in services:
        namespace = _namespace(service)
        for _ in range(2):
            pod = _pod_name(rng, service)
            onset = t_fail + 40_000 + rng.uniform(0, 30_000)
            recovered = t_back + rng.uniform(20_000, 90_000)
            base = {"cluster": cluster, "namespace": namespace, "node": node, "pod": pod, "service": service}
            b.add(
                cid,
                b.group(cluster, "kubernetes-apps"),
                {**base, "alertname": "KubePodNotReady", "job": "kube-state-metrics", "severity": "warning"},
                {"summary": f"Pod {namespace}/{pod} has been in a non-ready state"},
                [(onset, recovered)],
                f'kube_pod_status_ready{{condition="false",pod="{pod}"}} == 1',
            )
            b.add(
                cid,
                b.group(cluster, "kubernetes-apps"),
                {
                    **base,
                    "alertname": "KubeContainerWaiting",
                    "container": service,
                    "job": "kube-state-metrics",
                    "severity": "warning",
                },
                {"summary": f"Container {service} in pod {namespace}/{pod} is waiting"},
                [(onset, recovered)],
                f'kube_pod_container_status_waiting{{pod="{pod}"}} == 1',
            )
            b.add(
                cid,
                b.group(cluster, "prometheus-targets"),
                {
                    **base,
                    "alertname": "TargetDown",
                    "instance": f"{_ip(rng)}:8080",
                    "job": service,
                    "severity": "critical",
                },
                {"summary": f"Prometheus cannot scrape {service} on pod {pod}"},
                [(onset, recovered)],
                f'up{{job="{service}",pod="{pod}"}} == 0',
            )
    b.cause(
        cid,
        kind="node-failure",
        root=f"node/{node}",
        root_alert="NodeDown",
        summary=f"node {node} dies with {2 * len(services)} pods of {len(services)} services on it",
        components=tuple(services),
        nodes=(node,),
    )


_Root = tuple[dict[str, str], dict[str, str], str]  # labels, annotations, expr


def _service_errors(
    b: _Builder,
    cid: str,
    cluster: str,
    service: str,
    pods: int,
    window: tuple[float, float],
    rng: random.Random,
    severities: tuple[str, str],
    upstream: str | None,
) -> None:
    """HighErrorRate and HighLatency on ``pods`` pods of ``service`` (labels of simulate's
    db-cascade: nothing in common with the upstream but the cluster)."""
    namespace = _namespace(service)
    for _ in range(pods):
        pod = _pod_name(rng, service)
        base = {
            "cluster": cluster,
            "instance": f"{_ip(rng)}:8080",
            "job": service,
            "namespace": namespace,
            "pod": pod,
            "service": service,
        }
        why = f"Calls from {service} to {upstream} time out." if upstream else f"{service} fails requests."
        b.add(
            cid,
            b.group(cluster, f"{service}-slo"),
            {**base, "alertname": "HighErrorRate", "severity": severities[0]},
            {"summary": f"{service}: more than 5% of requests fail", "description": why},
            [window],
            f'sum(rate(http_requests_total{{job="{service}",code=~"5.."}}[5m])) / '
            f'sum(rate(http_requests_total{{job="{service}"}}[5m])) > 0.05',
        )
        b.add(
            cid,
            b.group(cluster, f"{service}-slo"),
            {**base, "alertname": "HighLatency", "severity": severities[1]},
            {"summary": f"{service}: p99 latency above 2s", "description": why},
            [window],
            f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
            f'{{job="{service}"}}[5m]))) > 2',
        )


def _cascade(
    b: _Builder,
    name: str,
    kind: str,
    cluster: str,
    root: str,
    roots: list[_Root],
    at_m: float,
    recover_m: float,
    hops: int,
    symptom: Callable[[_Builder, str, str, int, str, tuple[float, float], random.Random], bool],
    *,
    root_late: bool = False,
) -> None:
    """A shared component fails: its own alerts first, then, level by level a few seconds apart,
    the services that call it (within ``hops``); recovery in reverse, the root last. With
    ``root_late`` the root's rule group evaluates 25 s after the failure, after the first level's."""
    cid, rng = b.begin(name, cluster)
    t_root = _around(rng, at_m)
    levels = dependents(root, hops)
    onset: dict[str, float] = {}
    previous = t_root
    for level in levels:
        for service in level:
            onset[service] = previous + rng.uniform(_STEP_MS, 2 * _STEP_MS)
            b.group(cluster, f"{service}-slo", phase_ms=onset[service])
        previous = max(onset[s] for s in level)
    resolved: dict[str, float] = {}
    floor = recover_m * _MIN
    for level in reversed(levels):
        for service in level:
            resolved[service] = floor + rng.uniform(0.5 * _STEP_MS, 1.5 * _STEP_MS) + DEFAULT_EVAL_MS
        floor = max(resolved[s] for s in level)
    root_end = floor + rng.uniform(0.5 * _STEP_MS, 1.5 * _STEP_MS) + DEFAULT_EVAL_MS
    group = b.group(cluster, f"{root}.rules", phase_ms=t_root + (25_000 if root_late else 0))
    for labels, texts, expr in roots:
        b.add(cid, group, labels, texts, [(t_root, root_end)], expr)
    edges: list[tuple[str, str]] = []
    services: list[str] = []
    reached = {root}
    for depth, level in enumerate(levels):
        for service in level:
            if symptom(b, cid, cluster, depth, service, (onset[service], resolved[service]), rng):
                edges.extend((service, u) for u in sorted(set(TOPOLOGY[service].depends_on) & reached))
                services.append(service)
        reached.update(services)
    b.cause(
        cid,
        kind=kind,
        root=f"{TOPOLOGY[root].kind}/{root}",
        root_alert=roots[0][0]["alertname"],
        summary=f"{root} fails; {len(services)} services that use it alert seconds later",
        components=(root, *services),
        dependents=tuple(services),
        edges=tuple(edges),
        root_late=root_late,
    )


_DEPTH_SEVERITIES = (("critical", "error"), ("error", "warning"), ("warning", "warning"))


def _errors_symptom(
    b: _Builder,
    cid: str,
    cluster: str,
    depth: int,
    service: str,
    window: tuple[float, float],
    rng: random.Random,
) -> bool:
    upstream = sorted(TOPOLOGY[service].depends_on)[0]
    pods = 3 if depth == 0 else 2
    _service_errors(b, cid, cluster, service, pods, window, rng, _DEPTH_SEVERITIES[min(depth, 2)], upstream)
    return True


def _lag_symptom(
    b: _Builder,
    cid: str,
    cluster: str,
    depth: int,
    service: str,
    window: tuple[float, float],
    rng: random.Random,
) -> bool:
    """A consumer falling behind: the application's own lag alert, per consumer group."""
    b.add(
        cid,
        b.group(cluster, f"{service}-slo"),
        {
            "alertname": "KafkaConsumerLagHigh",
            "cluster": cluster,
            "consumergroup": service,
            "job": service,
            "namespace": _namespace(service),
            "service": service,
            "severity": "warning",
            "topic": f"{service}.events",
        },
        {"summary": f"{service} is more than 10,000 messages behind"},
        [window],
        f'sum(kafka_consumergroup_lag{{consumergroup="{service}"}}) > 10000',
    )
    return True


def _postgres_roots(cluster: str, db: str) -> list[_Root]:
    labels = {
        "cluster": cluster,
        "namespace": "data",
        "service": db,
        "team": "db",
        "job": "postgres-exporter",
    }
    roots: list[_Root] = [
        (
            {
                **labels,
                "alertname": "PostgresqlDown",
                "instance": f"{db}-0:9187",
                "pod": f"{db}-0",
                "severity": "critical",
            },
            {"summary": f"PostgreSQL primary {db}-0 is down"},
            f'pg_up{{service="{db}"}} == 0',
        )
    ]
    for replica in (1, 2):
        roots.append(
            (
                {
                    **labels,
                    "alertname": "PostgresqlReplicationStopped",
                    "instance": f"{db}-{replica}:9187",
                    "pod": f"{db}-{replica}",
                    "severity": "error",
                },
                {"summary": f"Replica {db}-{replica} lost its primary"},
                f'pg_replication_is_replica{{pod="{db}-{replica}"}} == 1 and pg_stat_wal_receiver_status == 0',
            )
        )
    return roots


def _db_outage(
    b: _Builder, cluster: str, db: str, at_m: float, recover_m: float, *, late: bool = False
) -> None:
    roots = _postgres_roots(cluster, db)
    _cascade(
        b,
        f"{db}-outage",
        "db-outage",
        cluster,
        db,
        roots,
        at_m,
        recover_m,
        3,
        _errors_symptom,
        root_late=late,
    )


def _cache_outage(b: _Builder, cluster: str, at_m: float, recover_m: float) -> None:
    roots: list[_Root] = [
        (
            {
                "alertname": "RedisDown",
                "cluster": cluster,
                "instance": "cache-redis-0:9121",
                "job": "redis-exporter",
                "namespace": "platform",
                "pod": "cache-redis-0",
                "service": "cache",
                "severity": "critical",
            },
            {"summary": "Redis cache-redis-0 is down"},
            "redis_up == 0",
        )
    ]
    _cascade(b, "cache-outage", "cache-outage", cluster, "cache", roots, at_m, recover_m, 1, _cache_symptom)


def _cache_symptom(
    b: _Builder,
    cid: str,
    cluster: str,
    depth: int,
    service: str,
    window: tuple[float, float],
    rng: random.Random,
) -> bool:
    if service == "cart":  # cart reads through to the catalog without its cache: slower, no alert
        return False
    _service_errors(b, cid, cluster, service, 2, window, rng, ("error", "warning"), "cache")
    return True


def _queue_outage(b: _Builder, cluster: str, at_m: float, recover_m: float) -> None:
    base = {"cluster": cluster, "job": "kafka-exporter", "namespace": "data", "service": "kafka"}
    roots: list[_Root] = [
        (
            {
                **base,
                "alertname": "KafkaBrokerDown",
                "instance": "kafka-2:9308",
                "pod": "kafka-2",
                "severity": "critical",
            },
            {"summary": "Kafka broker kafka-2 is down"},
            "kafka_brokers < 3",
        )
    ]
    for broker in (0, 1):
        roots.append(
            (
                {
                    **base,
                    "alertname": "KafkaUnderReplicatedPartitions",
                    "instance": f"kafka-{broker}:9308",
                    "pod": f"kafka-{broker}",
                    "severity": "error",
                },
                {"summary": f"kafka-{broker} has under-replicated partitions"},
                "kafka_topic_partition_under_replicated_partition > 0",
            )
        )
    _cascade(b, "kafka-outage", "queue-outage", cluster, "kafka", roots, at_m, recover_m, 1, _lag_symptom)


def _bad_deploy(
    b: _Builder, cluster: str, service: str, pods: int, nodes: int, at_m: float, rollback_m: float
) -> None:
    """A broken version rolled out over ``pods`` pods spread over ``nodes`` nodes: every new pod
    errors and crash-loops (its alerts carry its node), the rollout gets stuck, a rollback ends it."""
    cid, rng = b.begin(f"{service}-deploy", cluster)
    namespace = _namespace(service)
    major, minor, patch = rng.randint(1, 4), rng.randint(0, 30), rng.randint(0, 9)
    version = f"v{major}.{minor}.{patch + 1}"
    hosts = [b.node(cluster, rng) for _ in range(nodes)]
    t_deploy = _around(rng, at_m)
    t_rollback = rollback_m * _MIN
    base = {"cluster": cluster, "namespace": namespace, "service": service, "version": version}
    b.add(
        cid,
        b.group(cluster, "kubernetes-apps"),
        {
            **base,
            "alertname": "KubeDeploymentRolloutStuck",
            "deployment": service,
            "job": "kube-state-metrics",
            "severity": "warning",
        },
        {"summary": f"Rollout of deployment {namespace}/{service} to {version} is not progressing"},
        [(t_deploy + 3 * _MIN, t_rollback + _MIN)],
        f'kube_deployment_status_condition{{deployment="{service}",condition="Progressing",status="false"}} == 1',
    )
    for i in range(pods):
        wave = i * 4 // pods  # maxSurge 25%: four waves, a minute apart
        pod = _pod_name(rng, service)
        up = t_deploy + wave * _MIN + rng.uniform(_STEP_MS, 3 * _STEP_MS)
        down = t_rollback + wave * 30_000 + rng.uniform(0, _STEP_MS)
        replica = {**base, "instance": f"{_ip(rng)}:8080", "node": hosts[i % nodes], "pod": pod}
        b.add(
            cid,
            b.group(cluster, f"{service}-slo"),
            {**replica, "alertname": "HighErrorRate", "job": service, "severity": "critical"},
            {"summary": f"{service} {version}: more than 5% of requests fail on {pod}"},
            [(up, down)],
            f'sum by (pod) (rate(http_requests_total{{job="{service}",code=~"5.."}}[1m])) > 0.05',
        )
        b.add(
            cid,
            b.group(cluster, "kubernetes-apps"),
            {
                **replica,
                "alertname": "KubePodCrashLooping",
                "container": service,
                "job": "kube-state-metrics",
                "severity": "error",
            },
            {"summary": f"Pod {namespace}/{pod} ({service} {version}) is crash looping"},
            [(up + rng.uniform(60_000, 120_000), down)],
            f'increase(kube_pod_container_status_restarts_total{{pod="{pod}"}}[10m]) > 0',
        )
    b.cause(
        cid,
        kind="bad-deploy",
        root=f"deployment/{service}",
        root_alert="KubeDeploymentRolloutStuck",
        summary=f"{service} {version} errors and crash-loops on {pods} pods over {nodes} nodes",
        nodes=tuple(hosts),
    )


def _dns_errors(b: _Builder, cluster: str, at_m: float, end_m: float) -> None:
    """CoreDNS failing: the same alert, service and namespace in every cluster where it happens."""
    cid, rng = b.begin("dns-errors", cluster)
    start = _around(rng, at_m)
    for _ in range(2):
        pod = _pod_name(rng, "coredns")
        b.add(
            cid,
            b.group(cluster, "coredns"),
            {
                "alertname": "CoreDNSErrorsHigh",
                "cluster": cluster,
                "instance": f"{_ip(rng)}:9153",
                "job": "coredns",
                "namespace": "kube-system",
                "pod": pod,
                "service": "kube-dns",
                "severity": "critical",
            },
            {"summary": f"CoreDNS {pod} answers more than 3% of requests with SERVFAIL"},
            [(start + rng.uniform(0, 10_000), _around(rng, end_m))],
            'sum(rate(coredns_dns_responses_total{rcode="SERVFAIL"}[5m])) / '
            "sum(rate(coredns_dns_responses_total[5m])) > 0.03",
        )
    b.cause(
        cid,
        kind="same-name-two-clusters",
        root="dns/kube-dns",
        root_alert="CoreDNSErrorsHigh",
        summary="CoreDNS fails, at the same time as in the other cluster: a cause of its own",
    )


def _flapping(
    b: _Builder,
    cluster: str,
    service: str,
    alertname: str,
    every_ms: int,
    span: tuple[float, float],
    extra: dict[str, str],
) -> None:
    """One alert on a threshold, firing for 1-3 evaluations then resolved for 1-2, for most of
    the storm."""
    cid, rng = b.begin(f"{service}-flapping", cluster)
    group = b.group(cluster, f"{service}-flap", every_ms)
    episodes: list[tuple[float, float]] = []
    t = float(group.align(span[0] * _MIN))
    end = span[1] * _MIN
    while t < end:
        off = min(t + rng.randint(1, 3) * every_ms, end)
        episodes.append((t, off))
        t = off + rng.randint(1, 2) * every_ms
    b.add(
        cid,
        group,
        {
            "alertname": alertname,
            "cluster": cluster,
            "job": service,
            "namespace": _namespace(service),
            "service": service,
            "severity": "warning",
            **extra,
        },
        {"summary": f"{service}: {alertname} around its threshold"},
        episodes,
        f'{alertname.lower()}{{service="{service}"}} > 0',
    )
    b.cause(
        cid,
        kind="flapping",
        root=f"service/{service}",
        root_alert=alertname,
        summary=f"{alertname} of {service} flaps every few evaluations",
    )


def _resend_storm(b: _Builder, cluster: str, probes: int, at_m: float, end_m: float) -> None:
    """Blackbox probes of the CDN's edges fail, evaluated every 5 s: the same alerts re-sent
    thousands of times (what deduplication is for)."""
    cid, rng = b.begin("cdn-probes", cluster)
    group = b.group(cluster, "blackbox", FLAP_EVAL_MS)
    start = _around(rng, at_m)
    pops = ("ams", "fra", "lhr", "cdg", "mad", "mxp", "arn", "waw", "dub", "vie", "zrh", "prg")
    for pop in pops[:probes]:
        b.add(
            cid,
            group,
            {
                "alertname": "ProbeFailed",
                "cluster": cluster,
                "instance": f"https://edge-{pop}.cdn.example.net/healthz",
                "job": "blackbox",
                "module": "http_2xx",
                "namespace": "monitoring",
                "service": "cdn",
                "severity": "critical",
            },
            {"summary": f"The CDN edge in {pop.upper()} fails its health probe"},
            [(start + rng.uniform(0, 15_000), end_m * _MIN + rng.uniform(0, 15_000))],
            'probe_success{job="blackbox"} == 0',
        )
    b.cause(
        cid,
        kind="resend-storm",
        root="external/cdn",
        root_alert="ProbeFailed",
        summary=f"{probes} CDN edge probes fail, re-sent every 5 s",
    )


def _node_disk(b: _Builder, cluster: str, at_m: float, end_m: float) -> None:
    """A node's disk fills up: the warning, later the critical alert (two label sets)."""
    cid, rng = b.begin("node-disk", cluster)
    node = b.node(cluster, rng)
    start, end = _around(rng, at_m), _around(rng, end_m)
    for severity, window in (("warning", (start, end)), ("critical", (start + 3 * _MIN, end - 2 * _MIN))):
        b.add(
            cid,
            b.group(cluster, "node-exporter"),
            {
                "alertname": "NodeFilesystemAlmostOutOfSpace",
                "cluster": cluster,
                "device": "/dev/nvme0n1p1",
                "fstype": "ext4",
                "instance": f"{node}:9100",
                "job": "node-exporter",
                "mountpoint": "/var/lib/containerd",
                "node": node,
                "severity": severity,
            },
            {"summary": f"Filesystem /var/lib/containerd on {node} is almost full"},
            [window],
            'node_filesystem_avail_bytes{job="node-exporter"} / node_filesystem_size_bytes < 0.05',
        )
    b.cause(
        cid,
        kind="node-disk",
        root=f"node/{node}",
        root_alert="NodeFilesystemAlmostOutOfSpace",
        summary=f"the disk of {node} fills up",
        components=(),
        nodes=(node,),
    )


def _service_incident(b: _Builder, cluster: str, service: str, pods: int, at_m: float, end_m: float) -> None:
    """One service fails on its own (a third-party API it calls, say): error and latency alerts."""
    cid, rng = b.begin(f"{service}-errors", cluster)
    window = (_around(rng, at_m), _around(rng, end_m))
    _service_errors(b, cid, cluster, service, pods, window, rng, ("error", "warning"), None)
    b.cause(
        cid,
        kind="service-errors",
        root=f"service/{service}",
        root_alert="HighErrorRate",
        summary=f"{service} fails on {pods} pods",
    )


def _search_cluster(b: _Builder, cluster: str, at_m: float, end_m: float) -> None:
    """The logging Elasticsearch goes red: cluster, shard and data-node alerts of one component."""
    cid, rng = b.begin("logging-es-red", cluster)
    start, end = _around(rng, at_m), _around(rng, end_m)
    base = {
        "cluster": cluster,
        "job": "elasticsearch-exporter",
        "namespace": "logging",
        "service": "logging-es",
    }
    kinds = [
        ("ElasticsearchClusterRed", "critical", {"instance": "logging-es-exporter:9114"}, 0.0),
        ("ElasticsearchUnassignedShards", "warning", {"instance": "logging-es-exporter:9114"}, 30_000.0),
        (
            "ElasticsearchDiskWatermarkReached",
            "warning",
            {"instance": "logging-es-data-2:9114", "pod": "logging-es-data-2"},
            60_000.0,
        ),
    ]
    for alertname, severity, extra, delay in kinds:
        b.add(
            cid,
            b.group(cluster, "elasticsearch"),
            {**base, **extra, "alertname": alertname, "severity": severity},
            {"summary": f"logging-es: {alertname}"},
            [(start + delay, end)],
            f"elasticsearch_{alertname.lower()} > 0",
        )
    b.cause(
        cid,
        kind="datastore-degraded",
        root="database/logging-es",
        root_alert="ElasticsearchClusterRed",
        summary="the logging Elasticsearch cluster goes red",
    )


def _memory_leak(b: _Builder, cluster: str, service: str, pods: int, at_m: float, end_m: float) -> None:
    """A leak: pods of one service are OOM-killed one after another."""
    cid, rng = b.begin(f"{service}-oom", cluster)
    namespace = _namespace(service)
    span = (end_m - at_m) * _MIN
    for i in range(pods):
        pod = _pod_name(rng, service)
        start = at_m * _MIN + i * span / (pods + 1) + rng.uniform(0, 20_000)
        b.add(
            cid,
            b.group(cluster, "kubernetes-apps"),
            {
                "alertname": "ContainerOOMKilled",
                "cluster": cluster,
                "container": service,
                "job": "kube-state-metrics",
                "namespace": namespace,
                "pod": pod,
                "service": service,
                "severity": "warning",
            },
            {"summary": f"Container {service} in {namespace}/{pod} was OOM-killed"},
            [(start, start + rng.uniform(3 * _MIN, 4 * _MIN))],
            'kube_pod_container_status_last_terminated_reason{reason="OOMKilled"} == 1',
        )
    b.cause(
        cid,
        kind="memory-leak",
        root=f"service/{service}",
        root_alert="ContainerOOMKilled",
        summary=f"{service} leaks memory: {pods} pods OOM-killed in turn",
    )


def _job_failures(b: _Builder, cluster: str, service: str, runs: int, at_m: float, every_m: float) -> None:
    """A cron job fails every run: one KubeJobFailed per run (each its own ``job_name``)."""
    cid, rng = b.begin(f"{service}-jobs", cluster)
    for i in range(runs):
        start = _around(rng, at_m + i * every_m)
        job_name = f"{service}-nightly-{29_000_000 + i * 5}"
        b.add(
            cid,
            b.group(cluster, "kubernetes-apps"),
            {
                "alertname": "KubeJobFailed",
                "cluster": cluster,
                "job": "kube-state-metrics",
                "job_name": job_name,
                "namespace": _namespace(service),
                "service": service,
                "severity": "warning",
            },
            {"summary": f"Job {job_name} failed to complete"},
            [(start, start + every_m * _MIN + rng.uniform(0, 30_000))],
            f'kube_job_failed{{job_name="{job_name}"}} > 0',
        )
    b.cause(
        cid,
        kind="job-failures",
        root=f"service/{service}",
        root_alert="KubeJobFailed",
        summary=f"the {service} cron job fails {runs} runs in a row",
    )


def _control_plane(b: _Builder, cluster: str, at_m: float, end_m: float) -> None:
    """etcd's disks are slow; the API server it serves burns its error budget."""
    cid, rng = b.begin("etcd-slow", cluster)
    start, end = _around(rng, at_m), _around(rng, end_m)
    for member in range(2):
        b.add(
            cid,
            b.group(cluster, "etcd"),
            {
                "alertname": "etcdHighFsyncDurations",
                "cluster": cluster,
                "instance": f"{_ip(rng)}:2379",
                "job": "etcd",
                "namespace": "kube-system",
                "pod": f"etcd-master-{member}",
                "service": "etcd",
                "severity": "warning",
            },
            {"summary": f"etcd member etcd-master-{member}: 99th percentile fsync above 0.5s"},
            [(start + rng.uniform(0, 10_000), end)],
            "histogram_quantile(0.99, rate(etcd_disk_wal_fsync_duration_seconds_bucket[5m])) > 0.5",
        )
    b.add(
        cid,
        b.group(cluster, "kube-apiserver"),
        {
            "alertname": "KubeAPIErrorBudgetBurn",
            "cluster": cluster,
            "job": "apiserver",
            "long": "1h",
            "namespace": "kube-system",
            "service": "kube-apiserver",
            "severity": "critical",
            "short": "5m",
        },
        {"summary": "The API server is burning too much error budget"},
        [(start + 45_000, end - 30_000)],
        "apiserver_request:burnrate1h > (14.40 * 0.01)",
    )
    b.cause(
        cid,
        kind="control-plane",
        root="control-plane/etcd",
        root_alert="etcdHighFsyncDurations",
        summary="etcd fsyncs are slow; the API server fails requests",
        components=("etcd", "kube-apiserver"),
        dependents=("kube-apiserver",),
        edges=(("kube-apiserver", "etcd"),),
    )


def _noise(b: _Builder, count: int) -> None:
    """Unrelated single alerts over the whole storm, in both clusters."""
    rng = b.rng(NOISE)
    for i in range(count):
        service, namespace = _NOISE_SERVICES[i % len(_NOISE_SERVICES)]
        cluster = CLUSTERS[i % len(CLUSTERS)]
        alertname, severity, expr = _STEADY_KINDS[rng.randrange(len(_STEADY_KINDS))]
        lifetime = rng.uniform(2 * _MIN, 8 * _MIN)
        start = rng.uniform(0, STORM_DURATION_MS - lifetime - 2 * _MIN)
        b.add(
            NOISE,
            b.group(cluster, "background"),
            {
                "alertname": alertname,
                "cluster": cluster,
                "instance": f"{_ip(rng)}:9100",
                "job": service,
                "namespace": namespace,
                "service": service,
                "severity": severity,
            },
            {"summary": f"{alertname} on {service}"},
            [(start, start + lifetime)],
            expr,
        )


def _storm_mix(b: _Builder) -> None:
    eu, us = CLUSTERS
    # prod-eu-1 (times in minutes after t=0)
    _node_failure(
        b, "node-failure", eu, 2, 18, ["reviews", "profile", "fraud", "loyalty", "ledger", "billing", "geo"]
    )
    _db_outage(b, eu, "orders-db", 6, 14)
    _bad_deploy(b, eu, "recommendations", 50, 10, 4, 14)
    _dns_errors(b, eu, 11, 16)
    _flapping(
        b,
        eu,
        "quotes",
        "HighLatency",
        FLAP_EVAL_MS,
        (1, 25),
        {"instance": "10.31.7.12:8080", "pod": "quotes-7d9f6c5b8d-x2k4q"},
    )
    _resend_storm(b, eu, 12, 8, 20)
    _node_disk(b, eu, 13, 24)
    _service_incident(b, eu, "ads", 3, 21, 26)
    _cache_outage(b, eu, 22.5, 26.5)
    _search_cluster(b, eu, 7, 12)
    # prod-us-1
    _db_outage(b, us, "accounts-db", 3, 12, late=True)
    _node_failure(b, "node-failure", us, 9, 20, ["catalog", "search", "reviews", "recommendations"])
    _dns_errors(b, us, 11.3, 15.5)
    _queue_outage(b, us, 15, 21)
    _node_failure(b, "node-failure-late", us, 20, 25, ["fraud", "media"])
    _bad_deploy(b, us, "pricing", 8, 4, 17, 23)
    _flapping(b, us, "geo", "KubeHpaMaxedOut", DEFAULT_EVAL_MS, (2, 24), {"horizontalpodautoscaler": "geo"})
    _memory_leak(b, us, "ledger", 4, 5, 14)
    _job_failures(b, us, "reports", 4, 6, 4)
    _control_plane(b, us, 24, 27)
    _noise(b, 14)


_STORM_BUILDERS: dict[str, Callable[[_Builder], None]] = {"storm-mix": _storm_mix}


def build_storm(name: str = "storm-mix", *, seed: int = 1) -> Storm:
    """Build storm ``name`` for ``seed``; the same arguments always give the same alerts, truth
    and records."""
    if name not in _STORM_BUILDERS:
        raise SimulationError(f"unknown storm {name!r}; choose one of {', '.join(STORMS)}")
    builder = _Builder(seed)
    _STORM_BUILDERS[name](builder)
    builder.plan.finish()
    return Storm(name=name, seed=seed, causes=builder.causes, truth=builder.truth, _plan=builder.plan)
