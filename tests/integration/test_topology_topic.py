"""`stormwatch topology` against a real broker: `topics create` makes the compacted topology
topic; what `publish` writes, `show` reads back in log order on top of the file; `--delete` is a
tombstone; `suggest` reads a real audit log, and what it suggests, once published, is related."""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from stormwatch.cli import build_parser
from stormwatch.config import Settings
from stormwatch.kafka.client import read_topic
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from tests.kit.agents import incident_event, produce, publish_events

pytestmark = pytest.mark.kafka

TOPOLOGY = textwrap.dedent(
    """\
    scope_labels: [cluster]
    label_components:
      - {label: database, kind: database}
      - {label: service, kind: service}
    components:
      - {kind: service, name: checkout, depends_on: [service/orders]}
    """
)


def run(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """One `stormwatch topology ...` through the real parser and handler, with the test's topics."""
    args = build_parser().parse_args(["topology", *argv])
    rc = int(args.handler(args, settings))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def topology_file(tmp_path: Path) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    return path


def test_topics_create_makes_the_compacted_topology_topic(settings: Settings) -> None:
    admin = AdminClient(settings.kafka.client_config())
    topic = settings.topics.topology
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    assert len(metadata.partitions) == 1
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


def test_publish_then_show_reads_it_back_on_top_of_the_file(
    settings: Settings, topology_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    components = tmp_path / "catalog.json"
    components.write_bytes(
        orjson.dumps(
            [
                {"kind": "service", "name": "orders", "depends_on": ["database/orders-db"]},
                {
                    "kind": "service",
                    "name": "checkout",
                    "scope": {"cluster": "eu"},
                    "depends_on": ["service/cart"],
                },
            ]
        )
    )
    rc, out, err = run(settings, capsys, "publish", str(components), "--file", str(topology_file))
    assert (rc, err) == (0, "")
    assert out.splitlines() == ["put service/orders", 'put {cluster="eu"}service/checkout']

    rc, out, err = run(settings, capsys, "show", "--file", str(topology_file), "--json")
    assert (rc, err) == (0, "")
    shown = orjson.loads(out)
    assert (shown["records"], shown["changed"], shown["refused"]) == (2, 2, [])
    assert [(c["key"], c["source"], c["depends_on"]) for c in shown["components"]] == [
        ("service/checkout", "file", ["service/orders"]),
        ("service/orders", "topic", ["database/orders-db"]),
        ('{cluster="eu"}service/checkout', "topic", ["service/cart"]),
    ]

    # the YAML form is a topology file with the same components, and says where each came from
    rc, out, _err = run(settings, capsys, "show", "--file", str(topology_file))
    assert rc == 0
    assert out.startswith(
        f"# effective topology: {topology_file}\n# + 2 record(s) of {settings.topics.topology}"
    )
    assert "  - {kind: service, name: orders, depends_on: [database/orders-db]}  # topic\n" in out
    shown_file = tmp_path / "shown.yaml"
    shown_file.write_text(out)
    rc, out, _err = run(settings, capsys, "check", str(shown_file))
    assert rc == 0 and "components        3 declared: service 3" in out

    # published again with other depends_on: the latest record wins
    again = tmp_path / "again.yaml"
    again.write_text(
        "components:\n  - {kind: service, name: orders, depends_on: [database/orders-db, queue/kafka]}\n"
    )
    assert run(settings, capsys, "publish", str(again), "--file", str(topology_file))[0] == 0
    rc, out, _err = run(settings, capsys, "show", "--file", str(topology_file), "--json")
    orders = [c for c in orjson.loads(out)["components"] if c["key"] == "service/orders"]
    assert orders[0]["depends_on"] == ["database/orders-db", "queue/kafka"]


def test_delete_is_a_tombstone_and_bad_records_are_refused(
    settings: Settings, topology_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "- {kind: database, name: orders-db, scope: {cluster: eu}}\n- {kind: service, name: cart}\n"
    )
    assert run(settings, capsys, "publish", str(catalog))[0] == 0
    rc, out, err = run(settings, capsys, "publish", "--delete", "database/orders-db", "--scope", "cluster=eu")
    assert (rc, out, err) == (0, 'delete {cluster="eu"}database/orders-db\n', "")
    # deleting a component of the file: the topic can take back what the file declared
    assert run(settings, capsys, "publish", "--delete", "service/checkout")[0] == 0

    records = [(m.key(), m.value()) for m in read_topic(settings, settings.topics.topology)]
    assert records[-2:] == [(b'{cluster="eu"}database/orders-db', None), (b"service/checkout", None)]

    # records nobody should have written: a key that is not canonical, a value for another key
    produce(
        settings,
        settings.topics.topology,
        [
            ("service / x", b'{"kind": "service", "name": "x"}'),
            ("service/y", b'{"kind": "service", "name": "z"}'),
        ],
    )
    rc, out, err = run(settings, capsys, "show", "--file", str(topology_file), "--json")
    assert rc == 0
    shown = orjson.loads(out)
    assert [c["key"] for c in shown["components"]] == ["service/cart"]
    assert shown["removed"] == ["service/checkout"]  # the file's declaration, taken back
    assert [r["key"] for r in shown["refused"]] == ["service / x", "service/y"]
    assert "names another component than its value" in shown["refused"][1]["reason"]
    assert err.count("stormwatch topology show: warning: refused record") == 2


def _opening(labels: dict[str, str], at: datetime) -> IncidentEvent:
    event = incident_event(f"inc-{uuid.uuid4().hex[:16]}-1", 1, IncidentEventType.OPENED, labels=labels)
    return event.model_copy(update={"snapshot": event.snapshot.model_copy(update={"opened_at": at})})


def _audit_log(start: datetime) -> list[IncidentEvent]:
    """Five database outages an hour apart, each followed by the orders service's incident 40 s
    later; checkout follows orders too (already declared); noise in another cluster."""
    events: list[IncidentEvent] = []
    for i in range(5):
        t = start + timedelta(hours=i)
        events.append(_opening({"cluster": "eu", "database": "orders-db", "alertname": "PgDown"}, t))
        events.append(_opening({"cluster": "eu", "service": "orders"}, t + timedelta(seconds=40)))
        events.append(_opening({"cluster": "eu", "service": "checkout"}, t + timedelta(seconds=70)))
        events.append(_opening({"cluster": "us", "service": "orders"}, t + timedelta(seconds=20)))
    # an update of each incident (not an opening) and a record that is no event at all
    events += [e.model_copy(update={"seq": 2, "type": IncidentEventType.UPDATED}) for e in events[:4]]
    return events


def test_suggest_over_a_real_audit_log_and_publish_what_it_suggests(
    settings: Settings, topology_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=10)
    publish_events(settings, _audit_log(start))
    produce(settings, settings.topics.incidents, [("junk", b'{"type": "opened", "nonsense": 1}')])

    rc, out, err = run(settings, capsys, "suggest", "--file", str(topology_file), "--json")
    assert rc == 0
    assert "skipped 1 record(s)" in err and "not incident events" in err
    result: dict[str, Any] = orjson.loads(out)
    assert result["openings"] == 20 and result["scopes"] == 2
    assert result["suggestions"] == [
        {
            "dependent": '{cluster="eu"}service/orders',
            "dependency": '{cluster="eu"}database/orders-db',
            "support": 5,
            "confidence": 1.0,
            "dependency_openings": 5,
            "reverse_support": 0,
            "common_dependency": None,
        }
    ]
    assert result["already_related"] == 1  # checkout after orders: declared in the file
    assert result["implied_by_others"] == 1  # checkout after the database: through orders

    rc, fragment, _err = run(settings, capsys, "suggest", "--file", str(topology_file))
    assert rc == 0
    assert yaml.safe_load(fragment) == {
        "components": [
            {
                "kind": "service",
                "name": "orders",
                "scope": {"cluster": "eu"},
                "depends_on": ["database/orders-db"],
            }
        ]
    }
    # reviewed and published as it is: the pair is now related, and nothing is left to suggest
    reviewed = tmp_path / "reviewed.yaml"
    reviewed.write_text(fragment)
    rc, out, _err = run(settings, capsys, "publish", str(reviewed), "--file", str(topology_file))
    assert (rc, out) == (0, 'put {cluster="eu"}service/orders\n')
    rc, out, _err = run(settings, capsys, "suggest", "--file", str(topology_file), "--json")
    again = orjson.loads(out)
    assert again["suggestions"] == [] and again["already_related"] == 3

    # only the openings since a time: the last three cascades, or none
    rc, out, _err = run(settings, capsys, "suggest", "--file", str(topology_file), "--since", "2h", "--json")
    assert orjson.loads(out)["openings"] == 0  # the log ends 6 hours ago
    recent_only = ["--since", "8h30m", "--min-support", "2", "--json"]
    rc, out, _err = run(settings, capsys, "suggest", "--file", str(topology_file), *recent_only)
    recent = orjson.loads(out)
    assert recent["openings"] == 12 and recent["suggestions"] == []  # published: already related


def test_suggest_without_a_topology_file_prints_a_whole_file(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=10)
    publish_events(settings, _audit_log(start))
    rc, out, _err = run(settings, capsys, "suggest")
    assert rc == 0
    suggested = tmp_path / "suggested.yaml"
    suggested.write_text(out)
    rc, summary, _err = run(settings, capsys, "check", str(suggested))
    assert rc == 0 and "label components  6 entries" in summary
    components = yaml.safe_load(out)["components"]
    # without a file nothing is declared: the chain database <- orders <- checkout, and not also
    # checkout <- database, which the chain implies
    assert [(c["name"], c["depends_on"]) for c in components] == [
        ("checkout", ["service/orders"]),
        ("orders", ["database/orders-db"]),
    ]
