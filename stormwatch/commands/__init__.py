"""CLI subcommands, one module each; ``stormwatch.cli.COMMAND_MODULES`` lists them in help order."""

__all__ = [
    "agent",
    "bench",
    "config",
    "demo",
    "gateway",
    "incidents",
    "notify",
    "operator",
    "pipeline",
    "schemas",
    "silences",
    "simulate",
    "topics",
]
