"""The linking benchmark (bench/linking.py, `stormwatch bench linking`) on a tiny input: it runs,
its counts add up, and linking changes what it should. No timed assertions."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stormwatch.bench.linking import (
    correlator_run,
    linker_input,
    linker_run,
    render,
    run_linking,
    storm_records,
)
from stormwatch.cli import main
from stormwatch.loaders import load_topology
from stormwatch.storms import build_storm
from stormwatch.streams.core.rules import RulesConfig
from stormwatch.streams.core.topology import Topology, TopologyConfig

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "deploy" / "topology.yaml"
LIMIT = 120  # raw records of storm-mix: the first causes, a few hundred alerts


@pytest.fixture(scope="module")
def config() -> TopologyConfig:
    return load_topology(TOPOLOGY)


@pytest.fixture(scope="module")
def records() -> list[tuple[int, bytes, dict[str, bytes]]]:
    return storm_records(build_storm("storm-mix", seed=1), limit=LIMIT)


def test_the_correlator_with_linking_writes_notes_and_applies_link_events(
    config: TopologyConfig, records: list[tuple[int, bytes, dict[str, bytes]]]
) -> None:
    plain = correlator_run(records, RulesConfig(), None, linkers=2)
    linked = correlator_run(records, RulesConfig(), config, linkers=2)
    assert plain.alerts == linked.alerts > 0 and plain.records == LIMIT
    assert plain.notes == 0 and plain.promises == 0 and plain.linker_s == 0
    assert linked.notes > 0 and linked.promises > 0 and linked.marks > 0
    assert linked.late_commands == 0, "the linker answers in time: nothing applies late"
    assert linked.events["linked"] == linked.events["member_added"] > 0
    assert linked.events["root_cause_changed"] > 0
    # linking adds events, it changes none of the correlator's own
    for kind in ("opened", "resolved", "closed"):
        assert linked.events[kind] == plain.events[kind]
    idle = correlator_run(records, RulesConfig(), config, linkers=2, idle=True)
    assert idle.notes == 0 and idle.events.total() == 0 and idle.event_time_s == linked.event_time_s


def test_the_linker_decides_every_note_of_the_replay(
    config: TopologyConfig, records: list[tuple[int, bytes, dict[str, bytes]]]
) -> None:
    from stormwatch.bench.linking import _events_of

    events = _events_of(records, RulesConfig())
    feed = linker_input(events, Topology(config), correlators=3, linkers=2)
    assert feed.notes > 0 and feed.promises > 0
    run = linker_run(config, feed)  # checks the pure core decides the same by itself
    assert run.notes == feed.notes
    assert run.decisions > 0 and run.commands >= run.decisions
    assert run.marks == 3 * run.transactions  # a mark to every correlator partition per batch
    assert run.decisions_by_kind.get("linked", 0) > 0
    assert run.final_state_records > 0 and run.state_bytes > 0
    assert run.peak_state_records >= run.final_state_records / 2  # two partitions
    assert 0 < run.take_output_s <= run.cpu_s


def test_run_linking_reports_costs_per_note_and_per_alert(config: TopologyConfig) -> None:
    result = run_linking(RulesConfig(), config, seeds=[1], partitions=2, repeat=1, limit=60)
    linker, correlator = result["linker"], result["correlator"]
    assert linker["notes"] > 0 and linker["us_per_note"] > 0 and linker["us_per_decision"] > 0
    assert correlator["alerts"] > 0 and correlator["us_per_alert_with"] > 0
    assert correlator["events_with_linking"] > correlator["events_without_linking"]
    assert len(result["load"]["before"]) == 3 and result["machine"]["cores"] > 0
    text = render(result)
    assert "CPU µs per group note" in text and "late link commands | 0" in text


def test_the_command_runs_the_offline_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stormwatch.bench.linking as linking

    full = linking.run_linking
    monkeypatch.setattr(linking, "run_linking", lambda *a, **kw: full(*a, **kw, limit=60))
    out = tmp_path / "linking.json"
    args = ["--seeds", "1", "--repeat", "1", "--partitions", "2", "--topology", str(TOPOLOGY)]
    code = main(["bench", "linking", *args, "--json", "--output", str(out)])
    assert code == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert printed == orjson.loads(out.read_bytes())
    assert printed["workload"] == "linking" and printed["linker"]["notes"] > 0
