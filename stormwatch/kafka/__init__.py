"""Kafka plumbing shared by every stage: client configuration, the transactional loop, topics.

Layer 3 (docs/architecture.md, "Where things live"): imports the contracts, the pure core and
the settings; never a stage or an entry point. Import from the modules:

- ``stormwatch.kafka.client``: clients built from the settings, reads, error classification;
- ``stormwatch.kafka.txloop``: the consume-transform-produce loop with Kafka transactions;
- ``stormwatch.kafka.topics``: the topics the pipeline needs, creating and checking them.
"""

__all__ = ["client", "topics", "txloop"]
