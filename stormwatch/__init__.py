"""stormwatch: CLI, configuration and Kafka plumbing shared by the stages."""

__version__ = "0.1.0"
