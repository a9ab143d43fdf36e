"""`stormwatch agent`: the planner on Kafka, in the pipeline's transactional loop.

Inputs: the incident topic (triggers), the approvals topic (operators' answers) and the
mitigation results topic (executors' reports). Outputs, in one transaction with the input
offsets: MitigationCommands, CommandResults, and the changed state records (compacted
``topics.agent_state``). A crash therefore loses or repeats nothing: the next start restores the
state of the last commit and re-reads only input that was not part of it.

Guards such as "3 restarts of a service per hour" and blast radius "across incidents" need one
view of all incidents, so the agent is a single logical instance: it uses a fixed transactional
id, and a second instance fences the first (the first stops at its next commit). Run one, under
a supervisor that restarts it; a standby started alongside takes over when it fences the first.

Timers (approval expiry, retries, escalations, result deadlines) use the wall clock but only fire
when every input partition is caught up, so a backlog that already holds the acknowledgement or
the approval is read before a timer could decide otherwise.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import ValidationError

from stormwatch.agents.core.approvals import ApprovalDecision
from stormwatch.agents.core.planner import Planner, PlanOutput
from stormwatch.agents.core.state import AgentState, Phase
from stormwatch.agents.metrics import AgentMetrics
from stormwatch.config import Settings
from stormwatch.kafka.client import read_changelog
from stormwatch.kafka.txloop import BatchResult, Output, TransactionalLoop, coordinates
from stormwatch.schemas.commands import CommandResult, CommandStatus
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.incident import IncidentEvent

__all__ = ["AgentStage", "build_agent_loop", "read_agent_state", "wall_clock_ms"]

log = logging.getLogger("stormwatch.agent")


def wall_clock_ms() -> int:
    """The wall clock in ms: the agent's only clock, read here and passed to the planner as ``now_ms``
    (the planner is pure and never reads one)."""
    return int(datetime.now(UTC).timestamp() * 1000)


def read_agent_state(settings: Settings) -> AgentState:
    """The agent's committed state, from the compacted state topic (latest value per key)."""
    return AgentState.restore(read_changelog(settings, settings.topics.agent_state))


class AgentStage:
    def __init__(
        self,
        settings: Settings,
        planner: Planner,
        metrics: AgentMetrics | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.planner = planner
        self.metrics = metrics
        self.clock = clock
        self.state: AgentState | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._caught_up: set[tuple[str, int]] = set()

    # -- loop hooks

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.add((tp.topic, tp.partition))
        if self.state is None and self._assigned:
            self.state = read_agent_state(self.settings)
            log.info(
                "restored agent state: %d incident(s), %d pending command(s)",
                len(self.state.incidents),
                len(self.state.commands),
            )
            self._report()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard((tp.topic, tp.partition))
            self._caught_up.discard((tp.topic, tp.partition))
        if not self._assigned:
            self.state = None  # rebuilt from the topic on the next assignment

    @property
    def caught_up(self) -> bool:
        return bool(self._assigned) and self._caught_up >= self._assigned

    def idle_work_due(self) -> bool:
        if self.state is None or not self.caught_up:
            return False
        due = self.planner.next_due(self.state)
        return due is not None and due <= self.clock()

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        state = self.state
        if state is None:  # nothing assigned: commit nothing, the next owner reads it
            return BatchResult([], {})
        now = self.clock()
        out = PlanOutput()
        outputs: list[Output] = []
        for msg in messages:
            topic, partition, _ = coordinates(msg)
            self._caught_up.discard((topic, partition))
            value = msg.value() or b""
            try:
                if topic == self.topics.incidents:
                    self._merge(
                        out, self.planner.on_event(state, IncidentEvent.from_bytes(value), now, partition)
                    )
                elif topic == self.topics.approvals:
                    decision = ApprovalDecision.from_bytes(value)
                    self._merge(out, self.planner.on_decision(state, decision, now))
                elif topic == self.topics.mitigation_results:
                    self._merge(out, self.planner.on_result(state, CommandResult.from_bytes(value), now))
            except (ValidationError, ValueError) as exc:
                self._unreadable(msg, exc, outputs)
        for tp in eof:
            if tp in self._assigned:
                self._caught_up.add(tp)
        if self.caught_up:
            self._merge(out, self.planner.on_timers(state, now))
        t = self.topics
        for cmd in out.commands:
            outputs.append(Output(t.mitigation_commands, cmd.to_bytes(), cmd.incident_id))
        for result in out.results:
            outputs.append(Output(t.mitigation_results, result.to_bytes(), result.incident_id))
            self._count(result)
        for key, record in state.take_changes().items():
            outputs.append(Output(t.agent_state, record, key))
        for note in out.notes:
            log.warning("%s", note)
        if out.commands or out.results:
            self._report()
        return BatchResult(outputs)

    # -- helpers

    @staticmethod
    def _merge(into: PlanOutput, more: PlanOutput) -> None:
        into.commands.extend(more.commands)
        into.results.extend(more.results)
        into.notes.extend(more.notes)

    def _unreadable(self, msg: Message, exc: Exception, outputs: list[Output]) -> None:
        topic, partition, offset = coordinates(msg)
        detail = " ".join(str(exc).split())[:500]
        if self.metrics is not None:
            self.metrics.skipped_records.labels(topic=topic).inc()
        if topic != self.topics.approvals:
            # Incident events and results have their own writers and dead-letter paths (ingest).
            log.warning("skipping unreadable record %s/%d/%d: %s", topic, partition, offset, detail)
            return
        value = msg.value() or b""
        dead = DeadLetter(
            reason=DeadLetterReason.INVALID_COMMAND,
            detail=f"approval decision: {detail}",
            original=base64.b64encode(value).decode(),
            original_size=len(value),
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            at=datetime.now(UTC),
        )
        outputs.append(Output(self.topics.dlq, dead.to_bytes(), f"{topic}/{partition}/{offset}"))

    def _count(self, result: CommandResult) -> None:
        if self.metrics is None:
            return
        self.metrics.decisions.labels(
            workflow=result.workflow, action=result.action, status=result.status.value
        ).inc()
        if result.status is CommandStatus.REFUSED and result.reason:
            guard = result.reason.split(":", 1)[0].replace(" ", "_")
            self.metrics.refusals.labels(workflow=result.workflow, guard=guard).inc()

    def _report(self) -> None:
        if self.metrics is None or self.state is None:
            return
        runs = sum(len(rec.runs) for rec in self.state.incidents.values())
        self.metrics.active_runs.set(runs)
        awaiting = sum(
            1
            for rec in self.state.incidents.values()
            for run in rec.runs.values()
            for lane in run.lanes.values()
            if lane.pending is not None and lane.pending.phase is Phase.AWAITING_APPROVAL
        )
        self.metrics.pending_approvals.set(awaiting)
        self.metrics.running_commands.set(len(self.state.guards.in_flight))


def build_agent_loop(settings: Settings, stage: AgentStage) -> TransactionalLoop:
    """The agent's loop: fixed group and transactional ids, because it is a single logical instance."""
    t = settings.topics
    return TransactionalLoop(
        settings,
        stage=stage,
        group_id=f"stormwatch-agent-{t.incidents}",
        topics=[t.incidents, t.approvals, t.mitigation_results],
        transactional_id=f"stormwatch-agent-{t.incidents}",
        max_batch=settings.agent.max_batch_records,
        poll_timeout_s=0.2,
    )
