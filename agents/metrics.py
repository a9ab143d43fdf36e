"""Prometheus metrics of the mitigation agent and the executors (one process-wide instance each,
because prometheus-client registers metric names globally)."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

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


_lock = threading.Lock()
_agent: AgentMetrics | None = None
_executor: ExecutorMetrics | None = None


def agent_metrics() -> AgentMetrics:
    global _agent
    with _lock:
        if _agent is None:
            _agent = AgentMetrics()
        return _agent


def executor_metrics() -> ExecutorMetrics:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ExecutorMetrics()
        return _executor
