"""`stormwatch topology` without a broker: check's summary and errors, publish's argument and file
errors (all refused before Kafka is asked), the YAML that show and suggest print (a topology file
that reads back as the same topology), and suggest's option errors. Against a broker:
tests/integration/test_topology_topic.py."""

from __future__ import annotations

import io
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from stormwatch.cli import main
from stormwatch.commands.topology import (
    SuggestParams,
    parse_components,
    render_suggestions,
    render_topology_yaml,
    suggest_from_events,
    yaml_scalar,
)
from stormwatch.loaders import load_topology
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.schemas.topology import TopologyComponent, TopologyUpdate
from stormwatch.streams.core.cooccurrence import suggestion_topology
from stormwatch.streams.core.topology import Topology, TopologyError, parse_topology
from tests.kit.events import build_event

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "topology.yaml"
NO_KAFKA = ["--bootstrap-servers", "127.0.0.1:1"]  # a test that reached Kafka would fail loudly


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main([*NO_KAFKA, "topology", *args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------------- check


def test_check_summarizes_a_good_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "check", str(EXAMPLE))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{EXAMPLE}: OK"
    summary = dict(line.strip().split("  ", 1) for line in lines[1:])
    summary = {k.strip(): v.strip() for k, v in summary.items()}
    config = load_topology(EXAMPLE)
    assert summary["scope labels"] == "cluster"
    assert summary["components"].startswith(f"{len(config.components)} declared: service ")
    assert "database 5" in summary["components"]
    edges = sum(len(c.depends_on) for c in config.components)
    assert summary["depends_on"] == f"{edges} edge(s)"
    assert summary["scopes"] == f"every scope {len(config.components)}"
    assert summary["link"] == "max_hops 3, window 4m, common_upstream false"


def test_check_reports_every_error_with_its_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            scope_labels: [cluster, cluster]
            components:
              - {kind: Service, name: x}
              - {kind: service, name: y, depends_on: [databse/z]}
              - {kind: service, name: y}
            link: {window: 5x, extra: 1}
            """
        )
    )
    good = tmp_path / "good.yaml"
    good.write_text("components: [{kind: service, name: a, scope: {cluster: eu}}]\n")
    rc, out, err = run(capsys, "check", str(bad), str(good))
    assert rc == 1
    assert out.startswith(f"{good}: OK") and 'scopes            {cluster="eu"} 1' in out
    lines = err.splitlines()
    assert lines == [
        f"{bad}:1: scope_labels[1]: label 'cluster' is listed twice",
        f"{bad}:3: components[0].kind: 'Service' is not a component kind (kinds are lower-case letters, "
        "digits, '_' and '-', starting with a letter)",
        f"{bad}:4: components[1].depends_on[0]: unknown kind 'databse' in databse/z; known kinds "
        "(label_components and declared components): node, pod, service, workload",
        f"{bad}:5: components[2]: service/y is declared twice: components[1] and components[2]; merge their "
        "depends_on",
        f"{bad}:6: link.window: invalid duration '5x': unknown unit 'x'; expected a duration like 30s, 5m, "
        "1h30m, 250ms or 2d (units y, w, d, h, m, s, ms, largest first; a plain number means seconds)",
        f"{bad}:6: link.extra: unknown key 'extra'; allowed keys: common_upstream, delay, max_hops, max_wait, window",
    ]


def test_check_of_a_missing_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(capsys, "check", str(tmp_path / "nope.yaml"))
    assert rc == 1
    assert (
        err.strip() == f"{tmp_path / 'nope.yaml'}: cannot read the topology file: No such file or directory"
    )


# ---------------------------------------------------------------------------------------------- publish


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either FILE (or - for stdin) with components, or --delete KIND/NAME, not both"),
        (["x.yaml", "--delete", "service/a"], "not both"),
        (["x.yaml", "--scope", "cluster=eu"], "--scope goes with --delete"),
        (
            ["/nonexistent/c.yaml"],
            "nothing was published: /nonexistent/c.yaml: cannot read the components file: No such",
        ),
        (["--delete", "orders"], "--delete: 'orders' is not a component reference; write kind/name"),
        (["--delete", "Service/a"], "--delete: 'Service' is not a component kind"),
        (["--delete", "service/a", "--scope", "cluster"], "invalid --scope 'cluster': expected LABEL=VALUE"),
        (
            ["--delete", "service/a", "--scope", "cluster=a", "--scope", "cluster=b"],
            "--scope cluster is given twice",
        ),
        (
            ["--delete", "service/a", "--scope", "region=eu"],
            "--scope: the scope names region; this topology's scope labels are cluster (omit the scope for "
            "every scope)",
        ),
    ],
)
def test_publish_argument_errors_exit_2_before_kafka(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "publish", *args)
    assert rc == 2 and out == ""
    assert err.startswith("stormwatch topology: error: ") and message in err


def test_publish_refuses_an_invalid_file_whole_with_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "components.yaml"
    source.write_text(
        textwrap.dedent(
            """\
            - {kind: service, name: orders, depends_on: [database/orders-db]}
            - {kind: service, name: orders, depends_on: [queue/kafka]}
            - {kind: service, name: x, scope: {region: eu}}
            - {kind: service, name: y, depends_on: [y]}
            - {kind: service}
            """
        )
    )
    rc, out, err = run(capsys, "publish", str(source))
    assert rc == 2 and out == ""
    assert err.splitlines() == [
        "stormwatch topology: error: nothing was published; the components are invalid:",
        f"{source}:2: [1]: service/orders is given twice: [0] and [1]; merge them",
        f"{source}:3: [2].scope: the scope names region; this topology's scope labels are cluster (omit the "
        "scope for every scope)",
        f"{source}:4: [3].depends_on[0]: 'y' is not a component reference; write kind/name, e.g. "
        "database/orders-db",
        f"{source}:5: [4].name: missing required key 'name'",
    ]


def test_publish_documents_are_a_list_or_a_mapping_with_components() -> None:
    listed = parse_components("- {kind: service, name: a, depends_on: [database/b]}\n", "s", ["cluster"])
    mapped = parse_components(
        "components:\n  - {kind: service, name: a, depends_on: [database/b]}\n", "s", ["cluster"]
    )
    assert listed == mapped == [TopologyComponent(kind="service", name="a", depends_on=["database/b"])]
    json_list = parse_components(
        '[{"kind": "database", "name": "b", "scope": {"cluster": "eu"}}]', "s", ["cluster"]
    )
    assert json_list[0].key == '{cluster="eu"}database/b'
    with pytest.raises(TopologyError, match=r"^s:2: components\[0\].kind: missing required key 'kind'"):
        parse_components("components:\n  - {name: a}\n", "s", ["cluster"])
    with pytest.raises(TopologyError, match="unknown key 'scope_labels'; allowed keys: components"):
        parse_components("scope_labels: [cluster]\ncomponents: []\n", "s", ["cluster"])
    # no scope labels: a scope is refused, none is every scope
    with pytest.raises(TopologyError, match="scope labels are none"):
        parse_components("- {kind: service, name: a, scope: {cluster: eu}}\n", "s", [])


def test_publish_checks_the_scope_labels_of_the_given_topology_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text("scope_labels: [region, cluster]\n")
    rc, _out, err = run(
        capsys, "publish", "--file", str(topology), "--delete", "service/a", "--scope", "cluster=x"
    )
    assert rc == 2 and "this topology's scope labels are region, cluster" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("scope_labels: cluster\n")
    rc, _out, err = run(capsys, "publish", "--file", str(broken), "--delete", "service/a")
    assert rc == 2 and err.startswith("stormwatch topology: error: the topology file is invalid:\n")


# ---------------------------------------------------------------------------------------------- show, suggest


def test_show_renders_a_topology_file_that_reads_back_the_same() -> None:
    topology = Topology(load_topology(EXAMPLE))
    weird = TopologyComponent(
        kind="service",
        name="a: b, [c]",
        scope={"cluster": 'it\'s "quoted"\n'},
        depends_on=["database/10.0.0.1", "service/true"],
    )
    assert topology.apply(TopologyUpdate.put(weird))
    text = render_topology_yaml(topology, ["effective topology: test"], from_topic={weird.key})
    assert text.startswith("# effective topology: test\nscope_labels: [cluster]\n")
    assert "  # topic\n" in text and "{kind: database, name: orders-db}  # file" in text
    again = Topology(parse_topology(text, source="shown"))
    assert again.declared() == topology.declared()
    assert again.config.model_dump(exclude={"components"}) == topology.config.model_dump(
        exclude={"components"}
    )


@pytest.mark.parametrize(
    "text", ["plain", "10.0.0.1", "true", "No", "a: b", "{x}", "it's", 'say "hi"', "tab\there", ""]
)
def test_yaml_scalars_read_back_as_the_same_string(text: str) -> None:
    assert yaml.safe_load(f"[{yaml_scalar(text)}]") == [text]
    assert yaml.safe_load(f"k: {yaml_scalar(text)}") == {"k": text}


T0 = datetime(2025, 1, 31, tzinfo=UTC)


def _opened(iid: str, at_s: int, **labels: str) -> IncidentEvent:
    at = T0 + timedelta(seconds=at_s)
    return build_event(
        iid, at=at, event_id=iid, severity=Severity.ERROR, group_key=iid, group_labels=labels, rule="r"
    )


def _cascade(
    db_labels: dict[str, str], service_labels: dict[str, str], times: int = 4
) -> list[IncidentEvent]:
    return [
        e
        for i in range(times)
        for e in (
            _opened(f"inc-{i:016x}-1", i * 3600, **db_labels),
            _opened(f"inc-{i:016x}-2", i * 3600 + 45, **service_labels),
        )
    ]


def test_suggestions_without_a_file_are_a_whole_topology_file() -> None:
    topology = suggestion_topology()
    events = _cascade({"cluster": "eu", "database": "orders-db"}, {"cluster": "eu", "service": "orders"})
    result = suggest_from_events(events, topology, window_ms=120_000, min_support=3, min_confidence=0.6)
    text = render_suggestions(result, topology, SuggestParams(120_000, 3, 0.6), source="incidents.events")
    assert "# stormwatch topology suggest: 1 edge(s) from 8 incident opening(s) of incidents.events" in text
    assert "      - database/orders-db  # suggested: support 4, confidence 1.00 (4 of 4 openings)" in text
    config = parse_topology(text)
    assert [c.model_dump(exclude={"schema_version"}) for c in config.components] == [
        {
            "kind": "service",
            "name": "orders",
            "scope": {"cluster": "eu"},
            "depends_on": ["database/orders-db"],
        }
    ]
    # the edge it proposes is one the linker would then use
    applied = Topology(config)
    assert applied.related(
        applied.components_of({"cluster": "eu", "service": "orders"}),
        applied.components_of({"cluster": "eu", "database": "orders-db"}),
    )


def test_suggestions_with_a_file_keep_declared_dependencies() -> None:
    topology = Topology(load_topology(EXAMPLE))
    # in the example, service/geo depends on nothing and the database label names nothing; orders
    # depends on its database and kafka: a suggested cache/cache edge must keep both
    events = _cascade({"cluster": "eu", "service": "cache"}, {"cluster": "eu", "service": "orders"})
    result = suggest_from_events(events, topology, window_ms=120_000, min_support=3, min_confidence=0.6)
    text = render_suggestions(
        result, topology, SuggestParams(120_000, 3, 0.6, file=str(EXAMPLE)), source="incidents.events"
    )
    assert "scope_labels" not in text  # a fragment for the file, not a whole file
    doc = yaml.safe_load(text)
    assert doc == {
        "components": [
            {
                "kind": "service",
                "name": "orders",
                "scope": {"cluster": "eu"},
                "depends_on": ["database/orders-db", "queue/kafka", "cache/cache"],
            }
        ]
    }
    assert "      - queue/kafka  # declared\n" in text
    # a related pair (checkout depends on orders) is left out and counted
    known = _cascade({"cluster": "eu", "service": "orders"}, {"cluster": "eu", "service": "checkout"})
    result = suggest_from_events(known, topology, window_ms=120_000, min_support=3, min_confidence=0.6)
    assert result.edges == () and result.known == 1
    text = render_suggestions(result, topology, SuggestParams(120_000, 3, 0.6, file="f"), source="i")
    assert yaml.safe_load(text) == {"components": []}
    assert "# Left out: 1 pair(s) the topology already relates" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "0s"], "error: --window must be longer than zero"),
        (["--window", "2x"], "error: --window: invalid duration '2x'"),
        (["--since=0s"], "error: --since must be longer than zero"),
        (["--min-confidence", "1.5"], "expected a number in (0, 1], got 1.5"),
        (["--min-support", "0"], "expected a positive integer, got 0"),
        (["--file", "/nonexistent/topology.yaml"], "error: the topology file is invalid:"),
    ],
)
def test_suggest_option_errors_exit_2_before_kafka(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        rc, _out, err = run(capsys, "suggest", *args)
    except SystemExit as exc:  # argparse's own usage errors
        rc, err = int(exc.code or 0), capsys.readouterr().err
    assert rc == 2 and message in err


def test_show_with_an_invalid_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("link: {max_hops: 9}\n")
    rc, _out, err = run(capsys, "show", "--file", str(bad))
    assert rc == 2
    assert err.splitlines()[1] == f"{bad}:1: link.max_hops: must be at most 6; got the number 9"


def test_control_characters_and_bad_encodings_are_errors_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nul = tmp_path / "nul.yaml"
    nul.write_text("components:\n  - {kind: service,\x00 name: a}\n")
    rc, _out, err = run(capsys, "check", str(nul))
    assert (rc, err) == (1, f"{nul}:2: invalid YAML: special characters are not allowed #x0000 (column 20)\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe- {kind: service, name: a}\n")))
    rc, _out, err = run(capsys, "publish", "-")
    assert rc == 2
    assert err.startswith(
        "stormwatch topology: error: nothing was published: <stdin>: the components file is not UTF-8"
    )


def test_publish_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid components from stdin get as far as Kafka (unreachable here: exit 2 naming it)."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'[{"kind": "service", "name": "a"}]')))
    rc, out, err = run(capsys, "publish", "-")
    assert (rc, out) == (2, "")
    assert err.startswith("stormwatch topology: error: cannot reach Kafka at 127.0.0.1:1")
