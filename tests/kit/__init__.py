"""The one test kit: helpers shared by tests/unit, tests/integration and tests/faults.

One module per role, imported by name (``from tests.kit.waits import wait_for``):

- ``paths``: where the repository, the Kafka script and the unit fixtures are;
- ``ports``: a free loopback port;
- ``waits``: ``wait_for``, the one bounded poll;
- ``topics``: unique topic names, derived from ``TopicSettings`` (never a hand-kept list);
- ``engine``: drive a ``PartitionEngine`` with hand-made input (no broker);
- ``messages``: consumed records without a broker, to drive a stage's ``handle``;
- ``kafka``: Kafka instances (deploy/kafka/local-kafka.sh, Docker) and cluster state;
- ``records``: storms and the producers that write them;
- ``metrics``: read a worker's /metrics;
- ``workers``: `stormwatch` worker subprocesses and CLI runs;
- ``loops``: a transactional loop in a thread of the test;
- ``pipeline``: ``PipelineRun``, a whole pipeline of worker processes, and audit-log checks;
- ``gateway``: an in-process gateway for one request or one readiness check;
- ``agents``: incident events, mitigation commands and results for the agent tests;
- ``corpus``: the deterministic corpus of malformed raw records.

Fixtures live in the conftest.py of the level that needs them, not here.
"""
