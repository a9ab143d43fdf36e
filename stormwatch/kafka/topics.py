"""The pipeline's Kafka topics: what they must look like, creating them, and checking live ones.

Topics are created explicitly (never by broker auto-creation) because their partition counts,
retention and compaction are part of the design (docs/architecture.md, "Topics"): a wrong
retention on the incident topic loses the audit log, a wrong partition count on the correlator
state breaks state restore. ``check_topics`` tells an operator whether a live cluster still
matches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import ErrorTracker, list_topics_or_refusal, refused_access, unreachable_error

log = logging.getLogger("stormwatch.topics")

DAY_MS = 24 * 3600 * 1000
# Operator commands and mitigation traffic are kept long enough to investigate a month-old incident.
COMMAND_RETENTION_MS = 30 * DAY_MS
# Room for the record batch, headers and key on top of the largest record value a topic takes.
FRAMING_BYTES = 64 * 1024
STATE_SEGMENT_MS = 10 * 60 * 1000
"""Longest a compacted topic's active segment stays open. Kafka compacts only closed segments, and
a slowly written state topic does not fill one (1 GB by default, 100 MB on the development broker)
for hours: every restore then reads each state record written since the topic was created, more
at each broker crash (the notifier's steps in docs/reliability.md, run 4). With it a restore reads
the live state, what the cleaner has not reached yet and at most 10 minutes of writes."""

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the pipeline needs it. ``role`` is the field name in TopicSettings."""

    role: str
    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Difference:
    """One way a live topic differs from its spec; ``what`` is "topic", "partitions",
    "replication" or a topic config name."""

    topic: str
    what: str
    expected: str
    actual: str

    def __str__(self) -> str:
        if self.what == "topic":
            return f"{self.topic}: topic is {self.actual}, expected it to exist"
        return f"{self.topic}: {self.what} is {self.actual}, expected {self.expected}"


@dataclass
class CreateReport:
    """What ``create_topics`` did: topics it created, topics that already existed, and how the
    existing ones differ from their specs (create never changes an existing topic)."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the pipeline with explicit partitions, replication and configs.

    Every topic accepts records of up to ``topics.max_message_bytes`` except ``alerts.raw``, which
    takes ``ingest.max_record_bytes`` plus framing: ingest dead-letters a too-large raw record whole
    (base64, a third larger), and that dead letter must still fit the DLQ.
    """
    t = settings.topics
    rf = t.replication_factor
    if rf > 1 and t.min_insync_replicas > rf:
        raise UserError(
            f"topics.min_insync_replicas ({t.min_insync_replicas}) is larger than "
            f"topics.replication_factor ({rf}); no write with acks=all could ever succeed"
        )
    raw_limit = settings.ingest.max_record_bytes + FRAMING_BYTES
    largest_dead_letter = math.ceil(raw_limit / 3) * 4 + FRAMING_BYTES
    if largest_dead_letter > t.max_message_bytes:
        raise UserError(
            f"topics.max_message_bytes ({t.max_message_bytes}) cannot hold the dead letter of a raw "
            f"record of ingest.max_record_bytes ({settings.ingest.max_record_bytes}); raise it to at "
            f"least {largest_dead_letter} or lower ingest.max_record_bytes"
        )
    largest = str(t.max_message_bytes)
    durability = {"min.insync.replicas": str(t.min_insync_replicas)} if rf > 1 else {}

    def delete(retention_ms: int, max_bytes: str = largest) -> dict[str, str]:
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(retention_ms),
            "max.message.bytes": max_bytes,
            **durability,
        }

    def compact() -> dict[str, str]:
        return {
            "cleanup.policy": "compact",
            "segment.ms": str(STATE_SEGMENT_MS),
            "max.message.bytes": largest,
            **durability,
        }

    # What each topic needs (partitions, configs) is design, written here; which topics there are
    # comes from the settings model, so a topic field added there without a spec here fails loudly.
    policy: dict[str, tuple[int, dict[str, str]]] = {
        "raw": (t.partitions, delete(t.raw_retention_ms, str(raw_limit))),
        "dlq": (t.partitions, delete(t.dlq_retention_ms)),
        "incidents": (t.partitions, delete(-1)),  # the audit log: forever
        "commands": (t.partitions, delete(COMMAND_RETENTION_MS)),
        "mitigation_commands": (t.partitions, delete(COMMAND_RETENTION_MS)),
        "mitigation_results": (t.partitions, delete(COMMAND_RETENTION_MS)),
        "approvals": (t.partitions, delete(COMMAND_RETENTION_MS)),
        "correlator_input": (t.partitions, delete(t.raw_retention_ms)),
        # State is restored partition by partition from the input's partition number: same count.
        "correlator_state": (t.partitions, compact()),
        "silences": (1, compact()),
        "agent_state": (t.partitions, compact()),
        # The linker (docs/architecture.md, "Linking"): its state is restored per input partition.
        "linker_input": (t.partitions, delete(t.raw_retention_ms)),
        "linker_state": (t.partitions, compact()),
        # Every ingest worker reads every partition's demand (streams.core.clock): one partition.
        "correlator_clock": (1, compact()),
        # Every reader needs the whole topology, in one order: one partition, like silences.
        "topology": (1, compact()),
        # The notifier (docs/notifications.md): its state is restored per incidents partition.
        "notifications": (t.partitions, delete(COMMAND_RETENTION_MS)),
        "notifications_dlq": (t.partitions, delete(t.dlq_retention_ms)),
        "notify_state": (t.partitions, compact()),
    }
    topics = t.names()
    if set(policy) != set(topics):
        raise RuntimeError(
            f"topic specs out of step with TopicSettings: no spec for {sorted(set(topics) - set(policy))}, "
            f"a spec but no topic for {sorted(set(policy) - set(topics))}"
        )
    specs = [TopicSpec(role, topics[role], n, rf, config) for role, (n, config) in policy.items()]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"topic names must differ, but {', '.join(duplicates)} is configured more than once")
    return specs


# --- talking to Kafka -----------------------------------------------------------------------


class _QuietLogger:
    """Takes librdkafka's log lines and logs them one level lower.

    librdkafka logs each refused connection at ERROR several times a second; the user gets one
    actionable line instead, and the detail stays available with ``-v``.
    """

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.log(logging.INFO if level >= logging.WARNING else logging.DEBUG, msg, *args)


_client_errors: dict[str, ErrorTracker] = {}  # bootstrap servers -> what the admin client last reported


def _admin(settings: Settings) -> AdminClient:
    conf = settings.kafka.client_config()
    conf["logger"] = _QuietLogger()
    conf["error_cb"] = _client_errors.setdefault(settings.kafka.bootstrap_servers, ErrorTracker())
    try:
        return AdminClient(conf)
    except (KafkaException, ValueError) as exc:
        raise UserError(f"invalid Kafka client configuration: {exc}") from exc


def _unreachable(settings: Settings, timeout_s: float, admin: AdminClient) -> UserError:
    admin.poll(0)  # error callbacks (auth failed, refused) are served by poll
    tracker = _client_errors.get(settings.kafka.bootstrap_servers)
    if tracker is None or tracker.last is None:
        return unreachable_error(settings, f"no answer within {timeout_s:g}s")
    if refused_access(tracker):
        return unreachable_error(settings, tracker.last.str())
    return unreachable_error(settings, f"{tracker.last.str()}, within {timeout_s:g}s")


def _error_text(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else exc
    return err.str() if isinstance(err, KafkaError) else str(err)


def _error_code(exc: BaseException) -> int | None:
    err = exc.args[0] if exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


@dataclass(frozen=True)
class _LiveTopic:
    partitions: int
    replication: dict[int, int]  # partition -> number of replicas


def _live_topics(admin: AdminClient, settings: Settings, timeout_s: float) -> dict[str, _LiveTopic]:
    try:
        tracker = _client_errors[settings.kafka.bootstrap_servers]
        metadata = list_topics_or_refusal(
            lambda t: admin.list_topics(timeout=t), lambda: admin.poll(0), tracker, timeout_s
        )
    except KafkaException as exc:
        raise _unreachable(settings, timeout_s, admin) from exc
    live: dict[str, _LiveTopic] = {}
    for name, topic in metadata.topics.items():
        if topic.error is not None:
            continue
        replication = {pid: len(p.replicas) for pid, p in topic.partitions.items()}
        live[name] = _LiveTopic(len(topic.partitions), replication)
    return live


def _live_configs(
    admin: AdminClient,
    names: Iterable[str],
    settings: Settings,
    timeout_s: float,
    listed: Callable[[], Collection[str]],
) -> dict[str, dict[str, str]]:
    """The configs of topics the metadata just listed. UNKNOWN_TOPIC_OR_PART has two causes. A
    broker that has not yet learned of a topic created a moment ago (KRaft spreads new metadata to
    the brokers asynchronously) is asked again until ``timeout_s`` (seen right after `topics create`
    on a 3-node cluster, when a second pipeline shared the topic the first had created). A topic
    deleted after the metadata listed it (the listing came from a cache not yet updated) is no
    longer in ``listed()`` and is left out of the result: the caller reports it missing."""
    pending = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    out: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        behind: list[ConfigResource] = []
        try:
            futures = admin.describe_configs(pending, request_timeout=timeout_s)
            for resource, future in futures.items():
                try:
                    entries = future.result(timeout=timeout_s)
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    code = error.code() if isinstance(error, KafkaError) else None
                    if code != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() >= deadline:
                        raise
                    behind.append(resource)
                    continue
                out[resource.name] = {k: str(v.value) for k, v in entries.items()}
        except KafkaException as exc:
            raise UserError(
                f"cannot read topic configs from Kafka at {settings.kafka.bootstrap_servers}: {_error_text(exc)}"
            ) from exc
        except TimeoutError as exc:
            raise _unreachable(settings, timeout_s, admin) from exc
        if behind:
            still = set(listed())
            behind = [r for r in behind if r.name in still]
        pending = behind
        if pending:
            time.sleep(0.2)
    return out


def _compare(spec: TopicSpec, live: _LiveTopic, configs: Mapping[str, str]) -> list[Difference]:
    diffs: list[Difference] = []
    if live.partitions != spec.partitions:
        diffs.append(Difference(spec.name, "partitions", str(spec.partitions), str(live.partitions)))
    wrong_rf = sorted({n for n in live.replication.values() if n != spec.replication})
    if wrong_rf:
        actual = ", ".join(str(n) for n in wrong_rf)
        diffs.append(Difference(spec.name, "replication", str(spec.replication), actual))
    for key, expected in sorted(spec.config.items()):
        actual = configs.get(key, "unset")
        if actual != expected:
            diffs.append(Difference(spec.name, key, expected, actual))
    return diffs


def check_topics(settings: Settings, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Difference]:
    """Compare the live topics with ``topic_specs``: existence, partitions, replication factor
    and every config we set. An empty list means the cluster matches."""
    specs = topic_specs(settings)
    admin = _admin(settings)
    live = _live_topics(admin, settings, timeout_s)
    present = [s for s in specs if s.name in live]
    configs = _live_configs(
        admin,
        [s.name for s in present],
        settings,
        timeout_s,
        lambda: _live_topics(admin, settings, timeout_s),
    )
    present = [s for s in present if s.name in configs]  # a topic deleted a moment ago is missing
    diffs = [Difference(s.name, "topic", "present", "missing") for s in specs if s.name not in configs]
    for spec in present:
        diffs.extend(_compare(spec, live[spec.name], configs.get(spec.name, {})))
    return diffs


def create_topics(settings: Settings, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> CreateReport:
    """Create the missing topics; check (never alter) the existing ones. Safe to run repeatedly,
    also by several processes at once."""
    specs = topic_specs(settings)
    admin = _admin(settings)
    live = _live_topics(admin, settings, timeout_s)
    report = CreateReport()
    missing = [s for s in specs if s.name not in live]
    if missing:
        new = [
            NewTopic(
                s.name, num_partitions=s.partitions, replication_factor=s.replication, config=dict(s.config)
            )
            for s in missing
        ]
        futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
        for spec in missing:
            try:
                futures[spec.name].result(timeout=timeout_s + 5)
            except KafkaException as exc:
                if _error_code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise _create_failed(spec, exc) from exc
                report.existing.append(spec.name)  # created concurrently by someone else
            except TimeoutError as exc:
                raise _unreachable(settings, timeout_s, admin) from exc
            else:
                report.created.append(spec.name)
                log.info(
                    "created topic %s (%d partitions, rf %d)", spec.name, spec.partitions, spec.replication
                )
    report.existing.extend(s.name for s in specs if s.name in live)
    if report.existing:
        existing = set(report.existing)
        report.differences = [d for d in check_topics(settings, timeout_s=timeout_s) if d.topic in existing]
    return report


def _create_failed(spec: TopicSpec, exc: KafkaException) -> UserError:
    code = _error_code(exc)
    if code == KafkaError.INVALID_REPLICATION_FACTOR:
        return UserError(
            f"cannot create topic {spec.name} with replication factor {spec.replication}: "
            f"{_error_text(exc)}; lower topics.replication_factor "
            "(STORMWATCH_TOPICS__REPLICATION_FACTOR) or add brokers"
        )
    return UserError(f"cannot create topic {spec.name}: {_error_text(exc)}")


def delete_topics(settings: Settings, names: Iterable[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Delete the named topics, ignoring ones that do not exist (used by test teardown)."""
    names = list(names)
    if not names:
        return
    admin = _admin(settings)
    futures = admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s + 5)
        except KafkaException as exc:
            if _error_code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise UserError(f"cannot delete topic {name}: {_error_text(exc)}") from exc
        except TimeoutError as exc:
            raise _unreachable(settings, timeout_s, admin) from exc
