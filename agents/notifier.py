"""`stormwatch notify`: incident events -> notifications, in the pipeline's transactional loop.

Input: the incident audit log (``topics.incidents``, keyed by incident id), so the stage scales
by its partitions like the correlator: each worker owns some partitions and, for each, the
incidents on it. Per incident it keeps a ``NotifyRecord`` (the policy state, an outbox, the
incident's alerts) in the compacted changelog ``topics.notify_state``, restored on assignment
before any input is read.

One transaction per batch holds: the input offsets, the changed records, one notification log
record per delivery attempt (``topics.notifications``), the notifications given up
(``topics.notifications_dlq``) and, for each final outcome (delivered or given up), a ``notified``
operator command on ``topics.commands`` that the correlator records on the incident's audit log
(``notified`` / ``notify_failed`` events; the stage skips those when it reads them back). The sends themselves happen inside ``handle``, before the
transaction's outputs are produced. So:

- a notification decided but not sent before a crash is in the restored outbox (or decided again
  from the re-read input, with the same id): it is sent after the restart; nothing is lost;
- a notification whose ``sent`` record was committed left the outbox in that same transaction:
  it is never sent again;
- the one window for a duplicate is a crash after the receiver accepted a message and before the
  transaction recording it committed: the message is sent again, with the same notification id
  (webhook header ``X-Stormwatch-Notification-Id``, email ``Message-ID``; PagerDuty's
  ``dedup_key`` is the incident id, so PagerDuty itself absorbs it).

Timers (coalesced messages, repeats, first messages held for the linker) use the wall clock and
fire only for partitions read to their end, so a backlog is read before a timer decides (a
``linked`` event already written is read before the held message of its member would go out);
retries are outbox items whose next attempt is due.

With a topology (``correlator.topology_file``) the linker may make a new incident a member
``link.delay`` after it opened; the notifier holds each incident's first message for
``link_wait`` (the notifier file's, else ``link.delay`` + ``LINK_WAIT_MARGIN_MS``), see
``link_wait_ms``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import ValidationError

from stormwatch.agents.core.notify_config import NotifierConfig
from stormwatch.agents.core.notify_outbox import (
    STATE_ALERTS_MAX,
    DeliveryOutcome,
    IntegrationInfo,
    NotifyRecord,
    OutboxItem,
    audit_command,
    delivery_log_record,
)
from stormwatch.agents.core.notify_policy import (
    NotifyPolicy,
    Outcome,
    default_link_wait_ms,
    is_notification_outcome,
)
from stormwatch.agents.core.notify_ratelimit import TokenBucket
from stormwatch.agents.metrics import NotifierMetrics
from stormwatch.agents.receivers import DeliveryPayload, Integration, SendResult, WebhookReceiver
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_changelogs
from stormwatch.kafka.txloop import BatchResult, Output, TransactionalLoop, coordinates
from stormwatch.loaders import load_topology
from stormwatch.schemas.incident import IncidentEvent

__all__ = ["NotifierStage", "build_notifier_loop", "link_wait_ms", "wall_clock_ms"]

log = logging.getLogger("stormwatch.notify")


def wall_clock_ms() -> int:
    """The notifier's clock, passed to the pure core as ``now_ms``."""
    return int(datetime.now(UTC).timestamp() * 1000)


def link_wait_ms(settings: Settings, config: NotifierConfig) -> int:
    """How long an incident's first message waits for the linker: the notifier file's
    ``link_wait``; unset, the topology's ``link.delay`` + ``LINK_WAIT_MARGIN_MS`` when the
    settings name a topology file (the linker runs with the correlator's topology), else 0."""
    if config.link_wait_ms is not None:
        return config.link_wait_ms
    path = settings.correlator.topology_file
    if not path:
        return default_link_wait_ms(None)
    try:
        delay_ms = load_topology(path).link.delay_ms
    except (OSError, ValueError) as exc:
        raise UserError(
            f"correlator.topology_file: {exc} (the notifier reads link.delay from it; "
            "link_wait in the notifier file overrides it)"
        ) from None
    return default_link_wait_ms(delay_ms)


@dataclass(slots=True)
class _Attempt:
    partition: int
    record: NotifyRecord
    item: OutboxItem
    integration: Integration
    future: Future[SendResult]


class NotifierStage:
    def __init__(
        self,
        settings: Settings,
        config: NotifierConfig,
        integrations: Mapping[str, Sequence[Integration]],
        metrics: NotifierMetrics | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.config = config
        self.policy = NotifyPolicy(config, link_wait_ms(settings, config))
        self.integrations = {name: list(found) for name, found in integrations.items()}
        self.infos = {
            name: [IntegrationInfo(i.kind, i.send_resolved) for i in found]
            for name, found in self.integrations.items()
        }
        # The incident's alerts are kept only for integrations that show them (the webhook), and
        # at most as many as a payload lists (STATE_ALERTS_MAX when a webhook lists all).
        self.keep_alerts = max(
            (
                min(i.max_alerts or STATE_ALERTS_MAX, STATE_ALERTS_MAX)
                for found in self.integrations.values()
                for i in found
                if isinstance(i, WebhookReceiver)
            ),
            default=0,
        )
        self.metrics = metrics
        self.clock = clock
        self.jitter = jitter
        self.buckets = {
            name: TokenBucket.of(r.rate_limit) for name, r in config.receivers.items() if r.rate_limit
        }
        self.records: dict[int, dict[str, NotifyRecord]] = {}
        self._dirty: dict[int, set[str]] = {}
        # Per partition, the incidents with work ahead (an outbox item or a timer): what each
        # transaction scans for due sends and timers, instead of every record it holds.
        self._active: dict[int, set[str]] = {}
        self._caught_up: set[int] = set()
        self._next_due: int | None = None
        self._pool = ThreadPoolExecutor(settings.notify.max_parallel, thread_name_prefix="notify-send")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- loop hooks

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in partitions if tp.topic == self.topics.incidents)
        if not mine:
            return
        states = read_changelogs(self.settings, self.topics.notify_state, mine)
        for partition in mine:
            self.restore(partition, states.pop(partition, {}))
        log.info(
            "restored notifier state of partitions %s: %d incident(s), %d notification(s) to send",
            ",".join(map(str, mine)),
            sum(len(self.records[p]) for p in mine),
            sum(len(r.outbox) for p in mine for r in self.records[p].values()),
        )

    def restore(self, partition: int, changelog: Mapping[str, bytes]) -> None:
        """Take ``partition`` with the records of its changelog (latest value per incident)."""
        records: dict[str, NotifyRecord] = {}
        self._dirty[partition] = set()
        for key, value in changelog.items():
            try:
                record = NotifyRecord.from_bytes(value)
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                log.warning("dropping an unreadable notifier record %s: %s", key, exc)
                continue
            self._check_outbox(partition, record)
            records[key] = record
        self.records[partition] = records
        self._active[partition] = set()
        for key, record in records.items():
            self._index(partition, key, record)
        self._refresh()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == self.topics.incidents:
                self.records.pop(tp.partition, None)
                self._dirty.pop(tp.partition, None)
                self._active.pop(tp.partition, None)
                self._caught_up.discard(tp.partition)
        self._refresh()

    def idle_work_due(self) -> bool:
        return self._next_due is not None and self._next_due <= self.clock()

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        now = self.clock()
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            topic, partition, offset = coordinates(msg)
            records = self.records.get(partition)
            if records is None:  # not ours any more (revoked mid-batch): the new owner reads it
                continue
            self._caught_up.discard(partition)
            offsets[(topic, partition)] = offset + 1
            try:
                event = IncidentEvent.from_bytes(msg.value() or b"")
            except (ValidationError, ValueError) as exc:
                log.warning(
                    "skipping an unreadable incident event %s/%d/%d: %s",
                    topic,
                    partition,
                    offset,
                    " ".join(str(exc).split())[:300],
                )
                if self.metrics is not None:
                    self.metrics.skipped_records.inc()
                continue
            if is_notification_outcome(event):
                continue  # our own outcome, on the audit log: no notification about a notification
            record = records.get(event.incident_id) or NotifyRecord.new(event.incident_id)
            record.observe(event, self.keep_alerts)
            self._plan(partition, record, self.policy.on_event(record.state, event), now)
            records[event.incident_id] = record
        for topic, partition in eof:
            if topic == self.topics.incidents and partition in self.records:
                self._caught_up.add(partition)
        for partition in sorted(self._caught_up):
            records = self.records[partition]
            for key in sorted(self._active.get(partition, ())):
                record = records[key]
                due = record.state.next_due_ms
                if due is not None and due <= now:
                    self._plan(partition, record, self.policy.on_due(record.state, now), now)
        outputs: list[Output] = []
        self._send_due(outputs)
        self._write_records(outputs)
        self._refresh()
        return BatchResult(outputs, offsets)

    # -- deciding

    def _index(self, partition: int, key: str, record: NotifyRecord) -> None:
        """Keep ``_active`` up to date after ``record`` changed."""
        active = self._active.setdefault(partition, set())
        if record.outbox or record.state.next_due_ms is not None:
            active.add(key)
        else:
            active.discard(key)

    def _plan(self, partition: int, record: NotifyRecord, outcome: Outcome, now: int) -> None:
        self._dirty[partition].add(record.incident_id)
        for held in outcome.held:
            log.debug(
                "notification held",
                extra={"incident_id": record.incident_id, "receiver": held.receiver, "reason": held.reason},
            )
        for item in record.plan(outcome.deliveries, self.infos, now):
            log.debug(
                "notification queued",
                extra={
                    "incident_id": record.incident_id,
                    "notification_id": item.notification_id,
                    "receiver": item.receiver,
                    "integration": item.kind,
                    "trigger": item.trigger,
                },
            )
        self._index(partition, record.incident_id, record)

    def _check_outbox(self, partition: int, record: NotifyRecord) -> None:
        """Items whose integration is no longer in the configuration cannot be sent: dropped."""
        for item in list(record.outbox):
            known = self.infos.get(item.receiver, [])
            if item.integration >= len(known) or known[item.integration].kind != item.kind:
                log.warning(
                    "dropping notification %s to %s (%s #%d): no longer in the notifier file",
                    item.notification_id,
                    item.receiver,
                    item.kind,
                    item.integration,
                )
                record.drop(item)
                self._dirty.setdefault(partition, set()).add(record.incident_id)
        self._index(partition, record.incident_id, record)

    # -- sending

    def _due_items(self, now: int) -> list[tuple[int, NotifyRecord, OutboxItem]]:
        due = [
            (partition, record, item)
            for partition, keys in self._active.items()
            for record in (self.records[partition][key] for key in keys)
            for item in record.due(now)
        ]
        due.sort(key=lambda d: (d[2].next_ms, d[2].decided_ms))
        return due

    def _send_due(self, outputs: list[Output]) -> None:
        """Send up to ``max_parallel`` due notifications at once, and no more in this transaction:
        what a crash can make the receivers get twice is what one transaction sent. The rest is
        due still, so the loop runs the next transaction at once (``idle_work_due``)."""
        cfg = self.settings.notify
        timeout_s = cfg.send_timeout_ms / 1000
        queue = self._due_items(self.clock())
        wave: list[_Attempt] = []
        while queue and len(wave) < cfg.max_parallel:
            partition, record, item = queue.pop(0)
            bucket = self.buckets.get(item.receiver)
            if bucket is not None:
                now = self.clock()
                wait = bucket.take(now)
                if wait:  # the receiver's rate limit: try again when a token is free
                    item.next_ms = now + wait
                    continue
            integration = self.integrations[item.receiver][item.integration]
            payload = DeliveryPayload(
                notification_id=item.notification_id,
                event=record.events[item.seq],
                alerts=tuple(record.alerts.values()),
                receiver=item.receiver,
            )
            future = self._pool.submit(_send, integration, payload, timeout_s)
            wave.append(_Attempt(partition, record, item, integration, future))
        for attempt in wave:
            self._settle(attempt, attempt.future.result(), outputs)

    def _settle(self, attempt: _Attempt, result: SendResult, outputs: list[Output]) -> None:
        record, item = attempt.record, attempt.item
        now = self.clock()
        retry = self.config.receivers[item.receiver].retry
        outcome = record.settle(
            item, ok=result.ok, retryable=result.retryable, retry=retry, now_ms=now, jitter=self.jitter()
        )
        self._dirty[attempt.partition].add(record.incident_id)
        self._index(attempt.partition, record.incident_id, record)
        entry = delivery_log_record(
            item,
            outcome,
            incident_id=record.incident_id,
            status=result.status,
            detail=result.detail,
            latency_s=result.latency_s,
            at_ms=now,
        )
        if outcome == "failed":
            entry["next_attempt_at"] = datetime.fromtimestamp(item.next_ms / 1000, UTC).isoformat()
        value = orjson.dumps(entry)
        outputs.append(Output(self.topics.notifications, value, record.incident_id))
        if outcome == "given_up":
            outputs.append(Output(self.topics.notifications_dlq, value, record.incident_id))
        if outcome in ("sent", "given_up"):
            first = outcome == "sent" and not record.notified
            record.notified = record.notified or outcome == "sent"
            command = audit_command(entry, first=first, integration_index=item.integration, at_ms=now)
            outputs.append(Output(self.topics.commands, command.to_bytes(), record.incident_id))
        self._count(item, outcome, result, entry)
        extra = {
            k: entry[k] for k in ("incident_id", "notification_id", "receiver", "integration", "attempt")
        }
        extra.update(outcome=outcome, status=result.status, latency_s=round(result.latency_s, 3))
        if outcome == "sent":
            log.info("notification sent", extra=extra)
        elif outcome == "failed":
            log.warning("notification failed, will retry: %s", result.detail, extra=extra)
        else:
            log.error("notification given up (dead-lettered): %s", result.detail, extra=extra)

    def _count(
        self, item: OutboxItem, outcome: DeliveryOutcome, result: SendResult, entry: dict[str, object]
    ) -> None:
        if self.metrics is None:
            return
        labels = {"receiver": item.receiver, "integration": item.kind}
        self.metrics.notifications.labels(**labels, outcome=outcome).inc()
        self.metrics.send_seconds.labels(**labels).observe(result.latency_s)
        if outcome == "sent":
            delivered = entry["delivery_latency_s"]
            assert isinstance(delivered, float | int)
            self.metrics.delivery_seconds.labels(**labels).observe(float(delivered))

    # -- writing state

    def _write_records(self, outputs: list[Output]) -> None:
        for partition, keys in self._dirty.items():
            records = self.records.get(partition)
            if records is None:
                continue
            for key in sorted(keys):
                record = records.get(key)
                if record is None:
                    continue
                if record.finished:
                    del records[key]
                    self._active.get(partition, set()).discard(key)
                    outputs.append(Output(self.topics.notify_state, None, key, partition))
                else:
                    outputs.append(Output(self.topics.notify_state, record.to_bytes(), key, partition))
            keys.clear()

    def _refresh(self) -> None:
        """The next time there is work without input (a timer or a send), and the queue gauge."""
        dues: list[int] = []
        waiting = 0
        for partition, keys in self._active.items():
            for record in (self.records[partition][key] for key in keys):
                waiting += len(record.outbox)
                send = record.next_send_ms()
                if send is not None:
                    dues.append(send)
                if partition in self._caught_up and (timer := record.state.next_due_ms) is not None:
                    dues.append(timer)
        self._next_due = min(dues, default=None)
        if self.metrics is not None:
            self.metrics.queue_depth.set(waiting)

    @property
    def waiting(self) -> int:
        """Outbox items on this worker (tests, status)."""
        return sum(len(self.records[p][k].outbox) for p, keys in self._active.items() for k in keys)


def _send(integration: Integration, payload: DeliveryPayload, timeout_s: float) -> SendResult:
    """One bounded attempt; a receiver that raises is a retryable failure, never a dead stage."""
    started = time.monotonic()
    try:
        return integration.send(payload, timeout_s=timeout_s)
    except Exception as exc:
        return SendResult(False, True, None, f"{type(exc).__name__}: {exc}"[:500], time.monotonic() - started)


def build_notifier_loop(settings: Settings, stage: NotifierStage, instance: str) -> TransactionalLoop:
    """One group per incidents topic; each replica its own transactional id (KIP-447 fencing)."""
    t = settings.topics
    return TransactionalLoop(
        settings,
        stage=stage,
        group_id=f"stormwatch-notify-{t.incidents}",
        topics=[t.incidents],
        transactional_id=f"stormwatch-notify-{t.incidents}-{instance}",
        max_batch=settings.notify.max_batch_records,
    )
