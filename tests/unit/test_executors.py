"""The built-in executors against real programs and a real HTTP server on loopback."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stormwatch.agents.executors import BUILTIN_EXECUTORS, available_executors, create_executors
from stormwatch.agents.executors.base import ExecutorPolicy
from stormwatch.agents.executors.log import LogExecutor
from stormwatch.agents.executors.program import ProgramAllowlist, ProgramExecutor
from stormwatch.agents.executors.publish import KafkaExecutor
from stormwatch.agents.executors.webhook import UrlAllowlist, WebhookExecutor
from stormwatch.schemas.commands import MitigationCommand
from tests.kit.http import QuietHandler, serve_http


def command(action: str, params: dict[str, Any], timeout_s: float = 5.0) -> MitigationCommand:
    return MitigationCommand(
        command_id="0" * 32,
        incident_id="inc-00000000000000aa-1",
        workflow="w",
        step="s",
        action=action,
        params=params,
        timeout_s=timeout_s,
        created_at=datetime.now(UTC),
    )


# ------------------------------------------------------------------------------------------ webhook


class _Handler(QuietHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Handler.received.append((self.path, dict(self.headers.items()), body))
        if self.path.startswith("/hooks/slow"):
            time.sleep(0.8)
        if self.path.startswith("/hooks/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()
            return
        code = 500 if self.path.startswith("/hooks/fail") else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"accepted" if code == 200 else b"boom")


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    with serve_http(_Handler) as base:
        yield base


def webhook(base: str) -> WebhookExecutor:
    return WebhookExecutor(ExecutorPolicy(allow_urls=(f"{base}/hooks/",)))


def test_webhook_posts_json_with_the_command_headers(http_base: str) -> None:
    _Handler.received.clear()
    params = {"url": f"{http_base}/hooks/sre?x=1", "body": {"text": "hi"}, "headers": {"X-Team": "sre"}}
    outcome = webhook(http_base).execute(command("webhook", params), timeout_s=5, dry_run=False)
    assert outcome.ok and outcome.output == "HTTP 200: accepted"
    path, headers, body = _Handler.received[-1]
    assert path == "/hooks/sre?x=1" and json.loads(body) == {"text": "hi"}
    assert headers["X-Stormwatch-Command-Id"] == "0" * 32 and headers["X-Team"] == "sre"
    assert headers["Content-Type"] == "application/json"


def test_webhook_failures(http_base: str) -> None:
    ex = webhook(http_base)
    fail = ex.execute(command("webhook", {"url": f"{http_base}/hooks/fail"}), timeout_s=5, dry_run=False)
    assert not fail.ok and fail.reason == "HTTP 500 Internal Server Error" and fail.retryable
    redirect = ex.execute(
        command("webhook", {"url": f"{http_base}/hooks/redirect"}), timeout_s=5, dry_run=False
    )
    assert not redirect.ok and "redirect" in (redirect.reason or "") and not redirect.retryable
    slow = ex.execute(command("webhook", {"url": f"{http_base}/hooks/slow"}), timeout_s=0.3, dry_run=False)
    assert not slow.ok and slow.reason == "no response within 0.3s"


def test_webhook_refuses_urls_off_the_allowlist_without_sending(http_base: str) -> None:
    _Handler.received.clear()
    ex = webhook(http_base)
    for url in (
        f"{http_base}/other",
        f"{http_base}/hooksX",
        f"{http_base}/hooks/../admin",
        f"{http_base}/hooks/%2e%2e/admin",
        "http://127.0.0.1.evil.net/hooks/",
        f"http://user@{http_base.removeprefix('http://')}/hooks/x",
        "file:///etc/passwd",
    ):
        outcome = ex.execute(command("webhook", {"url": url}), timeout_s=5, dry_run=False)
        assert not outcome.ok and (outcome.reason or "").startswith("refused: ") and not outcome.retryable, (
            url
        )
    assert _Handler.received == []


def test_url_allowlist_is_structural() -> None:
    allow = UrlAllowlist(("https://hooks.example.com/services/",))
    assert allow.allows("https://hooks.example.com/services/T1/B2")[0]
    assert allow.allows("https://HOOKS.example.com:443/services/x")[0]
    assert not allow.allows("https://hooks.example.com.evil.net/services/x")[0]
    assert not allow.allows("https://hooks.example.com@evil.net/services/x")[0]
    assert not allow.allows("http://hooks.example.com/services/x")[0]
    assert not allow.allows("https://hooks.example.com:8443/services/x")[0]
    assert not allow.allows("https://hooks.example.com/servicesX")[0]
    assert not UrlAllowlist(()).allows("https://hooks.example.com/services/x")[0]


def test_webhook_dry_run_sends_nothing(http_base: str) -> None:
    _Handler.received.clear()
    out = webhook(http_base).execute(
        command("webhook", {"url": f"{http_base}/hooks/a"}), timeout_s=5, dry_run=True
    )
    assert out.ok and out.output.startswith("would POST") and _Handler.received == []


# ------------------------------------------------------------------------------------------ exec


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_exec_passes_each_argument_literally(tmp_path: Path) -> None:
    out_file = tmp_path / "args"
    prog = script(
        tmp_path, "record.sh", f'for a in "$@"; do printf "[%s]\\n" "$a" >> {out_file}; done\necho done\n'
    )
    ex = ProgramExecutor(ExecutorPolicy(allow_programs=(prog,)))
    evil = "; rm -rf / #"
    argv = [prog, evil, "$(touch pwned)", "`id`", "a b", "&& reboot", "|cat /etc/passwd", "\n"]
    outcome = ex.execute(command("exec", {"argv": argv}), timeout_s=5, dry_run=False)
    assert outcome.ok and outcome.output.strip() == "done"
    assert out_file.read_text() == "".join(f"[{a}]\n" for a in argv[1:])
    assert not (tmp_path / "pwned").exists() and not Path("/pwned").exists()


def test_exec_refuses_programs_off_the_allowlist_and_shells(tmp_path: Path) -> None:
    prog = script(tmp_path, "ok.sh", "exit 0\n")
    ex = ProgramExecutor(ExecutorPolicy(allow_programs=(prog, f"{tmp_path}/bin/")))
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "sneaky").symlink_to("/bin/sh")
    for argv, why in (
        (["/bin/sh", "-c", "id"], "shell"),
        (["/usr/bin/env", "sh"], "shell"),
        ([f"{tmp_path}/other.sh"], "not on the allowlist"),
        ([f"{tmp_path}/bin/sneaky", "-c", "id"], "shell"),
        ([f"{tmp_path}/bin/../ok.sh"], "normalized"),
        (["ok.sh"], "absolute"),
    ):
        outcome = ex.execute(command("exec", {"argv": argv}), timeout_s=5, dry_run=False)
        assert not outcome.ok and not outcome.retryable, argv
        assert why in (outcome.reason or ""), (argv, outcome.reason)


def test_shells_cannot_be_allowlisted() -> None:
    for path in ("/bin/sh", "/bin/bash", "/usr/bin/env", "/usr/bin/python3", "/usr/bin/sudo"):
        with pytest.raises(ValueError, match="cannot be allowlisted"):
            ProgramAllowlist((path,))
    with pytest.raises(ValueError, match="absolute path"):
        ProgramAllowlist(("restart.sh",))


def test_exec_environment_is_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_KAFKA__SASL_PASSWORD", "secret")
    prog = script(tmp_path, "env.sh", "env | sort\n")
    ex = ProgramExecutor(ExecutorPolicy(allow_programs=(prog,)))
    outcome = ex.execute(
        command("exec", {"argv": [prog], "env": {"REGION": "eu"}}), timeout_s=5, dry_run=False
    )
    names = {line.split("=", 1)[0] for line in outcome.output.splitlines()}
    assert "secret" not in outcome.output
    assert {"REGION", "STORMWATCH_COMMAND_ID", "STORMWATCH_INCIDENT_ID", "PATH"} <= names
    bad = ex.execute(
        command("exec", {"argv": [prog], "env": {"LD_PRELOAD": "/x.so"}}), timeout_s=5, dry_run=False
    )
    assert not bad.ok and "LD_PRELOAD" in (bad.reason or "")


def test_exec_timeout_kills_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    prog = script(tmp_path, "slow.sh", f"(sleep 1; touch {marker}) &\nsleep 5\n")
    ex = ProgramExecutor(ExecutorPolicy(allow_programs=(prog,)))
    started = time.monotonic()
    outcome = ex.execute(command("exec", {"argv": [prog]}), timeout_s=0.5, dry_run=False)
    assert not outcome.ok and "timed out after 0.5s" in (outcome.reason or "")
    assert time.monotonic() - started < 1.0
    time.sleep(1.2)
    assert not marker.exists()  # the background child was killed with its group


def test_exec_reports_exit_status_and_output(tmp_path: Path) -> None:
    prog = script(tmp_path, "fail.sh", "echo 'no such service' >&2\nexit 3\n")
    ex = ProgramExecutor(ExecutorPolicy(allow_programs=(prog,)))
    outcome = ex.execute(command("exec", {"argv": [prog]}), timeout_s=5, dry_run=False)
    assert not outcome.ok and (outcome.reason or "").startswith("exited with status 3")
    assert outcome.output.strip() == "no such service"
    dry = ex.execute(command("exec", {"argv": [prog, "x"]}), timeout_s=5, dry_run=True)
    assert dry.ok and dry.output == f"would run {[prog, 'x']!r}"


def test_exec_check_params() -> None:
    problems = dict(ProgramExecutor.check_params({"argv": ["{{ labels.p }}", 5], "shell": True}))
    assert problems["argv[0]"] == "the program must be a literal absolute path, not a template"
    assert "must be a string" in problems["argv[1]"]
    assert "unknown parameter 'shell'" in problems["shell"]
    assert "shell" in dict(ProgramExecutor.check_params({"argv": ["/bin/bash"]}))["argv[0]"]


# ------------------------------------------------------------------------------------------ others


def test_log_executor() -> None:
    ex = LogExecutor(ExecutorPolicy())
    assert ex.execute(command("log", {"message": "hello"}), timeout_s=1, dry_run=False).output == "hello"
    assert not ex.execute(command("log", {"msg": "x"}), timeout_s=1, dry_run=False).ok


def test_kafka_executor_refuses_topics_off_the_allowlist_without_connecting() -> None:
    ex = KafkaExecutor(ExecutorPolicy(allow_topics=("tickets",)))
    outcome = ex.execute(
        command("kafka", {"topic": "incidents.events", "value": {}}), timeout_s=1, dry_run=False
    )
    assert not outcome.ok and "not on the allowlist" in (outcome.reason or "")
    assert ex._producer is None
    problems = dict(KafkaExecutor.check_params({"topic": "{{ labels.t }}"}))
    assert "literally" in problems["topic"] and "missing parameter 'value'" in problems[""]


def test_registry() -> None:
    assert set(BUILTIN_EXECUTORS) == {"webhook", "exec", "kafka", "log"}
    # Only log changes nothing outside the executor, so only its steps run without approval
    # by default (docs/security.md, Approvals).
    assert {name: cls.side_effects for name, cls in BUILTIN_EXECUTORS.items()} == {
        "webhook": True,
        "exec": True,
        "kafka": True,
        "log": False,
    }
    assert set(BUILTIN_EXECUTORS) <= set(available_executors())
    made = create_executors(ExecutorPolicy(), only={"log"})
    assert list(made) == ["log"]


def test_plugins_come_from_entry_points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A plugin is found through its distribution's entry point; a built-in name cannot be taken."""
    import sys

    import stormwatch.agents.executors as registry

    dist = tmp_path / "demo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[stormwatch.executors]\npage = demo_plugin:PageExecutor\nexec = demo_plugin:PageExecutor\n"
    )
    (tmp_path / "demo_plugin.py").write_text(
        "from agents.executors.log import LogExecutor\nclass PageExecutor(LogExecutor):\n    name = 'page'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._plugins.cache_clear()
    try:
        found = available_executors()
        assert found["page"].__name__ == "PageExecutor"
        assert found["exec"] is ProgramExecutor
    finally:
        registry._plugins.cache_clear()
        sys.modules.pop("demo_plugin", None)


# ------------------------------------------------------------------------------------------ the worker


def stage_with(executors: dict[str, Any], now_ms: int) -> Any:
    from stormwatch.agents.executor import ExecutorStage
    from stormwatch.config import Settings

    stage = ExecutorStage(Settings(), executors, instance="t1", clock=lambda: now_ms)
    stage.handled[0] = {}
    return stage


def decided(stage: Any, cmd: MitigationCommand, now_ms: int) -> Any:
    from stormwatch.schemas.commands import CommandResult

    out = stage._decide(cmd, 0, now_ms)
    assert out.partition == 0 and out.key == cmd.incident_id  # same partition number as the command
    return CommandResult.from_bytes(out.value)


def test_worker_commits_started_before_running_and_queues_the_action() -> None:
    now = int(datetime.now(UTC).timestamp() * 1000)
    stage = stage_with({"log": LogExecutor(ExecutorPolicy())}, now)
    cmd = command("log", {"message": "x"})
    result = decided(stage, cmd, now)
    assert (result.status.value, result.actor) == ("started", "executor:t1")
    assert [job.command.command_id for job in stage._to_run] == [cmd.command_id]  # runs after the commit
    assert stage.handled[0][cmd.command_id].value == "started"


def test_worker_refuses_what_it_cannot_or_must_not_run() -> None:
    from datetime import timedelta

    now_dt = datetime.now(UTC)
    now = int(now_dt.timestamp() * 1000)
    stage = stage_with({"log": LogExecutor(ExecutorPolicy())}, now)
    unknown = decided(stage, command("teleport", {}), now)
    assert unknown.status.value == "failed" and "no executor for action 'teleport'" in (unknown.reason or "")
    assert unknown.retryable is False
    stale = command("log", {"message": "x"}).model_copy(
        update={
            "command_id": "1" * 32,
            "created_at": now_dt - timedelta(minutes=10),
            "expires_at": now_dt - timedelta(minutes=5),
        }
    )
    expired = decided(stage, stale, now)
    assert expired.status.value == "failed" and (expired.reason or "").startswith(
        "not started: it waited 10m"
    )
    dry = command("log", {"message": "x"}).model_copy(update={"command_id": "2" * 32, "dry_run": True})
    result = decided(stage, dry, now)
    assert result.status.value == "dry_run" and result.output == "would log: x"
    assert stage._to_run == []
