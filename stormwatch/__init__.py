"""stormwatch: an alert correlation pipeline on Apache Kafka, in one import namespace.

Subpackages by layer, bottom to top (docs/architecture.md, "Where things live"): ``schemas``
(contracts), ``streams.core`` and ``agents.core`` (the pure decision logic), ``config``,
``kafka``, ``metrics`` and ``loaders`` (shared plumbing), the stages in ``streams`` and
``agents``, and the entry points (``cli``, ``commands``, ``gateway``, ``simulate``, ``bench``).
Importing this package imports none of them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
