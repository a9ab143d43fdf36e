"""`stormwatch executor`: runs MitigationCommands and reports CommandResults. At most once.

A side effect cannot be part of a Kafka transaction, so every command goes through two:

1. ``started`` (and the command's offset) is committed **before** the action runs;
2. the action runs (after the commit, outside any transaction);
3. ``succeeded`` / ``failed`` is committed in a second transaction, before the worker polls again
   (so a rebalance cannot hand the partition over between running and reporting).

If the worker dies between 1 and 3, the command's offset is already committed, so nobody runs it
again; the next owner of the partition finds ``started`` without a final result and reports it
``failed`` with the reason "executor restarted during execution; not retried to avoid running it
twice" (``retryable=False``, so the agent does not retry it either). Running an action twice (two
restarts, two pages) is worse than not knowing whether it finished; the failure is in the audit
log for a person to check.

Which commands were handled is rebuilt from the results topic itself: results are written to the
same partition number as their command, so the owner of a command partition reads that results
partition on assignment. A command that already has any executor result is never run again,
even if the commands topic is replayed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from stormwatch.agents.executors.base import Executor, Outcome
from stormwatch.agents.metrics import ExecutorMetrics
from stormwatch.config import Settings
from stormwatch.kafka.client import read_topic
from stormwatch.kafka.txloop import BatchResult, Output, TransactionalLoop, coordinates
from stormwatch.schemas.commands import CommandResult, CommandStatus, MitigationCommand
from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.durations import format_duration

__all__ = ["RESTARTED_REASON", "ExecutorStage", "build_executor_loop"]

log = logging.getLogger("stormwatch.executor")

RESTARTED_REASON = "executor restarted during execution; not retried to avoid running it twice"
_EXECUTOR_STATUSES = (
    CommandStatus.STARTED,
    CommandStatus.SUCCEEDED,
    CommandStatus.FAILED,
    CommandStatus.DRY_RUN,
)
_FINAL_TXN_ATTEMPTS = 3


def wall_clock_ms() -> int:
    """The executor's clock in ms: the time stamps of its CommandResults."""
    return int(time.time() * 1000)


@dataclass(slots=True)
class _Job:
    command: MitigationCommand
    partition: int


class ExecutorStage:
    def __init__(
        self,
        settings: Settings,
        executors: dict[str, Executor],
        *,
        instance: str,
        metrics: ExecutorMetrics | None = None,
        max_parallel: int = 4,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.executors = executors
        self.actor = f"executor:{instance}"
        self.metrics = metrics
        self.clock = clock
        self.max_parallel = max_parallel
        self.handled: dict[int, dict[str, CommandStatus]] = {}  # partition -> command id -> last status
        self._backlog: list[Output] = []  # results to write in the next transaction (restart reports)
        self._to_run: list[_Job] = []
        self._producer: Producer | None = None

    def attach(self, loop: TransactionalLoop) -> None:
        """The final results are committed with the loop's transactional producer."""
        self._producer = loop.producer

    # -- loop hooks

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in partitions if tp.topic == self.topics.mitigation_commands)
        if not mine:
            return
        seen: dict[int, dict[str, CommandStatus]] = {p: {} for p in mine}
        started: dict[str, CommandResult] = {}
        for msg in read_topic(self.settings, self.topics.mitigation_results, timeout_s=30):
            p = msg.partition()
            if p not in seen:
                continue
            try:
                result = CommandResult.from_bytes(msg.value() or b"")
            except ValidationError:
                continue
            if not result.actor.startswith("executor:") or result.status not in _EXECUTOR_STATUSES:
                continue
            seen[p][result.command_id] = result.status
            if result.status is CommandStatus.STARTED:
                started[result.command_id] = result
        for p in mine:
            self.handled[p] = seen[p]
            for cid, status in seen[p].items():
                if status is CommandStatus.STARTED:
                    self._backlog.append(self._restarted(started[cid], p))
                    seen[p][cid] = CommandStatus.FAILED
        log.info(
            "assigned command partitions %s; %d interrupted command(s) to report", mine, len(self._backlog)
        )

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == self.topics.mitigation_commands:
                self.handled.pop(tp.partition, None)
        gone = {tp.partition for tp in partitions if tp.topic == self.topics.mitigation_commands}
        self._backlog = [o for o in self._backlog if o.partition not in gone]

    def idle_work_due(self) -> bool:
        return bool(self._backlog)

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        # Anything still queued belongs to a transaction that was aborted: its commands are re-read.
        self._to_run = []
        outputs = self._backlog
        self._backlog = []
        now = self.clock()
        for msg in messages:
            _, partition, offset = coordinates(msg)
            handled = self.handled.get(partition)
            if handled is None:
                continue
            try:
                cmd = MitigationCommand.from_bytes(msg.value() or b"")
            except ValidationError as exc:
                log.warning(
                    "skipping unreadable command at offset %d of partition %d: %s", offset, partition, exc
                )
                self._count("?", "unreadable")
                continue
            if cmd.command_id in handled:
                before = handled[cmd.command_id].value
                log.info("command %s was handled before (%s); not running it again", cmd.command_id, before)
                self._count(cmd.action, "skipped")
                continue
            outputs.append(self._decide(cmd, partition, now))
        return BatchResult(outputs)

    def _decide(self, cmd: MitigationCommand, partition: int, now: int) -> Output:
        """Report a command that cannot run, dry-run it, or commit ``started`` and queue it."""
        handled = self.handled[partition]
        executor = self.executors.get(cmd.action)
        if executor is None:
            reason = (
                f"no executor for action {cmd.action!r} here; available: {', '.join(sorted(self.executors))}"
            )
            handled[cmd.command_id] = CommandStatus.FAILED
            self._count(cmd.action, "refused")
            return self._output(
                self._result(cmd, CommandStatus.FAILED, now, reason=reason, retryable=False), partition
            )
        if cmd.expires_at is not None and now > int(cmd.expires_at.timestamp() * 1000):
            late = format_duration(max(now - int(cmd.created_at.timestamp() * 1000), 0) // 1000 * 1000)
            reason = (
                f"not started: it waited {late} for an executor and expired at {cmd.expires_at.isoformat()}"
            )
            handled[cmd.command_id] = CommandStatus.FAILED
            self._count(cmd.action, "expired")
            return self._output(self._result(cmd, CommandStatus.FAILED, now, reason=reason), partition)
        if cmd.dry_run:
            outcome = self._execute(executor, cmd, dry_run=True)
            handled[cmd.command_id] = CommandStatus.DRY_RUN
            self._count(cmd.action, "dry_run")
            status = CommandStatus.DRY_RUN if outcome.ok else CommandStatus.FAILED
            result = self._result(
                cmd, status, now, reason=outcome.reason, output=outcome.output, retryable=outcome.retryable
            )
            return self._output(result, partition)
        handled[cmd.command_id] = CommandStatus.STARTED
        self._to_run.append(_Job(cmd, partition))
        return self._output(self._result(cmd, CommandStatus.STARTED, now), partition)

    # -- after the ``started`` transaction committed

    def after_commit(self, records: int, seconds: float) -> None:
        """Run the commands whose ``started`` was just committed, then commit their results."""
        jobs, self._to_run = self._to_run, []
        if not jobs:
            return
        if len(jobs) == 1:
            finals = [self._run(jobs[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(jobs))) as pool:
                finals = list(pool.map(self._run, jobs))
        self._commit_finals([out for out, _ in finals])
        for job, (_, status) in zip(jobs, finals, strict=True):
            handled = self.handled.get(job.partition)
            if handled is not None:
                handled[job.command.command_id] = status

    def _run(self, job: _Job) -> tuple[Output, CommandStatus]:
        cmd = job.command
        executor = self.executors[cmd.action]
        started = time.monotonic()
        outcome = self._execute(executor, cmd, dry_run=False)
        seconds = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.seconds.labels(action=cmd.action).observe(seconds)
        self._count(cmd.action, "succeeded" if outcome.ok else "failed")
        status = CommandStatus.SUCCEEDED if outcome.ok else CommandStatus.FAILED
        result = self._result(
            cmd,
            status,
            self.clock(),
            reason=outcome.reason,
            output=outcome.output or None,
            retryable=outcome.retryable,
            duration_s=round(seconds, 3),
        )
        return self._output(result, job.partition), status

    def _execute(self, executor: Executor, cmd: MitigationCommand, *, dry_run: bool) -> Outcome:
        try:
            return executor.execute(cmd, timeout_s=cmd.timeout_s, dry_run=dry_run)
        except Exception as exc:  # a plugin bug must not kill the worker or hide the outcome
            log.exception("executor %s raised for command %s", cmd.action, cmd.command_id)
            return Outcome(ok=False, reason=f"executor error: {type(exc).__name__}: {exc}", retryable=False)

    def _commit_finals(self, finals: list[Output]) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("ExecutorStage.attach(loop) was not called")
        for attempt in range(1, _FINAL_TXN_ATTEMPTS + 1):
            producer.begin_transaction()
            try:
                for out in finals:
                    _produce(producer, out)
                producer.commit_transaction(60)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if (
                    isinstance(error, KafkaError)
                    and error.txn_requires_abort()
                    and attempt < _FINAL_TXN_ATTEMPTS
                ):
                    log.warning("retrying the results transaction after %s", error)
                    producer.abort_transaction(30)
                    continue
                raise

    # -- helpers

    def _result(
        self,
        cmd: MitigationCommand,
        status: CommandStatus,
        now: int,
        *,
        reason: str | None = None,
        output: str | None = None,
        retryable: bool = True,
        duration_s: float | None = None,
    ) -> CommandResult:
        return CommandResult(
            command_id=cmd.command_id,
            incident_id=cmd.incident_id,
            workflow=cmd.workflow,
            step=cmd.step,
            action=cmd.action,
            status=status,
            at=utc_from_ms(now),
            actor=self.actor,
            reason=reason,
            output=output,
            duration_s=duration_s,
            target=cmd.target,
            attempt=cmd.attempt,
            retryable=retryable,
        )

    def _restarted(self, started: CommandResult, partition: int) -> Output:
        result = started.model_copy(
            update={
                "status": CommandStatus.FAILED,
                "at": utc_from_ms(self.clock()),
                "actor": self.actor,
                "reason": RESTARTED_REASON,
                "retryable": False,
                "output": None,
            }
        )
        return self._output(result, partition)

    def _output(self, result: CommandResult, partition: int) -> Output:
        return Output(self.topics.mitigation_results, result.to_bytes(), result.incident_id, partition)

    def _count(self, action: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.actions.labels(action=action, outcome=outcome).inc()


def _produce(producer: Producer, out: Output) -> None:
    while True:
        try:
            producer.produce(
                out.topic, out.value, out.key, out.partition if out.partition is not None else -1
            )
            return
        except BufferError:
            producer.poll(0.05)


def build_executor_loop(settings: Settings, stage: ExecutorStage, instance: str) -> TransactionalLoop:
    t = settings.topics
    # An action may run up to 10 minutes without the consumer polling; stay in the group meanwhile.
    loop = TransactionalLoop(
        settings,
        stage=stage,
        group_id=f"stormwatch-executor-{t.mitigation_commands}",
        topics=[t.mitigation_commands],
        transactional_id=f"stormwatch-executor-{t.mitigation_commands}-{instance}",
        max_batch=min(settings.agent.max_batch_records, 100),
        poll_timeout_s=0.2,
        consumer_overrides={"max.poll.interval.ms": 15 * 60_000},
        on_commit=stage.after_commit,
    )
    stage.attach(loop)
    return loop
