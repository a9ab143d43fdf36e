"""Correlation rules: matchers, routing and group keys, inhibition, and every load_rules error."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.loaders import load_rules
from stormwatch.schemas.fingerprint import label_fingerprint
from stormwatch.schemas.matchers import Matcher, MatchOp
from stormwatch.streams.core.routing import Router, format_group_key
from stormwatch.streams.core.rules import (
    ALL_LABELS,
    DEFAULT_RULE,
    PER_REPLICA_LABELS,
    PLACEMENT_LABELS,
    WORKLOAD_RULE,
    CorrelationRule,
    FlapPolicy,
    InhibitRule,
    LatePolicy,
    RulesConfig,
    RulesError,
    parse_rules,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "correlation_rules.yaml"


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> RulesError:
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    return info.value


def only_problem(err: RulesError) -> tuple[str, str, int | None]:
    assert len(err.problems) == 1, err.problems
    return err.problems[0]


# --------------------------------------------------------------------------------------------------
# Matchers


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('severity=~"crit"', {"severity": "critical"}, False),  # anchored at the end
        ('severity=~"ritical"', {"severity": "critical"}, False),  # anchored at the start
        ('severity=~"crit.*"', {"severity": "critical"}, True),
        ('severity=~"critical|error"', {"severity": "error"}, True),
        ('severity=~"critical|error"', {"severity": "errors"}, False),
        ('severity=~"critical"', {"severity": "critical\n"}, False),  # \Z, not $
        ('severity!~"critical|error"', {"severity": "warning"}, True),
        ('severity!~"critical|error"', {"severity": "critical"}, False),
        ('env=""', {}, True),  # a missing label is ""
        ('env=""', {"env": "prod"}, False),
        ('env!="prod"', {}, True),
        ('env="prod"', {}, False),
        ('env=~".*"', {}, True),
        ('env=~".+"', {}, False),
        ('env!~".+"', {}, True),
        ("team=db", {"team": "db"}, True),
        ("team = db", {"team": "db"}, True),
    ],
)
def test_matcher_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('a="x\\"y"', 'x"y'),
        ('a="x\\\\y"', "x\\y"),
        ('a="x\\ny"', "x\ny"),
        ('a=~"a\\.b"', "a\\.b"),  # unknown escapes stay (regex escapes work as written)
        ('a=""', ""),
        ("a=", ""),
    ],
)
def test_matcher_parse_unescapes(text: str, value: str) -> None:
    assert Matcher.parse(text).value == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('a="foo', "no closing double quote"),
        ('a="x"y"', "unescaped double quote"),
        ('a=x"', "unquoted value contains a double quote"),
        ("1a=b", "expected NAME=VALUE"),
        ("a", "expected NAME=VALUE"),
        ('a=~"("', "invalid regex"),
    ],
)
def test_matcher_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Matcher.parse(text)


@given(
    st.sampled_from(list(MatchOp)),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
)
def test_matcher_str_parse_round_trip(op: MatchOp, value: str) -> None:
    if op in (MatchOp.RE, MatchOp.NRE):
        value = value.replace("\\", "").replace("(", "").replace(")", "").replace("[", "")
        value = "".join(c for c in value if c not in "*+?{}|^$.")
    matcher = Matcher(name="label", op=op, value=value)
    assert Matcher.parse(str(matcher)) == matcher


def test_matcher_copy_does_not_reuse_a_stale_regex() -> None:
    matcher = Matcher(name="a", op=MatchOp.RE, value="x")
    assert matcher.matches({"a": "x"})
    copy = matcher.model_copy(update={"value": "y"})
    assert copy.matches({"a": "y"})
    assert not copy.matches({"a": "x"})


# --------------------------------------------------------------------------------------------------
# Routing and group keys


def router(text: str = "") -> Router:
    return Router(parse_rules(textwrap.dedent(text)))


def test_default_rule_groups_away_per_replica_labels() -> None:
    r = router()
    a = r.route({"alertname": "HighLatency", "service": "shop", "instance": "10.0.0.1:80"})
    b = r.route({"alertname": "HighLatency", "service": "shop", "instance": "10.0.0.2:80"})
    c = r.route({"alertname": "HighLatency", "service": "blog", "instance": "10.0.0.1:80"})
    assert a.group_key == b.group_key == 'default:{alertname="HighLatency",service="shop"}'
    assert c.group_key != a.group_key
    assert a.rule.name == "default"
    assert a.group_labels == {"alertname": "HighLatency", "service": "shop"}


def test_the_builtin_workload_rule_does_not_split_a_workload_by_node() -> None:
    """A bad deploy over many nodes is one incident; a node's own alerts stay per node."""
    r = router()
    pods = [
        r.route({"alertname": "PodCrash", "namespace": "shop", "pod": f"web-{i}", "node": f"n{i % 3}"})
        for i in range(6)
    ]
    assert {p.group_key for p in pods} == {'workload:{alertname="PodCrash",namespace="shop"}'}
    assert pods[0].rule.name == "workload"
    other_ns = r.route({"alertname": "PodCrash", "namespace": "blog", "pod": "web-1", "node": "n1"})
    assert other_ns.group_key != pods[0].group_key
    node_a = r.route({"alertname": "NodeDown", "node": "n1"})
    node_b = r.route({"alertname": "NodeDown", "node": "n2"})
    assert node_a.rule.name == "default" and node_a.group_key != node_b.group_key
    assert set(WORKLOAD_RULE.group_by_exclude) == set(PER_REPLICA_LABELS) | set(PLACEMENT_LABELS)


def test_default_rule_constant() -> None:
    assert DEFAULT_RULE.name == "default"
    assert DEFAULT_RULE.match == []
    assert DEFAULT_RULE.group_by == [ALL_LABELS]
    assert tuple(DEFAULT_RULE.group_by_exclude) == PER_REPLICA_LABELS
    assert set(PER_REPLICA_LABELS) == {
        "instance",
        "pod",
        "pod_name",
        "pod_ip",
        "container",
        "container_id",
        "container_name",
        "replica",
        "prometheus_replica",
        "endpoint",
        "host_ip",
        "uid",
        "id",
        "dedup_key",
    }


def test_group_key_example_and_hash() -> None:
    route = router().route({"job": "node", "alertname": "DiskFull"})
    assert route.group_key == 'default:{alertname="DiskFull",job="node"}'
    assert route.gkhash == xxhash.xxh3_64_hexdigest(route.group_key.encode("utf-8"))
    assert len(route.gkhash) == 16
    assert route.gkhash == route.gkhash.lower()


def test_group_key_escaping() -> None:
    route = router().route({"alertname": 'a"b\\c\nd'})
    assert route.group_key == 'default:{alertname="a\\"b\\\\c\\nd"}'
    assert route.group_labels == {"alertname": 'a"b\\c\nd'}


def test_group_key_quotes_non_classic_label_names() -> None:
    assert format_group_key("r", {"k8s.pod": "x", "a": "1"}) == 'r:{a="1","k8s.pod"="x"}'
    # a name that tries to fake a separator cannot collide with a real pair of labels
    forged = format_group_key("r", {'a="1",b': "2"})
    real = format_group_key("r", {"a": "1", "b": "2"})
    assert forged != real


def test_explicit_group_by_omits_missing_and_empty_labels() -> None:
    r = router(
        """
        rules:
          - name: svc
            match: ['team="db"']
            group_by: [service, cluster]
        """
    )
    full = r.route({"team": "db", "cluster": "eu1", "service": "orders", "alertname": "X"})
    assert full.group_key == 'svc:{cluster="eu1",service="orders"}'
    assert full.group_labels == {"cluster": "eu1", "service": "orders"}
    missing = r.route({"team": "db", "service": "orders"})
    empty = r.route({"team": "db", "service": "orders", "cluster": ""})
    assert missing.group_key == empty.group_key == 'svc:{service="orders"}'
    assert missing.group_labels == {"service": "orders"}


def test_empty_group_by_puts_everything_in_one_group() -> None:
    r = router(
        """
        rules:
          - name: all
            group_by: []
        """
    )
    assert r.route({"a": "1"}).group_key == r.route({"b": "2"}).group_key == "all:{}"


def test_all_labels_with_custom_and_empty_exclude() -> None:
    r = router(
        """
        rules:
          - name: strict
            match: ['kind="strict"']
            group_by: ["..."]
            group_by_exclude: []
          - name: loose
            group_by: ["..."]
            group_by_exclude: [region]
        """
    )
    strict = r.route({"kind": "strict", "pod": "p1"})
    assert strict.group_key == 'strict:{kind="strict",pod="p1"}'
    loose = r.route({"kind": "other", "pod": "p1", "region": "eu"})
    assert loose.group_key == 'loose:{kind="other",pod="p1"}'


def test_first_match_wins() -> None:
    r = router(
        """
        rules:
          - name: critical
            match: ['severity="critical"']
            group_by: [alertname]
          - name: db
            match: ['team="db"']
            group_by: [cluster]
        """
    )
    assert r.route({"severity": "critical", "team": "db", "alertname": "A"}).rule.name == "critical"
    assert r.route({"severity": "warning", "team": "db", "cluster": "c"}).rule.name == "db"
    fallback = r.route({"severity": "warning", "alertname": "A", "pod": "x"})
    assert fallback.rule.name == "default"
    assert fallback.group_key == 'default:{alertname="A",severity="warning"}'


def test_catch_all_is_appended_only_when_needed() -> None:
    config = parse_rules("rules:\n  - name: a\n    match: [x=1]\n")
    assert [r.name for r in config.rules] == ["a", "default"]
    config = parse_rules("rules:\n  - name: everything\n")
    assert [r.name for r in config.rules] == ["everything"]


def test_matcher_objects_and_strings_are_equivalent() -> None:
    config = parse_rules(
        textwrap.dedent(
            """
            rules:
              - name: a
                match: ['severity=~"critical|error"', {name: team, op: "=", value: db}, {name: env}]
            """
        )
    )
    match = config.rules[0].match
    assert match[0] == Matcher(name="severity", op=MatchOp.RE, value="critical|error")
    assert match[1] == Matcher(name="team", op=MatchOp.EQ, value="db")
    assert match[2] == Matcher(name="env", op=MatchOp.EQ, value="")


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
        st.text(max_size=8),
        max_size=8,
    ),
    st.randoms(),
)
def test_group_key_is_independent_of_label_order(labels: dict[str, str], rnd: object) -> None:
    items = list(labels.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    shuffled = dict(items)
    a = Router(RulesConfig()).route(labels)
    b = Router(RulesConfig()).route(shuffled)
    assert a.group_key == b.group_key
    assert a.gkhash == b.gkhash
    assert list(a.group_labels) == sorted(a.group_labels)


label_sets = st.dictionaries(st.text(min_size=1, max_size=5), st.text(min_size=1, max_size=5), max_size=4)


@given(label_sets, label_sets)
def test_group_key_is_injective(a: dict[str, str], b: dict[str, str]) -> None:
    if a != b:
        assert format_group_key("r", a) != format_group_key("r", b)


def test_route_cache_by_fingerprint_and_by_labels() -> None:
    r = Router(RulesConfig())
    labels = {"alertname": "A", "job": "j"}
    fp = label_fingerprint(labels)
    first = r.route(labels, fp)
    assert r.route(labels, fp) is first
    assert r.cache_misses == 1
    by_labels = r.route(dict(reversed(list(labels.items()))))
    assert by_labels == first
    assert r.cache_misses == 2
    assert r.route(labels) is by_labels
    assert r.cache_misses == 2


def test_alerts_of_one_group_share_one_route() -> None:
    """A cached alert costs its key, not a Route of its own: a storm's alerts are many per group."""
    r = Router(RulesConfig(), cache_size=4)
    routes = [r.route({"alertname": "Down", "instance": f"h{i}"}, f"fp{i}") for i in range(10)]
    assert all(route is routes[0] for route in routes), "instance is per replica: one group"
    other = r.route({"alertname": "Other", "instance": "h0"}, "fp-other")
    assert other is not routes[0] and other.group_key != routes[0].group_key
    for i in range(10):  # the shared table is bounded as the cache is; a result never changes
        r.route({"alertname": f"Gone{i}"}, f"gone{i}")
    assert r.route({"alertname": "Down", "instance": "h99"}, "fp99") == routes[0]


def test_route_cache_is_bounded_lru() -> None:
    r = Router(RulesConfig(), cache_size=2)
    a, b, c = ({"alertname": n} for n in "abc")
    r.route(a)
    r.route(b)
    r.route(a)  # a is now most recently used
    r.route(c)  # evicts b
    assert r.cache_len == 2
    misses = r.cache_misses
    r.route(a)
    assert r.cache_misses == misses
    r.route(b)
    assert r.cache_misses == misses + 1
    r.clear_cache()
    assert r.cache_len == 0
    with pytest.raises(ValueError, match="cache_size"):
        Router(RulesConfig(), cache_size=0)


def test_route_hit_is_fast() -> None:
    r = Router(RulesConfig())
    labels = {"alertname": "DiskFull", "job": "node", "instance": "h:9100", "severity": "critical"}
    fp = label_fingerprint(labels)
    r.route(labels, fp)
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        r.route(labels, fp)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 20e-6  # measured ~0.1 µs; the bound only catches a broken cache


def test_router_inhibitions_and_model_construct_fallback() -> None:
    config = load_rules(EXAMPLE)
    assert Router(config).inhibitions == tuple(config.inhibit_rules)
    bare = RulesConfig.model_construct(rules=[CorrelationRule(name="a", match=["x=1"])])
    assert Router(bare).route({"y": "2"}).rule.name == "default"


# --------------------------------------------------------------------------------------------------
# Inhibition


NODE_DOWN = InhibitRule(
    name="node-down",
    source_match=['alertname="NodeDown"'],
    target_match=['alertname!="NodeDown"'],
    equal=["node"],
)


def test_inhibition_basic() -> None:
    src = {"alertname": "NodeDown", "node": "n1"}
    assert NODE_DOWN.inhibits(src, {"alertname": "DiskFull", "node": "n1"})
    assert not NODE_DOWN.inhibits(src, {"alertname": "DiskFull", "node": "n2"})
    assert not NODE_DOWN.inhibits(src, {"alertname": "NodeDown", "node": "n1"})  # target must match
    assert not NODE_DOWN.inhibits(
        {"alertname": "Other", "node": "n1"}, {"alertname": "DiskFull", "node": "n1"}
    )


def test_inhibition_equal_labels_must_be_present_on_both_sides() -> None:
    """Unlike Alertmanager (missing == missing): a source without the label mutes nothing, or a
    NodeDown sent without ``node`` (PagerDuty) would mute a whole storm."""
    assert not NODE_DOWN.inhibits({"alertname": "NodeDown"}, {"alertname": "DiskFull"})
    assert not NODE_DOWN.inhibits(
        {"alertname": "NodeDown", "node": ""}, {"alertname": "DiskFull", "node": ""}
    )
    assert NODE_DOWN.inhibits(
        {"alertname": "NodeDown", "node": "n1"}, {"alertname": "DiskFull", "node": "n1"}
    )
    assert not NODE_DOWN.inhibits({"alertname": "NodeDown"}, {"alertname": "DiskFull", "node": "n1"})
    assert not NODE_DOWN.inhibits({"alertname": "NodeDown", "node": "n1"}, {"alertname": "DiskFull"})


def test_inhibition_never_self_and_never_mutual_when_both_match_both_sides() -> None:
    rule = InhibitRule(
        name="crit-over-warn",
        source_match=['severity=~"critical|warning"'],
        target_match=['severity=~"critical|warning"'],
        equal=["service"],
    )
    a = {"alertname": "A", "severity": "critical", "service": "s"}
    b = {"alertname": "B", "severity": "warning", "service": "s"}
    assert not rule.inhibits(a, a)
    assert not rule.inhibits(a, b)
    assert not rule.inhibits(b, a)


def test_inhibition_one_sided_overlap_still_inhibits() -> None:
    rule = InhibitRule(
        name="crit-over-all",
        source_match=['severity="critical"'],
        target_match=['severity=~"critical|warning"'],
        equal=["service"],
    )
    crit = {"alertname": "A", "severity": "critical", "service": "s"}
    warn = {"alertname": "B", "severity": "warning", "service": "s"}
    assert rule.inhibits(crit, warn)  # warn does not match the source side
    assert not rule.inhibits(crit, {**crit, "alertname": "C"})  # both critical: two-sided


# --------------------------------------------------------------------------------------------------
# Loading: values


def test_load_none_is_the_default_config() -> None:
    config = load_rules(None)
    assert [r.name for r in config.rules] == ["workload", "default"]
    rule = config.rules[-1]
    assert rule.group_wait_ms == 30_000
    assert rule.group_interval_ms == 300_000
    assert rule.max_lifetime_ms == 86_400_000
    assert rule.reopen_window_ms == 3_600_000
    assert rule.resolve_timeout_ms == 300_000
    assert rule.close_after_ms == 900_000
    assert rule.close_delay_ms == 3_600_000
    assert config.allowed_lateness_ms == 50
    assert config.state_time_resolution_ms == 10_000
    assert config.late_policy is LatePolicy.APPLY
    assert config.inhibit_rules == []
    assert config.flap == FlapPolicy(enabled=True, max_flips=4, window_ms=600_000, settle_ms=600_000)


def test_empty_file_is_the_default_config(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, "")) == load_rules(None)
    assert load_rules(write(tmp_path, "# only a comment\n")) == load_rules(None)


def test_example_file_loads() -> None:
    config = load_rules(EXAMPLE)
    assert [r.name for r in config.rules] == ["database", "node", "workload", "default"]
    db, node, workload, default = config.rules
    assert workload.match == [WORKLOAD_RULE.match[0]]
    assert workload.group_by_exclude == WORKLOAD_RULE.group_by_exclude
    assert db.group_by == ["cluster", "service"]
    assert db.group_wait_ms == 10_000
    assert node.resolve_timeout_ms == 600_000
    assert tuple(default.group_by_exclude) == PER_REPLICA_LABELS
    assert [i.name for i in config.inhibit_rules] == ["node-down"]
    assert config.flap.enabled
    r = Router(config)
    assert (
        r.route({"team": "db", "severity": "critical", "cluster": "c", "service": "s"}).rule.name
        == "database"
    )
    assert r.route({"job": "node-exporter", "node": "n1"}).rule.name == "node"
    assert r.route({"job": "api"}).rule.name == "default"
    nd = config.inhibit_rules[0]
    assert nd.inhibits({"alertname": "NodeDown", "node": "n1"}, {"alertname": "DiskFull", "node": "n1"})


def test_durations_defaults_and_overrides(tmp_path: Path) -> None:
    config = load_rules(
        write(
            tmp_path,
            """
            defaults:
              group_wait: 1m
              resolve_timeout: 10m
            rules:
              - name: fast
                match: [x=1]
                group_wait: 5        # plain number: seconds
                group_interval: 1h30m
              - name: ms
                match: [x=2]
                group_wait_ms: 250   # field name: milliseconds
              - name: rest
            allowed_lateness: 250ms
            late_policy: dead_letter
            state_time_resolution: 1s
            flap: {enabled: false, max_flips: 2, window: 1m, settle: 30s}
            """,
        )
    )
    fast, ms, rest = config.rules
    assert fast.group_wait_ms == 5_000
    assert fast.group_interval_ms == 5_400_000
    assert fast.resolve_timeout_ms == 600_000  # from defaults
    assert ms.group_wait_ms == 250
    assert rest.group_wait_ms == 60_000
    assert rest.close_after_ms == 900_000  # built-in default
    assert config.allowed_lateness_ms == 250
    assert config.late_policy is LatePolicy.DEAD_LETTER
    assert config.state_time_resolution_ms == 1_000
    assert config.flap == FlapPolicy(enabled=False, max_flips=2, window_ms=60_000, settle_ms=30_000)


def test_defaults_apply_to_the_appended_default_rule(tmp_path: Path) -> None:
    config = load_rules(write(tmp_path, "defaults: {group_wait: 2s}\nrules:\n  - {name: a, match: [x=1]}\n"))
    assert [r.group_wait_ms for r in config.rules] == [2_000, 2_000]
    config = load_rules(write(tmp_path, "defaults: {group_wait: 3s}\n"))
    assert [r.name for r in config.rules] == ["workload", "default"]
    assert [r.group_wait_ms for r in config.rules] == [3_000, 3_000]


def test_python_construction_uses_milliseconds_or_duration_strings() -> None:
    assert CorrelationRule(name="a", group_wait_ms=1500).group_wait_ms == 1500
    assert CorrelationRule(name="a", group_wait="2m").group_wait_ms == 120_000  # type: ignore[call-arg]
    assert CorrelationRule(name="a", group_wait=3).group_wait_ms == 3_000  # type: ignore[call-arg]
    assert CorrelationRule.yaml_keys() == [
        "close_after",
        "group_by",
        "group_by_exclude",
        "group_interval",
        "group_wait",
        "match",
        "max_lifetime",
        "name",
        "reopen_window",
        "resolve_timeout",
    ]


def test_model_dump_loads_back() -> None:
    config = load_rules(EXAMPLE)
    assert RulesConfig.model_validate(config.model_dump()) == config


def test_close_delay_is_the_longer_of_close_after_and_reopen_window() -> None:
    assert CorrelationRule(name="a", close_after_ms=10, reopen_window_ms=5).close_delay_ms == 10
    assert CorrelationRule(name="a", close_after_ms=5, reopen_window_ms=10).close_delay_ms == 10


# --------------------------------------------------------------------------------------------------
# Loading: every error path


def test_error_names_file_line_path_problem_and_fix(tmp_path: Path) -> None:
    err = load_error(
        tmp_path,
        """\
        rules:
          - name: a
            match: [x=1]
          - name: b
            group_wait: 5x
        """,
    )
    path, message, line = only_problem(err)
    assert (path, line) == ("rules[1].group_wait", 5)
    assert "invalid duration '5x': unknown unit 'x'" in message
    assert "expected a duration like 30s, 5m" in message
    assert str(err) == f"{tmp_path / 'rules.yaml'}:5: rules[1].group_wait: {message}"
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "bogus: 1\n",
            "bogus",
            "unknown key 'bogus'; allowed keys: allowed_lateness, defaults, flap, "
            "inhibit_rules, late_policy, rules, state_time_resolution",
        ),
        (
            "rules:\n  - {name: a, foo: 1}\n",
            "rules[0].foo",
            "unknown key 'foo'; allowed keys: close_after, group_by, group_by_exclude, group_interval, "
            "group_wait, match, max_lifetime, name, reopen_window, resolve_timeout",
        ),
        (
            "defaults: {name: x}\n",
            "defaults.name",
            "unknown key 'name'; allowed keys: close_after, "
            "group_interval, group_wait, max_lifetime, reopen_window, resolve_timeout",
        ),
        (
            "flap: {windw: 1m}\n",
            "flap.windw",
            "unknown key 'windw'; allowed keys: enabled, max_flips, settle, window",
        ),
        (
            "inhibit_rules:\n  - {name: i, source_match: [a=1], target_match: [b=1], eq: [x]}\n",
            "inhibit_rules[0].eq",
            "unknown key 'eq'; allowed keys: equal, name, source_match, target_match",
        ),
        (
            "rules:\n  - {name: a, match: [{name: x, valu: y}]}\n",
            "rules[0].match[0].valu",
            "unknown key 'valu'; allowed keys: name, op, value",
        ),
        ("rules:\n  - {match: [x=1]}\n", "rules[0].name", "missing required key 'name'"),
        (
            "rules:\n  - {name: 'a b'}\n",
            "rules[0].name",
            "invalid name 'a b': names may only contain letters",
        ),
        ("rules:\n  - {name: 'a:b'}\n", "rules[0].name", "invalid name 'a:b'"),
        ("rules: []\n", "rules", "needs at least one rule (omit 'rules' to use the built-in default rule)"),
        ("rules: {name: a}\n", "rules", "expected a list; got a mapping"),
        ("rules:\n  - just-a-name\n", "rules[0]", "expected a mapping with keys: close_after, group_by"),
        ("- a\n", "", "expected a mapping with keys: allowed_lateness, defaults, flap"),
        (
            "flap: []\n",
            "flap",
            "expected a mapping with keys: enabled, max_flips, settle, window; got a list",
        ),
        ("flap: {enabled: maybe}\n", "flap.enabled", "expected true or false; got the string 'maybe'"),
        ("flap: {max_flips: lots}\n", "flap.max_flips", "expected a whole number; got the string 'lots'"),
        ("flap: {max_flips: 0}\n", "flap.max_flips", "must be at least 1; got the number 0"),
        ("flap: {window: 0s}\n", "flap.window", "must be longer than 0s"),
        (
            "late_policy: drop\n",
            "late_policy",
            "expected one of 'apply' or 'dead_letter'; got the string 'drop'",
        ),
        ("allowed_lateness: [1]\n", "allowed_lateness", "got a list; expected a duration like"),
        ("allowed_lateness: true\n", "allowed_lateness", "got true; expected a duration like"),
        ("allowed_lateness: -5s\n", "allowed_lateness", "durations cannot be negative"),
        ("allowed_lateness_ms: -5\n", "allowed_lateness", "must not be negative, got -5 ms"),
        ("rules:\n  - {name: a, group_interval: 0s}\n", "rules[0].group_interval", "must be longer than 0s"),
        ("rules:\n  - {name: a, resolve_timeout: 0}\n", "rules[0].resolve_timeout", "must be longer than 0s"),
        ("rules:\n  - {name: a, max_lifetime: 0s}\n", "rules[0].max_lifetime", "must be longer than 0s"),
        ("rules:\n  - {name: a, group_wait: 1h.5m}\n", "rules[0].group_wait", "fractions are only allowed"),
        (
            "rules:\n  - {name: a, group_wait: 1s, group_wait_ms: 5}\n",
            "rules[0].group_wait",
            "give group_wait (a duration) or group_wait_ms (milliseconds), not both",
        ),
        ("rules:\n  - {name: a, match: x=1}\n", "rules[0].match", "expected a list; got the string 'x=1'"),
        (
            "rules:\n  - {name: a, match: [3]}\n",
            "rules[0].match[0]",
            "expected a matcher like 'severity=~\"critical|error\"' or a mapping with name, op and value, "
            "got the number 3",
        ),
        (
            "rules:\n  - {name: a, match: ['x=\"1']}\n",
            "rules[0].match[0]",
            "cannot parse matcher 'x=\"1': the value has no closing double quote",
        ),
        (
            "rules:\n  - {name: a, match: ['x=~\"(\"']}\n",
            "rules[0].match[0]",
            "invalid regex '(' for label 'x'",
        ),
        (
            "rules:\n  - {name: a, match: [{name: x, op: '~'}]}\n",
            "rules[0].match[0].op",
            "expected one of '=', '!=', '=~' or '!~'; got the string '~'",
        ),
        (
            "rules:\n  - {name: a, group_by: ['...', job]}\n",
            "rules[0].group_by",
            "'...' (all labels) cannot be combined with other labels",
        ),
        (
            "rules:\n  - {name: a, group_by: [job, job]}\n",
            "rules[0].group_by[1]",
            "label 'job' is listed twice",
        ),
        (
            "rules:\n  - {name: a, group_by: [1x]}\n",
            "rules[0].group_by[0]",
            "'1x' is not a label name (letters, digits and '_', not starting with a digit, or '...' alone",
        ),
        (
            "rules:\n  - {name: a, group_by: [job], group_by_exclude: [pod]}\n",
            "rules[0].group_by_exclude",
            "only applies with group_by: ['...']; this rule groups by job",
        ),
        (
            "rules:\n  - {name: a, group_by_exclude: ['...']}\n",
            "rules[0].group_by_exclude[0]",
            "'...' is not a label name",
        ),
        (
            "rules:\n  - {name: a, match: [x=1]}\n  - {name: a}\n",
            "rules[1].name",
            "rule name 'a' is used by rules[0] and rules[1]; rule names must be unique",
        ),
        (
            "rules:\n  - {name: a}\n  - {name: b}\n",
            "rules[0]",
            "rules[1] ('b') can never match: rules[0] ('a') has no match conditions",
        ),
        (
            "rules:\n  - {name: default, match: [x=1]}\n",
            "rules[0].name",
            "rules[0] is named 'default', the name of the built-in catch-all rule",
        ),
        (
            "inhibit_rules:\n  - {name: i, source_match: [], target_match: [b=1]}\n",
            "inhibit_rules[0].source_match",
            "needs at least one matcher",
        ),
        (
            "inhibit_rules:\n  - {name: i, source_match: [a=1]}\n",
            "inhibit_rules[0].target_match",
            "missing required key 'target_match'",
        ),
        (
            "inhibit_rules:\n  - {name: i, source_match: [a=1], target_match: [b=1], equal: [n, n]}\n",
            "inhibit_rules[0].equal[1]",
            "label 'n' is listed twice",
        ),
        (
            "inhibit_rules:\n  - {name: i, source_match: [a=1], target_match: [b=1]}\n"
            "  - {name: i, source_match: [a=2], target_match: [b=2]}\n",
            "inhibit_rules[1].name",
            "inhibit rule name 'i' is used by inhibit_rules[0] and inhibit_rules[1]; names must be unique",
        ),
        (
            "state_time_resolution: 10m\nrules:\n  - {name: a, resolve_timeout: 1m}\n",
            "state_time_resolution",
            "10m is longer than the resolve_timeout (1m) of rule 'a'",
        ),
        ("state_time_resolution: 0s\n", "state_time_resolution", "must be longer than 0s"),
    ],
)
def test_validation_errors(tmp_path: Path, text: str, path: str, message: str) -> None:
    err = load_error(tmp_path, text)
    got_path, got_message, line = only_problem(err)
    assert got_path == path
    assert message in got_message, got_message
    assert line is not None and line >= 1
    assert str(tmp_path / "rules.yaml") in str(err)


def test_errors_are_reported_together_in_file_order(tmp_path: Path) -> None:
    err = load_error(
        tmp_path,
        """\
        late_policy: drop
        rules:
          - name: a
            group_wait: 5x
            foo: 1
        flap: {max_flips: 0}
        """,
    )
    assert [(p, line) for p, _m, line in err.problems] == [
        ("late_policy", 1),
        ("rules[0].group_wait", 4),
        ("rules[0].foo", 5),
        ("flap.max_flips", 6),
    ]
    assert len(str(err).splitlines()) == 4


def test_yaml_syntax_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "rules:\n  - name: a\n    match: [x=1\n")
    path, message, line = only_problem(err)
    assert path == ""
    assert message.startswith("invalid YAML: while parsing a flow sequence: expected ',' or ']'")
    assert "(column" in message
    assert line == 4


def test_yaml_duplicate_key(tmp_path: Path) -> None:
    err = load_error(tmp_path, "rules:\n  - name: a\n    group_wait: 1s\n    group_wait: 2s\n")
    _path, message, line = only_problem(err)
    assert "found duplicate key 'group_wait'" in message
    assert line == 4


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = (
        "defaults: &base {group_wait: 1s, close_after: 1m}\n"
        "rules:\n"
        "  - {<<: *base, name: a, group_wait: 2s}\n"
    )
    rule = load_rules(write(tmp_path, text)).rules[0]
    assert (rule.group_wait_ms, rule.close_after_ms) == (2_000, 60_000)


def test_yaml_multiple_documents(tmp_path: Path) -> None:
    err = load_error(tmp_path, "rules: []\n---\nrules: []\n")
    assert "invalid YAML" in str(err)
    assert "single document" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "nope.yaml")
    assert (
        str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read the rules file: No such file or directory"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe rules")
    with pytest.raises(RulesError, match="not UTF-8 text"):
        load_rules(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path)


def test_parse_rules_names_its_source() -> None:
    with pytest.raises(RulesError, match=r"^inline:1: late_policy: "):
        parse_rules("late_policy: x\n", source="inline")


def test_every_mistake_is_reported_in_one_pass(tmp_path: Path) -> None:
    """Structure and semantics together (issue #15): no mistake waits until the others are fixed."""
    err = load_error(
        tmp_path,
        """\
        state_time_resolution: 10m
        rules:
          - name: a
            match: [x=1]
            group_by: [1x, job, job]
          - name: a
            match: [x=2]
            foo: 1
          - name: fast
            match: [x=3]
            resolve_timeout: 1m
          - name: catch
            group_wait: 1s
            group_wait_ms: 5
            colour: red
          - name: d
            match: ['x=~"("']
        inhibit_rules:
          - {name: i, source_match: [a=1], target_match: [b=1], equal: [n, n]}
          - {name: i, source_match: [], target_match: [b=2]}
        """,
    )
    assert [(path, line) for path, _message, line in err.problems] == [
        ("state_time_resolution", 1),  # rule 'fast'
        ("state_time_resolution", 1),  # the appended catch-all, with the default resolve_timeout
        ("rules[0].group_by[0]", 5),
        ("rules[0].group_by[2]", 5),
        ("rules[1].name", 6),
        ("rules[1].foo", 8),
        ("rules[3]", 12),
        ("rules[3].group_wait", 13),
        ("rules[3].colour", 15),
        ("rules[4].match[0]", 17),
        ("inhibit_rules[0].equal[1]", 19),
        ("inhibit_rules[1].source_match", 20),
        ("inhibit_rules[1].name", 20),
    ]
    messages = "\n".join(message for _path, message, _line in err.problems)
    for expected in (
        "10m is longer than the resolve_timeout (1m) of rule 'fast'",
        "10m is longer than the resolve_timeout (5m) of rule 'default'",
        "'1x' is not a label name",
        "label 'job' is listed twice",
        "rule name 'a' is used by rules[0] and rules[1]",
        "unknown key 'foo'",
        "rules[4] ('d') can never match: rules[3] ('catch') has no match conditions",
        "give group_wait (a duration) or group_wait_ms (milliseconds), not both",
        "unknown key 'colour'",
        "invalid regex '('",
        "label 'n' is listed twice",
        "inhibit rule name 'i' is used by inhibit_rules[0] and inhibit_rules[1]",
        "needs at least one matcher",
    ):
        assert expected in messages
    assert len(str(err).splitlines()) == len(err.problems)
