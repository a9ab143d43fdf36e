"""Topology (issue #12): the file and its errors, the record of the topology topic, which
components an alert names, how component sets are related, and which firing component is the
root cause, on hand-made graphs and on the simulator's scenarios."""

from __future__ import annotations

import random
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.loaders import load_topology
from stormwatch.schemas.topology import (
    ComponentRef,
    TopologyComponent,
    TopologyUpdate,
    component_key,
    decode_topology_record,
    parse_component_key,
)
from stormwatch.simulate import generate
from stormwatch.streams.core.topology import (
    REASON_PATHS,
    ComponentId,
    Edge,
    RelationKind,
    Tiebreak,
    Topology,
    TopologyChangeError,
    TopologyConfig,
    TopologyError,
    parse_topology,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "topology.yaml"

EU = ("prod-eu-1",)
US = ("prod-us-1",)


def cid(kind: str, name: str, scope: tuple[str, ...] = EU) -> ComponentId:
    return ComponentId(scope, kind, name)


def topology(text: str = "") -> Topology:
    return Topology(parse_topology(textwrap.dedent(text)))


def load_error(tmp_path: Path, text: str) -> TopologyError:
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    return info.value


SHOP = """
    components:
      - {kind: service, name: db, depends_on: []}
      - {kind: service, name: api, depends_on: [service/db]}
      - {kind: service, name: web, depends_on: [service/api]}
      - {kind: service, name: edge, depends_on: [service/web]}
      - {kind: service, name: batch, depends_on: [service/db]}
      - {kind: service, name: lonely}
"""


# --------------------------------------------------------------------------------------------------
# The file


def test_example_file_loads_and_declares_the_simulator_databases() -> None:
    config = load_topology(EXAMPLE)
    topo = Topology(config)
    assert config.scope_labels == ["cluster"]
    assert config.link.max_hops == 3 and config.link.window_ms == 240_000
    assert config.link.common_upstream is False
    declared = {c.ref for c in topo.declared()}
    for db in ("orders-db", "accounts-db", "catalog-db", "payments-db"):
        assert ComponentRef("database", db) in declared
    # dependencies resolve in the alert's own cluster
    assert topo.dependencies(cid("service", "orders", US)) == (
        cid("database", "orders-db", US),
        cid("queue", "kafka", US),
    )


def test_empty_file_gives_the_defaults() -> None:
    config = parse_topology("")
    assert config == TopologyConfig()
    assert config.scope_labels == ["cluster"]
    assert [e.label for e in config.label_components] == [
        "node",
        "kubernetes_node",
        "pod",
        "service",
        "deployment",
    ]
    assert config.implied is None
    assert [(r.from_, r.to, r.mutual) for r in config.implied_relations] == [
        ("pod", "node", False),
        ("pod", "service", True),
        ("pod", "workload", True),
    ]
    assert config.components == [] and config.link.common_upstream is False


def test_durations_and_python_construction() -> None:
    assert parse_topology("link: {window: 1h30m}").link.window_ms == 5_400_000
    assert parse_topology("link: {window: 90}").link.window_ms == 90_000
    assert TopologyConfig.model_validate({"link": {"window_ms": 5}}).link.window_ms == 5


def test_cycles_are_allowed() -> None:
    topo = topology(
        """
        components:
          - {kind: service, name: a, depends_on: [service/b]}
          - {kind: service, name: b, depends_on: [service/a]}
        """
    )
    assert topo.dependencies(cid("service", "a")) == (cid("service", "b"),)


EVERY_MISTAKE = """\
scope_labels: [cluster, cluster]
label_components:
  - {label: node, kind: node}
  - {label: node, kind: host}
  - {label: pod-name, kind: Pod}
  - {label: service, kind: service, strip_prot: true}
  - {label: pod, kind: pod}
implied:
  - {from: pod, to: node}
  - {from: node, to: node}
  - {from: pod, to: rack}
components:
  - {kind: database, name: orders-db, scope: {cluster: eu}}
  - {kind: service, name: checkout, depends_on: [databse/orders-db, service/checkout, nope]}
  - {kind: database, name: orders-db, scope: {cluster: eu}}
  - {kind: service, name: cart, scope: {region: eu}}
  - {kind: service, name: cart, depends_on: [service/checkout, service/checkout]}
link:
  max_hops: 7
  window: 5x
  extra: 1
"""


def test_every_mistake_is_reported_in_one_pass_with_file_line_and_path(tmp_path: Path) -> None:
    err = load_error(tmp_path, EVERY_MISTAKE)
    got = sorted((line or 0, path, message) for path, message, line in err.problems)
    expected = [
        (1, "scope_labels[1]", "label 'cluster' is listed twice"),
        (4, "label_components[1].label", "label 'node' is already mapped by label_components[0]"),
        (5, "label_components[2].kind", "'Pod' is not a component kind"),
        (5, "label_components[2].label", "'pod-name' is not a label name"),
        (
            6,
            "label_components[3].strip_prot",
            "unknown key 'strip_prot'; allowed keys: kind, label, match, strip_port",
        ),
        (10, "implied[1].to", "a relation needs two kinds; from and to are both 'node'"),
        (
            11,
            "implied[2].to",
            "no label names a component of kind 'rack', so no alert implies this relation; "
            "kinds of label_components: host, node, pod, service",
        ),
        (14, "components[1].depends_on[0]", "unknown kind 'databse' in databse/orders-db; known kinds"),
        (14, "components[1].depends_on[1]", "service/checkout cannot depend on itself"),
        (14, "components[1].depends_on[2]", "'nope' is not a component reference; write kind/name"),
        (15, "components[2]", "is declared twice: components[0] and components[2]"),
        (16, "components[3].scope", "a scope gives a value for every scope label (cluster); got region"),
        (17, "components[4].depends_on[1]", "service/checkout is listed twice"),
        (19, "link.max_hops", "must be at most 6; got the number 7"),
        (20, "link.window", "invalid duration '5x': unknown unit 'x'"),
        (
            21,
            "link.extra",
            "unknown key 'extra'; allowed keys: common_upstream, delay, max_hops, max_wait, window",
        ),
    ]
    assert [(line, path) for line, path, _ in got] == [(line, path) for line, path, _ in expected], got
    for (_, path, message), (_, _, want) in zip(got, expected, strict=True):
        assert want in message, (path, message)
    text = str(err)
    assert text.startswith(f"{tmp_path / 'topology.yaml'}:1: scope_labels[1]: ")
    assert '{cluster="eu"}database/orders-db is declared twice' in text


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("link: {max_hops: 0}", "link.max_hops", "must be at least 1; got the number 0"),
        ("link: {window: 0s}", "link.window", "must be longer than 0s"),
        ("link: {window: -1m}", "link.window", "durations cannot be negative"),
        ("link: {window: [1]}", "link.window", "got a list"),
        ("scope_labels: cluster", "scope_labels", "expected a list"),
        ("components: [{kind: service}]", "components[0].name", "missing required key 'name'"),
        ("components: [{kind: service, name: ''}]", "components[0].name", "at least 1 character"),
        ("components: [{kind: svc/x, name: a}]", "components[0].kind", "is not a component kind"),
        ("components: [{kind: service, name: a, scope: {1x: a}}]", "components[0].scope.1x", "not a label"),
        ("components: [{kind: s, name: a, depends_on: [s/]}]", "components[0].depends_on[0]", "kind/name"),
        (
            "label_components: [{label: x, kind: y, match: ['a=~\"(\"']}]",
            "label_components[0].match[0]",
            "regex",
        ),
        ("implied: [{from: pod, to: node, relation: runs-on}]", "implied[0].relation", "not a label name"),
        (
            "implied: [{from: pod, to: node}, {from: node, to: pod, mutual: true}]",
            "implied[1]",
            "pod -> node is already implied by implied[0]",
        ),
        (
            "components: [{kind: service, name: a, schema_versio: 1}]",
            "components[0].schema_versio",
            "depends_on",
        ),
        ("rules: []", "rules", "allowed keys: components, implied, label_components, link, scope_labels"),
    ],
)
def test_validation_errors(tmp_path: Path, text: str, path: str, message: str) -> None:
    err = load_error(tmp_path, text)
    assert len(err.problems) == 1, err.problems
    got_path, got_message, line = err.problems[0]
    assert got_path == path and message in got_message and line == 1, err.problems


def test_a_label_entry_with_match_may_come_before_the_catch_all() -> None:
    config = parse_topology(
        """
        label_components:
          - {label: service, kind: database, match: ['team="db"']}
          - {label: service, kind: service}
        """
    )
    assert [e.kind for e in config.label_components] == ["database", "service"]


def test_yaml_errors_and_unreadable_files(tmp_path: Path) -> None:
    err = load_error(tmp_path, "link:\n  max_hops: 1\n  max_hops: 2\n")
    assert err.problems[0][2] == 3 and "duplicate key 'max_hops'" in err.problems[0][1]
    err = load_error(tmp_path, "components: [\n")
    assert "invalid YAML" in str(err)
    with pytest.raises(TopologyError, match="cannot read the topology file"):
        load_topology(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"scope_labels: [\xe9]\n")
    with pytest.raises(TopologyError, match="not UTF-8"):
        load_topology(bad)
    with pytest.raises(TopologyError, match=r"^<topology>:1: link\.max_hops"):
        parse_topology("link: {max_hops: 9}")


# --------------------------------------------------------------------------------------------------
# The record of the topology topic


def test_component_keys_are_canonical() -> None:
    assert component_key("database", "orders-db") == "database/orders-db"
    assert component_key("node", "a/b", {"cluster": 'eu "1"', "az": "x\\y\n"}) == (
        '{az="x\\\\y\\n",cluster="eu \\"1\\""}node/a/b'
    )
    for text in ("database/orders-db", '{az="x\\\\y\\n",cluster="eu \\"1\\""}node/a/b', "{}x/y"):
        ref, scope = parse_component_key(text)
        assert component_key(ref.kind, ref.name, scope) == text
    for bad, reason in [
        ("database", "kind/name"),
        ('{cluster="eu"', "no closing"),
        ('{cluster="eu}x/y', "closing double quote"),
        ("{cluster=eu}x/y", 'label="value"'),
        ('{b="1",a="2"}x/y', "canonical form"),
        ('{a="1" ,b="2"}x/y', "expected ','"),
        ('{a="\\q"}x/y', "canonical form"),
        ("Service/x", "not a component kind"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_component_key(bad)


@given(
    kind=st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
    name=st.text(min_size=1, max_size=12),
    scope=st.none()
    | st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True), st.text(max_size=8)),
)
def test_component_key_round_trip(kind: str, name: str, scope: dict[str, str] | None) -> None:
    ref, parsed = parse_component_key(component_key(kind, name, scope))
    assert ref == ComponentRef(kind, name)
    assert parsed == (None if scope is None else tuple(sorted(scope.items())))


def test_decode_topology_records() -> None:
    component = TopologyComponent(kind="service", name="checkout", depends_on=["database/orders-db"])
    update = decode_topology_record(b"service/checkout", component.to_bytes())
    assert update == TopologyUpdate.put(component) and update.key == "service/checkout"
    scoped = TopologyComponent(kind="service", name="cart", scope={"cluster": "eu"})
    assert decode_topology_record(scoped.key.encode(), scoped.to_bytes()).scope == (("cluster", "eu"),)
    tombstone = decode_topology_record(b'{cluster="eu"}service/cart', None)
    assert tombstone == TopologyUpdate.delete("service", "cart", {"cluster": "eu"})
    for key, value, reason in [
        (None, None, "needs a key"),
        (b"\xff", None, "not UTF-8"),
        (b"service/other", component.to_bytes(), "names another component"),
        (b"service/checkout", b"{", "invalid component service/checkout"),
        (b"service/checkout", b'{"kind": "service", "name": "checkout", "schema_version": 2}', "newer"),
        (
            b"service/checkout",
            b'{"kind": "service", "name": "checkout", "depends_on": ["service/checkout"]}',
            "itself",
        ),
    ]:
        with pytest.raises(ValueError, match=reason):
            decode_topology_record(key, value)


# --------------------------------------------------------------------------------------------------
# What alerts name


_NAMING_TOPOLOGY = """
    scope_labels: [cluster]
    label_components:
      - {label: service, kind: database, match: ['team="db"']}
      - {label: service, kind: service}
      - {label: node, kind: node}
      - {label: kubernetes_node, kind: node}
      - {label: pod, kind: pod}
      - {label: instance, kind: host, strip_port: true}
    """


def test_components_of_labels() -> None:
    topo = topology(_NAMING_TOPOLOGY)
    labels = {"cluster": "prod-eu-1", "service": "orders", "node": "n1", "instance": "db-1:9100", "x": "y"}
    assert topo.components_of(labels) == {cid("service", "orders"), cid("node", "n1"), cid("host", "db-1")}
    db = {"cluster": "prod-eu-1", "service": "orders-db", "team": "db", "kubernetes_node": "n2"}
    assert topo.components_of(db) == {cid("database", "orders-db"), cid("node", "n2")}
    assert topo.components_of({"service": "a", "node": ""}) == {cid("service", "a", ("",))}
    assert topo.components_of({"cluster": "prod-eu-1"}) == frozenset()
    for instance, host in [
        ("db-1:9100", "db-1"),
        ("db-1", "db-1"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("[2001:db8::1]:9100", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("db-1:http", "db-1:http"),
        (":9100", ":9100"),
        ("[x]y", "[x]y"),
    ]:
        assert topo.components_of({"cluster": "c", "instance": instance}) == {cid("host", host, ("c",))}


_SOME_LABELS = st.dictionaries(
    st.sampled_from(["cluster", "service", "team", "node", "pod", "instance", "alertname", "severity"]),
    st.sampled_from(["", "a", "b", "db", "a:9100"]),
)


@settings(max_examples=300, deadline=None)
@given(
    _SOME_LABELS, _SOME_LABELS, st.dictionaries(st.sampled_from(["alertname", "severity", "job"]), st.text())
)
def test_alerts_with_one_naming_key_name_the_same_components(
    one: dict[str, str], two: dict[str, str], noise: dict[str, str]
) -> None:
    """note_for_event matches each distinct naming key once: sound only if the key decides every
    answer derived from components_of, and labels that name nothing do not change it."""
    topo = topology(_NAMING_TOPOLOGY)

    def answers(labels: dict[str, str]) -> tuple[object, ...]:
        return topo.components_of(labels), topo.failing_components(labels), topo.implied_edges(labels)

    if topo.naming_key(one) == topo.naming_key(two):
        assert answers(one) == answers(two)
    noisy = {**one, **noise}
    assert topo.naming_key(noisy) == topo.naming_key(one)
    assert answers(noisy) == answers(one)


def test_implied_edges_and_what_an_alert_says_is_failing() -> None:
    topo = Topology()
    pod_alert = {"cluster": "prod-eu-1", "node": "n1", "pod": "checkout-abc", "service": "checkout"}
    pod, node, service = cid("pod", "checkout-abc"), cid("node", "n1"), cid("service", "checkout")
    assert topo.implied_edges(pod_alert) == {
        Edge(pod, node, "runs_on"),
        Edge(pod, service, "part_of"),
        Edge(service, pod, "part_of", mirrored=True),
    }
    # The node is where the pod runs, not what fails; the pod and its service fail together.
    assert topo.failing_components(pod_alert) == {pod, service}
    assert topo.failing_components({"cluster": "prod-eu-1", "node": "n1"}) == {node}
    assert topo.failing_components({"cluster": "prod-eu-1", "service": "x"}) == {cid("service", "x")}
    assert topo.implied_edges({"cluster": "prod-eu-1", "node": "n1"}) == frozenset()


def test_scope_labels_qualify_components_and_may_be_empty() -> None:
    two = topology("scope_labels: [cluster, namespace]")
    assert two.components_of({"cluster": "c", "service": "s"}) == {ComponentId(("c", ""), "service", "s")}
    none = topology("scope_labels: []")
    assert none.components_of({"cluster": "c", "service": "s"}) == {ComponentId((), "service", "s")}
    assert none.describe(ComponentId((), "service", "s")) == "service/s"
    assert two.describe(ComponentId(("c", ""), "service", "s")) == '{cluster="c",namespace=""}service/s'


# --------------------------------------------------------------------------------------------------
# Related


def test_related_by_a_shared_node() -> None:
    topo = Topology()
    a = topo.components_of({"cluster": "prod-eu-1", "node": "n1", "pod": "a-1", "service": "a"})
    b = topo.components_of({"cluster": "prod-eu-1", "node": "n1", "pod": "b-1", "service": "b"})
    relation = topo.related(a, b)
    assert relation is not None
    assert relation.kind is RelationKind.SHARED and relation.path == (cid("node", "n1"),)
    assert relation.hops == 0 and relation.via == cid("node", "n1")


def test_related_along_declared_dependencies() -> None:
    topo = topology(SHOP + "    link: {common_upstream: true}\n")
    web, api, db = cid("service", "web"), cid("service", "api"), cid("service", "db")
    up = topo.related({web}, {db})
    assert up is not None and up.kind is RelationKind.UPSTREAM
    assert up.path == (web, api, db) and up.relations == ("depends_on", "depends_on") and up.via == db
    down = topo.related({db}, {web})
    assert down is not None and down.kind is RelationKind.DOWNSTREAM and down.path == (db, api, web)
    siblings = topo.related({api}, {cid("service", "batch")})
    assert siblings is not None and siblings.kind is RelationKind.COMMON_UPSTREAM
    assert siblings.path == (api, db, cid("service", "batch")) and siblings.via == db
    # edge -> web -> api -> db is three edges: beyond max_hops 2
    assert topo.related({cid("service", "edge")}, {db}) is None
    assert topo.related({cid("service", "lonely")}, {db}) is None
    assert topo.related(set(), {db}) is None


def test_max_hops_and_common_upstream_are_configurable() -> None:
    far = topology(SHOP + "    link: {max_hops: 3, common_upstream: false}\n")
    edge, db = cid("service", "edge"), cid("service", "db")
    relation = far.related({edge}, {db})
    assert relation is not None and relation.hops == 3
    assert far.related({cid("service", "api")}, {cid("service", "batch")}) is None  # siblings off
    assert far.related({db}, {edge}) is not None  # one way still relates


def test_the_fewest_hops_win_then_the_more_direct_kind() -> None:
    topo = topology(
        """
        components:
          - {kind: service, name: a, depends_on: [service/x]}
          - {kind: service, name: b, depends_on: [service/x]}
          - {kind: service, name: c, depends_on: [service/a]}
        """
    )
    a, b, c, x = cid("service", "a"), cid("service", "b"), cid("service", "c"), cid("service", "x")
    assert topo.related({a}, {a, b}) == topo.related({a}, {a})  # shared beats common upstream
    relation = topo.related({c}, {a, b})
    assert relation is not None and relation.kind is RelationKind.UPSTREAM and relation.path == (c, a)
    relation = topo.related({a}, {b, x})
    assert relation is not None and relation.path == (a, x)


def test_implied_edges_relate_pods_through_their_service_and_node() -> None:
    topo = topology(SHOP)
    pod_alert = {"cluster": "prod-eu-1", "pod": "api-1", "node": "n7", "service": "api"}
    pod_side = {cid("pod", "api-1")}
    db = {cid("service", "db")}
    assert topo.related(pod_side, db) is None  # without the alert's edges the pod is unknown
    relation = topo.related(pod_side, db, extra_edges=topo.implied_edges(pod_alert))
    assert relation is not None
    assert relation.path == (cid("pod", "api-1"), cid("service", "api"), cid("service", "db"))
    assert relation.relations == ("part_of", "depends_on")


def test_nothing_relates_across_scopes() -> None:
    topo = topology(SHOP)
    eu = topo.components_of({"cluster": "prod-eu-1", "alertname": "HighErrorRate", "service": "api"})
    us = topo.components_of({"cluster": "prod-us-1", "alertname": "HighErrorRate", "service": "api"})
    assert topo.related(eu, us) is None
    # not even when the caller passes an edge between them
    bridge = Edge(cid("service", "api", EU), cid("service", "api", US))
    assert topo.related(eu, us, extra_edges=[bridge]) is None
    assert topo.related({cid("service", "web", EU)}, {cid("service", "db", US)}) is None


# --------------------------------------------------------------------------------------------------
# Root cause


def test_root_cause_walks_to_the_most_upstream_firing_component() -> None:
    topo = topology(SHOP)
    firing = {cid("service", "edge"): 1_000, cid("service", "web"): 2_000, cid("service", "api"): 3_000}
    root = topo.root_cause(firing)
    assert root.component == cid("service", "api") and root.first_firing_ms == 3_000
    assert root.decided_by is Tiebreak.ONLY and root.explains == 2 and root.candidates == (root.component,)
    assert root.paths == (
        (cid("service", "api"), cid("service", "web"), cid("service", "edge")),
        (cid("service", "api"), cid("service", "web")),
    )
    assert root.tier == (cid("service", "api"),)


def test_a_late_upstream_alert_re_roots() -> None:
    topo = topology(SHOP)
    firing = {cid("service", "api"): 5_000, cid("service", "batch"): 6_000}
    before = topo.root_cause(firing)
    assert before.component == cid("service", "api") and before.decided_by is Tiebreak.FIRST_FIRING
    assert before.candidates == (cid("service", "api"), cid("service", "batch"))
    after = topo.root_cause({**firing, cid("service", "db"): 9_000})  # the database alert arrives last
    assert after.component == cid("service", "db") and after.explains == 2
    assert after.decided_by is Tiebreak.ONLY


def test_ties_go_to_the_whole_then_to_the_lowest_id() -> None:
    topo = Topology()
    pod_alert = {"cluster": "prod-eu-1", "pod": "web-1", "service": "web"}
    other_pod = {"cluster": "prod-eu-1", "pod": "web-2", "service": "web"}
    edges = topo.implied_edges(pod_alert) | topo.implied_edges(other_pod)
    firing = dict.fromkeys(topo.failing_components(pod_alert) | topo.failing_components(other_pod), 7)
    root = topo.root_cause(firing, extra_edges=edges)
    assert root.component == cid("service", "web") and root.decided_by is Tiebreak.DEPENDENTS
    assert root.tier == (cid("pod", "web-1"), cid("pod", "web-2"), cid("service", "web"))
    # one pod: the pod is no dependent of its service (the mirrored edge only makes them one tier)
    one = topo.root_cause(
        dict.fromkeys(topo.failing_components(pod_alert), 7), extra_edges=topo.implied_edges(pod_alert)
    )
    assert one.component == cid("service", "web") and one.decided_by is Tiebreak.DEPENDENTS
    unrelated = topo.root_cause({cid("service", "b"): 1, cid("service", "a"): 1})
    assert unrelated.component == cid("service", "a") and unrelated.decided_by is Tiebreak.ID


def test_a_dependency_cycle_is_one_tier() -> None:
    topo = topology(
        """
        components:
          - {kind: service, name: a, depends_on: [service/b]}
          - {kind: service, name: b, depends_on: [service/c]}
          - {kind: service, name: c, depends_on: [service/a, service/store]}
          - {kind: service, name: d, depends_on: [service/a]}
        """
    )
    a, b, c, d, store = (cid("service", n) for n in ("a", "b", "c", "d", "store"))
    cycle = {b: 30, a: 20, c: 10, d: 5}
    root = topo.root_cause(cycle)
    # d fired first but depends on the cycle; inside it, a has the most firing dependents (c, d)
    assert root.component == a and root.tier == (a, b, c) and root.candidates == (a, c, b)
    assert root.decided_by is Tiebreak.DEPENDENTS and root.explains == 3
    assert topo.root_cause({**cycle, store: 40}).component == store  # upstream of the whole tier
    assert topo.root_cause({d: 1, a: 2}).component == a


def test_root_cause_needs_a_firing_component() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Topology().root_cause({})


def test_reason_paths_are_bounded_and_in_firing_order() -> None:
    lines = "\n".join(f"      - {{kind: service, name: s{i}, depends_on: [service/hub]}}" for i in range(20))
    topo = topology(f"    components:\n{lines}\n")
    firing = {cid("service", f"s{i}"): 100 - i for i in range(20)}
    firing[cid("service", "hub")] = 500
    root = topo.root_cause(firing)
    assert root.component == cid("service", "hub") and root.explains == 20
    assert len(root.paths) == REASON_PATHS
    assert [p[-1].name for p in root.paths] == ["s19", "s18", "s17", "s16", "s15"]


# --------------------------------------------------------------------------------------------------
# The simulator's scenarios with the shipped topology


def scenario_incident(
    scenario: str, seed: int, size: int
) -> tuple[Topology, dict[ComponentId, int], set[Edge]]:
    """What a linker would hand over for a whole scenario: each failing component with its first
    firing, and the implied edges of every alert."""
    topo = Topology(load_topology(EXAMPLE))
    firing: dict[ComponentId, int] = {}
    edges: set[Edge] = set()
    for alert in generate(scenario, size=size, seed=seed).alerts:
        start = alert.episodes[0][0]
        for component in topo.failing_components(alert.labels):
            firing[component] = min(start, firing.get(component, start))
        edges |= topo.implied_edges(alert.labels)
    return topo, firing, edges


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_node_failure_roots_at_the_node(seed: int) -> None:
    topo, firing, edges = scenario_incident("node-failure", seed, 60)
    root = topo.root_cause(firing, extra_edges=edges)
    assert root.component.kind == "node" and root.decided_by is Tiebreak.ONLY
    assert root.explains == len(firing) - 1  # every pod and service on it
    # and every pod group is related to the node's group by the node they share
    node_group = {root.component}
    pods = [c for c in firing if c.kind == "pod"]
    assert all(topo.related(node_group, {pod}, extra_edges=edges) is not None for pod in pods)


def test_node_failure_before_the_node_down_alert_arrives() -> None:
    topo, firing, edges = scenario_incident("node-failure", 4, 30)
    node = next(c for c in firing if c.kind == "node")
    early = topo.root_cause({c: t for c, t in firing.items() if c != node}, extra_edges=edges)
    assert early.component.kind == "service"
    assert topo.root_cause({**firing, node: max(firing.values()) + 1}, extra_edges=edges).component == node


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_db_cascade_roots_at_the_database(seed: int) -> None:
    topo, firing, edges = scenario_incident("db-cascade", seed, 40)
    root = topo.root_cause(firing, extra_edges=edges)
    assert root.component.kind == "database"
    assert set(root.tier) == {root.component} | {c for c in firing if c.name.startswith(root.component.name)}
    # Arriving last, it still roots everything the topology puts under it. (The simulator draws
    # each cascade's dependencies at random, so some of its services are not under it here.)
    under = {c: t for c, t in firing.items() if root.component in upstream_of(topo, c, edges)}
    assert under, "the shipped topology puts none of the cascade under its database"
    late = {**under, **dict.fromkeys(root.tier, 10**9)}
    relooked = topo.root_cause(late, extra_edges=edges)
    assert relooked.component == root.component and relooked.explains == len(late) - 1


def test_db_cascade_dependents_link_to_the_database() -> None:
    topo = Topology(load_topology(EXAMPLE))
    db = topo.components_of(
        {"cluster": "prod-eu-1", "service": "orders-db", "team": "db", "pod": "orders-db-0"}
    )
    shipping = {
        "cluster": "prod-eu-1",
        "service": "shipping",
        "pod": "shipping-x",
        "alertname": "HighErrorRate",
    }
    relation = topo.related(topo.components_of(shipping), db, extra_edges=topo.implied_edges(shipping))
    assert relation is not None and relation.kind is RelationKind.UPSTREAM
    assert relation.path == (
        cid("service", "shipping"),
        cid("service", "orders"),
        cid("database", "orders-db"),
    )
    other_cluster = topo.components_of({**shipping, "cluster": "prod-us-1"})
    assert topo.related(other_cluster, db) is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bad_deploy_roots_at_the_service_not_at_a_pod(seed: int) -> None:
    topo, firing, edges = scenario_incident("bad-deploy", seed, 30)
    root = topo.root_cause(firing, extra_edges=edges)
    assert root.component.kind == "service"


def test_bad_deploy_over_many_nodes_still_roots_at_the_service() -> None:
    topo = Topology(load_topology(EXAMPLE))
    firing: dict[ComponentId, int] = {}
    edges: set[Edge] = set()
    for i in range(50):
        labels = {"cluster": "prod-eu-1", "service": "cart", "pod": f"cart-{i}", "node": f"n{i % 10}"}
        for component in topo.failing_components(labels):
            firing.setdefault(component, 1_000 + i)
        edges |= topo.implied_edges(labels)
    assert not any(c.kind == "node" for c in firing)
    root = topo.root_cause(firing, extra_edges=edges)
    assert root.component == cid("service", "cart") and root.explains == 50


def test_the_same_alert_in_two_clusters_is_unrelated() -> None:
    topo = Topology(load_topology(EXAMPLE))
    groups = [
        topo.components_of(
            {"alertname": "HighErrorRate", "cluster": cluster, "service": "checkout", "pod": pod}
        )
        for cluster, pod in (("prod-eu-1", "checkout-1"), ("prod-us-1", "checkout-2"))
    ]
    assert topo.related(groups[0], groups[1]) is None
    # two services with no path between them, in one cluster
    assert topo.related({cid("service", "email")}, {cid("service", "checkout")}) is None


def test_the_example_covers_the_storm_catalog() -> None:
    """stormwatch.storms draws its multi-cause storms from one catalog; every component of it,
    named by its `service` label, is the catalog's kind with the catalog's dependencies."""
    storms = pytest.importorskip("stormwatch.storms")
    topo = Topology(load_topology(EXAMPLE))
    for component in storms.TOPOLOGY.values():
        (named,) = topo.components_of({"cluster": "prod-eu-1", "service": component.name})
        assert named.kind == component.kind, component
        want = {cid(storms.TOPOLOGY[d].kind, d) for d in component.depends_on}
        assert set(topo.dependencies(named)) == want, component


@pytest.mark.parametrize("seed", [1, 7])
def test_every_storm_cause_gets_its_root_and_noise_relates_to_nothing(seed: int) -> None:
    """Per cause of a storm-mix storm (its alerts only, as if linking were perfect): the root is
    the component the generator broke; background alerts relate to no cause."""
    storms = pytest.importorskip("stormwatch.storms")
    topo = Topology(load_topology(EXAMPLE))
    storm = storms.build_storm(seed=seed)
    by_cause = storm.alerts_by_cause()
    named: dict[str, set[ComponentId]] = {}
    edges: set[Edge] = set()
    for cause in storm.causes:
        firing: dict[ComponentId, int] = {}
        named[cause.id] = set()
        for alert in by_cause[cause.id]:
            start = alert.episodes[0][0]
            for component in topo.failing_components(alert.labels):
                firing[component] = min(start, firing.get(component, start))
            named[cause.id] |= topo.components_of(alert.labels)
            edges |= topo.implied_edges(alert.labels)
        root = topo.root_cause(firing, extra_edges=edges).component
        kind, name = cause.root.split("/", 1)
        # a bad deploy's root is the deployment; its alerts name it as the service of that name
        assert (root.kind, root.name) == ({"deployment": "service"}.get(kind, kind), name), cause.id
    for alert in by_cause[storms.NOISE]:
        components = topo.components_of(alert.labels)
        assert all(topo.related(components, other, extra_edges=edges) is None for other in named.values())


# --------------------------------------------------------------------------------------------------
# Changes at run time


def test_apply_adds_replaces_and_deletes_components() -> None:
    topo = topology(SHOP)
    web, api, db, cache = (
        cid("service", "web"),
        cid("service", "api"),
        cid("service", "db"),
        cid("service", "cache"),
    )
    assert topo.version == 0
    assert topo.apply(
        TopologyUpdate.put(TopologyComponent(kind="service", name="api", depends_on=["service/cache"]))
    )
    assert topo.version == 1 and topo.dependencies(api) == (cache,)
    assert topo.related({web}, {db}) is None  # the old edge is gone
    assert topo.root_cause({web: 1, cache: 2}).component == cache
    assert not topo.apply(
        TopologyUpdate.put(TopologyComponent(kind="service", name="api", depends_on=["service/cache"]))
    )
    assert topo.version == 1  # the same declaration again changes nothing
    assert topo.apply(TopologyUpdate.delete("service", "api"))
    assert topo.dependencies(api) == () and topo.version == 2
    assert not topo.apply(TopologyUpdate.delete("service", "never-declared"))
    assert topo.version == 2


def test_a_scoped_declaration_overrides_the_one_for_every_scope() -> None:
    topo = topology(SHOP)
    scoped = TopologyComponent(kind="service", name="api", scope={"cluster": "prod-us-1"}, depends_on=[])
    topo.apply(TopologyUpdate.put(scoped))
    assert topo.dependencies(cid("service", "api", US)) == ()
    assert topo.dependencies(cid("service", "api", EU)) == (cid("service", "db", EU),)
    topo.apply(TopologyUpdate.delete("service", "api", {"cluster": "prod-us-1"}))
    assert topo.dependencies(cid("service", "api", US)) == (cid("service", "db", US),)
    assert [c.key for c in topo.declared()][:2] == ["service/api", "service/batch"]


def test_records_that_cannot_apply_change_nothing() -> None:
    topo = topology(SHOP)
    wrong_scope = TopologyComponent(kind="service", name="api", scope={"region": "eu"})
    with pytest.raises(TopologyChangeError, match="scope labels are cluster"):
        topo.apply(TopologyUpdate.put(wrong_scope))
    mismatch = TopologyUpdate(
        ComponentRef("service", "web"), None, TopologyComponent(kind="service", name="api")
    )
    with pytest.raises(TopologyChangeError, match="must name the same component"):
        topo.apply(mismatch)
    assert topo.version == 0 and topo.dependencies(cid("service", "web")) == (cid("service", "api"),)


def test_replaying_the_same_changes_gives_the_same_answers() -> None:
    changes = [
        TopologyUpdate.put(TopologyComponent(kind="service", name=f"s{i}", depends_on=[f"service/s{i + 1}"]))
        for i in range(10)
    ] + [TopologyUpdate.delete("service", "s4")]
    first, second = topology(SHOP), topology(SHOP)
    for change in changes:
        first.apply(change)
    for change in changes:
        second.apply(change)
    firing = {cid("service", f"s{i}"): 10 - i for i in range(10)}
    assert first.root_cause(firing) == second.root_cause(firing)
    # s4 no longer depends on s5: s0-s4 and s5-s9 are two chains, s9's fired first
    assert first.root_cause(firing).candidates == (cid("service", "s9"), cid("service", "s4"))
    assert first.declared() == second.declared() and first.version == second.version == 11


# --------------------------------------------------------------------------------------------------
# Properties

NAMES = [f"c{i}" for i in range(8)]
SCOPES = [EU, US]


@st.composite
def graphs(draw: st.DrawFn) -> Topology:
    """A topology of up to 8 services with arbitrary edges (cycles included)."""
    lines = []
    for name in NAMES:
        deps = draw(st.lists(st.sampled_from([n for n in NAMES if n != name]), unique=True, max_size=3))
        lines.append(
            f"  - {{kind: service, name: {name}, depends_on: [{', '.join('service/' + d for d in deps)}]}}"
        )
    hops = draw(st.integers(1, 4))
    common = draw(st.booleans())
    return Topology(
        parse_topology(
            "components:\n"
            + "\n".join(lines)
            + f"\nlink: {{max_hops: {hops}, common_upstream: {str(common).lower()}}}\n"
        )
    )


components = st.builds(ComponentId, st.sampled_from(SCOPES), st.just("service"), st.sampled_from(NAMES))


@settings(max_examples=150, deadline=None)
@given(
    topo=graphs(),
    firing=st.dictionaries(components, st.integers(0, 5), min_size=1, max_size=10),
    seed=st.integers(),
)
def test_root_cause_is_independent_of_the_order_of_firing(
    topo: Topology, firing: dict[ComponentId, int], seed: int
) -> None:
    items = list(firing.items())
    random.Random(seed).shuffle(items)
    root = topo.root_cause(firing)
    assert topo.root_cause(dict(items)) == root
    # nothing firing is upstream of the root, but members of its own cycle
    above_root = upstream_of(topo, root.component)
    for other in firing:
        if other != root.component and other in above_root:
            assert root.component in upstream_of(topo, other) and other in root.tier


def upstream_of(topo: Topology, component: ComponentId, edges: Iterable[Edge] = ()) -> set[ComponentId]:
    extra: dict[ComponentId, list[ComponentId]] = {}
    for edge in edges:
        extra.setdefault(edge.dependent, []).append(edge.dependency)
    seen: set[ComponentId] = set()
    todo = [component]
    while todo:
        current = todo.pop()
        for dependency in (*topo.dependencies(current), *extra.get(current, ())):
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


@settings(max_examples=150, deadline=None)
@given(
    topo=graphs(),
    a=st.frozensets(components, min_size=1, max_size=3),
    b=st.frozensets(components, min_size=1, max_size=3),
)
def test_related_is_symmetric_and_never_crosses_scopes(
    topo: Topology, a: frozenset[ComponentId], b: frozenset[ComponentId]
) -> None:
    forward, backward = topo.related(a, b), topo.related(b, a)
    assert (forward is None) == (backward is None)
    if forward is None or backward is None:
        return
    assert backward.path == tuple(reversed(forward.path)) and backward.via == forward.via
    assert backward.relations == tuple(reversed(forward.relations))
    mirrored = {
        RelationKind.UPSTREAM: RelationKind.DOWNSTREAM,
        RelationKind.DOWNSTREAM: RelationKind.UPSTREAM,
    }
    assert backward.kind == mirrored.get(forward.kind, forward.kind)
    assert forward.hops <= topo.link.max_hops
    assert forward.path[0] in a and forward.path[-1] in b
    assert len({c.scope for c in forward.path}) == 1


@settings(max_examples=100, deadline=None)
@given(topo=graphs(), names=st.frozensets(st.sampled_from(NAMES), min_size=1, max_size=4))
def test_no_relation_across_scopes_even_with_bridging_edges(topo: Topology, names: frozenset[str]) -> None:
    eu = {cid("service", n, EU) for n in names}
    us = {cid("service", n, US) for n in names}
    bridges = [Edge(e, u) for e in eu for u in us]
    assert topo.related(eu, us, extra_edges=bridges) is None


# --------------------------------------------------------------------------------------------------
# Size


def test_large_topologies_answer_quickly() -> None:
    """20k declared components (a tree: 20 databases, 1,000 services each with 19 more below);
    related and root_cause questions cost microseconds to a millisecond, not the graph's size."""
    topo = Topology()
    for d in range(20):
        topo.apply(TopologyUpdate.put(TopologyComponent(kind="database", name=f"db{d}")))
        for s in range(50):
            name = f"svc{d}-{s}"
            topo.apply(
                TopologyUpdate.put(
                    TopologyComponent(kind="service", name=name, depends_on=[f"database/db{d}"])
                )
            )
            for leaf in range(19):
                topo.apply(
                    TopologyUpdate.put(
                        TopologyComponent(
                            kind="service", name=f"{name}-{leaf}", depends_on=[f"service/{name}"]
                        )
                    )
                )
    assert len(topo.declared()) == 20 + 1000 + 19_000
    queries = [
        ({cid("service", f"svc{i % 20}-{i % 50}-{i % 19}")}, {cid("database", f"db{i % 20}")})
        for i in range(1000)
    ]
    start = time.perf_counter()
    results = [topo.related(a, b) for a, b in queries]
    per_query = (time.perf_counter() - start) / len(queries)
    assert all(r is not None and r.hops == 2 for r in results)
    assert per_query < 0.002, per_query
    firing = {cid("service", f"svc3-{s}-{leaf}"): s for s in range(50) for leaf in range(19)}
    firing[cid("database", "db3")] = 99
    start = time.perf_counter()
    assert topo.root_cause(firing).component == cid("database", "db3")
    assert time.perf_counter() - start < 1.0
