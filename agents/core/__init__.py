"""The pure half of the mitigation agent: workflows, templating, guards, state and the planner.

Layer 2 (docs/architecture.md): it decides what to run and holds no I/O; ``stormwatch.agents.agent``
and ``stormwatch.agents.executor`` wire it to Kafka.
"""
