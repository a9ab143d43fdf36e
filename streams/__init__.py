"""The stream processors: ingest/normalize, dedup, correlation and the incident state machine.

``stormwatch.streams.core`` is the pure decision logic (rules, routing, the incident lifecycle,
the correlation engine), testable and replayable without a broker; ``ingest`` and ``correlator``
are the Kafka stages that feed it (docs/architecture.md, "Where things live"). Importing this
package imports none of them, so the core can be used without confluent-kafka's stages.
"""

__all__ = ["core", "correlator", "ingest"]
