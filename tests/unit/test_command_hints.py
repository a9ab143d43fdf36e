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
