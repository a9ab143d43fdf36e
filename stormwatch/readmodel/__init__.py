"""The read model: current incidents, active alerts and silences, rebuilt from Kafka alone.

``model`` is the pure part (apply a record, answer a query with filters and pagination),
``alertmanager`` turns it into Alertmanager API v2 JSON (pure too), and ``follower`` is the
Kafka part: it catches up with the topics on start, then follows them live. Nothing here writes;
a second database is never involved (docs/alertmanager-api.md, "The read model").
"""
