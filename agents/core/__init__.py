"""The pure half of the downstream agents: for mitigation, workflows, templating, guards, state
and the planner; for notifications (issue #13), the notifier file, its route tree, time intervals,
the delivery policy and the Alertmanager converter (``notify_*``, ``timeintervals``).

Layer 2 (docs/architecture.md): it decides what to run or send and holds no I/O;
``stormwatch.agents.agent`` and ``stormwatch.agents.executor`` wire the mitigation half to Kafka.
"""
