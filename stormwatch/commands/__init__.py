"""CLI subcommands, one module each; ``stormwatch.cli.COMMAND_MODULES`` lists them in help order."""

__all__ = [
    "agent",
    "bench",
    "config",
    "demo",
    "gateway",
    "incidents",
    "operator",
    "pipeline",
    "schemas",
    "silences",
    "simulate",
    "topics",
]
