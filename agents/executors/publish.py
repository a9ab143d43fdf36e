"""``kafka``: publish one message to an allowlisted topic (hand work to another system).

The topic must be written literally in the workflow (no template can pick a topic) and be on
``agent.allow_topics``, so a workflow cannot write into the pipeline's own topics by accident.
The message is produced idempotently and waited for, so ``ok`` means the broker has it.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import orjson
from confluent_kafka import KafkaError, Message, Producer

from stormwatch.agents.core.templating import is_template
from stormwatch.agents.executors.base import ExecutorPolicy, Outcome, ParamProblems, refused, unknown_keys
from stormwatch.kafka.client import delivery_failure
from stormwatch.schemas.commands import MitigationCommand

__all__ = ["KafkaExecutor"]

_KEYS = ("topic", "key", "value")


class KafkaExecutor:
    name: ClassVar[str] = "kafka"
    side_effects: ClassVar[bool] = True

    def __init__(self, policy: ExecutorPolicy) -> None:
        self.policy = policy
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    @staticmethod
    def check_params(params: dict[str, Any]) -> ParamProblems:
        problems = unknown_keys(params, _KEYS)
        topic = params.get("topic")
        if topic is None:
            problems.append(("", "missing parameter 'topic'"))
        elif not isinstance(topic, str) or not topic:
            problems.append(("topic", "must be a topic name"))
        elif is_template(topic):
            problems.append(("topic", "the topic must be written literally, not templated"))
        if "value" not in params:
            problems.append(("", "missing parameter 'value' (a string, or a mapping sent as JSON)"))
        key = params.get("key")
        if key is not None and not isinstance(key, str):
            problems.append(("key", "must be a string"))
        return problems

    def _get_producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                if self.policy.kafka is None:
                    raise RuntimeError("the kafka executor needs the Kafka settings in its policy")
                self._producer = Producer(
                    {
                        **self.policy.kafka.client_config(),
                        "enable.idempotence": True,
                        "acks": "all",
                        "linger.ms": 0,
                        "log_level": 3,
                    }
                )
            return self._producer

    def execute(self, command: MitigationCommand, *, timeout_s: float, dry_run: bool) -> Outcome:
        params = command.params
        problems = self.check_params(params)
        if problems:
            path, message = problems[0]
            return refused(f"invalid parameters: {path + ': ' if path else ''}{message}")
        topic = str(params["topic"])
        if topic not in self.policy.allow_topics:
            allowed = ", ".join(self.policy.allow_topics) or "none (set agent.allow_topics or --allow-topic)"
            return refused(f"topic {topic!r} is not on the allowlist; allowed: {allowed}")
        value = params["value"]
        payload = value.encode() if isinstance(value, str) else orjson.dumps(value)
        key = params.get("key")
        if dry_run:
            return Outcome(ok=True, output=f"would publish {len(payload)} bytes to {topic}")
        producer = self._get_producer()
        done: list[tuple[KafkaError | None, Message]] = []
        producer.produce(
            topic,
            payload,
            key,
            headers=[("stormwatch-command-id", command.command_id)],
            on_delivery=lambda err, msg: done.append((err, msg)),
        )
        producer.flush(timeout_s)
        if not done:
            return Outcome(ok=False, reason=f"not acknowledged by Kafka within {timeout_s:g}s")
        err, msg = done[0]
        if (failure := delivery_failure(err, msg)) is not None:
            return Outcome(ok=False, reason=f"Kafka refused the message: {failure}")
        return Outcome(
            ok=True, output=f"published to {topic} partition {msg.partition()} offset {msg.offset()}"
        )
