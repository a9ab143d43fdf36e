"""Prometheus metrics of the mitigation agent, the executors and the notifier (one process-wide
instance each, because prometheus-client registers metric names globally)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from stormwatch.metrics import process_wide

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class AgentMetrics:
    def __init__(self) -> None:
        self.decisions = Counter(
            "stormwatch_mitigation_decisions_total",
            "Command results written by the agent (requested, refused, awaiting_approval, ...)",
            ["workflow", "action", "status"],
        )
        self.refusals = Counter(
            "stormwatch_mitigation_refusals_total", "Steps refused by a guard", ["workflow", "guard"]
        )
        self.active_runs = Gauge("stormwatch_mitigation_active_runs", "Workflow runs in progress")
        self.pending_approvals = Gauge(
            "stormwatch_mitigation_pending_approvals", "Commands waiting for an operator's approval"
        )
        self.running_commands = Gauge(
            "stormwatch_mitigation_running_commands", "Commands sent to executors without a final result"
        )
        self.skipped_records = Counter(
            "stormwatch_agent_skipped_records_total", "Input records the agent could not read", ["topic"]
        )


class ExecutorMetrics:
    def __init__(self) -> None:
        self.actions = Counter(
            "stormwatch_executor_actions_total",
            "Commands handled by executors, by outcome (succeeded, failed, refused, skipped, dry_run)",
            ["action", "outcome"],
        )
        self.seconds = Histogram(
            "stormwatch_executor_action_seconds", "How long actions ran", ["action"], buckets=_SECONDS
        )


_DELIVERY_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class NotifierMetrics:
    """`stormwatch notify` (docs/notifications.md, "Metrics")."""

    def __init__(self) -> None:
        self.notifications = Counter(
            "stormwatch_notifications_total",
            "Delivery attempts by outcome: sent, failed (retried later), given_up (dead-lettered)",
            ["receiver", "integration", "outcome"],
        )
        self.delivery_seconds = Histogram(
            "stormwatch_notification_delivery_seconds",
            "From the incident event a message shows to the receiver accepting it",
            ["receiver", "integration"],
            buckets=_DELIVERY_SECONDS,
        )
        self.send_seconds = Histogram(
            "stormwatch_notification_send_seconds",
            "How long one send to a receiver took (any outcome)",
            ["receiver", "integration"],
            buckets=_SECONDS,
        )
        self.queue_depth = Gauge(
            "stormwatch_notification_queue_depth",
            "Notifications waiting to be sent or retried (outbox items) on this worker",
        )
        self.skipped_records = Counter(
            "stormwatch_notifier_skipped_records_total", "Incident events the notifier could not read"
        )


agent_metrics = process_wide(AgentMetrics)
notifier_metrics = process_wide(NotifierMetrics)
executor_metrics = process_wide(ExecutorMetrics)
