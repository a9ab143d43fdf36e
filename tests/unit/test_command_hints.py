"""The commands stormwatch prints for a user to paste must work as printed (make up's hints)."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from stormwatch.commands import demo
from stormwatch.config import Settings
from stormwatch.output import command_prefix


def _venv(root: Path) -> Path:
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").touch()
    script = bin_dir / "stormwatch"
    script.write_text('#!/bin/sh\necho ran "$@"\n')
    script.chmod(0o755)
    return bin_dir / "python"


def test_a_script_not_on_path_is_printed_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = _venv(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    prefix = command_prefix("var/stack/stormwatch.yaml", executable=str(python), cwd=tmp_path)
    assert prefix == ".venv/bin/stormwatch --config var/stack/stormwatch.yaml"
    # ... and it runs as printed, from that directory, with PATH as the user has it
    out = subprocess.run(
        f"{prefix} incidents", shell=True, cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "ran --config var/stack/stormwatch.yaml incidents"


def test_the_bare_name_only_when_path_finds_this_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = _venv(tmp_path)
    monkeypatch.setenv("PATH", f"{python.parent}{os.pathsep}/usr/bin")
    assert command_prefix(None, executable=str(python), cwd=Path("/")) == "stormwatch"
    other = tmp_path / "other"
    monkeypatch.setenv("PATH", f"{_venv(other).parent}{os.pathsep}/usr/bin")
    assert command_prefix(None, executable=str(python), cwd=Path("/")) == str(python.parent / "stormwatch")


def test_without_a_script_it_is_python_dash_m(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python3"
    assert command_prefix("a b.yaml", executable=str(python), cwd=tmp_path) == (
        "bin/python3 -m stormwatch.cli --config 'a b.yaml'"
    )


def test_the_demo_prints_runnable_hints_with_a_real_incident_id(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(demo.sys, "stdout", out)
    monkeypatch.setattr(demo, "command_prefix", lambda config: f".venv/bin/stormwatch --config {config}")
    args = argparse.Namespace(config="var/stack/stormwatch.yaml")
    demo._summarize(args, Settings(), "http://127.0.0.1:9095", Counter({200: 1}), 10, [_opened()])
    text = out.getvalue()
    assert ".venv/bin/stormwatch --config var/stack/stormwatch.yaml incidents " in text
    assert "timeline inc-9f86d081884c7d65-1796269688419 " in text
    assert "\n  stormwatch " not in text


def _opened() -> demo.IncidentEvent:
    from tests.kit.engine import Driver, at, config, note

    d = Driver(config("defaults: {group_wait: 1s}"))
    d.alerts([note({"alertname": "A"}, at(0))])
    d.tick(at(5))
    d.commit()
    event = d.of_type("opened")[0]
    return event.model_copy(update={"incident_id": "inc-9f86d081884c7d65-1796269688419"})


def test_the_demo_names_the_root_cause_of_linked_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a topology, the demo shows one incident per cause: its member groups and root cause."""
    from stormwatch.schemas.incident import RootCauseInfo

    out = io.StringIO()
    monkeypatch.setattr(demo.sys, "stdout", out)
    monkeypatch.setattr(demo, "command_prefix", lambda config: f".venv/bin/stormwatch --config {config}")
    opened = _opened()
    primary_id, member_ids = "inc-0000000000000001-1796269688419", ["inc-0000000000000002-1796269688419"]
    member_ids.append("inc-0000000000000003-1796269688419")
    root = RootCauseInfo(
        component='{cluster="prod-eu-1"}database/catalog-db',
        kind="database",
        name="catalog-db",
        first_firing_at=opened.snapshot.opened_at,
        decided_by="only_candidate",
    )
    primary = opened.model_copy(
        update={
            "incident_id": primary_id,
            "seq": 3,
            "snapshot": opened.snapshot.model_copy(update={"members": member_ids, "root_cause": root}),
        }
    )
    members = [
        opened.model_copy(
            update={
                "incident_id": m,
                "snapshot": opened.snapshot.model_copy(update={"linked_into": primary_id, "alert_count": 20}),
            }
        )
        for m in member_ids
    ]
    args = argparse.Namespace(config="var/stack/stormwatch.yaml")
    demo._summarize(args, Settings(), "http://127.0.0.1:9095", Counter({200: 1}), 410, [primary, *members])
    text = out.getvalue()
    assert "incidents:        1 (3 label groups, 2 of them linked" in text
    assert "410 alerts per incident after linking" in text
    line = next(line for line in text.splitlines() if line.startswith(f"  {primary_id} "))
    assert (
        '— root cause {cluster="prod-eu-1"}database/catalog-db (only_candidate) — 1 + 2 linked groups' in line
    )
    assert line.endswith(f", {opened.snapshot.alert_count + 40} alerts")
    assert f"timeline {primary_id} " in text
    assert member_ids[0] not in text  # members are counted in their primary's row, not listed
