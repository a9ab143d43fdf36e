"""Settings validation (issue #15): unknown keys in every section, env vars reported like the file,
every problem in one pass, secrets never echoed."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.config import ConfigError, Settings, load_settings

SECTIONS = [name for name, f in Settings.model_fields.items() if f.default_factory is not None]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stormwatch.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(config: Path | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(config, **overrides)
    return str(info.value)


@pytest.fixture(autouse=True)
def _no_stormwatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set exactly the variables they are about."""
    for name in list(os.environ):
        if name.upper().startswith("STORMWATCH_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------------------------------
# 1. Unknown keys inside a section


@pytest.mark.parametrize("section", SECTIONS)
def test_a_typo_inside_any_section_is_refused_with_line_and_allowed_keys(
    tmp_path: Path, section: str
) -> None:
    path = write(tmp_path, f"# settings\n{section}:\n  no_such_option: 1\n")
    keys = ", ".join(sorted(Settings.model_fields[section].annotation.model_fields))  # type: ignore[union-attr]
    assert error_of(path) == (
        f"{path}:3: {section}.no_such_option: unknown key 'no_such_option'; allowed keys: {keys}"
    )


def test_the_issue_examples_exit_2_with_file_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "kafka: {bootstrap_server: 127.0.0.1:9999}\ngateway: {prot: 9999}\n")
    assert main(["--config", str(path), "config", "show"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        f"stormwatch config: error: {path}:1: kafka.bootstrap_server: unknown key 'bootstrap_server'; "
        "allowed keys: bootstrap_servers, client_id,"
    )
    assert lines[1].startswith(f"{path}:2: gateway.prot: unknown key 'prot'; allowed keys: ")
    assert "host, " in lines[1] and "port, " in lines[1]


# --------------------------------------------------------------------------------------------------
# 2. Environment variables


def test_a_bad_env_var_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STORMWATCH_GATEWAY__PORT", "abc")
    assert main(["config", "show"]) == 2
    _out, err = capsys.readouterr()
    assert err == (
        "stormwatch config: error: STORMWATCH_GATEWAY__PORT: expected a whole number; got the string 'abc'\n"
    )


def test_an_unknown_option_in_a_section_env_var_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_GATEWAY__PROT", "1")
    message = error_of()
    assert message.startswith("STORMWATCH_GATEWAY__PROT: unknown key 'prot'; allowed keys: ")
    assert "host, " in message and "port, " in message


def test_env_vars_that_name_no_option_are_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """STORMWATCH_CONFIG, STORMWATCH_INSTANCE_ID and the test suite's STORMWATCH_TEST_* are not options."""
    monkeypatch.setenv("STORMWATCH_CONFIG", str(write(tmp_path, "topics: {raw: from.file}\n")))
    monkeypatch.setenv("STORMWATCH_INSTANCE_ID", "worker-1")
    monkeypatch.setenv("STORMWATCH_TEST_KEEP_TOPICS", "1")
    monkeypatch.setenv("STORMWATCH_LOG_LEVEL", "debug")
    settings = load_settings()
    assert (settings.topics.raw, settings.log_level) == ("from.file", "debug")


def test_a_secret_in_an_env_var_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_KAFKA", '{"sasl_password": ["hunter2"]}')
    monkeypatch.setenv("STORMWATCH_GATEWAY__BEARER_TOKEN", "   ")
    message = error_of()
    assert "hunter2" not in message
    assert message.splitlines() == [  # sorted by variable
        "STORMWATCH_GATEWAY__BEARER_TOKEN: gateway.bearer_token is empty; unset it to disable authentication",
        "STORMWATCH_KAFKA: kafka.sasl_password: Input should be a valid string",
    ]


def test_env_values_that_are_not_json_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_AGENT__ALLOW_URLS", "https://hooks.example/")
    monkeypatch.setenv("STORMWATCH_TOPICS__PARTITIONS", "many")
    lines = error_of().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("STORMWATCH_AGENT__ALLOW_URLS: agent.allow_urls takes JSON, e.g. [")
    assert "hooks.example" not in lines[0]
    assert lines[1] == "STORMWATCH_TOPICS__PARTITIONS: expected a whole number; got the string 'many'"


def test_env_vars_still_override_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, "gateway: {port: 1234, host: 0.0.0.0}\nagent: {allow_topics: [a]}\n")
    monkeypatch.setenv("STORMWATCH_GATEWAY__PORT", "4321")
    monkeypatch.setenv("STORMWATCH_AGENT__ALLOW_TOPICS", '["b", "c"]')
    settings = load_settings(path)
    assert (settings.gateway.host, settings.gateway.port) == ("0.0.0.0", 4321)
    assert settings.agent.allow_topics == ["b", "c"]


# --------------------------------------------------------------------------------------------------
# 4. Every problem in one pass


def test_every_problem_of_file_and_env_is_reported_in_one_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        """\
        kafka:
          bootstrap_server: 127.0.0.1:9999
          security_protocol: TLS
        topics:
          partitions: 0
        nonsense: true
        """,
    )
    monkeypatch.setenv("STORMWATCH_GATEWAY__PORT", "abc")
    monkeypatch.setenv("STORMWATCH_INGEST__MAX_LABELS", "-")
    lines = error_of(path).splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{path}:2",
        f"{path}:3",
        f"{path}:5",
        f"{path}:6",
        "STORMWATCH_GATEWAY__PORT",
        "STORMWATCH_INGEST__MAX_LABELS",
    ]
    assert "topics.partitions: must be at least 1; got the number 0" in lines[2]
    assert "nonsense: unknown key 'nonsense'; allowed keys: agent, correlator, gateway," in lines[3]


def test_a_secret_in_the_file_is_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  sasl_password: [hunter2]\ngateway:\n  bearer_token: 12345\n")
    message = error_of(path)
    assert "hunter2" not in message and "12345" not in message
    assert message.splitlines() == [
        f"{path}:2: kafka.sasl_password: Input should be a valid string",
        f"{path}:4: gateway.bearer_token: Input should be a valid string",
    ]


def test_duplicate_keys_and_the_top_level_shape_are_checked(tmp_path: Path) -> None:
    assert "found duplicate key 'port'" in error_of(write(tmp_path, "gateway:\n  port: 1\n  port: 2\n"))
    assert error_of(write(tmp_path, "- kafka\n")).startswith(
        f"{tmp_path / 'stormwatch.yaml'}:1: expected a mapping with keys: agent, correlator,"
    )


def test_overrides_are_reported_without_a_place() -> None:
    assert error_of(None, topics={"partitions": "x"}) == (
        "invalid configuration: topics.partitions: expected a whole number; got the string 'x'"
    )


def test_checks_across_gateway_options_report_each_at_its_option(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, "gateway:\n  port: 1234\n  tls_cert_file: /etc/cert.pem\n")
    monkeypatch.setenv("STORMWATCH_GATEWAY__BEARER_TOKEN", " ")
    assert error_of(path).splitlines() == [
        f"{path}:3: gateway.tls_cert_file: gateway.tls_cert_file and gateway.tls_key_file must be set together",
        "STORMWATCH_GATEWAY__BEARER_TOKEN: gateway.bearer_token is empty; unset it to disable authentication",
    ]


def test_settings_built_directly_still_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings reads the env vars itself; Settings() outside it keeps pydantic-settings' reading."""
    monkeypatch.setenv("STORMWATCH_TOPICS__RAW", "from.env")
    assert Settings().topics.raw == "from.env"
    assert load_settings().topics.raw == "from.env"
