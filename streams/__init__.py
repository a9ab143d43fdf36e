"""The stream processors: ingest/normalize, dedup, correlation and the incident state machine.

Pure decision logic (rules, routing, the incident lifecycle, the correlation engine) is kept apart
from the Kafka loops that feed it, so it can be tested and replayed without a broker.
"""
