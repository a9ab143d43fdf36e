"""The mitigation commands: `agent`, `executor`, `workflows validate|schema`, `approve`, `deny`,
`approvals`.

The two workers are long-running like `ingest` and `correlate`; the rest are one-shot operator
commands. `approve` and `deny` check the agent's committed state first, so a typo in a command
id, or an answer to a request that already expired, is reported at once instead of silently
ignored by the agent.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stormwatch import schemas as contracts
from stormwatch.agents.core.approvals import COMMAND_ID_HELP, ApprovalDecision, Decision, is_command_id
from stormwatch.agents.core.workflow import WorkflowConfig, WorkflowError, render_workflow_schema
from stormwatch.commands.args import worker_options
from stormwatch.commands.checking import check_files
from stormwatch.commands.operator import operator_name
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import make_producer, produce_sync, require_topic
from stormwatch.loaders import load_workflows
from stormwatch.output import dump_json, human_time, render_table, terminal_width

PUBLISH_TIMEOUT_S = 10.0

# Next to the contracts' JSON Schemas, wherever the package is (a checkout or an installed wheel).
SCHEMA_FILE = Path(contracts.__file__).resolve().parent / "json" / "workflow.schema.json"


def register(sub: Any) -> None:
    text = "Run the mitigation agent: incident events -> guarded workflow steps -> commands."
    p: argparse.ArgumentParser = sub.add_parser("agent", help=text, description=text)
    p.add_argument("--workflows", metavar="FILE", help="workflow YAML (default: agent.workflows_file)")
    p.add_argument("--dry-run", action="store_true", help="decide and record every step, execute none")
    p.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT (0: off)")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds (demos, tests)")
    p.set_defaults(handler=run_agent, long_running=True)

    text = "Run an executor: mitigation commands -> actions (allowlisted) -> command results."
    p = sub.add_parser("executor", help=text, description=text)
    for flag, metavar, what in (
        ("--allow-url", "URL", "URL prefix the webhook action may POST to (adds to agent.allow_urls)"),
        (
            "--allow-program",
            "PATH",
            "absolute program path, or directory ending in /, the exec action may run "
            "(adds to agent.allow_programs)",
        ),
        ("--allow-topic", "TOPIC", "topic the kafka action may publish to (adds to agent.allow_topics)"),
    ):
        p.add_argument(flag, action="append", default=[], metavar=metavar, help=f"{what}; repeatable")
    p.add_argument(
        "--max-parallel", type=int, help="actions run at the same time (default: agent.max_parallel)"
    )
    worker_options(p)
    p.set_defaults(handler=run_executor)

    p = sub.add_parser("workflows", help="check workflow files, print their JSON Schema")
    actions = p.add_subparsers(dest="workflows_command", metavar="ACTION")
    actions.required = True
    v = actions.add_parser(
        "validate",
        help="check workflow files without running anything",
        description="Check workflow files; each problem is printed as FILE:LINE: PATH: MESSAGE (exit 1).",
    )
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(handler=run_validate)
    s = actions.add_parser(
        "schema",
        help="print the JSON Schema of workflow files",
        description="Print the JSON Schema of the workflow file format (for editor completion).",
    )
    s.add_argument("--output", metavar="FILE", help="write it to FILE instead of stdout")
    s.add_argument(
        "--check",
        action="store_true",
        help=f"write nothing; exit 1 if FILE (default {SCHEMA_FILE.name} in schemas/json) is stale",
    )
    s.set_defaults(handler=run_schema)

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        text = f"{verb} a mitigation command that is awaiting approval"
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("command_id", metavar="COMMAND_ID", help=COMMAND_ID_HELP)
        p.add_argument("--by", metavar="NAME", help="who decides (default: $USER); recorded in the audit log")
        if name == "approve":
            p.add_argument("--note", metavar="TEXT", help="a comment recorded with the approval")
            p.set_defaults(handler=run_decision, decision=Decision.APPROVE)
        else:
            p.add_argument("--reason", required=True, metavar="TEXT", help="why; recorded in the audit log")
            p.set_defaults(handler=run_decision, decision=Decision.DENY)

    text = "list mitigation commands awaiting approval"
    p = sub.add_parser("approvals", help=text, description=text[0].upper() + text[1:] + ".")
    p.add_argument("--json", action="store_true", help="JSON array instead of a table")
    p.set_defaults(handler=run_approvals)


# ---------------------------------------------------------------------------------------------- workers


def _load_workflows(path: str) -> WorkflowConfig:
    """The workflow file checked against the installed executors (built-ins and plugins)."""
    from stormwatch.agents.executors import available_executors

    return load_workflows(path, executors=available_executors())


def _workflows(path: str | None) -> WorkflowConfig:
    if not path:
        raise UserError(
            "no workflow file: pass --workflows FILE or set agent.workflows_file "
            "(example: deploy/incident_workflow_config.yaml)"
        )
    try:
        return _load_workflows(path)
    except WorkflowError as exc:
        raise UserError(f"the workflow file is invalid:\n{exc}") from None


def run_agent(args: argparse.Namespace, settings: Settings) -> int:
    from stormwatch.agents.agent import AgentStage, build_agent_loop
    from stormwatch.agents.core.planner import Planner
    from stormwatch.agents.metrics import agent_metrics

    config = _workflows(args.workflows or settings.agent.workflows_file)
    _metrics(args, settings)
    t = settings.topics
    for topic in (t.incidents, t.approvals, t.mitigation_commands, t.mitigation_results, t.agent_state):
        require_topic(settings, topic)
    planner = Planner(
        config,
        dry_run=args.dry_run or settings.agent.dry_run,
        dispatch_timeout_ms=settings.agent.dispatch_timeout_ms,
        result_grace_ms=settings.agent.result_grace_ms,
    )
    stage = AgentStage(settings, planner, agent_metrics())
    loop = build_agent_loop(settings, stage)
    loop.serve("agent", max_seconds=args.max_seconds, dry_run=planner.dry_run)
    return 0


def run_executor(args: argparse.Namespace, settings: Settings) -> int:
    from stormwatch.agents.executor import ExecutorStage, build_executor_loop
    from stormwatch.agents.executors import ExecutorPolicy, create_executors
    from stormwatch.agents.metrics import executor_metrics

    a = settings.agent
    policy = ExecutorPolicy(
        allow_urls=tuple(dict.fromkeys([*a.allow_urls, *args.allow_url])),
        allow_programs=tuple(dict.fromkeys([*a.allow_programs, *args.allow_program])),
        allow_topics=tuple(dict.fromkeys([*a.allow_topics, *args.allow_topic])),
        kafka=settings.kafka,
    )
    try:
        executors = create_executors(policy)
    except ValueError as exc:
        raise UserError(f"invalid allowlist: {exc}") from None
    _metrics(args, settings)
    t = settings.topics
    commands = require_topic(settings, t.mitigation_commands)
    results = require_topic(settings, t.mitigation_results)
    if results < commands:
        raise UserError(
            f"{t.mitigation_results} has {results} partitions but {t.mitigation_commands} has {commands}; "
            "results are written to their command's partition number, so it needs at least as many"
        )
    instance = str(args.instance_id or f"{socket.gethostname()}-{os.getpid()}")
    stage = ExecutorStage(
        settings,
        executors,
        instance=instance,
        metrics=executor_metrics(),
        max_parallel=args.max_parallel or a.max_parallel,
    )
    loop = build_executor_loop(settings, stage, instance)
    loop.serve("executor", max_seconds=args.max_seconds, instance=instance)
    return 0


def _metrics(args: argparse.Namespace, settings: Settings) -> None:
    """/metrics before Kafka: a port in use is reported at once, not after the wait for the brokers."""
    from stormwatch.metrics import serve_metrics

    serve_metrics(
        args.metrics_port if args.metrics_port is not None else settings.metrics_port, settings.metrics_host
    )


# ---------------------------------------------------------------------------------------------- files


def run_validate(args: argparse.Namespace, settings: Settings) -> int:
    return check_files(args.files, _load_workflows, WorkflowError, _workflows_summary)


def _workflows_summary(path: str, config: WorkflowConfig) -> str:
    names = ", ".join(w.name for w in config.workflows) or "none"
    return f"{path}: OK, {len(config.workflows)} workflow(s): {names}"


def run_schema(args: argparse.Namespace, settings: Settings) -> int:
    text = render_workflow_schema()
    if args.check:
        target = Path(args.output) if args.output else SCHEMA_FILE
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != text:
            print(f"{target} is stale; run `stormwatch workflows schema --output {target}`")
            return 1
        print(f"{target} is up to date")
        return 0
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(args.output)
        return 0
    sys.stdout.write(text)
    return 0


# ---------------------------------------------------------------------------------------------- approvals


def run_decision(args: argparse.Namespace, settings: Settings) -> int:
    from stormwatch.agents.agent import read_agent_state

    command_id = args.command_id.strip().lower()
    if not is_command_id(command_id):
        raise UserError(f"invalid command id {args.command_id!r}: {COMMAND_ID_HELP}")
    by = operator_name(args.by)
    decision: Decision = args.decision
    note = args.note if decision is Decision.APPROVE else args.reason
    if note is not None and not note.strip():
        raise UserError(
            "--reason must not be empty" if decision is Decision.DENY else "--note must not be empty"
        )
    topic = settings.topics.approvals
    require_topic(settings, topic, 5.0)
    require_topic(settings, settings.topics.agent_state, 5.0)
    state = read_agent_state(settings)
    pending = {p.command_id: (rec, run, p) for rec, run, p in state.pending_approvals()}
    if command_id not in pending:
        waiting = ", ".join(sorted(pending)[:5]) or "none"
        raise UserError(
            f"command {command_id} is not awaiting approval (it may have been answered or expired, or the id "
            f"is wrong); awaiting now: {waiting}; list them with `stormwatch approvals`"
        )
    record = ApprovalDecision(
        command_id=command_id,
        decision=decision,
        by=by,
        at=datetime.now(UTC),
        note=note.strip() if note else None,
    )
    publish_decision(settings, record)
    rec, run, p = pending[command_id]
    verb = "approved" if decision is Decision.APPROVE else "denied"
    target = f" on {p.target}" if p.target else ""
    print(
        f"{verb} {command_id} ({run.workflow}/{p.step}: {p.action}{target}, {rec.view.incident_id}) by {by}"
    )
    return 0


def publish_decision(settings: Settings, record: ApprovalDecision) -> None:
    """Send an operator's answer to the approvals topic, keyed by the command, and wait until Kafka
    has it (the agent reads it; the console sends the same record)."""
    overrides: dict[str, Any] = {"linger.ms": 0, "message.timeout.ms": int(PUBLISH_TIMEOUT_S * 1000)}
    producer = make_producer(settings, **overrides)
    produce_sync(
        producer,
        settings.topics.approvals,
        record.command_id,
        record.to_bytes(),
        timeout_s=PUBLISH_TIMEOUT_S + 1,
    )


def run_approvals(args: argparse.Namespace, settings: Settings) -> int:
    from stormwatch.agents.agent import read_agent_state
    from stormwatch.schemas.common import utc_from_ms

    require_topic(settings, settings.topics.agent_state, 5.0)
    state = read_agent_state(settings)
    items = sorted(state.pending_approvals(), key=lambda x: x[2].due_ms)
    if args.json:
        rows = [
            {
                "command_id": p.command_id,
                "incident_id": rec.view.incident_id,
                "workflow": run.workflow,
                "step": p.step,
                "action": p.action,
                "target": p.target,
                "attempt": p.attempt,
                "params": p.params,
                "requested_at": utc_from_ms(p.created_ms).isoformat(),
                "expires_at": utc_from_ms(p.due_ms).isoformat(),
            }
            for rec, run, p in items
        ]
        print(dump_json(rows))
        return 0
    if not items:
        print("no commands are awaiting approval")
        return 0
    now = datetime.now(UTC)
    table = [
        (
            p.command_id,
            rec.view.incident_id,
            f"{run.workflow}/{p.step}",
            p.action,
            p.target,
            human_time(utc_from_ms(p.due_ms), now),
            rec.view.title,
        )
        for rec, run, p in items
    ]
    headers = ("COMMAND_ID", "INCIDENT", "WORKFLOW/STEP", "ACTION", "TARGET", "EXPIRES (UTC)", "TITLE")
    print(render_table(headers, table, max_width=terminal_width(sys.stdout)))
    return 0
