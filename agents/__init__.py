"""Downstream agents: the mitigation agent, its workflow engine and the executors.

The pure parts (``workflow``, ``templating``, ``guards``, ``planner``) decide what to do and hold no
I/O; ``agent`` and ``executor`` wire them to Kafka with the same transactional loop as the
pipeline stages. docs/workflows.md describes the workflow file and the guarantees.
"""
