"""Kafka plumbing shared by every stage: client configuration, the transactional loop, topics.

Layer 3 (docs/architecture.md): imports the contracts, the pure core and the settings; never a
stage or an entry point.
"""
