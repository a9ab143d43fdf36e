"""`stormwatch notify check` and `stormwatch notify convert` (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormwatch.agents.core.notify_config import parse_notifier_config
from stormwatch.cli import main
from tests.kit.notify import webhook_notifier_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_check_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(webhook_notifier_file("http://127.0.0.1:9000/hook"))
    assert main(["notify", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{path}: ok: 1 receiver(s) with 1 integration(s), 1 route(s), 0 time interval(s)"
    )


def test_check_reports_every_problem_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(
        "route:\n"
        "  receiver: nobody\n"
        "  group_by: [service]\n"
        "receivers:\n"
        "  - name: hook\n"
        "    pagerduty_configs: [{routing_key: abc}]\n"
    )
    assert main(["notify", "check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{path}:2: ") and "nobody" in line for line in lines), lines
    assert any(line.startswith(f"{path}:3: route.group_by") for line in lines), lines
    assert any(line.startswith(f"{path}:6: ") and "routing_key" in line for line in lines), lines
    assert all("abc" not in line for line in lines)  # a secret written inline is not repeated


def test_check_of_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notify", "check", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_convert_writes_a_file_that_check_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "notify.yaml"
    assert main(["notify", "convert", str(FIXTURES / "alertmanager_sample.yml"), "-o", str(out)]) == 0
    assert "warning: " in capsys.readouterr().err
    parse_notifier_config(out.read_text(), str(out))
    assert main(["notify", "check", str(out)]) == 0
    capsys.readouterr()
    assert main(["notify", "convert", str(FIXTURES / "alertmanager_sample.yml")]) == 0
    assert capsys.readouterr().out == out.read_text()


def test_convert_refuses_what_is_not_an_alertmanager_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "am.yml"
    path.write_text("- just a list\n")
    assert main(["notify", "convert", str(path)]) == 2
    assert "YAML mapping" in capsys.readouterr().err


def test_the_stage_needs_a_notifier_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notify"]) == 2
    assert "--notify-file" in capsys.readouterr().err
