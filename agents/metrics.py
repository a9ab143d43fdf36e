"""Prometheus metrics of the mitigation agent and the executors (one process-wide instance each,
because prometheus-client registers metric names globally)."""

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


agent_metrics = process_wide(AgentMetrics)
executor_metrics = process_wide(ExecutorMetrics)
