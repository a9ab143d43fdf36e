"""The committed JSON Schemas in schemas/json/ must equal what the contracts generate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from stormwatch.cli import COMMAND_MODULES
from stormwatch.commands.schemas import register
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.schemas.export import CONTRACTS, check_json_schemas, export_json_schemas, render_json_schemas
from tests.kit.paths import ROOT

COMMITTED = ROOT / "schemas" / "json"
FIX = "run `stormwatch schemas export schemas/json` and commit the result"


def test_committed_schemas_are_up_to_date(tmp_path: Path) -> None:
    from stormwatch.agents.core.workflow import render_workflow_schema

    export_json_schemas(tmp_path, {"workflow.schema.json": render_workflow_schema()})
    generated = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in COMMITTED.glob("*.json")}
    missing = sorted(set(generated) - set(committed))
    extra = sorted(set(committed) - set(generated))
    stale = sorted(name for name in set(generated) & set(committed) if generated[name] != committed[name])
    assert not (missing or extra or stale), (
        f"schemas/json is out of date (missing: {missing}, no longer generated: {extra}, "
        f"differ: {stale}); {FIX}"
    )


def test_one_file_per_contract_with_stable_formatting(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(CONTRACTS)
    assert {
        "alert.json",
        "dead_letter.json",
        "incident_event.json",
        "incident.json",
        "operator_command.json",
        "mitigation_command.json",
        "command_result.json",
        "silence.json",
        "native_input.json",
    } <= set(CONTRACTS)
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n") and not text.endswith("\n\n")
        schema = json.loads(text)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert render_json_schemas() == {p.name: p.read_text(encoding="utf-8") for p in written}  # deterministic


def test_alert_schema_describes_the_contract() -> None:
    schema = json.loads(render_json_schemas()["alert.json"])
    assert {"fingerprint", "labels", "received_at", "status"} <= set(schema["required"])
    assert schema["additionalProperties"] is False


def test_check_reports_stale_files(tmp_path: Path) -> None:
    assert check_json_schemas(tmp_path) == sorted(CONTRACTS, key=list(CONTRACTS).index)
    export_json_schemas(tmp_path)
    assert check_json_schemas(tmp_path) == []
    (tmp_path / "alert.json").write_text("{}\n", encoding="utf-8")
    assert check_json_schemas(tmp_path) == ["alert.json"]


def run_cli(*argv: str) -> int:
    """The `schemas` command as stormwatch.cli wires it (its own parser, so other commands are not needed)."""
    parser = argparse.ArgumentParser(prog="stormwatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args, Settings())
    return result


def test_cli_export_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out"
    assert run_cli("schemas", "export", str(target)) == 0
    assert sorted(p.name for p in target.glob("*.json")) == sorted([*CONTRACTS, "workflow.schema.json"])
    assert run_cli("schemas", "export", "--check", str(target)) == 0
    (target / "silence.json").unlink()
    capsys.readouterr()
    assert run_cli("schemas", "export", "--check", str(target)) == 1
    out = capsys.readouterr().out
    assert "silence.json" in out and f"run `stormwatch schemas export {target}`" in out


def test_cli_export_into_a_file_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write JSON Schemas"):
        run_cli("schemas", "export", str(blocker))


def test_cli_lists_the_schemas_command() -> None:
    assert "stormwatch.commands.schemas" in COMMAND_MODULES
